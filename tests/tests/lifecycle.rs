//! The life of a case under both agreements, over real gRPC on the injected
//! clock: the referral's decision and expiry, pre-referral checks and
//! delegated associations, entry evidence and referent, capacity, missed
//! appointments, end of term, follow-up after a job, exclusive social support
//! (axe 3), plans, and diagnoses awaiting validation.

use chrono::{DateTime, Duration, Months, Utc};
use passerelle_domain::{CaseState, Clock, DataCategory, Institution, Pair, Track};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

const AGREEMENTS: [&str; 2] = ["ille-et-vilaine-2023", "seine-et-marne-2020"];

fn at(ts: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.expect("timestamp");
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("valid")
}

/// A social referral the employment side received and has not decided on.
async fn pending_referral(t: &TestStack, label: &str) -> String {
    let consent = t
        .social_consent(
            &format!("{label}-consent"),
            &[
                v1::Purpose::Referral,
                v1::Purpose::GlobalSupport,
                v1::Purpose::ExclusiveSocialSupport,
            ],
        )
        .await;
    let referral = t
        .social_referral(&format!("{label}-referral"), &consent, "Awa")
        .await
        .expect("referral");
    eventually("the referral at emploi", async || {
        t.case_at_emploi(&referral.case_id).await.is_some()
    })
    .await;
    referral.case_id
}

fn decision(
    t: &TestStack,
    key: &str,
    case_id: &str,
    state: v1::ReferralState,
    reason: &str,
) -> tonic::Request<v1::DecideReferralRequest> {
    t.as_counsellor(v1::DecideReferralRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        decision: state as i32,
        refusal_reason: reason.into(),
        local_note: String::new(),
    })
}

async fn social_half(t: &TestStack, key: &str, case_id: &str) {
    t.social()
        .await
        .record_diagnosis(t.as_social_worker(v1::RecordDiagnosisRequest {
            idempotency_key: key.into(),
            half: Some(v1::DiagnosisHalf {
                case_id: case_id.into(),
                verdict: v1::Verdict::Agree as i32,
                ..Default::default()
            }),
            local_note: String::new(),
        }))
        .await
        .expect("social half");
}

async fn emploi_half(t: &TestStack, key: &str, case_id: &str) -> Result<(), tonic::Status> {
    t.emploi()
        .await
        .record_diagnosis(t.as_counsellor(v1::RecordDiagnosisRequest {
            idempotency_key: key.into(),
            half: Some(v1::DiagnosisHalf {
                case_id: case_id.into(),
                verdict: v1::Verdict::Agree as i32,
                ..Default::default()
            }),
            local_note: String::new(),
        }))
        .await
        .map(|_| ())
}

/// Referred, accepted, diagnosed by both: ready to sign.
async fn diagnosed(t: &TestStack, label: &str) -> String {
    let case_id = pending_referral(t, label).await;
    t.accept_at_emploi(&case_id).await;
    social_half(t, &format!("{label}-ds"), &case_id).await;
    emploi_half(t, &format!("{label}-de"), &case_id)
        .await
        .expect("employment half");
    eventually("diagnosed at emploi", async || {
        state_at_emploi(t, &case_id).await == v1::CaseState::Diagnosed as i32
    })
    .await;
    case_id
}

async fn state_at_emploi(t: &TestStack, case_id: &str) -> i32 {
    t.case_at_emploi(case_id)
        .await
        .and_then(|a| a.case)
        .map(|c| c.state)
        .unwrap_or_default()
}

async fn case_at_social(t: &TestStack, case_id: &str) -> v1::Case {
    t.case_at_social(case_id)
        .await
        .and_then(|a| a.case)
        .expect("case at social")
}

fn sign(
    t: &TestStack,
    key: &str,
    case_id: &str,
    entry: v1::CaseEntry,
) -> tonic::Request<v1::SignContractRequest> {
    t.as_counsellor(v1::SignContractRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        entry: Some(entry),
        participant: None,
    })
}

fn count(cells: &[v1::Cell], key: &str) -> u64 {
    cells
        .iter()
        .find(|c| c.key == key)
        .map(|c| c.count)
        .unwrap_or_default()
}

const REFUSAL_NOTE: &str = "Refus motivé : suivi psychiatrique en cours (note interne)";

