//! Consent is checked on every crossing whose legal basis is consent: at the
//! sender before anything is queued, at the relay before each delivery, and
//! at the receiver. Every refusal is audited.

use passerelle_boundary::Decision;
use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

async fn denials(t: &TestStack, institution: Institution, case_id: &str) -> Vec<String> {
    t.audit_entries(institution)
        .await
        .into_iter()
        .filter(|e| e.decision == Decision::Denied && e.case_id.as_deref() == Some(case_id))
        .filter_map(|e| e.reason)
        .collect()
}

async fn consent_known_at_emploi(
    t: &TestStack,
    case_id: &str,
    state: passerelle_domain::ConsentState,
) {
    let store = t.store(Institution::Emploi).await;
    eventually("consent copy at emploi", async || {
        store
            .consents_for_case(case_id)
            .await
            .expect("consents")
            .iter()
            .any(|c| c.state == state)
    })
    .await;
}

#[tokio::test]
async fn a_crossing_without_consent_is_denied_and_audited() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = "0193b2c4-0000-7000-8000-00000000c0de";
        let status = t
            .emploi()
            .await
            .receive_referral(t.direct_referral(case_id, "0193b2c4-0000-7000-8000-00000000c0df"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend:?}");
        assert_eq!(
            denials(&t, Institution::Emploi, case_id).await,
            vec!["no consent covers this case"]
        );
        assert!(
            t.store(Institution::Emploi)
                .await
                .referral(case_id)
                .await
                .expect("read")
                .is_none()
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn consent_for_another_purpose_is_denied_on_both_sides() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // The person agreed to global support, not to being referred.
        let consent = t
            .social_consent("c-other-purpose", &[v1::Purpose::GlobalSupport])
            .await;
        consent_known_at_emploi(&t, &consent.case_id, passerelle_domain::ConsentState::Given).await;

        // Sender side: nothing is queued.
        let status = t
            .social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "r-other-purpose".into(),
                referral: Some(referral(&consent.case_id, &consent.consent_id, "Gwenola")),
                local_note: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("purpose referral"),
            "{}",
            status.message()
        );
        assert_eq!(
            denials(&t, Institution::Social, &consent.case_id)
                .await
                .len(),
            1
        );
        assert!(
            t.store(Institution::Social)
                .await
                .referral(&consent.case_id)
                .await
                .expect("read")
                .is_none()
        );

        // Receiver side: a push that bypasses the sender is refused too.
        let status = t
            .emploi()
            .await
            .receive_referral(t.direct_referral(&consent.case_id, &consent.consent_id))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend:?}");
        assert_eq!(
            denials(&t, Institution::Emploi, &consent.case_id).await,
            vec!["the consent does not cover the purpose referral"]
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn withdrawal_takes_effect_on_the_next_call_and_travels() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social_consent(
                "c-withdraw",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let mut social = t.social().await;
        social
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "r-withdraw".into(),
                referral: Some(referral(&consent.case_id, &consent.consent_id, "Gwenola")),
                local_note: String::new(),
            }))
            .await
            .expect("referral");
        let emploi_store = t.store(Institution::Emploi).await;
        referral_held(&emploi_store, &consent.case_id).await;

        let withdrawn = social
            .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
                idempotency_key: "w-1".into(),
                consent_id: consent.consent_id.clone(),
            }))
            .await
            .expect("withdrawn")
            .into_inner()
            .consent
            .expect("consent");
        assert_eq!(withdrawn.state, v1::ConsentState::Withdrawn as i32);

        // The very next call that would carry data to the partner is refused.
        let status = social
            .record_diagnosis(t.as_social_worker(v1::RecordDiagnosisRequest {
                idempotency_key: "d-after-withdrawal".into(),
                half: Some(v1::DiagnosisHalf {
                    case_id: consent.case_id.clone(),
                    verdict: v1::Verdict::Agree as i32,
                    ..Default::default()
                }),
                local_note: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "the consent was withdrawn");

        // The withdrawal reaches the employment side, which refuses from then on.
        consent_known_at_emploi(
            &t,
            &consent.case_id,
            passerelle_domain::ConsentState::Withdrawn,
        )
        .await;
        let half = v1::DiagnosisHalf {
            case_id: consent.case_id.clone(),
            author_institution: v1::Institution::Social as i32,
            author: "sw-rennes-1".into(),
            verdict: v1::Verdict::Agree as i32,
            recorded_at: Some(timestamp(t0())),
            barriers: vec![],
        };
        let status = t
            .emploi()
            .await
            .receive_diagnosis(t.as_service(
                Institution::Social,
                Institution::Emploi,
                v1::ReceiveDiagnosisRequest {
                    idempotency_key: "d-direct".into(),
                    case_id: consent.case_id.clone(),
                    half: Some(half),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend:?}");
        assert!(
            denials(&t, Institution::Emploi, &consent.case_id)
                .await
                .contains(&"the consent was withdrawn".to_owned())
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_withdrawal_stops_what_was_queued_before_it() {
    let t = start(Backend::Sqlite, 11).await;
    let consent = t.social_consent("c-queued", &[v1::Purpose::Referral]).await;
    t.stack
        .stop(Institution::Emploi)
        .await
        .expect("stop emploi");
    let mut social = t.social().await;
    social
        .create_referral(t.as_social_worker(v1::CreateReferralRequest {
            idempotency_key: "r-queued".into(),
            referral: Some(referral(&consent.case_id, &consent.consent_id, "Gwenola")),
            local_note: String::new(),
        }))
        .await
        .expect("queued while emploi is down");
    social
        .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
            idempotency_key: "w-q".into(),
            consent_id: consent.consent_id.clone(),
        }))
        .await
        .expect("withdrawn");
    t.stack
        .restart(Institution::Emploi)
        .await
        .expect("restart emploi");
    t.wait_ready().await;

    // The withdrawal arrives; the referral queued before it never does.
    consent_known_at_emploi(
        &t,
        &consent.case_id,
        passerelle_domain::ConsentState::Withdrawn,
    )
    .await;
    let social_store = t.store(Institution::Social).await;
    eventually("outbox settled", async || {
        social_store.outbox_depth().await.expect("depth").pending == 0
    })
    .await;
    assert!(
        t.store(Institution::Emploi)
            .await
            .referral(&consent.case_id)
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(
        social_store.outbox_depth().await.expect("depth").abandoned,
        1
    );
    assert!(
        denials(&t, Institution::Social, &consent.case_id)
            .await
            .contains(&"the consent was withdrawn".to_owned())
    );
    // Recorded under the RPC the referral was to go through, like deliveries.
    let entries = social_store.audit().entries().await.expect("audit");
    let refused = entries
        .iter()
        .find(|e| {
            e.decision == Decision::Denied && e.case_id.as_deref() == Some(consent.case_id.as_str())
        })
        .expect("denial");
    assert_eq!(
        refused.method,
        "/passerelle.v1.EmploiService/ReceiveReferral"
    );
    t.shutdown().await;
}

/// The audit records of `case_id` at `institution` made through `rpc`.
async fn crossings_through(
    t: &TestStack,
    institution: Institution,
    case_id: &str,
    rpc: &str,
) -> Vec<passerelle_boundary::AuditEntry> {
    t.audit_entries(institution)
        .await
        .into_iter()
        .filter(|e| e.case_id.as_deref() == Some(case_id) && e.method.ends_with(rpc))
        .collect()
}

#[tokio::test]
async fn a_withdrawal_ends_the_case_on_both_sides() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("end").await;
        let view = t.case_at_social(&case_id).await.expect("case at social");
        let consent_id = view.consents[0].consent_id.clone();
        t.social()
            .await
            .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
                idempotency_key: "w-end".into(),
                consent_id,
            }))
            .await
            .expect("withdrawn");

        let exited_withdrawn = |c: Option<v1::Case>| {
            c.is_some_and(|c| {
                c.state == v1::CaseState::Exited as i32
                    && c.exit_reason == v1::ExitReason::ConsentWithdrawn as i32
            })
        };
        // At once where it was withdrawn, through the outbox at the partner,
        // although no consent covers the case any more.
        let here = t.case_at_social(&case_id).await.and_then(|a| a.case);
        assert!(exited_withdrawn(here), "{backend:?}");
        eventually("the case ended at emploi", async || {
            exited_withdrawn(t.case_at_emploi(&case_id).await.and_then(|a| a.case))
        })
        .await;

        // The sender records its crossing with the delivery's bookkeeping,
        // once the partner has answered: after the partner's change is seen.
        let social_store = t.store(Institution::Social).await;
        eventually("outbox settled", async || {
            social_store.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        // A crossing of its own: legal obligation, the case and codes only.
        let sent =
            crossings_through(&t, Institution::Social, &case_id, "ReceiveEndOfProcessing").await;
        let received =
            crossings_through(&t, Institution::Emploi, &case_id, "ReceiveEndOfProcessing").await;
        for entries in [&sent, &received] {
            assert_eq!(entries.len(), 1, "{backend:?}: {entries:?}");
            let e = &entries[0];
            assert_eq!(e.decision, Decision::Allowed);
            assert_eq!(
                e.purpose,
                Some(passerelle_domain::Purpose::RightsNotification)
            );
            assert_eq!(
                e.legal_basis,
                Some(passerelle_domain::LegalBasis::LegalObligation)
            );
            assert!(e.categories.iter().all(|c| matches!(
                c,
                passerelle_domain::DataCategory::Public | passerelle_domain::DataCategory::Case
            )));
        }
        assert_eq!(
            social_store.outbox_depth().await.expect("depth").abandoned,
            0
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_withdrawal_before_the_decision_withdraws_the_referral_at_the_partner() {
    let t = start(Backend::Sqlite, 11).await;
    let consent = t
        .social_consent("c-pending", &[v1::Purpose::Referral])
        .await;
    t.social_referral("r-pending", &consent, "Gwenola")
        .await
        .expect("referral");
    eventually("referral at emploi", async || {
        t.case_at_emploi(&consent.case_id).await.is_some()
    })
    .await;
    t.social()
        .await
        .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
            idempotency_key: "w-pending".into(),
            consent_id: consent.consent_id.clone(),
        }))
        .await
        .expect("withdrawn");
    eventually("the referral withdrawn at emploi", async || {
        t.case_at_emploi(&consent.case_id)
            .await
            .and_then(|a| a.case)
            .is_some_and(|c| {
                c.state == v1::CaseState::NotEntered as i32
                    && c.referral_state == v1::ReferralState::Withdrawn as i32
            })
    })
    .await;
    // Nothing is left for the receiving office to decide, nor to tell.
    let status = t
        .emploi()
        .await
        .decide_referral(t.as_counsellor(v1::DecideReferralRequest {
            idempotency_key: "too-late".into(),
            case_id: consent.case_id.clone(),
            decision: v1::ReferralState::Accepted as i32,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "the consent was withdrawn");
    t.shutdown().await;
}

#[tokio::test]
async fn a_case_the_partner_never_heard_of_gets_no_end_notice() {
    let t = start(Backend::Sqlite, 11).await;
    // The consent only: no referral, so nothing of the case reached emploi.
    let consent = t.social_consent("c-alone", &[v1::Purpose::Referral]).await;
    t.stack
        .stop(Institution::Emploi)
        .await
        .expect("stop emploi");
    t.social()
        .await
        .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
            idempotency_key: "w-alone".into(),
            consent_id: consent.consent_id.clone(),
        }))
        .await
        .expect("withdrawn");
    let queued: Vec<String> = t
        .store(Institution::Social)
        .await
        .pending_outbox(100)
        .await
        .expect("outbox")
        .into_iter()
        .map(|m| m.message.kind().to_owned())
        .collect();
    // The consent record itself travels (its copy was shared); no end notice.
    assert!(
        !queued.iter().any(|k| k == "end_of_processing"),
        "{queued:?}"
    );
    t.shutdown().await;
}
