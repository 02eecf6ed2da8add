//! Calls to another Passerelle service, signed with this service's own identity.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passerelle_boundary::Signer;
use passerelle_domain::{Institution, Role};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::config::{TlsMaterial, audience_of};

/// Lifetime of the tokens a service mints for its own calls.
const SERVICE_TOKEN_TTL_SECONDS: u64 = 300;

/// A minted token is reused for half its lifetime: one signature per
/// couple of minutes, not per message, and never one near its expiry.
const SERVICE_TOKEN_REUSE: Duration = Duration::from_secs(SERVICE_TOKEN_TTL_SECONDS / 2);

/// A bearer header and when its token was minted.
type Minted = (MetadataValue<Ascii>, Instant);

#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: Channel,
    signer: Signer,
    own: Institution,
    audience: String,
    timeout: Duration,
    /// The last header minted, and when.
    minted: Arc<Mutex<Option<Minted>>>,
}

impl Outgoing {
    /// Connects lazily: a partner that is down now may be up at the next attempt.
    pub fn new(
        url: &str,
        signer: Signer,
        own: Institution,
        target: Institution,
        timeout: Duration,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("endpoint {url}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            // Mutual TLS: check the partner against our CA, present our certificate.
            let config = ClientTlsConfig::new()
                .ca_certificate(tls.ca.clone())
                .identity(tls.identity.clone());
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS for {url}: {e}"))?;
        }
        Ok(Outgoing {
            channel: endpoint.connect_lazy(),
            signer,
            own,
            audience: audience_of(target),
            timeout,
            minted: Arc::default(),
        })
    }

    /// Wraps a message in a request carrying a service token.
    pub fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization()?);
        passerelle_telemetry::propagation::inject_current(request.metadata_mut());
        request.set_timeout(self.timeout);
        Ok(request)
    }

    /// The bearer header: the last one minted while it is young enough.
    fn authorization(&self) -> Result<MetadataValue<Ascii>, Status> {
        let now = Instant::now();
        let mut minted = self
            .minted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((header, at)) = minted.as_ref()
            && now.duration_since(*at) < SERVICE_TOKEN_REUSE
        {
            return Ok(header.clone());
        }
        let agent = format!("service:{}", self.own.code());
        let token = self
            .signer
            .sign(
                &agent,
                self.own,
                Role::Service,
                &self.audience,
                SERVICE_TOKEN_TTL_SECONDS,
            )
            .map_err(|_| Status::internal("could not sign the service token"))?;
        let header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header"))?;
        *minted = Some((header.clone(), now));
        Ok(header)
    }

    /// Sends one unary call to `path` (`/package.Service/Rpc`): the
    /// contract's casework messages are the same at either service, so one
    /// generic call serves every partner RPC. Answers up to the aggregates'
    /// size are accepted (the steering service's pulls).
    pub async fn unary<M, R>(&self, path: &str, request: Request<M>) -> Result<R, Status>
    where
        M: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|_| Status::internal("not an RPC path"))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(passerelle_contract::MAX_AGGREGATES_MESSAGE);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("partner not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<M, R>::default();
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}