#[tokio::test]
async fn a_referral_is_accepted_or_refused_with_a_reason_of_the_agreement() {
    on_every_backend(|backend| async move {
        for agreement in AGREEMENTS {
            let t = start_under(backend, 1, false, agreement).await;
            let mut emploi = t.emploi().await;
            let case_id = pending_referral(&t, "refused").await;

            let early = emploi_half(&t, "early", &case_id)
                .await
                .expect_err("pending");
            assert_eq!(early.code(), Code::FailedPrecondition, "{agreement}");

            // A reason from the other agreement's list is not a reason here.
            let foreign = if agreement == AGREEMENTS[0] {
                "criteria_not_met"
            } else {
                "preconditions_not_met"
            };
            let status = emploi
                .decide_referral(decision(
                    &t,
                    "d0",
                    &case_id,
                    v1::ReferralState::Refused,
                    foreign,
                ))
                .await
                .expect_err("unknown reason");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains("refusal_reason"), "{status:?}");
            let missing = emploi
                .decide_referral(decision(&t, "d1", &case_id, v1::ReferralState::Refused, ""))
                .await
                .expect_err("no reason");
            assert_eq!(missing.code(), Code::InvalidArgument);

            let reason = t.agreement.referral.refusal_reasons[1].code.clone();
            let mut refusal = decision(&t, "d2", &case_id, v1::ReferralState::Refused, &reason);
            refusal.get_mut().local_note = REFUSAL_NOTE.into();
            let refused = emploi
                .decide_referral(refusal)
                .await
                .expect("refused")
                .into_inner()
                .case
                .expect("case");
            assert_eq!(refused.state, v1::CaseState::NotEntered as i32);
            assert_eq!(refused.referral_state, v1::ReferralState::Refused as i32);
            let again = emploi
                .decide_referral(decision(
                    &t,
                    "d3",
                    &case_id,
                    v1::ReferralState::Accepted,
                    "",
                ))
                .await
                .expect_err("decided already");
            assert_eq!(again.code(), Code::FailedPrecondition);

            // The referrer is told, with the reason; it cannot decide itself.
            eventually("the refusal at social", async || {
                case_at_social(&t, &case_id).await.referral_state
                    == v1::ReferralState::Refused as i32
            })
            .await;
            let at_social = case_at_social(&t, &case_id).await;
            assert_eq!(at_social.refusal_reason, reason);
            assert_eq!(at_social.state, v1::CaseState::NotEntered as i32);
            let own = t
                .social()
                .await
                .decide_referral(t.as_social_worker(v1::DecideReferralRequest {
                    idempotency_key: "own".into(),
                    case_id: case_id.clone(),
                    decision: v1::ReferralState::Accepted as i32,
                    ..Default::default()
                }))
                .await
                .expect_err("the sender does not decide");
            assert_eq!(own.code(), Code::FailedPrecondition);

            // The reason code crosses; the counsellor's words stay at emploi.
            let social_text = all_text(&t.database_url(Institution::Social)).await;
            assert!(!social_text.iter().any(|(_, v)| v.contains(REFUSAL_NOTE)));
            let emploi_text = all_text(&t.database_url(Institution::Emploi)).await;
            assert!(emploi_text.iter().any(|(_, v)| v.contains(REFUSAL_NOTE)));

            let d = t.dashboard().await;
            assert_eq!(count(&d.referral_outcomes, "refused"), 1, "{agreement}");
            assert_eq!(count(&d.refusals_by_reason, &reason), 1, "{agreement}");
            t.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_pending_referral_is_reminded_then_expires_after_the_agreements_delay() {
    on_every_backend(|backend| async move {
        for (agreement, days, reminders) in [
            ("ille-et-vilaine-2023", 45, [15, 5]),
            ("seine-et-marne-2020", 30, [10, 3]),
        ] {
            let t = start_under(backend, 1, false, agreement).await;
            let referred_at = t.clock.now();
            let case_id = pending_referral(&t, "pending").await;
            let expires = referred_at + Duration::days(days);
            let office = t.referral("x", "y", "z").office_code;
            let list = async |within: u32| {
                t.emploi()
                    .await
                    .list_due(t.as_counsellor(v1::ListDueRequest {
                        within_days: within,
                        office_code: office.clone(),
                    }))
                    .await
                    .expect("due")
                    .into_inner()
                    .items
            };
            let items = list(days as u32 + 1).await;
            let expected = vec![
                (
                    v1::DueKind::ReferralReminder as i32,
                    expires - Duration::days(reminders[0]),
                ),
                (
                    v1::DueKind::ReferralReminder as i32,
                    expires - Duration::days(reminders[1]),
                ),
                (v1::DueKind::ReferralExpiry as i32, expires),
            ];
            assert_eq!(
                items
                    .iter()
                    .map(|i| (i.kind, at(i.due_at)))
                    .collect::<Vec<_>>(),
                expected,
                "{agreement}"
            );
            assert!(items.iter().all(|i| i.case_id == case_id));

            // The day before, it is still pending; at the deadline it expires,
            // and the referrer is told.
            t.clock.set(expires - Duration::hours(1));
            // Several deadline passes run (every 100 ms in tests) before we look.
            tokio::time::sleep(std::time::Duration::from_millis(350)).await;
            let unknown = t
                .emploi()
                .await
                .list_due(t.as_counsellor(v1::ListDueRequest {
                    within_days: 1,
                    office_code: "NOT-AN-OFFICE".into(),
                }))
                .await
                .expect_err("unknown office");
            assert_eq!(unknown.code(), Code::InvalidArgument);
            assert_eq!(
                t.case_at_emploi(&case_id)
                    .await
                    .and_then(|a| a.case)
                    .map(|c| c.referral_state),
                Some(v1::ReferralState::Pending as i32)
            );
            t.clock.set(expires);
            eventually("expired at social", async || {
                case_at_social(&t, &case_id).await.referral_state
                    == v1::ReferralState::Expired as i32
            })
            .await;
            let at_emploi = t
                .case_at_emploi(&case_id)
                .await
                .and_then(|a| a.case)
                .expect("case");
            assert_eq!(at_emploi.state, v1::CaseState::NotEntered as i32);
            assert!(list(30).await.is_empty(), "nothing left to remind");
            t.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn preconditions_block_criteria_inform_and_only_approved_associations_refer() {
    on_every_backend(|backend| async move {
        // Ille-et-Vilaine: every precondition must hold before the referral.
        let t = start_under(backend, 11, false, "ille-et-vilaine-2023").await;
        let consent = t.social_consent("c-pre", &[v1::Purpose::Referral]).await;
        let mut r = t.referral(&consent.case_id, &consent.consent_id, "Lou");
        r.checks[1].met = false;
        let status = t
            .social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "pre".into(),
                referral: Some(r.clone()),
                local_note: String::new(),
            }))
            .await
            .expect_err("precondition not met");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("wants_to_work"), "{status:?}");
        assert!(
            t.case_at_social(&consent.case_id).await.is_none(),
            "nothing written"
        );
        r.checks[1].met = true;
        r.checks[0].code = "needs_coordinated_support".into();
        let status = t
            .social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "pre-2".into(),
                referral: Some(r),
                local_note: String::new(),
            }))
            .await
            .expect_err("not a check of this agreement");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("referral.checks[0].code"),
            "{status:?}"
        );
        let association = t
            .stack
            .association_token("asso-worker-1", "asll-77")
            .expect("token");
        let status = t
            .social()
            .await
            .record_consent(with_token(
                v1::RecordConsentRequest {
                    idempotency_key: "asso-c".into(),
                    consent: Some(consent_fixture(&t)),
                },
                &association,
            ))
            .await;
        let consent = status
            .expect("an association worker collects consent")
            .into_inner()
            .consent
            .expect("consent");
        let status = t
            .social()
            .await
            .create_referral(with_token(
                v1::CreateReferralRequest {
                    idempotency_key: "asso-r".into(),
                    referral: Some(t.referral(&consent.case_id, &consent.consent_id, "Lou")),
                    local_note: String::new(),
                },
                &association,
            ))
            .await
            .expect_err("no approved association in Ille-et-Vilaine");
        assert_eq!(status.code(), Code::PermissionDenied);
        t.shutdown().await;

        // Seine-et-Marne: a criterion not met is recorded, and the ASLL
        // association refers under the Département's delegation.
        let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
        let consent = t.social_consent("c-crit", &[v1::Purpose::Referral]).await;
        let mut r = t.referral(&consent.case_id, &consent.consent_id, "Lou");
        r.checks[0].met = false;
        t.social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "crit".into(),
                referral: Some(r),
                local_note: String::new(),
            }))
            .await
            .expect("criteria inform, they do not block");
        eventually("the referral at emploi", async || {
            t.case_at_emploi(&consent.case_id).await.is_some()
        })
        .await;
        let received = t
            .case_at_emploi(&consent.case_id)
            .await
            .and_then(|a| a.referral)
            .expect("referral");
        assert_eq!(received.checks.len(), t.agreement.referral.checks.len());
        assert!(!received.checks[0].met && received.checks[1].met);

        for (association, expected) in [
            ("asll-77", None),
            ("asso-unknown", Some(Code::PermissionDenied)),
        ] {
            let token = t
                .stack
                .association_token("asso-worker-1", association)
                .expect("token");
            let consent = t
                .social()
                .await
                .record_consent(with_token(
                    v1::RecordConsentRequest {
                        idempotency_key: format!("asso-c-{association}"),
                        consent: Some(consent_fixture(&t)),
                    },
                    &token,
                ))
                .await
                .expect("consent")
                .into_inner()
                .consent
                .expect("consent");
            let mut referral = t.referral(&consent.case_id, &consent.consent_id, "Lou");
            referral.association_id = "forged-by-client".into();
            let answer = t
                .social()
                .await
                .create_referral(with_token(
                    v1::CreateReferralRequest {
                        idempotency_key: format!("asso-r-{association}"),
                        referral: Some(referral),
                        local_note: String::new(),
                    },
                    &token,
                ))
                .await;
            match expected {
                None => {
                    let referral = answer
                        .expect("referred")
                        .into_inner()
                        .referral
                        .expect("referral");
                    assert_eq!(
                        referral.association_id, "asll-77",
                        "from the token, not the request"
                    );
                    assert_eq!(referral.referring_network, v1::Network::Social as i32);
                    eventually("the delegated referral at emploi", async || {
                        t.case_at_emploi(&consent.case_id)
                            .await
                            .and_then(|a| a.referral)
                            .is_some_and(|r| r.association_id == "asll-77")
                    })
                    .await;
                }
                Some(code) => assert_eq!(answer.expect_err("refused").code(), code),
            }
            // An association worker reads no case.
            let read = t
                .social()
                .await
                .get_case(with_token(
                    v1::GetCaseRequest {
                        case_id: consent.case_id.clone(),
                    },
                    &token,
                ))
                .await
                .expect_err("not for associations");
            assert_eq!(read.code(), Code::PermissionDenied);
        }
        t.shutdown().await;
    })
    .await;
}

