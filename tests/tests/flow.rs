//! The thin flow over real gRPC between the three processes: consent and
//! referral at the social side → the employment side → both halves of the
//! diagnosis → signature and entry → exit → the steering committee's figures.

use chrono::Duration;
use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;

const CANARY_NOTE: &str = "CANARY-NOTE: violence conjugale évoquée, suivi santé mentale";

/// One person through the whole accompaniment; returns the case id.
async fn one_case(t: &TestStack, first_name: &str, exit: v1::ExitReason) -> String {
    let mut social = t.social().await;
    let mut emploi = t.emploi().await;

    let consent = social
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: format!(
                    "consent-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            consent: Some(consent(
                &t.clock,
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
                &[v1::Institution::Emploi, v1::Institution::Social],
            )),
        }))
        .await
        .expect("consent recorded")
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(consent.state, v1::ConsentState::Given as i32);

    let referral = social
        .create_referral(t.as_social_worker(v1::CreateReferralRequest {
            idempotency_key: format!(
                    "referral-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            referral: Some(referral(&consent.case_id, &consent.consent_id, first_name)),
            local_note: CANARY_NOTE.into(),
        }))
        .await
        .expect("referral created")
        .into_inner()
        .referral
        .expect("referral");
    let case_id = referral.case_id.clone();
    assert_eq!(referral.referring_network, v1::Network::Social as i32);
    assert_eq!(referral.referred_by, "sw-rennes-1");

    // The referral reaches the employment side through the outbox.
    eventually("referral delivered to emploi", async || {
        t.case_at_emploi(&case_id).await.is_some()
    })
    .await;
    let seen = t.case_at_emploi(&case_id).await.expect("case");
    let received = seen.referral.expect("referral at emploi");
    assert_eq!(
        received.person.as_ref().map(|p| p.first_name.as_str()),
        Some(first_name)
    );
    assert!(
        seen.local_notes.is_empty(),
        "the social side's note must not reach the employment side"
    );
    assert_eq!(
        seen.consents.len(),
        1,
        "the consent travelled with the referral"
    );

    t.accept_at_emploi(&case_id).await;
    t.clock.advance(Duration::days(6));
    let barriers = vec![v1::Barrier {
        category: v1::BarrierCategory::Housing as i32,
        level: v1::BarrierLevel::High as i32,
    }];
    emploi
        .record_diagnosis(t.as_counsellor(v1::RecordDiagnosisRequest {
            idempotency_key: format!(
                    "diag-e-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            half: Some(v1::DiagnosisHalf {
                case_id: case_id.clone(),
                barriers: barriers.clone(),
                verdict: v1::Verdict::Agree as i32,
                ..Default::default()
            }),
            local_note: "entretien du 9 mars".into(),
        }))
        .await
        .expect("professional half");
    t.clock.advance(Duration::days(4));
    social
        .record_diagnosis(t.as_social_worker(v1::RecordDiagnosisRequest {
            idempotency_key: format!(
                    "diag-s-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            half: Some(v1::DiagnosisHalf {
                case_id: case_id.clone(),
                barriers,
                verdict: v1::Verdict::Agree as i32,
                ..Default::default()
            }),
            local_note: CANARY_NOTE.into(),
        }))
        .await
        .expect("social half");

    eventually("both halves known at emploi", async || {
        let case = t.case_at_emploi(&case_id).await.expect("case");
        case.case.map(|c| c.state) == Some(v1::CaseState::Diagnosed as i32)
    })
    .await;

    t.clock.advance(Duration::days(5));
    let entered = emploi
        .sign_contract(t.as_counsellor(v1::SignContractRequest {
            idempotency_key: format!(
                    "sign-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            case_id: case_id.clone(),
            entry: Some(t.entry(&format!("contrat {first_name}"))),
            participant: Some(participant()),
        }))
        .await
        .expect("signed")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(entered.state, v1::CaseState::Active as i32);

    t.clock.advance(Duration::days(120));
    let exited = emploi
        .exit_case(t.as_counsellor(v1::ExitCaseRequest {
            idempotency_key: format!(
                    "exit-{}",
                    first_name
                        .to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            case_id: case_id.clone(),
            exit: Some(v1::CaseExit {
                reason: exit as i32,
                ..Default::default()
            }),
            qualification_gained: false,
        }))
        .await
        .expect("exited")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(exited.exit_reason, exit as i32);

    eventually("exit known at the social side", async || {
        let case = t.case_at_social(&case_id).await.expect("case");
        case.case.map(|c| c.state) == Some(v1::CaseState::Exited as i32)
    })
    .await;
    case_id
}

#[tokio::test]
async fn the_thin_flow_runs_end_to_end() {
    on_every_backend(async |backend| {
        let t = start(backend, 2).await;
        // Each case takes 135 days: start early enough for both to be
        // referred while the agreement is in force (to 9 July 2025).
        t.clock.set("2024-09-02T09:00:00Z".parse().expect("date"));
        let first = one_case(&t, "Maëlle", v1::ExitReason::Job).await;
        let second = one_case(&t, "Yannick", v1::ExitReason::Job).await;

        let dashboard = t
            .pilotage()
            .await
            .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
            .await
            .expect("dashboard")
            .into_inner()
            .dashboard
            .expect("dashboard");
        assert_eq!(
            dashboard.entries.as_ref().map(|c| (c.count, c.suppressed)),
            Some((2, false)),
            "{backend:?}"
        );
        assert_eq!(dashboard.in_progress.as_ref().map(|c| c.count), Some(0));
        // Referral → entry: 6 + 4 + 5 days for each person.
        assert!(!dashboard.average_entry_delay_suppressed);
        assert!(
            (dashboard.average_entry_delay_days - 15.0).abs() < f64::EPSILON,
            "{}",
            dashboard.average_entry_delay_days
        );
        let exits: Vec<_> = dashboard
            .exits_by_type
            .iter()
            .map(|c| (c.key.as_str(), c.count))
            .collect();
        assert_eq!(exits, vec![("job", 2), ("training", 0), ("other", 0)]);
        let referrals: Vec<_> = dashboard
            .referrals_by_network
            .iter()
            .map(|c| (c.key.as_str(), c.count))
            .collect();
        assert_eq!(referrals, vec![("emploi", 0), ("social", 2)]);
        assert!(dashboard.sources.iter().all(|s| s.fresh));

        // LOCAL_ONLY never reached the employment side; it is kept where written.
        let emploi_text = all_text(&t.database_url(Institution::Emploi)).await;
        assert!(
            !emploi_text.iter().any(|(_, v)| v.contains("CANARY-NOTE")),
            "a local note reached the employment side"
        );
        let social_text = all_text(&t.database_url(Institution::Social)).await;
        assert!(
            social_text
                .iter()
                .any(|(c, v)| c == "local_notes.note" && v.contains("CANARY-NOTE"))
        );

        // The steering service's database holds aggregates only.
        let url = t.database_url(Institution::Pilotage);
        let pilotage_text = all_text(&url).await;
        for secret in [
            first.as_str(),
            second.as_str(),
            "Maëlle",
            "Yannick",
            "Le Gall",
            "1986-11-02",
            "4471234A",
            "sw-rennes-1",
            "ft-counsellor-7",
        ] {
            assert!(
                !pilotage_text.iter().any(|(_, v)| v.contains(secret)),
                "{secret} found in the steering database"
            );
        }
        let mut tables: Vec<_> = pilotage_text
            .iter()
            .map(|(c, _)| c.split('.').next().unwrap_or("").to_owned())
            .collect();
        tables.sort();
        tables.dedup();
        for table in &tables {
            assert!(
                [
                    "indicator_snapshots",
                    "indicator_cells",
                    "audit_log",
                    "_sqlx_migrations",
                    "sqlite_sequence"
                ]
                .contains(&table.as_str()),
                "unexpected table {table} in the steering database"
            );
        }

        // Each crossing left an audit record on both sides, and the chains hold.
        for institution in [Institution::Emploi, Institution::Social] {
            let store = t.store(institution).await;
            store.audit().verify().await.expect("audit chain intact");
            let entries = store.audit().entries().await.expect("entries");
            assert!(
                entries
                    .iter()
                    .any(|e| e.case_id.as_deref() == Some(first.as_str())
                        && e.decision == passerelle_boundary::Decision::Allowed)
            );
            for entry in &entries {
                let json = serde_json::to_string(entry).expect("json");
                assert!(
                    !json.contains("Maëlle") && !json.contains("06 12 34 56 78"),
                    "a value was written to the audit log"
                );
            }
        }
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn small_counts_are_not_published() {
    let t = start(Backend::Sqlite, 11).await;
    one_case(&t, "Soizic", v1::ExitReason::Training).await;
    let dashboard = t
        .pilotage()
        .await
        .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
        .await
        .expect("dashboard")
        .into_inner()
        .dashboard
        .expect("dashboard");
    assert_eq!(
        dashboard.entries.as_ref().map(|c| (c.count, c.suppressed)),
        Some((0, true))
    );
    assert!(dashboard.average_entry_delay_suppressed);
    assert!(
        dashboard
            .exits_by_type
            .iter()
            .any(|c| c.key == "training" && c.suppressed)
    );
    t.shutdown().await;
}

/// The same disagreement at diagnosis, under each agreement: in
/// Ille-et-Vilaine both professionals must agree; in Seine-et-Marne the
/// prescriber's detection is not overturned.
#[tokio::test]
async fn the_diagnosis_rule_follows_the_agreement() {
    for (agreement, expected) in [
        ("ille-et-vilaine-2023", v1::CaseState::NotEntered),
        ("seine-et-marne-2020", v1::CaseState::Diagnosed),
    ] {
        let t = start_under(Backend::Sqlite, 11, false, agreement).await;
        let consent = t
            .social_consent(
                "c-rule",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let referral = t
            .social_referral("r-rule", &consent, "Awa")
            .await
            .expect("referral");
        let case_id = referral.case_id;
        let mut emploi = t.emploi().await;
        let half = |verdict: v1::Verdict| v1::DiagnosisHalf {
            case_id: case_id.clone(),
            verdict: verdict as i32,
            ..Default::default()
        };
        // The prescriber (social side) agrees; the employment side does not.
        t.social()
            .await
            .record_diagnosis(t.as_social_worker(v1::RecordDiagnosisRequest {
                idempotency_key: "d-s".into(),
                half: Some(half(v1::Verdict::Agree)),
                local_note: String::new(),
            }))
            .await
            .expect("social half");
        t.accept_at_emploi(&case_id).await;
        emploi
            .record_diagnosis(t.as_counsellor(v1::RecordDiagnosisRequest {
                idempotency_key: "d-e".into(),
                half: Some(half(v1::Verdict::Disagree)),
                local_note: String::new(),
            }))
            .await
            .expect("employment half");
        eventually("both halves applied at emploi", async || {
            let answer = t.case_at_emploi(&case_id).await.expect("case");
            answer.diagnoses.len() == 2
        })
        .await;
        let state = t
            .case_at_emploi(&case_id)
            .await
            .expect("case")
            .case
            .map(|c| c.state);
        assert_eq!(state, Some(expected as i32), "{agreement}");
        t.shutdown().await;
    }
}

/// A source that does not answer is shown from its last snapshot, marked
/// stale; the other source's figures stay fresh.
#[tokio::test]
async fn a_silent_source_is_shown_from_its_last_snapshot() {
    let t = start(Backend::Sqlite, 1).await;
    let consent = t.social_consent("c-stale", &[v1::Purpose::Referral]).await;
    t.social_referral("r-stale", &consent, "Enora")
        .await
        .expect("referral");
    let dashboard = async |t: &TestStack| {
        t.pilotage()
            .await
            .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
            .await
            .expect("dashboard")
            .into_inner()
            .dashboard
            .expect("dashboard")
    };
    let first = dashboard(&t).await;
    assert!(first.sources.iter().all(|s| s.fresh));

    t.stack
        .stop(Institution::Social)
        .await
        .expect("stop social");
    let second = dashboard(&t).await;
    let freshness: Vec<_> = second.sources.iter().map(|s| (s.source, s.fresh)).collect();
    assert_eq!(
        freshness,
        vec![
            (v1::Institution::Emploi as i32, true),
            (v1::Institution::Social as i32, false)
        ]
    );
    let social_referrals = |d: &v1::Dashboard| {
        d.referrals_by_network
            .iter()
            .find(|c| c.key == "social")
            .map(|c| c.count)
    };
    assert_eq!(
        social_referrals(&second),
        Some(1),
        "the social side's last figures are kept"
    );
    assert_eq!(social_referrals(&second), social_referrals(&first));
    t.shutdown().await;
}
