//! The layer in front of every contract RPC: authenticate (JWT only), then
//! the deny-by-default allow list. Health and reflection stay open so probes and
//! tooling work without a token; they carry no personal data.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tower::{Layer, Service};

use crate::audit::{AuditEntry, Decision};
use crate::budget::{Charge, Coalesced, DenialBudget};
use crate::identity::{Caller, Verifier};
use crate::policy::{Policy, RpcRule};
use crate::ports::AuditSink;
use passerelle_domain::{Clock, Role};

pub use crate::ports::BoxFuture;

/// Refused calls audited one by one per peer and window, by default.
pub const DEFAULT_REFUSALS_PER_WINDOW: u64 = 100;
/// The window of that budget, by default.
pub const DEFAULT_REFUSAL_WINDOW_MS: u64 = 10_000;

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
    budget: DenialBudget,
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
                budget: DenialBudget::new(
                    DEFAULT_REFUSALS_PER_WINDOW,
                    Duration::from_millis(DEFAULT_REFUSAL_WINDOW_MS),
                ),
            }),
        }
    }

    /// Audits at most `per_window` refused calls per peer and window one by
    /// one; past that, refusals are shed and counted in one record per
    /// window. Call it before serving (it starts the task that writes those
    /// records).
    pub fn with_denial_budget(mut self, per_window: u64, window: Duration) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.budget = DenialBudget::new(per_window, window);
        }
        self
    }

    /// Records what is left of the windows under way (at shutdown).
    pub async fn flush_refusals(&self) {
        for ended in self.shared.budget.ended(Instant::now(), true) {
            self.shared.record_coalesced(&ended).await;
        }
    }

    /// Writes, once per window, one audit record for each peer whose refusals
    /// were shed; ends with the layer.
    pub fn spawn_coalescer(&self) {
        let shared = Arc::downgrade(&self.shared);
        let window = self.shared.budget.window();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(window);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                for ended in shared.budget.ended(Instant::now(), false) {
                    shared.record_coalesced(&ended).await;
                }
            }
        });
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

/// The address a call came from, when the transport knows it.
fn peer_address<B>(request: &http::Request<B>) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}

impl Shared {
    /// Authenticates and authorises; on refusal, records the denial first.
    async fn admit(
        &self,
        path: &str,
        token: Option<String>,
        peer: PeerCertificate,
        address: Option<IpAddr>,
    ) -> Result<Admission, Status> {
        let caller = match token.as_deref().map(|t| self.verifier.verify(t)) {
            Some(Ok(caller)) => caller,
            failure => {
                let reason = match failure {
                    Some(Err(e)) => e.to_string(),
                    _ => "missing bearer token".to_owned(),
                };
                self.refuse(path, None, &reason, address).await?;
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
                self.refuse(path, Some(&caller), reason, address).await?;
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
                self.refuse(path, Some(&caller), &reason, address).await?;
                Err(Status::permission_denied(reason))
            }
        }
    }

    /// Charges a refusal to its peer's budget: audited within it, shed past it.
    async fn refuse(
        &self,
        path: &str,
        caller: Option<&Caller>,
        reason: &str,
        address: Option<IpAddr>,
    ) -> Result<(), Status> {
        match self.budget.charge(address, Instant::now()) {
            Charge::Record => self.record_denial(path, caller, reason).await,
            Charge::Shed => {
                passerelle_telemetry::metrics::record_shed();
                Err(Status::resource_exhausted(
                    "too many refused calls from this address: try again later",
                ))
            }
        }
    }

    /// One audit record for a peer's refusals shed over a window.
    async fn record_coalesced(&self, ended: &Coalesced) {
        let peer = ended
            .peer
            .map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        let reason = format!(
            "{} further refused calls from {peer} shed over {} s (past the budget of the window)",
            ended.shed,
            ended.window.as_secs()
        );
        if let Err(status) = self.record_denial("*", None, &reason).await {
            tracing::error!(error = %status.message(), "coalesced refusals not recorded");
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
            purpose: crossing.map(|c| c.purpose),
            legal_basis: crossing.map(|c| c.legal_basis),
            decision: Decision::Denied,
            reason: Some(reason.to_owned()),
            ..AuditEntry::inbound(self.clock.now(), caller, path)
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
        let address = peer_address(&request);
        Box::pin(async move {
            match shared.admit(&path, token, peer, address).await {
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
