//! The steering committee's view of the agreement's own life: its dated
//! milestones and what is due next, on the steering service's clock.

use passerelle_domain::Institution;
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

fn table<'a>(d: &'a v1::Dashboard, name: &str) -> &'a v1::PublishedTable {
    d.tables
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("table {name}: {:?}", d.tables))
}

/// A published cell: `None` when masked.
fn at(t: &v1::PublishedTable, row: &str, column: &str) -> Option<u64> {
    let r = t
        .rows
        .iter()
        .position(|x| x == row)
        .unwrap_or_else(|| panic!("row {row} in {t:?}"));
    let c = t
        .columns
        .iter()
        .position(|x| x == column)
        .unwrap_or_else(|| panic!("column {column} in {t:?}"));
    let cell = &t.cells[r * t.columns.len() + c];
    (!cell.suppressed).then_some(cell.count)
}

fn esf(d: &v1::Dashboard, code: &str) -> Option<u64> {
    let f = d.esf.iter().find(|f| f.code == code).expect("esf figure");
    f.count.as_ref().filter(|c| !c.suppressed).map(|c| c.count)
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
                case_id: case_id.clone(),
                exit: Some(v1::CaseExit {
                    reason: v1::ExitReason::Job as i32,
                    ..Default::default()
                }),
                qualification_gained: true,
            }))
            .await
            .expect("exit");
        let d = t.dashboard().await;
        let exits = table(&d, "exits.by_office");
        assert_eq!(at(exits, "AD-RENNES", "job"), Some(1));
        assert_eq!(at(exits, "total", "training"), Some(0));
        // Offices come under their referring network, months under their
        // quarter and year.
        assert!(exits.row_levels.iter().any(|l| l == "network"), "{exits:?}");
        let referrals = table(&d, "referrals");
        assert_eq!(at(referrals, "total", "2025-03"), Some(1));
        assert_eq!(at(referrals, "total", "2025-T1"), Some(1));
        assert_eq!(at(referrals, "total", "2025"), Some(1));
        let by_month = table(&d, "exits.by_month");
        assert!(by_month.row_levels.iter().any(|l| l == "quarter"));
        assert_eq!(at(by_month, "total", "job"), Some(1));
        assert_eq!(
            at(table(&d, "entry_delay.by_month"), "total", "total"),
            Some(1)
        );
        // The referral's barriers (housing, mobility): a sensitive table.
        let barriers = table(&d, "barriers.by_office");
        assert!(barriers.sensitive);
        assert_eq!(at(barriers, "total", "total"), Some(2));
        // Public characteristics: born 1986, referred in 2025.
        assert_eq!(
            at(table(&d, "age_band.by_office"), "AD-RENNES", "26-44 ans"),
            Some(1)
        );
        // One person, all on the RSA: a 100 % cell on a sensitive attribute
        // is not published even at threshold 1.
        let rsa = table(&d, "rsa.by_office");
        assert_eq!(at(rsa, "AD-RENNES", "rsa"), None, "{rsa:?}");
        // The ESF questionnaire filled in at entry, and the results on leaving.
        assert_eq!(at(table(&d, "sex.by_month"), "total", "female"), Some(1));
        assert_eq!(
            at(table(&d, "education.by_office"), "total", "isced_3_4"),
            Some(1)
        );
        assert_eq!(esf(&d, "participants"), Some(1));
        assert_eq!(esf(&d, "CO10"), Some(1));
        assert_eq!(esf(&d, "CO12"), Some(1));
        assert_eq!(esf(&d, "CR03"), Some(1));
        assert_eq!(esf(&d, "CR04"), Some(1));
        // Declared disability for everyone: 100 % on a health attribute.
        assert_eq!(esf(&d, "CO16"), None);
        // Delays per year, and the counsellors in the register.
        assert!(
            d.delays
                .iter()
                .any(|f| f.level == "year" && f.period == "2025")
        );
        let staffing = d.staffing.as_ref().expect("staffing");
        assert!(staffing.counsellors_fte > 0.0, "{staffing:?}");
        // The kept counts are exactly a recount from the cases, at both sides.
        for institution in [Institution::Emploi, Institution::Social] {
            let store = t.store(institution).await;
            let kept =
                passerelle_domain::statistics::summed(store.statistics().await.expect("counts"));
            assert_eq!(
                kept,
                store.recount().await.expect("recount"),
                "{institution}"
            );
        }
        // The questionnaire stayed where the person signed.
        let at_emploi = t
            .store(Institution::Emploi)
            .await
            .case(&case_id)
            .await
            .expect("read");
        let at_social = t
            .store(Institution::Social)
            .await
            .case(&case_id)
            .await
            .expect("read");
        assert!(at_emploi.expect("case").participant.is_some());
        assert_eq!(at_social.expect("case").participant, None);
        t.shutdown().await;

        // Threshold 11: one person's figures are not published, and what is
        // published cannot give them back.
        let t = start(backend, 11).await;
        t.enter_case("tables-11").await;
        let d = t.dashboard().await;
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
