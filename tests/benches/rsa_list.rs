//! Streams a 100,000-row RSA jobseeker list (LRSA-DE) from the employment
//! service to a Département client in another process, and reports rows/s
//! and the peak memory of both ends: `cargo bench -p passerelle-tests
//! --bench rsa_list` (`--rows N` to change the size).

use std::time::Instant;

use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::{Backend, TestStack, backends, start};
use tokio_stream::StreamExt;
use v1::emploi_service_client::EmploiServiceClient;

const MONTH: &str = "2026-11";

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the peak so it measures what follows (Linux: `5` to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The Département's end: downloads the whole list, prints `rows peak_mib`.
async fn client(url: String, token: String) {
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut request = tonic::Request::new(v1::StreamRsaJobseekerListRequest {
        month: MONTH.into(),
        after_seq: 0,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let mut stream = EmploiServiceClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .stream_rsa_jobseeker_list(request)
        .await
        .expect("stream")
        .into_inner();
    let mut rows = 0u64;
    let mut last = 0;
    while let Some(chunk) = stream.next().await {
        for row in chunk.expect("chunk").rows {
            assert_eq!(row.seq, last + 1, "rows arrive in order");
            last = row.seq;
            rows += 1;
        }
    }
    println!("{rows} {:.1}", peak_mib());
}

fn coordinator<T>(t: &TestStack, message: T) -> tonic::Request<T> {
    t.as_agent(
        Institution::Emploi,
        Role::Coordinator,
        "bench",
        Institution::Emploi,
        message,
    )
}

async fn server(backend: Backend, rows: usize) {
    let t = start(backend, 11).await;
    let mut emploi = t.emploi().await;
    let loading = Instant::now();
    for chunk in 0..rows.div_ceil(1_000) {
        let jobseekers = (chunk * 1_000..((chunk + 1) * 1_000).min(rows))
            .map(|i| v1::JobseekerRecord {
                jobseeker_number: format!("{:07}B", i),
                first_name: "Prénom".into(),
                last_name: format!("Nom{i}"),
                birth_date: "1980-01-01".into(),
                registration_date: "2025-03-03".into(),
                registration_category: "1".into(),
                agency_code: "PE-RENNES".into(),
                support_modality: "renforce".into(),
                rsa_beneficiary: true,
                ..Default::default()
            })
            .collect();
        emploi
            .record_jobseekers(coordinator(
                &t,
                v1::RecordJobseekersRequest {
                    idempotency_key: format!("bench-{chunk}"),
                    jobseekers,
                },
            ))
            .await
            .expect("register");
    }
    let published = emploi
        .publish_rsa_jobseeker_list(coordinator(
            &t,
            v1::PublishRsaJobseekerListRequest {
                idempotency_key: "bench-publish".into(),
                month: MONTH.into(),
            },
        ))
        .await
        .expect("publish")
        .into_inner()
        .rows;
    emploi
        .grant_habilitation(coordinator(
            &t,
            v1::GrantHabilitationRequest {
                idempotency_key: "bench-grant".into(),
                agent: "sw-bench".into(),
                scope: v1::HabilitationScope::RsaJobseekerList as i32,
            },
        ))
        .await
        .expect("grant");
    println!(
        "{backend:?}: {published} rows registered and published in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let token = t
        .stack
        .token(
            Institution::Social,
            Role::SocialWorker,
            "sw-bench",
            Institution::Emploi,
        )
        .expect("token");
    reset_peak();
    let before = peak_mib();
    let started = Instant::now();
    let url = t.stack.url(Institution::Emploi);
    // The client is another process, so each end's memory is its own.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--client", &url, &token])
            .output()
    })
    .await
    .expect("join")
    .expect("client");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    let mut parts = answer.split_whitespace();
    let received: u64 = parts.next().and_then(|n| n.parse().ok()).expect("rows");
    let client_peak: f64 = parts.next().and_then(|n| n.parse().ok()).expect("peak");
    assert_eq!(received, published);
    println!(
        "  streamed {received} rows in {:.2} s: {:.0} rows/s; peak memory: service {:.1} MiB (was {:.1} before the read), client {:.1} MiB",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64(),
        peak_mib(),
        before,
        client_peak
    );
    t.shutdown().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        client(args[i + 1].clone(), args[i + 2].clone()).await;
        return;
    }
    let rows = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    for backend in backends() {
        server(backend, rows).await;
    }
}
