//! Bad input gets INVALID_ARGUMENT naming the field, and writes nothing.

use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

#[tokio::test]
async fn malformed_referrals_name_the_field_and_write_nothing() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social()
            .await
            .record_consent(t.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: "c-input".into(),
                consent: Some(consent(
                    &t.clock,
                    &[v1::Purpose::Referral],
                    &[v1::Institution::Emploi, v1::Institution::Social],
                )),
            }))
            .await
            .expect("consent")
            .into_inner()
            .consent
            .expect("consent");
        let good = referral(&consent.case_id, &consent.consent_id, "Erwan");
        let broken: Vec<(&str, v1::Referral)> = vec![
            (
                "referral.person",
                v1::Referral {
                    person: None,
                    ..good.clone()
                },
            ),
            ("referral.barriers[1].category", {
                let mut r = good.clone();
                r.barriers[1].category = 99;
                r
            }),
            ("referral.person.first_name", {
                let mut r = good.clone();
                r.person.as_mut().expect("person").first_name = "É".repeat(201);
                r
            }),
            ("referral.person.birth_date", {
                let mut r = good.clone();
                r.person.as_mut().expect("person").birth_date = "1986-02-30".into();
                r
            }),
            (
                "referral.case_id",
                v1::Referral {
                    case_id: "../../etc/passwd".into(),
                    ..good.clone()
                },
            ),
            ("referral.contact.email", {
                let mut r = good.clone();
                r.contact.as_mut().expect("contact").email = "not-an-address".into();
                r
            }),
        ];
        let mut social = t.social().await;
        for (i, (field, referral)) in broken.into_iter().enumerate() {
            let status = social
                .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                    idempotency_key: format!("bad-{i}"),
                    referral: Some(referral),
                    local_note: String::new(),
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(
                status.message().starts_with(&format!("{field}:")),
                "{field} not named in {:?}",
                status.message()
            );
        }
        let status = social
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: String::new(),
                referral: Some(good.clone()),
                local_note: String::new(),
            }))
            .await
            .unwrap_err();
        assert!(
            status.message().starts_with("idempotency_key:"),
            "{status:?}"
        );

        // Nothing half-written: no referral, no case, nothing queued but the consent share.
        let store = t.store(Institution::Social).await;
        assert!(
            store
                .referral(&consent.case_id)
                .await
                .expect("read")
                .is_none()
        );
        assert!(store.case(&consent.case_id).await.expect("read").is_none());
        let queued = store.pending_outbox(100).await.expect("outbox");
        assert!(
            queued.iter().all(|m| m.message.kind() == "consent"),
            "{queued:?}"
        );
        let idempotency_rows: i64 = {
            use sqlx::Row;
            sqlx::query("SELECT COUNT(*) AS n FROM idempotency WHERE method LIKE '%CreateReferral'")
                .fetch_one(store.database().pool())
                .await
                .expect("count")
                .get("n")
        };
        assert_eq!(idempotency_rows, 0, "{backend:?}");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_consents_name_the_field() {
    let t = start(Backend::Sqlite, 11).await;
    let mut social = t.social().await;
    let mut bad = consent(
        &t.clock,
        &[v1::Purpose::Referral],
        &[v1::Institution::Emploi],
    );
    bad.purposes = vec![42];
    let status = social
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: "c1".into(),
            consent: Some(bad),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("consent.purposes[0]:"),
        "{}",
        status.message()
    );

    let mut bad = consent(
        &t.clock,
        &[v1::Purpose::Referral],
        &[v1::Institution::Emploi],
    );
    bad.categories.push(v1::DataCategory::LocalOnly as i32);
    let status = social
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: "c2".into(),
            consent: Some(bad),
        }))
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("consent.categories:"),
        "{}",
        status.message()
    );

    let mut bad = consent(
        &t.clock,
        &[v1::Purpose::Referral],
        &[v1::Institution::Emploi],
    );
    bad.evidence.as_mut().expect("evidence").document_sha256 = "abc".into();
    let status = social
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: "c3".into(),
            consent: Some(bad),
        }))
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .starts_with("consent.evidence.document_sha256:"),
        "{}",
        status.message()
    );
    assert!(
        t.store(Institution::Social)
            .await
            .pending_outbox(10)
            .await
            .expect("outbox")
            .is_empty()
    );
    t.shutdown().await;
}
