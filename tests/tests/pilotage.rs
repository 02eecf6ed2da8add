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

async fn dashboard(t: &TestStack) -> v1::Dashboard {
    t.pilotage()
        .await
        .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
        .await
        .expect("dashboard")
        .into_inner()
        .dashboard
        .expect("dashboard")
}

fn table<'a>(d: &'a v1::Dashboard, name: &str) -> &'a v1::PublishedTable {
    d.tables
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("table {name}: {:?}", d.tables))
}

#[tokio::test]
async fn the_committees_tables_combine_both_sources_under_secrecy() {
    on_every_backend(|backend| async move {
        // Threshold 1: every count shows, to check what each table holds.
        let t = start(backend, 1).await;
        let case_id = t.enter_case("tables").await;
        t.emploi()
            .await
            .exit_case(t.as_counsellor(v1::ExitCaseRequest {
                idempotency_key: "tables-exit".into(),
                case_id,
                exit: Some(v1::CaseExit {
                    reason: v1::ExitReason::Job as i32,
                    ..Default::default()
                }),
            }))
            .await
            .expect("exit");
        let d = dashboard(&t).await;
        let exits = table(&d, "exits_by_office");
        assert_eq!(exits.rows, vec!["AD-RENNES"]);
        assert_eq!(exits.columns, vec!["job", "training", "other"]);
        assert_eq!(
            exits.cells.iter().map(|c| c.count).collect::<Vec<_>>(),
            vec![1, 0, 0]
        );
        let months = table(&d, "referrals_by_month");
        assert_eq!(months.rows, vec!["2025-03"]);
        let delays = table(&d, "entry_delay_by_year");
        assert_eq!(delays.rows, vec!["2025"]);
        // The referral's barriers (housing, mobility): a sensitive table.
        let barriers = table(&d, "barriers_by_office");
        assert_eq!(barriers.row_totals, vec![2]);
        // Public characteristics: born 1986, referred in 2025; an RSA beneficiary.
        let ages = table(&d, "age_band_by_office");
        assert_eq!(
            ages.cells.iter().map(|c| c.count).collect::<Vec<_>>(),
            vec![0, 1, 0, 0]
        );
        // One person, all on the RSA: a 100 % cell on a sensitive attribute
        // is not published even at threshold 1.
        let rsa = table(&d, "rsa_by_office");
        assert!(
            rsa.withheld || rsa.cells.iter().all(|c| c.suppressed),
            "{rsa:?}"
        );
        t.shutdown().await;

        // Threshold 11: one person's figures are not published, and what is
        // published cannot give them back.
        let t = start(backend, 11).await;
        t.enter_case("tables-11").await;
        let d = dashboard(&t).await;
        for published in &d.tables {
            assert!(
                published.withheld || published.cells.iter().all(|c| c.suppressed || c.count == 0),
                "{published:?}"
            );
        }
        t.shutdown().await;
    })
    .await;
}
