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
        let idempotency_rows: i64 = passerelle_storage::testing::count(
            store.database(),
            "SELECT COUNT(*) AS n FROM idempotency WHERE method LIKE '%CreateReferral %'",
        )
        .await
        .expect("count");
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

/// Found by an outside tester: a consent already expired when recorded, a
/// `valid_until` beyond the protobuf Timestamp range, birth dates in year 0
/// or 2990, the month `-001-01` and the years -5 and 0 were accepted. Each
/// date or instant is now checked against what makes sense for its field.
#[tokio::test]
async fn dates_and_instants_out_of_their_fields_range_are_refused_by_name() {
    on_every_backend(async |backend| {
        let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
        let mut social = t.social().await;
        let record = |key: &str, c: v1::ConsentRecord| {
            t.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: key.into(),
                consent: Some(c),
            })
        };
        let fresh = || {
            consent(
                &t.clock,
                &[v1::Purpose::Referral],
                &[v1::Institution::Emploi],
            )
        };
        let mut expired = fresh();
        let now = expired.valid_from.expect("from");
        expired.valid_from = Some(prost_types::Timestamp {
            seconds: now.seconds - 86_400 * 30,
            nanos: 0,
        });
        expired.valid_until = Some(prost_types::Timestamp {
            seconds: now.seconds - 86_400,
            nanos: 0,
        });
        let mut beyond = fresh();
        beyond.valid_until = Some(prost_types::Timestamp {
            seconds: i64::MAX / 2,
            nanos: 0,
        });
        let mut year_9999 = fresh();
        year_9999.valid_until = Some(prost_types::Timestamp {
            seconds: 253_402_300_799,
            nanos: 0,
        });
        for (i, (what, bad)) in [
            ("already expired", expired),
            ("beyond the Timestamp range", beyond),
            ("in the year 9999", year_9999),
        ]
        .into_iter()
        .enumerate()
        {
            let status = social
                .record_consent(record(&format!("bad-consent-{i}"), bad))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{what}");
            assert!(
                status.message().starts_with("consent.valid_until:"),
                "{what}: {}",
                status.message()
            );
        }

        let consent = social
            .record_consent(record("good-consent", fresh()))
            .await
            .expect("consent")
            .into_inner()
            .consent
            .expect("consent");
        for (i, birth) in ["0000-05-17", "2990-05-17", "2099-05-17"]
            .iter()
            .enumerate()
        {
            let mut r = t.referral(&consent.case_id, &consent.consent_id, "Maëlle");
            r.person.as_mut().expect("person").birth_date = (*birth).into();
            let status = social
                .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                    idempotency_key: format!("bad-birth-{i}"),
                    referral: Some(r),
                    local_note: String::new(),
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{birth}");
            assert!(
                status.message().starts_with("referral.person.birth_date:"),
                "{birth}: {}",
                status.message()
            );
        }
        // Nothing crossed to the partner for them.
        assert!(
            t.store(Institution::Emploi)
                .await
                .referral(&consent.case_id)
                .await
                .expect("read")
                .is_none()
        );

        let coordinator = |m| {
            t.as_agent(
                Institution::Social,
                passerelle_domain::Role::Coordinator,
                "coord-mds-01",
                Institution::Social,
                m,
            )
        };
        for year in [-5, 0, 2101] {
            let status = social
                .set_office_quota(coordinator(v1::SetOfficeQuotaRequest {
                    idempotency_key: format!("quota-{year}"),
                    office_code: "MDS-01".into(),
                    year,
                    quota: 30,
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{year}");
            assert!(
                status.message().starts_with("year:"),
                "{}",
                status.message()
            );
        }

        let status = t
            .emploi()
            .await
            .publish_rsa_jobseeker_list(t.as_agent(
                Institution::Emploi,
                passerelle_domain::Role::Coordinator,
                "ft-coord-1",
                Institution::Emploi,
                v1::PublishRsaJobseekerListRequest {
                    idempotency_key: "month-1".into(),
                    month: "-001-01".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("month:"),
            "{}",
            status.message()
        );
        t.shutdown().await;
    })
    .await;
}

/// Found by an outside tester: a message that does not decode (invalid UTF-8
/// in a string, a truncated body) answered INTERNAL with the decoder's
/// internals. It is the client's error: INVALID_ARGUMENT, in a sentence.
#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument_in_plain_words() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let bodies: [(&str, Vec<u8>); 3] = [
            // case_id (field 1, a string) holding bytes that are not UTF-8.
            ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
            // A string announced 10 bytes long that stops after 2.
            ("truncated", vec![0x0a, 0x0a, b'a', b'b']),
            // A tag with wire type 7, which does not exist.
            ("unknown wire type", vec![0x0f, 0x00]),
        ];
        for (what, body) in bodies {
            let mut grpc = tonic::client::Grpc::new(t.channel(Institution::Social).await);
            grpc.ready().await.expect("ready");
            let request = t.as_social_worker(body);
            let path = http::uri::PathAndQuery::from_static("/passerelle.v1.SocialService/GetCase");
            let status = grpc.unary(request, path, RawCodec).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert!(
                !status.message().contains("Protobuf") && !status.message().contains("DecodeError"),
                "{what}: {}",
                status.message()
            );
        }
        t.shutdown().await;
    })
    .await;
}
