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
