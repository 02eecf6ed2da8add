//! The driver's channel to a service, as a careful integrator writes it:
//! a call that meets no service (restarting, killed) or UNAVAILABLE (busy)
//! is sent again, the same bytes with the same idempotency key, until it is
//! answered. The service's idempotency makes that safe for every write: a
//! call that was committed before its answer was lost gets its stored answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Retrying {
    channel: Channel,
    /// How long a call keeps trying before it gives the last failure back.
    patience: Duration,
    /// Attempts sent again, over every clone.
    retries: Arc<AtomicU64>,
}

impl Retrying {
    pub fn new(channel: Channel, patience: Duration) -> Self {
        Retrying {
            channel,
            patience,
            retries: Arc::default(),
        }
    }

    /// Another service's channel counting its retries with this one's.
    pub fn sharing_count(&self, channel: Channel) -> Self {
        Retrying {
            channel,
            patience: self.patience,
            retries: self.retries.clone(),
        }
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// gRPC's UNAVAILABLE, in the headers of a trailers-only answer (how a
/// service refuses a call it could not start).
fn unavailable_answer(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"14")
}

impl Service<http::Request<Body>> for Retrying {
    type Response = http::Response<Body>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Each call waits for its own clone of the channel to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (mut channel, patience, retries) =
            (self.channel.clone(), self.patience, self.retries.clone());
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // Unary calls: the request is small and is kept to be sent again.
            let sent = body.collect().await?.to_bytes();
            let deadline = tokio::time::Instant::now() + patience;
            let mut pause = Duration::from_millis(10);
            loop {
                let mut attempt =
                    http::Request::new(Body::new(http_body_util::Full::new(sent.clone())));
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                let outcome: Result<Self::Response, Error> = async {
                    let response = channel.ready().await?.call(attempt).await?;
                    // The whole answer is read here, so a service killed
                    // midway through it is a failure to retry, not a broken body.
                    let (head, body) = response.into_parts();
                    let received = body.collect().await?;
                    Ok(http::Response::from_parts(head, Body::new(received)))
                }
                .await;
                let patient = tokio::time::Instant::now() < deadline;
                match outcome {
                    Ok(response) if patient && unavailable_answer(&response) => {}
                    Err(_) if patient => {}
                    done => return done,
                }
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        })
    }
}
