//! The steering committee's view of the agreement's own life: its dated
//! milestones and what is due next, on the steering service's clock.

use passerelle_tests::pb as v1;
use passerelle_tests::*;

async fn calendar(t: &TestStack) -> v1::AgreementCalendar {
    t.pilotage()
        .await
        .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
        .await
        .expect("dashboard")
        .into_inner()
        .calendar
        .expect("calendar")
}

#[tokio::test]
async fn the_dashboard_shows_what_is_due_next_under_each_agreement() {
    // Ille-et-Vilaine on 3 March 2025: the last day to give notice comes
    // first, then the renewal decision, two months before the end.
    let t = start_under(Backend::Sqlite, 11, false, "ille-et-vilaine-2023").await;
    let c = calendar(&t).await;
    assert_eq!(c.agreement_id, "ille-et-vilaine-2023");
    let next = c.next.expect("next");
    assert_eq!(
        (next.on.as_str(), next.kind),
        ("2025-04-09", v1::MilestoneKind::NoticeDeadline as i32)
    );
    assert!(c.milestones.iter().any(
        |m| m.on == "2025-05-09" && m.kind == v1::MilestoneKind::RenewalDecisionDeadline as i32
    ));
    t.shutdown().await;

    // Seine-et-Marne, two months in: the six-month committee is next.
    let t = start_under(Backend::Sqlite, 11, false, "seine-et-marne-2020").await;
    t.clock.set("2020-03-02T09:00:00Z".parse().expect("date"));
    let c = calendar(&t).await;
    let next = c.next.expect("next");
    assert_eq!(
        (next.on.as_str(), next.kind),
        ("2020-07-01", v1::MilestoneKind::Committee as i32)
    );
    let committees = c
        .milestones
        .iter()
        .filter(|m| m.kind == v1::MilestoneKind::Committee as i32)
        .count();
    assert_eq!(committees, 4, "start, +6 months, yearly, end");
    t.shutdown().await;
}
