//! Rectification, erasure, restriction, objection and the retention purge,
//! over real gRPC on both backends: each change reaches exactly the
//! institutions the audit log shows received the data (GDPR art. 19), an
//! erased person leaves no value in either database while the committee's
//! figures stay as they were, a restricted case is only kept, and the
//! purge, run twice or interrupted, ends in the same state.

use passerelle_boundary::audit::{AuditEntry, Direction};
use passerelle_casework::rights::{PURGE_BATCH, purge};
use passerelle_domain::{Clock, Institution};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

/// The dashboard's figures, without when it was put together.
async fn figures(t: &TestStack) -> v1::Dashboard {
    let mut d = t.dashboard().await;
    // When it was put together is not a figure.
    d.assembled_at = None;
    for source in &mut d.sources {
        source.computed_at = None;
    }
    d
}

async fn outbound(
    t: &TestStack,
    institution: Institution,
    case_id: &str,
    rpc: &str,
) -> Vec<AuditEntry> {
    t.audit_entries(institution)
        .await
        .into_iter()
        .filter(|e| {
            e.direction == Direction::Outbound
                && e.case_id.as_deref() == Some(case_id)
                && e.method.ends_with(rpc)
        })
        .collect()
}

#[tokio::test]
async fn a_rectification_reaches_exactly_the_institutions_that_received_the_field() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // The person agreed to share their identity, not their contact.
        let mut record = consent(
            &t.clock,
            &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            &[v1::Institution::Emploi, v1::Institution::Social],
        );
        record
            .categories
            .retain(|c| *c != v1::DataCategory::Contact as i32);
        let consent = t
            .social()
            .await
            .record_consent(t.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: "c-rectify".into(),
                consent: Some(record),
            }))
            .await
            .expect("consent")
            .into_inner()
            .consent
            .expect("consent");
        t.social_referral("r-rectify", &consent, "Gwenola")
            .await
            .expect("referral");
        let case_id = consent.case_id.clone();
        eventually("the referral at emploi", async || {
            t.case_at_emploi(&case_id).await.is_some()
        })
        .await;
        let at_emploi = t.store(Institution::Emploi).await;
        let copy = at_emploi
            .referral(&case_id)
            .await
            .expect("read")
            .expect("copy");
        assert_eq!(copy.contact.email, None, "the contact never crossed");

        let rectify =
            |key: &str, person: Option<v1::PersonIdentity>, contact: Option<v1::Contact>| {
                t.as_dpo(
                    Institution::Social,
                    v1::RectifySubjectDataRequest {
                        idempotency_key: key.into(),
                        case_id: case_id.clone(),
                        person,
                        contact,
                    },
                )
            };
        let mut person = v1::PersonIdentity {
            first_name: "Gwenola".into(),
            last_name: "Le Bihan".into(),
            birth_date: "1986-11-02".into(),
            jobseeker_number: "4471234A".into(),
        };
        let contact = v1::Contact {
            phone: "06 12 34 56 78".into(),
            email: "g.lebihan@example.org".into(),
            postal_address: String::new(),
        };
        let answer = t
            .social()
            .await
            .rectify_subject_data(rectify(
                "fix-1",
                Some(person.clone()),
                Some(contact.clone()),
            ))
            .await
            .expect("rectified")
            .into_inner();
        assert_eq!(
            answer.rectified_fields,
            ["referral.person.last_name", "referral.contact.email"]
        );
        assert_eq!(answer.notified, [v1::Institution::Emploi as i32]);
        let here = t
            .store(Institution::Social)
            .await
            .referral(&case_id)
            .await
            .expect("read")
            .expect("referral");
        assert_eq!(here.person.last_name, "Le Bihan");
        assert_eq!(here.contact.email.as_deref(), Some("g.lebihan@example.org"));
        // The employment side corrects the name it received, and hears
        // nothing of an e-mail address it never had.
        eventually("the correction at emploi", async || {
            at_emploi
                .referral(&case_id)
                .await
                .expect("read")
                .is_some_and(|r| r.person.last_name == "Le Bihan")
        })
        .await;
        let copy = at_emploi
            .referral(&case_id)
            .await
            .expect("read")
            .expect("copy");
        assert_eq!(copy.contact.email, None, "{backend:?}");
        let notices = outbound(&t, Institution::Social, &case_id, "/ReceiveRightsNotice").await;
        assert_eq!(notices.len(), 1);
        assert!(
            notices[0]
                .fields
                .contains(&"notice.person.last_name".to_owned())
        );
        assert!(
            notices[0]
                .fields
                .iter()
                .all(|f| !f.starts_with("notice.contact")),
            "{:?}",
            notices[0].fields
        );

        // A field the partner never received: it is told nothing.
        let answer = t
            .social()
            .await
            .rectify_subject_data(rectify(
                "fix-2",
                None,
                Some(v1::Contact {
                    email: "gwenola@example.org".into(),
                    ..contact.clone()
                }),
            ))
            .await
            .expect("rectified")
            .into_inner();
        assert_eq!(answer.rectified_fields, ["referral.contact.email"]);
        assert!(answer.notified.is_empty());
        // The employment side never sent the referral: correcting its copy
        // tells the Département nothing.
        person.first_name = "Gwénola".into();
        let answer = t
            .emploi()
            .await
            .rectify_subject_data(t.as_dpo(
                Institution::Emploi,
                v1::RectifySubjectDataRequest {
                    idempotency_key: "fix-3".into(),
                    case_id: case_id.clone(),
                    person: Some(v1::PersonIdentity {
                        last_name: "Le Bihan".into(),
                        ..person.clone()
                    }),
                    contact: None,
                },
            ))
            .await
            .expect("rectified")
            .into_inner();
        assert_eq!(answer.rectified_fields, ["referral.person.first_name"]);
        assert!(answer.notified.is_empty());
        let social = t.store(Institution::Social).await;
        eventually("outbox settled", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        assert_eq!(
            outbound(&t, Institution::Social, &case_id, "/ReceiveRightsNotice")
                .await
                .len(),
            1
        );
        assert!(
            outbound(&t, Institution::Emploi, &case_id, "/ReceiveRightsNotice")
                .await
                .is_empty()
        );

        // Bad input is named, nothing changes.
        let status = t
            .social()
            .await
            .rectify_subject_data(rectify(
                "fix-bad",
                Some(v1::PersonIdentity {
                    birth_date: "1986-13-45".into(),
                    ..person.clone()
                }),
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("person.birth_date"), "{status:?}");
        t.assert_counts_equal_a_recount(Institution::Social).await;
        t.assert_counts_equal_a_recount(Institution::Emploi).await;
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_erased_person_leaves_no_value_in_either_database_and_the_figures_stay() {
    on_every_backend(async |backend| {
        let t = start(backend, 1).await;
        const CANARY: &str = "Canarinette";
        let case_id = t.enter_case_named("erase", CANARY).await;
        let other = t.enter_case("erase-other").await;
        // The canary in a local note at emploi too.
        t.emploi()
            .await
            .exit_case(t.as_counsellor(v1::ExitCaseRequest {
                idempotency_key: "erase-exit".into(),
                case_id: case_id.clone(),
                exit: Some(v1::CaseExit {
                    reason: v1::ExitReason::Job as i32,
                    exited_at: Some(timestamp(t.clock.now())),
                }),
                qualification_gained: true,
            }))
            .await
            .expect("exit");
        eventually("the exit at social", async || {
            t.case_at_social(&case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| c.state == v1::CaseState::Exited as i32)
        })
        .await;
        let social = t.store(Institution::Social).await;
        eventually("outbox settled", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        let leaks = async || {
            let mut found = vec![];
            for institution in [Institution::Emploi, Institution::Social] {
                for (at, text) in all_text(&t.database_url(institution)).await {
                    if text.contains(CANARY) {
                        found.push(format!("{institution}: {at}"));
                    }
                }
            }
            found
        };
        assert!(!leaks().await.is_empty(), "the canary is there to be found");
        let before = figures(&t).await;

        let answer = t
            .social()
            .await
            .erase_subject_data(t.as_dpo(
                Institution::Social,
                v1::EraseSubjectDataRequest {
                    idempotency_key: "erase-1".into(),
                    case_id: case_id.clone(),
                },
            ))
            .await
            .expect("erased")
            .into_inner();
        assert!(answer.erased);
        assert_eq!(answer.notified, [v1::Institution::Emploi as i32]);
        eventually("erased at emploi", async || {
            t.case_at_emploi(&case_id).await.is_none()
        })
        .await;
        eventually("outbox settled", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        assert_eq!(leaks().await, Vec::<String>::new(), "{backend:?}");
        // The other person is untouched, the committee's figures unchanged,
        // and the kept counts still equal a recount.
        assert!(t.case_at_emploi(&other).await.is_some());
        assert_eq!(figures(&t).await, before, "{backend:?}");
        t.assert_counts_equal_a_recount(Institution::Social).await;
        t.assert_counts_equal_a_recount(Institution::Emploi).await;
        // The log is whole and says what happened, without a value.
        for institution in [Institution::Emploi, Institution::Social] {
            let audit = t.store(institution).await.audit().clone();
            audit.verify().await.expect("chain");
        }
        // A replay is answered as before; the case is now unknown.
        let again = t
            .social()
            .await
            .erase_subject_data(t.as_dpo(
                Institution::Social,
                v1::EraseSubjectDataRequest {
                    idempotency_key: "erase-1".into(),
                    case_id: case_id.clone(),
                },
            ))
            .await
            .expect("replayed")
            .into_inner();
        assert_eq!(again, answer);
        let status = t
            .social_access_report(&case_id, v1::DocumentFormat::Json, false)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        t.shutdown().await;
    })
    .await;
}

/// What the purge leaves: cases, erased cases, consents, and the counts.
async fn state(t: &TestStack, institution: Institution) -> (Vec<String>, usize, usize) {
    let store = t.store(institution).await;
    let cases = all_text(&t.database_url(institution))
        .await
        .into_iter()
        .filter(|(at, _)| at == "cases.case_id")
        .map(|(_, id)| id)
        .collect();
    let consents = all_text(&t.database_url(institution))
        .await
        .into_iter()
        .filter(|(at, _)| at == "consents.consent_id")
        .count();
    let purges = store
        .audit()
        .entries()
        .await
        .expect("audit")
        .iter()
        .filter(|e| e.method == "passerelle.purge")
        .count();
    (cases, consents, purges)
}

#[tokio::test]
async fn the_purge_erases_what_retention_lets_go_and_a_rerun_or_a_crash_changes_nothing() {
    on_every_backend(async |backend| {
        let t = start(backend, 1).await;
        let agreement =
            passerelle_domain::agreement::shipped("ille-et-vilaine-2023").expect("agreement");
        let mut ended = vec![];
        for label in ["purge-1", "purge-2"] {
            let case_id = t.enter_case(label).await;
            t.emploi()
                .await
                .exit_case(t.exit_request(
                    &format!("{label}-exit"),
                    &case_id,
                    v1::ExitReason::Training,
                ))
                .await
                .expect("exit");
            ended.push(case_id);
        }
        let open = t.enter_case("purge-open").await;
        let social = t.store(Institution::Social).await;
        eventually("outbox settled", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        // The employment side's purge is driven by hand, service stopped.
        t.stack
            .stop(Institution::Emploi)
            .await
            .expect("stop emploi");
        let store = t.store(Institution::Emploi).await;
        let before = store.statistics().await.expect("counts");
        let exited_at = t.clock.now();

        // A day short of 24 months: nothing is due.
        let almost = exited_at + chrono::Duration::days(730) - chrono::Duration::days(2);
        assert!(
            purge(&store, &agreement, almost, true, PURGE_BATCH)
                .await
                .expect("dry")
                .is_empty()
        );
        let due_at = exited_at
            .checked_add_months(chrono::Months::new(24))
            .expect("date");
        let listed = purge(&store, &agreement, due_at, true, PURGE_BATCH)
            .await
            .expect("dry run");
        let mut listed_ids: Vec<_> = listed.iter().map(|c| c.case_id.clone()).collect();
        listed_ids.sort();
        let mut expected = ended.clone();
        expected.sort();
        assert_eq!(listed_ids, expected, "{backend:?}");
        assert!(listed.iter().all(|c| !c.consents_only));
        // The dry run changed nothing.
        assert_eq!(state(&t, Institution::Emploi).await.2, 0);
        // A restricted case is kept whatever its age (GDPR art. 18(1)(c)).
        let mut tx = store.begin().await.expect("begin");
        tx.restrict(&ended[1], due_at).await.expect("restrict");
        tx.commit().await.expect("commit");
        let listed = purge(&store, &agreement, due_at, true, PURGE_BATCH)
            .await
            .expect("dry run");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].case_id, ended[0]);
        let mut tx = store.begin().await.expect("begin");
        tx.lift_restriction(&ended[1]).await.expect("lift");
        tx.commit().await.expect("commit");

        // A purge killed inside its transaction leaves no trace…
        {
            let mut tx = store.begin().await.expect("begin");
            tx.erase_case(
                &ended[0],
                passerelle_storage::institution::ErasureReason::Retention,
                true,
                due_at,
            )
            .await
            .expect("erase");
            drop(tx);
        }
        assert_eq!(state(&t, Institution::Emploi).await.0.len(), 3);
        // …one stopped after its first case, then run again, ends where a
        // whole run would, and a third run finds nothing.
        assert_eq!(
            purge(&store, &agreement, due_at, false, 1)
                .await
                .expect("purge")
                .len(),
            1
        );
        assert_eq!(
            purge(&store, &agreement, due_at, false, PURGE_BATCH)
                .await
                .expect("purge")
                .len(),
            1
        );
        assert!(
            purge(&store, &agreement, due_at, false, PURGE_BATCH)
                .await
                .expect("purge")
                .is_empty()
        );
        let (cases, consents, purges) = state(&t, Institution::Emploi).await;
        assert_eq!(cases, vec![open.clone()]);
        assert_eq!(purges, 2);
        assert!(consents >= 3, "consent records are kept longer: {consents}");
        assert_eq!(
            store.statistics().await.expect("counts"),
            before,
            "{backend:?}"
        );
        let kept: std::collections::BTreeMap<_, _> = before.into_iter().collect();
        assert_eq!(kept, store.recount().await.expect("recount"));

        // 60 months after the end, the consent records go too, once.
        let consents_due = exited_at
            .checked_add_months(chrono::Months::new(60))
            .expect("date");
        let gone = purge(&store, &agreement, consents_due, false, PURGE_BATCH)
            .await
            .expect("purge");
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|c| c.consents_only));
        assert!(
            purge(&store, &agreement, consents_due, false, PURGE_BATCH)
                .await
                .expect("purge")
                .is_empty()
        );
        let (cases, consents_after, purges) = state(&t, Institution::Emploi).await;
        assert_eq!(cases, vec![open]);
        assert_eq!(purges, 4);
        assert!(consents_after < consents);
        store.audit().verify().await.expect("chain");

        // The social side purges on its own schedule as time passes.
        t.clock.set(due_at);
        eventually("the scheduled purge at social", async || {
            let ids = all_text(&t.database_url(Institution::Social)).await;
            ended
                .iter()
                .all(|id| !ids.iter().any(|(at, v)| at == "cases.case_id" && v == id))
        })
        .await;
        t.assert_counts_equal_a_recount(Institution::Social).await;
        t.shutdown().await;
    })
    .await;
}

fn restrict(
    t: &TestStack,
    case_id: &str,
    key: &str,
    lift: bool,
) -> tonic::Request<v1::RestrictProcessingRequest> {
    t.as_dpo(
        Institution::Social,
        v1::RestrictProcessingRequest {
            idempotency_key: key.into(),
            case_id: case_id.into(),
            lift,
        },
    )
}

async fn restricted_at(t: &TestStack, institution: Institution, case_id: &str) -> bool {
    t.store(institution)
        .await
        .restricted(case_id)
        .await
        .expect("read")
}

#[tokio::test]
async fn a_restricted_case_is_only_kept_at_both_sides_until_lifted() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("restrict").await;
        // A plan change queued while the partner is down, then the restriction.
        t.stack
            .stop(Institution::Emploi)
            .await
            .expect("stop emploi");
        t.social()
            .await
            .update_plan(t.social_plan_request("plan-before", &case_id, "Permis de conduire"))
            .await
            .expect("plan");
        let answer = t
            .social()
            .await
            .restrict_processing(restrict(&t, &case_id, "restrict-1", false))
            .await
            .expect("restricted")
            .into_inner();
        assert!(answer.restricted);
        assert_eq!(answer.notified, [v1::Institution::Emploi as i32]);
        // Nothing more is done with the case here: no change, no reading.
        let status = t
            .social()
            .await
            .update_plan(t.social_plan_request("plan-during", &case_id, "Permis de conduire"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{backend:?}");
        assert!(status.message().contains("GDPR art. 18"), "{status:?}");
        let status = t
            .social()
            .await
            .get_case(t.as_social_worker(v1::GetCaseRequest {
                case_id: case_id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);

        // The partner hears of it; the plan's summary waits at the sender.
        t.stack
            .restart(Institution::Emploi)
            .await
            .expect("restart emploi");
        t.wait_ready().await;
        eventually("restricted at emploi", async || {
            restricted_at(&t, Institution::Emploi, &case_id).await
        })
        .await;
        let social = t.store(Institution::Social).await;
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(
            social.outbox_depth().await.expect("depth").pending,
            1,
            "{backend:?}"
        );
        let emploi = t.store(Institution::Emploi).await;
        assert!(
            emploi
                .plan_summaries(&case_id)
                .await
                .expect("read")
                .iter()
                .all(|s| s.kind != passerelle_domain::plan::PlanKind::Social)
        );
        let status = t
            .emploi()
            .await
            .exit_case(t.exit_request("exit-restricted", &case_id, v1::ExitReason::Job))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);

        // Lifted: the held summary goes, then the partner lifts its copy.
        let answer = t
            .social()
            .await
            .restrict_processing(restrict(&t, &case_id, "lift-1", true))
            .await
            .expect("lifted")
            .into_inner();
        assert!(!answer.restricted);
        eventually("lifted at emploi", async || {
            !restricted_at(&t, Institution::Emploi, &case_id).await
        })
        .await;
        eventually("the held summary delivered", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        assert_eq!(
            social.outbox_depth().await.expect("depth").abandoned,
            0,
            "{backend:?}"
        );
        assert!(
            emploi
                .plan_summaries(&case_id)
                .await
                .expect("read")
                .iter()
                .any(|s| s.kind == passerelle_domain::plan::PlanKind::Social)
        );
        t.social()
            .await
            .update_plan(t.social_plan_request("plan-after", &case_id, "Permis de conduire"))
            .await
            .expect("plan again");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_objection_stops_a_processing_on_a_public_task_and_only_such_a_one() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("object").await;
        let object = |key: &str, purpose: v1::Purpose| {
            t.as_dpo(
                Institution::Social,
                v1::ObjectToProcessingRequest {
                    idempotency_key: key.into(),
                    case_id: case_id.clone(),
                    purpose: purpose as i32,
                },
            )
        };
        // What rests on consent is stopped by withdrawing it; counts name nobody.
        for (purpose, says) in [
            (v1::Purpose::GlobalSupport, "withdraw"),
            (
                v1::Purpose::Statistics,
                "none of its crossings is about one case",
            ),
        ] {
            let status = t
                .social()
                .await
                .object_to_processing(object("o-bad", purpose))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with("purpose:"), "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
        // The consent record's copy at the partner rests on a public task.
        let answer = t
            .social()
            .await
            .object_to_processing(object("o-1", v1::Purpose::ConsentRecord))
            .await
            .expect("objection")
            .into_inner();
        assert_eq!(answer.notified, [v1::Institution::Emploi as i32]);
        let emploi = t.store(Institution::Emploi).await;
        eventually("the objection known at emploi", async || {
            emploi
                .objected(&case_id, passerelle_domain::Purpose::ConsentRecord)
                .await
                .expect("read")
        })
        .await;
        // A new consent for the case no longer travels; its refusal is audited.
        let mut record = consent(
            &t.clock,
            &[v1::Purpose::GlobalSupport],
            &[v1::Institution::Emploi, v1::Institution::Social],
        );
        record.case_id = case_id.clone();
        t.social()
            .await
            .record_consent(t.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: "c-after-objection".into(),
                consent: Some(record),
            }))
            .await
            .expect("consent recorded here");
        let social = t.store(Institution::Social).await;
        eventually("outbox settled", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        let refused = social
            .audit()
            .entries()
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| {
                e.case_id.as_deref() == Some(case_id.as_str())
                    && e.method.ends_with("/ShareConsent")
                    && e.decision == passerelle_boundary::Decision::Denied
            })
            .count();
        assert_eq!(refused, 1, "{backend:?}");
        assert_eq!(
            emploi
                .consents_for_case(&case_id)
                .await
                .expect("read")
                .len(),
            1
        );
        // A withdrawal still travels.
        let held = social.consents_for_case(&case_id).await.expect("read");
        t.social()
            .await
            .withdraw_consent(t.as_social_worker(v1::WithdrawConsentRequest {
                idempotency_key: "w-after-objection".into(),
                consent_id: held[0].consent_id.to_string(),
            }))
            .await
            .expect("withdrawn");
        eventually("the withdrawal at emploi", async || {
            emploi
                .consents_for_case(&case_id)
                .await
                .expect("read")
                .iter()
                .any(|c| c.state == passerelle_domain::ConsentState::Withdrawn)
        })
        .await;
        t.shutdown().await;
    })
    .await;
}
