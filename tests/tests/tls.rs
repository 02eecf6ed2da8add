//! TLS everywhere, mutual between services: the relay's deliveries present
//! the service certificate, the certificate must speak for the token's
//! institution, and probes still reach health in plaintext.

use passerelle_boundary::Decision;
use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

#[tokio::test]
async fn services_speak_mutual_tls_and_certificates_must_match_tokens() {
    let t = start_with(Backend::Sqlite, 11, true).await;
    assert!(t.stack.url(Institution::Emploi).starts_with("https://"));

    // An agent's client over TLS (no client certificate); the relay delivers over mutual TLS.
    let consent = t
        .social()
        .await
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: "tls-consent".into(),
            consent: Some(consent(
                &t.clock,
                &[v1::Purpose::Referral],
                &[v1::Institution::Emploi, v1::Institution::Social],
            )),
        }))
        .await
        .expect("consent over TLS")
        .into_inner()
        .consent
        .expect("consent");
    t.social()
        .await
        .create_referral(t.as_social_worker(v1::CreateReferralRequest {
            idempotency_key: "tls-referral".into(),
            referral: Some(referral(&consent.case_id, &consent.consent_id, "Gwenola")),
            local_note: String::new(),
        }))
        .await
        .expect("referral over TLS");
    let emploi = t.store(Institution::Emploi).await;
    referral_held(&emploi, &consent.case_id).await;

    // Plaintext is refused on the service port; probes use their own plaintext health port.
    let plain = tonic::transport::Channel::from_shared(
        t.stack
            .url(Institution::Emploi)
            .replace("https://", "http://"),
    )
    .expect("url")
    .connect()
    .await;
    if let Ok(channel) = plain {
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(
            answer.is_err(),
            "a plaintext call was answered on the TLS port"
        );
    }
    let probe = t.stack.health_url(Institution::Emploi).expect("probe port");
    assert!(
        probe.starts_with("http://")
            && probe
                != t.stack
                    .url(Institution::Emploi)
                    .replace("https://", "http://")
    );
    let status = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(probe)
            .expect("url")
            .connect()
            .await
            .expect("probe"),
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .expect("health in plaintext")
    .into_inner()
    .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let case_id = "0193b2c4-0000-7000-8000-0000000007a5";
    let call = async |certificate_of: Option<Institution>| {
        let channel = t
            .try_channel(Institution::Emploi, certificate_of)
            .await
            .expect("TLS handshake");
        v1::emploi_service_client::EmploiServiceClient::new(channel)
            .receive_referral(t.direct_referral(case_id, "0193b2c4-0000-7000-8000-00000000c0df"))
            .await
            .unwrap_err()
    };
    // The social service's token over the employment service's certificate.
    let mismatch = call(Some(Institution::Emploi)).await;
    assert_eq!(mismatch.code(), Code::Unauthenticated, "{mismatch:?}");
    assert!(mismatch.message().contains("another institution"));
    // A service token without any client certificate.
    let missing = call(None).await;
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("client certificate"));
    // With the matching certificate the call passes the channel check and meets the consent gate.
    let matching = call(Some(Institution::Social)).await;
    assert_eq!(matching.code(), Code::PermissionDenied, "{matching:?}");

    let denials: Vec<_> = emploi
        .audit()
        .entries()
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.decision == Decision::Denied)
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        denials.iter().any(|r| r.contains("another institution")),
        "{denials:?}"
    );
    assert!(
        denials
            .iter()
            .any(|r| r.contains("service calls need a client certificate")),
        "{denials:?}"
    );
    t.shutdown().await;
}
