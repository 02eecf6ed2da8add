//! What the boundary needs from storage, as ports: storage implements them,
//! the boundary never knows which database is behind.

use std::future::Future;
use std::pin::Pin;

use passerelle_domain::Consent;

use crate::audit::{AuditEntry, Decision, Direction};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Durable, append-only audit storage. Callers wait for the append before
/// answering: a decision that cannot be recorded is not given (fail closed).
pub trait AuditSink: Send + Sync + 'static {
    fn append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), String>>;
}

/// Where the consents an institution holds or was told of, and the
/// person's objections, are looked up.
pub trait ConsentRegister: Send + Sync + 'static {
    fn consents_for_case<'a>(
        &'a self,
        case_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Consent>, String>>;

    /// Whether the person objected to `purpose` for the case (GDPR art. 21).
    fn objected<'a>(
        &'a self,
        case_id: &'a str,
        purpose: passerelle_domain::Purpose,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// Appends `entry` and counts the decision once it is durable.
pub async fn record(sink: &dyn AuditSink, entry: AuditEntry) -> Result<(), String> {
    let counted = count(&entry);
    sink.append(entry).await?;
    counted();
    Ok(())
}

/// What counts `entry`'s decision in the metrics, to run once its record is
/// durable (by [`record`], or by a transaction that wrote it with more).
pub fn count(entry: &AuditEntry) -> impl FnOnce() + use<> {
    let (decision, purpose, direction) = (entry.decision, entry.purpose, entry.direction);
    move || {
        passerelle_telemetry::metrics::record_decision(
            match decision {
                Decision::Allowed => "allowed",
                Decision::Denied => "denied",
            },
            purpose.map(|p| p.code()),
            match direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            },
        )
    }
}
