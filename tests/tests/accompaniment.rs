//! The accompaniment under each agreement's rules: support lasts what the
//! agreement says and is renewed within its limits, the pair sees what is
//! due (exactly, on the injected clock), and diagnosis updates flow both ways.

use chrono::{DateTime, Months, Utc};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

fn at(ts: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.expect("timestamp");
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("valid")
}

fn renew(
    t: &TestStack,
    key: &str,
    case_id: &str,
    exceptional: bool,
    justification: &str,
) -> tonic::Request<v1::RenewSupportRequest> {
    t.as_counsellor(v1::RenewSupportRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        exceptional,
        justification: justification.into(),
    })
}

#[tokio::test]
async fn ille_et_vilaine_runs_9_months_renewable_once_for_3() {
    let t = start_under(Backend::Sqlite, 11, false, "ille-et-vilaine-2023").await;
    let case_id = t.enter_case("iev").await;
    let mut emploi = t.emploi().await;
    let case = t
        .case_at_emploi(&case_id)
        .await
        .expect("case")
        .case
        .expect("case");
    let entered = at(case.entered_at);
    assert_eq!(at(case.ends_at), entered + Months::new(9));
    assert_eq!(
        case.review_due_at, None,
        "no formal review deadline in Ille-et-Vilaine"
    );

    // Nothing due within a month; the end of the period within ten.
    let due = |days: u32| v1::ListDueRequest {
        within_days: days,
        ..Default::default()
    };
    assert!(
        emploi
            .list_due(t.as_counsellor(due(30)))
            .await
            .expect("due")
            .into_inner()
            .items
            .is_empty()
    );
    let items = emploi
        .list_due(t.as_counsellor(due(300)))
        .await
        .expect("due")
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].kind, at(items[0].due_at)),
        (v1::DueKind::EndOfPeriod as i32, entered + Months::new(9))
    );

    t.clock.advance(chrono::Duration::days(250));
    let renewed = emploi
        .renew_support(renew(&t, "renew-1", &case_id, false, ""))
        .await
        .expect("renewed")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(
        (renewed.renewals, at(renewed.ends_at)),
        (1, entered + Months::new(12))
    );
    let again = emploi
        .renew_support(renew(&t, "renew-2", &case_id, false, ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let exceptional = emploi
        .renew_support(renew(
            &t,
            "renew-3",
            &case_id,
            true,
            "situation exceptionnelle",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        exceptional.code(),
        Code::FailedPrecondition,
        "Ille-et-Vilaine allows no exception"
    );

    // The partner's copy follows.
    eventually("the renewal at the social side", async || {
        let case = t
            .case_at_social(&case_id)
            .await
            .expect("case")
            .case
            .expect("case");
        case.renewals == 1
            && case.ends_at.map(|e| e.seconds) == Some((entered + Months::new(12)).timestamp())
    })
    .await;
    t.shutdown().await;
}

#[tokio::test]
async fn seine_et_marne_runs_6_months_renewable_once_then_only_by_justified_exception() {
    let t = start_under(Backend::Sqlite, 11, false, "seine-et-marne-2020").await;
    let case_id = t.enter_case("sem").await;
    let mut emploi = t.emploi().await;
    let case = t
        .case_at_emploi(&case_id)
        .await
        .expect("case")
        .case
        .expect("case");
    let entered = at(case.entered_at);
    assert_eq!(at(case.ends_at), entered + Months::new(6));
    assert_eq!(
        at(case.review_due_at),
        entered + Months::new(6),
        "tripartite review no later than month 6"
    );

    // The social worker of the pair sees the review and the end of the period.
    let mut social = t.social().await;
    eventually("the entry at the social side", async || {
        let items = social
            .list_due(t.as_social_worker(v1::ListDueRequest {
                within_days: 200,
                ..Default::default()
            }))
            .await
            .expect("due")
            .into_inner()
            .items;
        items.iter().map(|i| i.kind).collect::<Vec<_>>()
            == vec![v1::DueKind::Review as i32, v1::DueKind::EndOfPeriod as i32]
    })
    .await;
    let bad = social
        .list_due(t.as_social_worker(v1::ListDueRequest {
            within_days: 0,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("within_days:"));

    t.clock.advance(chrono::Duration::days(170));
    let renewed = emploi
        .renew_support(renew(&t, "r1", &case_id, false, ""))
        .await
        .expect("renewed")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(
        (renewed.renewals, at(renewed.ends_at)),
        (1, entered + Months::new(12))
    );
    assert_eq!(
        renewed.review_due_at, None,
        "the review this renewal follows is done"
    );
    let refused = emploi
        .renew_support(renew(&t, "r2", &case_id, false, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let unjustified = emploi
        .renew_support(renew(&t, "r3", &case_id, true, ""))
        .await
        .unwrap_err();
    assert_eq!(unjustified.code(), Code::InvalidArgument);
    assert!(unjustified.message().starts_with("justification:"));
    let exception = emploi
        .renew_support(renew(
            &t,
            "r4",
            &case_id,
            true,
            "relogement en cours, sortie d'hébergement d'urgence",
        ))
        .await
        .expect("a justified exception")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(
        (exception.renewals, at(exception.ends_at)),
        (2, entered + Months::new(18))
    );

    // 570 days on, the person's one-year consent has expired: nothing more
    // crosses, so no renewal either (the end-of-period rule has its unit test).
    t.clock.advance(chrono::Duration::days(400));
    let late = emploi
        .renew_support(renew(&t, "r5", &case_id, true, "encore"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::PermissionDenied);
    assert_eq!(late.message(), "the consent has expired");
    t.shutdown().await;
}

/// A barrier level changed on one side reaches the partner, both ways, so
/// neither works from a stale picture.
#[tokio::test]
async fn diagnosis_updates_flow_both_ways() {
    on_every_backend(async |backend| {
        let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
        let case_id = t.enter_case("updates").await;
        let barrier = |level: v1::BarrierLevel| v1::Barrier {
            category: v1::BarrierCategory::Housing as i32,
            level: level as i32,
        };
        let half = |level| v1::DiagnosisHalf {
            case_id: case_id.clone(),
            verdict: v1::Verdict::Agree as i32,
            barriers: vec![barrier(level)],
            ..Default::default()
        };
        let level_of = |halves: &[v1::DiagnosisHalf], author: v1::Institution| {
            halves
                .iter()
                .find(|h| h.author_institution == author as i32)
                .and_then(|h| h.barriers.first())
                .map(|b| b.level)
        };

        // The social worker lowers the housing barrier: the employment side sees it.
        t.clock.advance(chrono::Duration::days(30));
        t.social()
            .await
            .record_diagnosis(t.as_social_worker(v1::RecordDiagnosisRequest {
                idempotency_key: "update-social".into(),
                half: Some(half(v1::BarrierLevel::Low)),
                local_note: "relogée en résidence sociale".into(),
            }))
            .await
            .expect("social update");
        let mut emploi = t.emploi().await;
        eventually("the social update at emploi", async || {
            let answer = t.case_at_emploi(&case_id).await.expect("case");
            level_of(&answer.diagnoses, v1::Institution::Social)
                == Some(v1::BarrierLevel::Low as i32)
                && answer.local_notes.is_empty()
        })
        .await;

        // The counsellor raises it again: the social side sees it.
        t.clock.advance(chrono::Duration::days(30));
        emploi
            .record_diagnosis(t.as_counsellor(v1::RecordDiagnosisRequest {
                idempotency_key: "update-emploi".into(),
                half: Some(half(v1::BarrierLevel::High)),
                local_note: String::new(),
            }))
            .await
            .expect("employment update");
        eventually("the employment update at the social side", async || {
            let answer = t.case_at_social(&case_id).await.expect("case");
            level_of(&answer.diagnoses, v1::Institution::Emploi)
                == Some(v1::BarrierLevel::High as i32)
        })
        .await;
        // The case stays active: an update is not a new diagnosis decision.
        let state = t
            .case_at_social(&case_id)
            .await
            .expect("case")
            .case
            .map(|c| c.state);
        assert_eq!(state, Some(v1::CaseState::Active as i32), "{backend:?}");
        t.shutdown().await;
    })
    .await;
}
