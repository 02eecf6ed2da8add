//! Every mutating RPC takes an idempotency key: the first answer is stored
//! with the change it made, in the same transaction, and a replay of the same
//! request gets it back; the same key with another request is refused. Keys
//! are scoped by RPC and by caller: another agent's key never returns this
//! one's answer.

use passerelle_boundary::layer::admission;
use passerelle_boundary::{Caller, PendingRecord};
use passerelle_domain::{Clock, DomainError, FieldError};
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::Tx;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::error::AppError;

type Result<T> = std::result::Result<T, AppError>;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Who asks, through which RPC, under which idempotency key, for which request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub caller: &'a Caller,
    /// Wire path of the RPC being served.
    pub method: &'a str,
    pub key: &'a str,
    /// SHA-256 of the request, so a reused key with another request is refused.
    pub digest: &'a str,
    /// The audit record of the crossing that asks for the change, if it is
    /// one: committed with the change rather than in a commit of its own.
    pub crossing: Option<&'a PendingRecord>,
}

/// The caller, RPC and request digest of a call made by one of this
/// institution's own agents (not a crossing).
#[derive(Debug)]
pub struct Local<'a> {
    pub caller: &'a Caller,
    method: &'a str,
    digest: String,
}

/// The admitted caller of a local call, with its request's digest.
pub fn local<R: Message>(request: &Request<R>) -> std::result::Result<Local<'_>, Status> {
    let admission = admission(request)?;
    Ok(Local {
        caller: &admission.caller,
        method: &admission.rule.path,
        digest: request_digest(&request.get_ref().encode_to_vec()),
    })
}

impl<'a> Local<'a> {
    /// The call under `key`.
    pub fn call(&'a self, key: &'a str) -> Call<'a> {
        Call {
            caller: self.caller,
            method: self.method,
            key,
            digest: &self.digest,
            crossing: None,
        }
    }
}

/// SHA-256 of a request's encoding: the same key with another request is refused.
pub fn request_digest(encoded: &[u8]) -> String {
    hex::encode(Sha256::digest(encoded))
}

fn idempotency_key(key: &str) -> std::result::Result<&str, FieldError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(FieldError::new("idempotency_key", "is required"));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError::new(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    Ok(key)
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError(DomainError::internal(e))
}

/// Runs `op` once per (method, key) in one transaction with its stored
/// answer; `committed` runs after a fresh commit (not after a replay).
pub async fn once<T, F>(
    store: &InstitutionStore,
    clock: &dyn Clock,
    call: Call<'_>,
    op: F,
    committed: impl FnOnce(),
) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: AsyncFnOnce(&mut Tx) -> Result<T>,
{
    let request_sha256 = call.digest;
    let key = idempotency_key(call.key)?;
    let scope = scope(&call);
    let method = scope.as_str();
    let mut ticket = store.key_ticket(method, key);
    // A replay needs no write lock: the stored answer is read as it is
    // (and the crossing that asked again recorded on its own).
    let mut stored = store.stored_response(method, key).await?;
    // One call of this process at a time writes under a key; one that
    // waited for another's looks again, so the write needs no look-up.
    if stored.is_none() && ticket.write().await {
        stored = store.stored_response(method, key).await?;
    }
    if let Some(stored) = stored {
        if let Some(crossing) = call.crossing {
            crossing
                .settle()
                .await
                .map_err(|_| AppError(DomainError::Unavailable("audit log unavailable".into())))?;
        }
        return replay(stored.request_sha256 == request_sha256, &stored.response);
    }
    // Should another replica commit the same key before this change does,
    // the batch holding it fails as busy (its answer is stored at the
    // commit): the call, tried again, gets that replica's answer.
    let change = async |tx: &mut Tx| -> Result<T> {
        let result = op(tx).await?;
        let encoded = serde_json::to_vec(&result).map_err(internal)?;
        tx.save_response(method, key, request_sha256, &encoded, clock.now());
        Ok(result)
    };
    let result = match call.crossing {
        Some(record) => store.write_recorded(record, change).await,
        None => store.write(change).await,
    }?;
    committed();
    Ok(result)
}

/// Where a key is unique: the RPC and the caller (institution and agent).
fn scope(call: &Call<'_>) -> String {
    format!(
        "{} {}:{}",
        call.method,
        call.caller.institution.code(),
        call.caller.agent
    )
}

fn replay<T: DeserializeOwned>(same_request: bool, response: &[u8]) -> Result<T> {
    if !same_request {
        return Err(AppError(DomainError::IdempotencyConflict));
    }
    serde_json::from_slice(response).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_printable_ascii() {
        assert_eq!(idempotency_key("  k-1 ").unwrap(), "k-1");
        assert_eq!(idempotency_key("").unwrap_err().field, "idempotency_key");
        assert!(idempotency_key("clé").is_err());
        assert!(idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)).is_err());
        assert!(idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY)).is_ok());
    }
}