fn consent_fixture(t: &TestStack) -> v1::ConsentRecord {
    consent(
        &t.clock,
        &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
        &[v1::Institution::Emploi, v1::Institution::Social],
    )
}

#[tokio::test]
async fn entry_takes_the_agreements_evidence_and_names_its_referent() {
    on_every_backend(|backend| async move {
        for (agreement, other, referent) in [
            (
                "ille-et-vilaine-2023",
                "seine-et-marne-2020",
                v1::Referent::Counsellor,
            ),
            (
                "seine-et-marne-2020",
                "ille-et-vilaine-2023",
                v1::Referent::Pair,
            ),
        ] {
            let t = start_under(backend, 11, false, agreement).await;
            let case_id = diagnosed(&t, "evidence").await;
            let mut emploi = t.emploi().await;
            // The other agreement's evidence does not start a case here.
            let foreign = start_under(Backend::Sqlite, 11, false, other).await;
            let status = emploi
                .sign_contract(sign(&t, "s0", &case_id, foreign.entry("x")))
                .await
                .expect_err("wrong evidence");
            foreign.shutdown().await;
            assert_eq!(status.code(), Code::InvalidArgument, "{agreement}");
            assert!(status.message().contains("entry.evidence"), "{status:?}");
            let mut unregistered = t.entry("x");
            unregistered.pair.as_mut().expect("pair").counsellor = "ft-unknown".into();
            let status = emploi
                .sign_contract(sign(&t, "s1", &case_id, unregistered))
                .await
                .expect_err("not in the register");
            assert_eq!(status.code(), Code::FailedPrecondition);

            let case = emploi
                .sign_contract(sign(&t, "s2", &case_id, t.entry("contract")))
                .await
                .expect("signed")
                .into_inner()
                .case
                .expect("case");
            assert_eq!(case.state, v1::CaseState::Active as i32);
            assert_eq!(case.referent, referent as i32, "{agreement}");
            // The evidence is kept, as digests, with the case.
            let kinds: Vec<i32> = t
                .entry("contract")
                .evidence
                .iter()
                .map(|e| e.kind)
                .collect();
            assert_eq!(
                case.entry_evidence
                    .iter()
                    .map(|e| e.kind)
                    .collect::<Vec<_>>(),
                kinds
            );
            eventually("the entry at social", async || {
                case_at_social(&t, &case_id).await.referent == referent as i32
            })
            .await;
            t.shutdown().await;
        }
    })
    .await;
}

