//! The layer in front of every contract RPC: authenticate (JWT only), then
//! the deny-by-default allow list. Health and reflection stay open so probes and
//! tooling work without a token; they carry no personal data.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::audit::{AuditEntry, Decision, Direction};
use crate::identity::{Caller, Verifier};
use crate::policy::{Policy, RpcRule};
use crate::ports::AuditSink;
use passerelle_domain::{Clock, Role};

pub use crate::ports::BoxFuture;

/// Put in the request's extensions once the caller is admitted.
#[derive(Debug, Clone)]
pub struct Admission {
    pub caller: Caller,
    pub rule: RpcRule,
}

/// The caller the layer admitted. Missing means the layer was bypassed: refuse.
pub fn admission<T>(request: &tonic::Request<T>) -> Result<&Admission, Status> {
    request
        .extensions()
        .get::<Admission>()
        .ok_or_else(|| Status::permission_denied("call not admitted by the boundary"))
}

/// The admitted caller of `request`.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    admission(request).map(|a| &a.caller)
}

#[derive(Clone)]
pub struct BoundaryLayer {
    shared: Arc<Shared>,
}

struct Shared {
    verifier: Verifier,
    policy: Policy,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    bind_certificates: bool,
}

impl std::fmt::Debug for BoundaryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundaryLayer")
            .field("audience", &self.shared.verifier.audience())
            .finish_non_exhaustive()
    }
}

impl BoundaryLayer {
    pub fn new(
        verifier: Verifier,
        policy: Policy,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        BoundaryLayer {
            shared: Arc::new(Shared {
                verifier,
                policy,
                audit,
                clock,
                bind_certificates: false,
            }),
        }
    }

    /// With mutual TLS: a client certificate, when presented, must speak for
    /// the token's institution, and service-to-service calls must present one.
    pub fn binding_certificates(mut self) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.bind_certificates = true;
        }
        self
    }
}

impl<S> Layer<S> for BoundaryLayer {
    type Service = BoundaryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BoundaryService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BoundaryService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for BoundaryService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundaryService").finish_non_exhaustive()
    }
}

/// Only the contract's own services sit behind the layer.
fn is_guarded(path: &str) -> bool {
    path.starts_with("/passerelle.")
}

/// What the TLS layer says of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerCertificate {
    None,
    Unnamed,
    Institution(passerelle_domain::Institution),
}

fn peer_certificate<B>(request: &http::Request<B>) -> PeerCertificate {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let leaf = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
    match leaf {
        None => PeerCertificate::None,
        Some(der) => match crate::identity::institution_from_certificate(&der) {
            Some(institution) => PeerCertificate::Institution(institution),
            None => PeerCertificate::Unnamed,
        },
    }
}

/// The token of an `authorization: Bearer <token>` header; the scheme is
/// matched without regard to case (RFC 9110 §11.1).
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Shared {
    /// Authenticates and authorises; on refusal, records the denial first.
    async fn admit(
        &self,
        path: &str,
        token: Option<String>,
        peer: PeerCertificate,
    ) -> Result<Admission, Status> {
        let caller = match token.as_deref().map(|t| self.verifier.verify(t)) {
            Some(Ok(caller)) => caller,
            failure => {
                let reason = match failure {
                    Some(Err(e)) => e.to_string(),
                    _ => "missing bearer token".to_owned(),
                };
                self.record_denial(path, None, &reason).await?;
                return Err(Status::unauthenticated(reason));
            }
        };
        if self.bind_certificates {
            let mismatch = match peer {
                PeerCertificate::Institution(institution) if institution == caller.institution => {
                    None
                }
                PeerCertificate::Institution(_) => {
                    Some("the client certificate speaks for another institution than the token")
                }
                PeerCertificate::Unnamed => Some("the client certificate names no institution"),
                PeerCertificate::None if caller.role == Role::Service => {
                    Some("service calls need a client certificate")
                }
                PeerCertificate::None => None,
            };
            if let Some(reason) = mismatch {
                self.record_denial(path, Some(&caller), reason).await?;
                return Err(Status::unauthenticated(reason));
            }
        }
        match self.policy.authorize(&caller, path) {
            Ok(rule) => Ok(Admission {
                caller,
                rule: rule.clone(),
            }),
            Err(denial) => {
                let reason = denial.to_string();
                self.record_denial(path, Some(&caller), &reason).await?;
                Err(Status::permission_denied(reason))
            }
        }
    }

    async fn record_denial(
        &self,
        path: &str,
        caller: Option<&Caller>,
        reason: &str,
    ) -> Result<(), Status> {
        let rule = self.policy.rule(path);
        let crossing = rule.and_then(|r| r.crossing.as_ref());
        let entry = AuditEntry {
            at: self.clock.now(),
            direction: Direction::Inbound,
            agent: caller.map(|c| c.agent.clone()),
            agent_institution: caller.map(|c| c.institution),
            agent_role: caller.map(|c| c.role),
            counterpart: caller.map(|c| c.institution),
            method: path.to_owned(),
            case_id: None,
            purpose: crossing.map(|c| c.purpose),
            legal_basis: crossing.map(|c| c.legal_basis),
            consent_id: None,
            categories: Default::default(),
            fields: vec![],
            decision: Decision::Denied,
            reason: Some(reason.to_owned()),
        };
        crate::ports::record(&*self.audit, entry)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "audit append failed; refusing the call");
                Status::unavailable("audit log unavailable")
            })
    }
}

impl<S, B> Service<http::Request<B>> for BoundaryService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service goes with this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if !is_guarded(&path) {
            return Box::pin(inner.call(request));
        }
        let shared = self.shared.clone();
        let token = bearer(request.headers()).map(str::to_owned);
        let peer = peer_certificate(&request);
        Box::pin(async move {
            match shared.admit(&path, token, peer).await {
                Ok(admission) => {
                    request.extensions_mut().insert(admission);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_required() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().expect("header"));
            bearer(&headers).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("BEARER  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearerabc"), None);
    }
}
