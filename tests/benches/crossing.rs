//! Throughput and latency of the audited crossing, side by side with a bare
//! tonic unary call, in the same process and with the same client loop:
//! `cargo bench -p passerelle-tests --bench crossing` (`--seconds N` per
//! level, 3 by default). On SQLite, and on PostgreSQL when
//! `PASSERELLE_TEST_POSTGRES` names a server.
//!
//! Measured, for 1, 16 and 64 calls in flight on one channel and 64 over
//! four channels: the bare call (gRPC health Check on a plain tonic server,
//! no token, no database), a replayed crossing (`ReceivePlanSummary` with
//! the same key: token, consent check, minimisation, a durable audit record,
//! the stored answer), a new crossing (a fresh key each call: the change
//! written too), and an agent's local read (`GetCase`). Timings are only
//! printed here, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use passerelle_domain::{Clock, Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::{TestStack, backends, eventually, start, timestamp};
use tonic::transport::Channel;

/// One call, made again and again by each worker.
type Call =
    Arc<dyn Fn(Channel, u64) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `in_flight` workers over `channels` channels call `call` for `seconds`.
async fn measure(channels: &[Channel], in_flight: usize, seconds: f64, call: &Call) -> Figures {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let serial = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..in_flight {
        let channel = channels[w % channels.len()].clone();
        let call = call.clone();
        let (serial, errors) = (serial.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = vec![];
            while Instant::now() < deadline {
                let n = serial.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                if call(channel.clone(), n).await {
                    latencies.push(began.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let began = Instant::now();
    let mut all = vec![];
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = began.elapsed().as_secs_f64().max(seconds);
    all.sort();
    Figures {
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// A plain tonic server answering the gRPC health check: the floor.
async fn bare_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{address}")
}

fn bare_call() -> Call {
    Arc::new(|channel, _| {
        Box::pin(async move {
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
        })
    })
}

fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// A case at both sides with a plan summary, and the tokens to call with.
async fn a_case(t: &TestStack) -> (String, v1::PlanSummary) {
    let case_id = t.enter_case("bench").await;
    t.social()
        .await
        .update_plan(t.social_plan_request("bench-plan", &case_id, "Un logement"))
        .await
        .expect("plan");
    let emploi = t.store(Institution::Emploi).await;
    eventually("the summary at emploi", async || {
        !emploi
            .plan_summaries(&case_id)
            .await
            .expect("read")
            .is_empty()
    })
    .await;
    let summary = v1::PlanSummary {
        case_id: case_id.clone(),
        kind: v1::PlanKind::Social as i32,
        themes: vec![],
        updated_at: Some(timestamp(t.clock.now())),
    };
    (case_id, summary)
}

fn crossing_call(token: String, case_id: String, summary: v1::PlanSummary, replay: bool) -> Call {
    Arc::new(move |channel, n| {
        let key = if replay {
            "bench-replayed".to_owned()
        } else {
            format!("bench-new-{n}")
        };
        let request = authorised(
            v1::ReceivePlanSummaryRequest {
                idempotency_key: key,
                case_id: case_id.clone(),
                summary: Some(summary.clone()),
            },
            &token,
        );
        Box::pin(async move {
            v1::emploi_service_client::EmploiServiceClient::new(channel)
                .receive_plan_summary(request)
                .await
                .is_ok()
        })
    })
}

fn read_call(token: String, case_id: String) -> Call {
    Arc::new(move |channel, _| {
        let request = authorised(
            v1::GetCaseRequest {
                case_id: case_id.clone(),
            },
            &token,
        );
        Box::pin(async move {
            v1::emploi_service_client::EmploiServiceClient::new(channel)
                .get_case(request)
                .await
                .is_ok()
        })
    })
}

const LEVELS: [(usize, usize); 4] = [(1, 1), (16, 1), (64, 1), (64, 4)];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let bare_url = bare_server().await;
    println!(
        "{:<10} {:<22} {:>9} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "backend", "call", "in flight", "req/s", "p50 ms", "p99 ms", "× bare", "errors"
    );
    for backend in backends() {
        let t = start(backend, 11).await;
        let (case_id, summary) = a_case(&t).await;
        let service_token = {
            let request = t.as_service(Institution::Social, Institution::Emploi, ());
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .expect("token")
                .to_owned()
        };
        // The pair's counsellor reads the case.
        let counsellor = t
            .case_at_emploi(&case_id)
            .await
            .and_then(|v| v.case)
            .and_then(|c| c.pair)
            .map(|p| p.counsellor)
            .expect("pair");
        let read_token = t
            .stack
            .token(
                Institution::Emploi,
                Role::Counsellor,
                &counsellor,
                Institution::Emploi,
            )
            .expect("token");
        let emploi_url = t.stack.url(Institution::Emploi);
        let calls: [(&str, Call, &str); 4] = [
            ("bare tonic (health)", bare_call(), bare_url.as_str()),
            (
                "crossing, replayed",
                crossing_call(
                    service_token.clone(),
                    case_id.clone(),
                    summary.clone(),
                    true,
                ),
                emploi_url.as_str(),
            ),
            (
                "crossing, new",
                crossing_call(
                    service_token.clone(),
                    case_id.clone(),
                    summary.clone(),
                    false,
                ),
                emploi_url.as_str(),
            ),
            (
                "local read (GetCase)",
                read_call(read_token, case_id.clone()),
                emploi_url.as_str(),
            ),
        ];
        for (in_flight, channels) in LEVELS {
            let mut bare = f64::NAN;
            for (name, call, url) in &calls {
                let mut open = vec![];
                for _ in 0..channels {
                    open.push(channel(url).await);
                }
                let f = measure(&open, in_flight, seconds, call).await;
                if name.starts_with("bare") {
                    bare = f.per_second;
                }
                println!(
                    "{:<10} {:<22} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>8.3} {:>7}",
                    format!("{backend:?}"),
                    name,
                    if channels > 1 {
                        format!("{in_flight}/{channels}ch")
                    } else {
                        in_flight.to_string()
                    },
                    f.per_second,
                    f.p50_ms,
                    f.p99_ms,
                    f.per_second / bare,
                    f.errors
                );
            }
        }
        t.shutdown().await;
    }
}
