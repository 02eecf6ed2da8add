//! What one client may ask of a service at once: the edge's limits hold, and
//! the service keeps serving everyone else.

use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

async fn unknown_case(t: &TestStack) -> tonic::Status {
    t.social()
        .await
        .get_case(t.as_social_worker(v1::GetCaseRequest {
            case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
        }))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn oversized_headers_and_messages_are_refused_and_the_service_goes_on() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // 64 KiB of metadata, four times the default header list limit.
        let mut request = t.as_social_worker(v1::GetCaseRequest {
            case_id: "x".into(),
        });
        request
            .metadata_mut()
            .insert("x-padding", "p".repeat(64 * 1024).parse().expect("header"));
        let refused = t.social().await.get_case(request).await;
        assert!(refused.is_err(), "{refused:?}");

        // A 5 MiB request, over the default 4 MiB.
        let status = t
            .social()
            .await
            .get_case(t.as_social_worker(v1::GetCaseRequest {
                case_id: "k".repeat(5 << 20),
            }))
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        assert!(
            !status.message().contains("Protobuf"),
            "{}",
            status.message()
        );

        // Everyone else is still served.
        assert_eq!(unknown_case(&t).await.code(), Code::NotFound);
        let store = t.store(Institution::Social).await;
        assert!(store.audit().verify().await.is_ok());
        t.shutdown().await;
    })
    .await;
}

/// Found by an outside tester: 2,000 calls without a token in under two
/// seconds wrote 2,000 audit rows. Past a peer's budget refusals are shed and
/// counted in one audit record per window; a caller with a token is served
/// all along.
#[tokio::test]
async fn a_flood_of_refused_calls_coalesces_into_one_audit_record_per_window() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let flood = 2_000;
        let started = std::time::Instant::now();
        let mut tasks = vec![];
        for worker in 0..8 {
            let mut client = t.social().await;
            tasks.push(tokio::spawn(async move {
                let mut codes = vec![];
                for i in 0..flood / 8 {
                    let request = tonic::Request::new(v1::GetCaseRequest {
                        case_id: format!("flood-{worker}-{i}"),
                    });
                    codes.push(client.get_case(request).await.unwrap_err().code());
                }
                codes
            }));
        }
        let mut codes = vec![];
        for task in tasks {
            codes.extend(task.await.expect("task"));
        }
        // The windows (3 s for test stacks) the flood spanned, on a loaded machine too.
        let windows = started.elapsed().as_millis() as usize / 3_000 + 2;
        let budget = passerelle_boundary::layer::DEFAULT_REFUSALS_PER_WINDOW as usize;
        let shed = codes
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count();
        assert!(
            codes
                .iter()
                .all(|c| matches!(c, Code::Unauthenticated | Code::ResourceExhausted)),
            "{codes:?}"
        );
        assert!(shed > 0, "nothing was shed");
        // A caller with a token is still served.
        assert_eq!(unknown_case(&t).await.code(), Code::NotFound);

        let store = t.store(Institution::Social).await;
        let refused = async || {
            store
                .audit()
                .entries()
                .await
                .expect("audit")
                .into_iter()
                .filter(|e| {
                    e.agent.is_none() && e.decision == passerelle_boundary::Decision::Denied
                })
                .collect::<Vec<_>>()
        };
        // At most each window's budget one by one.
        let one_by_one = refused().await.iter().filter(|e| e.method != "*").count();
        assert!(
            one_by_one <= windows * budget,
            "{one_by_one} rows for {flood} calls over {windows} windows"
        );
        assert_eq!(one_by_one + shed, flood);
        // Once the window ends, the shed calls are counted in the log.
        eventually("coalesced", async || {
            let counted: u64 = refused()
                .await
                .iter()
                .filter(|e| e.method == "*")
                .filter_map(|e| e.reason.as_deref()?.split(' ').next()?.parse::<u64>().ok())
                .sum();
            counted == shed as u64
        })
        .await;
        assert!(store.audit().verify().await.is_ok());
        t.shutdown().await;
    })
    .await;
}

/// Found by an outside tester: there was no HTTP/2 concurrent-stream limit,
/// and 5,000 half-sent streams stayed open on one connection. The service now
/// announces its limit in its SETTINGS, and a client may not open more.
#[tokio::test]
async fn the_service_announces_its_concurrent_stream_limit_on_the_wire() {
    let t = start(Backend::Sqlite, 11).await;
    let address = t.stack.addresses[1];
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The server's SETTINGS arrive with its first frames: wait until they do.
    let mut ready = client.ready().await.expect("ready");
    let mut announced = ready.current_max_send_streams();
    for _ in 0..100 {
        if announced != usize::MAX {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ready = ready.ready().await.expect("ready");
        announced = ready.current_max_send_streams();
    }
    let limit = passerelle_runtime::config::LimitsConfig::default().max_concurrent_streams;
    assert_eq!(announced, limit as usize);
    t.shutdown().await;
}

/// Found by an outside tester: 5,000 half-sent streams stayed open. A call
/// whose request never finishes is cut at the request timeout, and the
/// service goes on serving.
#[tokio::test]
async fn a_half_sent_request_is_cut_at_the_request_timeout() {
    let limits = passerelle_runtime::config::LimitsConfig {
        request_timeout_ms: 500,
        ..Default::default()
    };
    let t = start_limited(Backend::Sqlite, 11, false, "ille-et-vilaine-2023", limits).await;
    let token = t
        .stack
        .token(
            Institution::Social,
            passerelle_domain::Role::SocialWorker,
            "sw-rennes-1",
            Institution::Social,
        )
        .expect("token");
    let tcp = tokio::net::TcpStream::connect(t.stack.addresses[1])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/passerelle.v1.SocialService/GetCase",
            t.stack.addresses[1]
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("stream");
    // A gRPC frame announcing 100 bytes, of which 10 are sent; then nothing.
    let mut frame = vec![0u8, 0, 0, 0, 100];
    frame.extend_from_slice(&[0x0a; 10]);
    body.send_data(frame.into(), false).expect("partial body");
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), response)
        .await
        .expect("the service answers before the test gives up");
    let elapsed = started.elapsed();
    // Cut: either an answer with a non-OK status or a reset of the stream.
    if let Ok(answer) = answer {
        let status = answer
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_ne!(status.as_deref(), Some("0"), "{answer:?}");
    }
    assert!(
        elapsed >= std::time::Duration::from_millis(400),
        "{elapsed:?}"
    );
    // Everyone else is still served.
    assert_eq!(unknown_case(&t).await.code(), Code::NotFound);
    t.shutdown().await;
}