/// Active cases a counsellor already follows, written straight into the
/// employment side's store to set the scene.
async fn seed_portfolio(t: &TestStack, template_case: &str, counsellor: &str, n: usize) {
    let store = t.store(Institution::Emploi).await;
    let template = store
        .case(template_case)
        .await
        .expect("read")
        .expect("case");
    let mut tx = store.begin().await.expect("begin");
    for i in 0..n {
        let mut case = template.clone();
        case.case_id = format!("seed-{counsellor}-{i}").into();
        case.state = CaseState::Active;
        case.track = Track::Global;
        case.pair = Some(Pair {
            counsellor: counsellor.into(),
            social_worker: "sw-seed".into(),
        });
        tx.save_case(&case, Some(Institution::Emploi))
            .await
            .expect("seed");
    }
    tx.update_statistics().await.expect("counts");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_full_portfolio_refuses_in_one_agreement_and_queues_in_the_other() {
    on_every_backend(|backend| async move {
        // Ille-et-Vilaine: 100 at most whatever the working time; refused beyond.
        let t = start_under(backend, 1, false, "ille-et-vilaine-2023").await;
        t.register_counsellor("ft-part-time", 200).await;
        let case_id = diagnosed(&t, "full").await;
        seed_portfolio(&t, &case_id, "ft-part-time", 99).await;
        let mut entry = t.entry("c");
        entry.pair.as_mut().expect("pair").counsellor = "ft-part-time".into();
        t.emploi()
            .await
            .sign_contract(sign(&t, "s-100", &case_id, entry.clone()))
            .await
            .expect("the 100th fits, part time or not");
        let next = diagnosed(&t, "full-2").await;
        let status = t
            .emploi()
            .await
            .sign_contract(sign(&t, "s-101", &next, entry.clone()))
            .await
            .expect_err("the 101st is refused");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("100"), "{status:?}");
        assert_eq!(
            state_at_emploi(&t, &next).await,
            v1::CaseState::Diagnosed as i32
        );
        t.shutdown().await;

        // Seine-et-Marne: bounds by working-time share (20 % of 100 = 20); queued beyond.
        let t = start_under(backend, 1, false, "seine-et-marne-2020").await;
        t.register_counsellor("ft-part-time", 200).await;
        let first = diagnosed(&t, "q-1").await;
        seed_portfolio(&t, &first, "ft-part-time", 19).await;
        let mut entry = t.entry("c");
        entry.pair.as_mut().expect("pair").counsellor = "ft-part-time".into();
        t.emploi()
            .await
            .sign_contract(sign(&t, "q-s1", &first, entry.clone()))
            .await
            .expect("the 20th fits");
        let waiting = diagnosed(&t, "q-2").await;
        let queued = t
            .emploi()
            .await
            .sign_contract(sign(&t, "q-s2", &waiting, entry.clone()))
            .await
            .expect("queued, not refused")
            .into_inner()
            .case
            .expect("case");
        assert_eq!(queued.state, v1::CaseState::Queued as i32);
        eventually("queued at social", async || {
            case_at_social(&t, &waiting).await.state == v1::CaseState::Queued as i32
        })
        .await;
        assert_eq!(t.dashboard().await.queued.map(|c| c.count), Some(1));

        // A place frees: the person waiting enters, on that day.
        t.clock.advance(Duration::days(20));
        t.emploi()
            .await
            .exit_case(t.exit_request("q-exit", &first, v1::ExitReason::Training))
            .await
            .expect("exit");
        let entered = t
            .case_at_emploi(&waiting)
            .await
            .and_then(|a| a.case)
            .expect("case");
        assert_eq!(entered.state, v1::CaseState::Active as i32);
        assert_eq!(at(entered.entered_at), t.clock.now());
        eventually("entered at social", async || {
            case_at_social(&t, &waiting).await.state == v1::CaseState::Active as i32
        })
        .await;

        // A coordinator raising the working time lets the next ones in at once.
        let third = diagnosed(&t, "q-3").await;
        t.emploi()
            .await
            .sign_contract(sign(&t, "q-s3", &third, entry))
            .await
            .expect("queued");
        assert_eq!(
            state_at_emploi(&t, &third).await,
            v1::CaseState::Queued as i32
        );
        t.register_counsellor("ft-part-time", 500).await;
        assert_eq!(
            state_at_emploi(&t, &third).await,
            v1::CaseState::Active as i32
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn missed_appointments_and_the_end_of_term_close_a_case() {
    on_every_backend(|backend| async move {
        for (agreement, months) in [("ille-et-vilaine-2023", 9), ("seine-et-marne-2020", 6)] {
            let t = start_under(backend, 11, false, agreement).await;
            let threshold = t.agreement.exits.missed_appointments_threshold;
            let case_id = t.enter_case("missed").await;
            eventually("the entry at social", async || {
                case_at_social(&t, &case_id).await.state == v1::CaseState::Active as i32
            })
            .await;
            let mut social = t.social().await;
            for i in 1..=threshold {
                let case = social
                    .record_missed_appointment(t.as_social_worker(
                        v1::RecordMissedAppointmentRequest {
                            idempotency_key: format!("m-{i}"),
                            case_id: case_id.clone(),
                        },
                    ))
                    .await
                    .expect("recorded")
                    .into_inner()
                    .case
                    .expect("case");
                let expected = if i < threshold {
                    v1::CaseState::Active
                } else {
                    v1::CaseState::Exited
                };
                assert_eq!(case.state, expected as i32, "after {i} missed");
            }
            eventually("the implicit end at emploi", async || {
                t.case_at_emploi(&case_id)
                    .await
                    .and_then(|a| a.case)
                    .is_some_and(|c| {
                        c.exit_reason == v1::ExitReason::MissedAppointments as i32
                            && c.missed_appointments == threshold
                    })
            })
            .await;

            // No renewal: the period ends on its date, at both sides.
            let case_id = t.enter_case("term").await;
            let entered = t.clock.now();
            let ends = entered + Months::new(months);
            t.clock.set(ends - Duration::hours(1));
            tokio::time::sleep(std::time::Duration::from_millis(350)).await;
            assert_eq!(
                state_at_emploi(&t, &case_id).await,
                v1::CaseState::Active as i32
            );
            t.clock.set(ends + Duration::hours(1));
            eventually("end of term at social", async || {
                case_at_social(&t, &case_id).await.exit_reason == v1::ExitReason::EndOfTerm as i32
            })
            .await;
            let at_emploi = t
                .case_at_emploi(&case_id)
                .await
                .and_then(|a| a.case)
                .expect("case");
            assert_eq!(at(at_emploi.exited_at), ends, "{agreement}");
            t.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn seine_et_marne_follows_up_in_employment_after_a_job_exit() {
    on_every_backend(|backend| async move {
        for agreement in AGREEMENTS {
            let t = start_under(backend, 1, false, agreement).await;
            let case_id = t.enter_case("job").await;
            t.clock.advance(Duration::days(40));
            let exited_at = t.clock.now();
            let case = t
                .emploi()
                .await
                .exit_case(t.exit_request("job-exit", &case_id, v1::ExitReason::Job))
                .await
                .expect("exit")
                .into_inner()
                .case
                .expect("case");
            let follow_up = |in_employment: bool, key: &str| {
                t.as_counsellor(v1::RecordFollowUpRequest {
                    idempotency_key: key.into(),
                    case_id: case_id.clone(),
                    in_employment,
                })
            };
            if agreement == "ille-et-vilaine-2023" {
                assert_eq!(case.follow_up_due_at, None);
                let status = t
                    .emploi()
                    .await
                    .record_follow_up(follow_up(true, "f"))
                    .await
                    .expect_err("no follow-up here");
                assert_eq!(status.code(), Code::FailedPrecondition);
            } else {
                let due = exited_at + Months::new(6);
                assert_eq!(at(case.follow_up_due_at), due);
                let listed = t
                    .emploi()
                    .await
                    .list_due(t.as_counsellor(v1::ListDueRequest {
                        within_days: 200,
                        ..Default::default()
                    }))
                    .await
                    .expect("due")
                    .into_inner()
                    .items;
                assert_eq!(
                    listed
                        .iter()
                        .map(|i| (i.case_id.as_str(), i.kind, at(i.due_at)))
                        .collect::<Vec<_>>(),
                    vec![(case_id.as_str(), v1::DueKind::FollowUp as i32, due)]
                );
                t.emploi()
                    .await
                    .record_follow_up(follow_up(true, "f"))
                    .await
                    .expect("followed up");
                let status = t
                    .emploi()
                    .await
                    .record_follow_up(follow_up(false, "f2"))
                    .await
                    .expect_err("recorded already");
                assert_eq!(status.code(), Code::FailedPrecondition);
                let indicators = t
                    .emploi()
                    .await
                    .get_indicators(t.as_service(
                        Institution::Pilotage,
                        Institution::Emploi,
                        v1::GetIndicatorsRequest {},
                    ))
                    .await
                    .expect("indicators")
                    .into_inner()
                    .indicators
                    .expect("indicators");
                let found: i64 = indicators
                    .counts
                    .iter()
                    .filter(|c| c.measure == "follow_up" && c.key == "in_employment")
                    .map(|c| c.value)
                    .sum();
                assert_eq!(found, 1);
            }
            t.shutdown().await;
        }
    })
    .await;
}

fn evaluation(t: &TestStack) -> v1::ConsentEvidence {
    v1::ConsentEvidence {
        kind: v1::EvidenceKind::SignedReferralForm as i32,
        document_sha256: sha256_of("évaluation sociale"),
        signed_at: Some(timestamp(t.clock.now())),
        collected_by: "sw-rennes-1".into(),
    }
}

fn start_axe3(
    t: &TestStack,
    key: &str,
    case_id: &str,
) -> tonic::Request<v1::StartExclusiveSupportRequest> {
    t.as_social_worker(v1::StartExclusiveSupportRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        social_evaluation: Some(evaluation(t)),
    })
}

fn decide_axe3(
    t: &TestStack,
    key: &str,
    case_id: &str,
    outcome: v1::ExclusiveOutcome,
) -> tonic::Request<v1::DecideExclusiveSupportEndRequest> {
    t.as_social_worker(v1::DecideExclusiveSupportEndRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        outcome: outcome as i32,
    })
}

#[tokio::test]
async fn exclusive_social_support_suspends_the_employment_follow_up_within_quotas() {
    on_every_backend(|backend| async move {
        let t = start_under(backend, 11, false, "ille-et-vilaine-2023").await;
        let case_id = diagnosed(&t, "axe3-iev").await;
        let status = t
            .social()
            .await
            .start_exclusive_support(start_axe3(&t, "a", &case_id))
            .await
            .expect_err("no axe 3 rule in Ille-et-Vilaine");
        assert_eq!(status.code(), Code::FailedPrecondition);
        t.shutdown().await;

        let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
        let mut social = t.social().await;
        let case_id = pending_referral(&t, "axe3").await;
        t.accept_at_emploi(&case_id).await;
        social_half(&t, "axe3-ds", &case_id).await;
        let started_at = t.clock.now();
        let case = social
            .start_exclusive_support(start_axe3(&t, "start", &case_id))
            .await
            .expect("started")
            .into_inner()
            .case
            .expect("case");
        assert_eq!(case.track, v1::Track::SocialExclusive as i32);
        assert_eq!(
            case.entry_evidence
                .iter()
                .map(|e| e.document_sha256.as_str())
                .collect::<Vec<_>>(),
            vec![sha256_of("évaluation sociale").as_str()]
        );
        assert_eq!(at(case.ends_at), started_at + Months::new(6));

        // The employment side learns that its follow-up is suspended, until
        // when, and nothing of the person's situation.
        eventually("suspended at emploi", async || {
            t.case_at_emploi(&case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| c.track == v1::Track::SocialExclusive as i32)
        })
        .await;
        let at_emploi = t
            .case_at_emploi(&case_id)
            .await
            .and_then(|a| a.case)
            .expect("case");
        assert_eq!(at(at_emploi.ends_at), started_at + Months::new(6));
        let entries = t.audit_entries(Institution::Emploi).await;
        let received = entries
            .iter()
            .find(|e| e.method.ends_with("/ReceiveSuspensionNotice"))
            .expect("the crossing is audited");
        assert!(
            received.categories.iter().all(|c| matches!(
                c,
                DataCategory::Public | DataCategory::Identity | DataCategory::Case
            )),
            "{:?}",
            received.categories
        );

        // Six months renewable once, then the joint decision.
        t.clock.advance(Duration::days(170));
        social
            .decide_exclusive_support_end(decide_axe3(
                &t,
                "renew",
                &case_id,
                v1::ExclusiveOutcome::Renew,
            ))
            .await
            .expect("renewed once");
        eventually("renewal at emploi", async || {
            t.case_at_emploi(&case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| at(c.ends_at) == started_at + Months::new(12))
        })
        .await;
        let status = social
            .decide_exclusive_support_end(decide_axe3(
                &t,
                "renew-2",
                &case_id,
                v1::ExclusiveOutcome::Renew,
            ))
            .await
            .expect_err("renewable once");
        assert_eq!(status.code(), Code::FailedPrecondition);
        social
            .decide_exclusive_support_end(decide_axe3(
                &t,
                "return",
                &case_id,
                v1::ExclusiveOutcome::ReturnToEmploymentTrack,
            ))
            .await
            .expect("returns to the employment side");
        eventually("follow-up resumed at emploi", async || {
            t.case_at_emploi(&case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| c.exit_reason == v1::ExitReason::EmploymentTrack as i32)
        })
        .await;

        // 24 a year per MDS: the 25th is refused unless the office asked for more.
        let template = diagnosed(&t, "quota").await;
        eventually("diagnosed at social", async || {
            case_at_social(&t, &template).await.state == v1::CaseState::Diagnosed as i32
        })
        .await;
        let store = t.store(Institution::Social).await;
        let mut seeded = store.case(&template).await.expect("read").expect("case");
        let mut tx = store.begin().await.expect("begin");
        for i in 0..23 {
            seeded.case_id = format!("seed-axe3-{i}").into();
            seeded.exclusive_started_at = Some(t.clock.now() - Duration::days(1));
            tx.save_case(&seeded, None).await.expect("seed");
        }
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        let status = social
            .start_exclusive_support(start_axe3(&t, "q", &template))
            .await
            .expect_err("the 25th of the year");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("24"), "{status:?}");
        let raised = social
            .set_office_quota(t.as_agent(
                Institution::Social,
                passerelle_domain::Role::Coordinator,
                "coordination-mds",
                Institution::Social,
                v1::SetOfficeQuotaRequest {
                    idempotency_key: "raise".into(),
                    office_code: t.referral("x", "y", "z").office_code,
                    year: chrono::Datelike::year(&t.clock.now()),
                    quota: 30,
                },
            ))
            .await
            .expect("raised")
            .into_inner();
        assert_eq!((raised.quota, raised.used), (30, 24));
        social
            .start_exclusive_support(start_axe3(&t, "q2", &template))
            .await
            .expect("within the raised quota");
        // The quota's use, by office and year, for the committee.
        let indicators = social
            .get_indicators(t.as_service(
                Institution::Pilotage,
                Institution::Social,
                v1::GetIndicatorsRequest {},
            ))
            .await
            .expect("indicators")
            .into_inner()
            .indicators
            .expect("indicators");
        let year = chrono::Datelike::year(&t.clock.now()).to_string();
        let axe3: i64 = indicators
            .counts
            .iter()
            .filter(|c| c.measure == "exclusive_entries" && c.month.starts_with(&year))
            .map(|c| c.value)
            .sum();
        assert_eq!(axe3, 25);
        t.shutdown().await;
    })
    .await;
}

const PLAN_CANARY: &str = "Dossier FSL et rendez-vous CMP (titre confidentiel)";
const SENSITIVE_SERVICE: &str = "svc-csapa-rennes-consultations";

#[tokio::test]
async fn plans_stay_with_their_author_and_only_summaries_cross() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("plan").await;
        eventually("the entry at social", async || {
            case_at_social(&t, &case_id).await.state == v1::CaseState::Active as i32
        })
        .await;
        let plan = |kind: v1::PlanKind, theme: v1::Theme| v1::Plan {
            case_id: case_id.clone(),
            kind: kind as i32,
            themes: vec![v1::PlanTheme {
                theme: theme as i32,
                goals: vec![v1::PlanGoal {
                    title: PLAN_CANARY.into(),
                    actions: vec![
                        v1::PlanAction {
                            title: PLAN_CANARY.into(),
                            status: v1::ActionStatus::Done as i32,
                            // Pointed to a sensitive directory entry: stays here.
                            directory_service_id: SENSITIVE_SERVICE.into(),
                        },
                        v1::PlanAction {
                            title: "Deuxième action".into(),
                            status: v1::ActionStatus::InProgress as i32,
                            ..Default::default()
                        },
                    ],
                }],
            }],
            ..Default::default()
        };
        let mut social = t.social().await;
        let update = |key: &str, plan: v1::Plan| {
            t.as_social_worker(v1::UpdatePlanRequest {
                idempotency_key: key.into(),
                plan: Some(plan),
            })
        };
        let status = social
            .update_plan(update(
                "p0",
                plan(v1::PlanKind::Employment, v1::Theme::JobSearch),
            ))
            .await
            .expect_err("the employment plan is the counsellor's");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("plan.kind"), "{status:?}");
        let status = social
            .update_plan(update(
                "p1",
                plan(v1::PlanKind::Social, v1::Theme::JobSearch),
            ))
            .await
            .expect_err("not a social theme");
        assert!(
            status.message().contains("plan.themes[0].theme"),
            "{status:?}"
        );
        let summary = social
            .update_plan(update("p2", plan(v1::PlanKind::Social, v1::Theme::Housing)))
            .await
            .expect("plan kept")
            .into_inner()
            .summary
            .expect("summary");
        assert_eq!(
            summary.themes,
            vec![v1::ThemeSummary {
                theme: v1::Theme::Housing as i32,
                goals: 1,
                planned: 0,
                in_progress: 1,
                done: 1,
                abandoned: 0,
            }]
        );
        // The plan's actions are counted for the committee, by theme.
        let counts = social
            .get_indicators(t.as_service(
                Institution::Pilotage,
                Institution::Social,
                v1::GetIndicatorsRequest {},
            ))
            .await
            .expect("indicators")
            .into_inner()
            .indicators
            .expect("indicators")
            .counts;
        let actions: Vec<_> = counts
            .iter()
            .filter(|c| c.measure == "actions")
            .map(|c| (c.key.as_str(), c.value))
            .collect();
        assert_eq!(actions, vec![("logement-hebergement", 2)]);
        t.emploi()
            .await
            .update_plan(t.as_counsellor(v1::UpdatePlanRequest {
                idempotency_key: "pe".into(),
                plan: Some(plan(v1::PlanKind::Employment, v1::Theme::JobSearch)),
            }))
            .await
            .expect("employment plan");

        // Each side holds its own plan in full and both summaries.
        eventually("the social summary at emploi", async || {
            t.case_at_emploi(&case_id)
                .await
                .is_some_and(|a| a.plan_summaries.len() == 2)
        })
        .await;
        let at_emploi = t.case_at_emploi(&case_id).await.expect("case");
        assert_eq!(
            at_emploi.plan.map(|p| p.kind),
            Some(v1::PlanKind::Employment as i32)
        );
        assert!(at_emploi.plan_summaries.contains(&summary));
        eventually("the employment summary at social", async || {
            t.case_at_social(&case_id)
                .await
                .is_some_and(|a| a.plan_summaries.len() == 2)
        })
        .await;
        let emploi_text = all_text(&t.database_url(Institution::Emploi)).await;
        let social_text = all_text(&t.database_url(Institution::Social)).await;
        let holds = |text: &[(String, String)]| text.iter().any(|(_, v)| v.contains(PLAN_CANARY));
        assert!(
            holds(&social_text) && holds(&emploi_text),
            "each side's own plan is kept"
        );
        let leaked = |text: &[(String, String)], kind: &str| {
            text.iter().any(|(table, v)| {
                table.starts_with("plans.") && v.contains(PLAN_CANARY) && v.contains(kind)
            })
        };
        assert!(
            !leaked(&emploi_text, "\"social\""),
            "no social-plan title at emploi"
        );
        let pointed = |text: &[(String, String)], kind: &str| {
            text.iter().any(|(table, v)| {
                table.starts_with("plans.") && v.contains(SENSITIVE_SERVICE) && v.contains(kind)
            })
        };
        assert!(
            !pointed(&emploi_text, "\"social\""),
            "where the social worker sends the person stays with the social side"
        );
        assert!(pointed(&social_text, "\"social\""), "kept by its author");
        assert!(
            !leaked(&social_text, "\"employment\""),
            "no employment-plan title at social"
        );
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn diagnoses_awaiting_validation_are_listed_and_counted_under_the_prescriber_rule() {
    on_every_backend(|backend| async move {
        let t = start_under(backend, 1, false, "seine-et-marne-2020").await;
        let case_id = pending_referral(&t, "await").await;
        t.accept_at_emploi(&case_id).await;
        let since = t.clock.now();
        social_half(&t, "await-ds", &case_id).await;
        eventually("diagnosed at emploi on the prescriber's half", async || {
            state_at_emploi(&t, &case_id).await == v1::CaseState::Diagnosed as i32
        })
        .await;
        let office = t.referral("x", "y", "z").office_code;
        let list = async || {
            t.emploi()
                .await
                .list_due(t.as_counsellor(v1::ListDueRequest {
                    within_days: 1,
                    office_code: office.clone(),
                }))
                .await
                .expect("due")
                .into_inner()
                .items
        };
        let items = list().await;
        assert_eq!(
            items
                .iter()
                .map(|i| (i.case_id.as_str(), i.kind, at(i.due_at)))
                .collect::<Vec<_>>(),
            vec![(
                case_id.as_str(),
                v1::DueKind::DiagnosisValidation as i32,
                since
            )]
        );
        let d = t.dashboard().await;
        assert_eq!(count(&d.awaiting_validation_by_party, "emploi"), 1);
        assert_eq!(count(&d.awaiting_validation_by_party, "social"), 0);

        // The person enters all the same; the validation stays awaited until given.
        t.emploi()
            .await
            .sign_contract(sign(&t, "await-sign", &case_id, t.entry("c")))
            .await
            .expect("entered on the prescriber's detection");
        assert_eq!(list().await.len(), 1);
        emploi_half(&t, "await-de", &case_id)
            .await
            .expect("validated");
        assert!(list().await.is_empty());
        let d = t.dashboard().await;
        assert_eq!(count(&d.awaiting_validation_by_party, "emploi"), 0);
        t.shutdown().await;
    })
    .await;
}
