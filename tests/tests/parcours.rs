//! Orientation into the three parcours of the Ille-et-Vilaine pilot (seed
//! 000, preamble and axe 2, 1): the side that decides records it with the
//! agreement's grid, a referral to accompagnement global is taken only from
//! the socio-professional parcours on the pilot's offices, a change of
//! parcours during the support crosses to the partner under its own purpose
//! (the grid never does), and the committee counts orientations, changes and
//! entries by parcours. Seine-et-Marne organises no parcours.

use std::collections::BTreeMap;

use passerelle_domain::statistics::CubeKey;
use passerelle_domain::{Clock, Institution, Purpose};
use passerelle_storage::audit::AuditFilter;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

/// The Redon CDAS: an office of the France Travail pilot.
const PILOT_CDAS: &str = "AD-REDON-VALLONS";

fn orientation(
    case_id: &str,
    office: &str,
    parcours: v1::Parcours,
    referent: v1::OrganismeReferent,
    rsa_beneficiary: bool,
) -> v1::Orientation {
    v1::Orientation {
        case_id: case_id.into(),
        office_code: office.into(),
        parcours: parcours as i32,
        referent: referent as i32,
        rsa_beneficiary,
        ..Default::default()
    }
}

/// The agreement's whole grid, each criterion given its `pick`-th answer
/// (or its last one).
fn grid(t: &TestStack, pick: usize) -> Vec<v1::CriterionAnswer> {
    t.agreement
        .parcours
        .as_ref()
        .expect("parcours")
        .criteria
        .iter()
        .map(|c| v1::CriterionAnswer {
            criterion: c.code.clone(),
            answer: c.answers[pick.min(c.answers.len() - 1)].clone(),
        })
        .collect()
}

fn record(
    key: &str,
    orientation: v1::Orientation,
    criteria: Vec<v1::CriterionAnswer>,
) -> v1::RecordOrientationRequest {
    v1::RecordOrientationRequest {
        idempotency_key: key.into(),
        orientation: Some(orientation),
        criteria,
    }
}

async fn orient_at_social(
    t: &TestStack,
    request: v1::RecordOrientationRequest,
) -> Result<v1::LocalOrientation, tonic::Status> {
    t.social()
        .await
        .record_orientation(t.as_social_worker(request))
        .await
        .map(|a| a.into_inner().orientation.expect("orientation"))
}

async fn refer_from(
    t: &TestStack,
    key: &str,
    consent: &v1::ConsentRecord,
    office: &str,
) -> Result<v1::Referral, tonic::Status> {
    let mut referral = t.referral(&consent.case_id, &consent.consent_id, "Maëlle");
    referral.office_code = office.into();
    referral.employment = Some(v1::EmploymentSummary {
        registered: true,
        registration_date: "2023-01-10".into(),
        rsa_beneficiary: true,
    });
    t.social()
        .await
        .create_referral(t.as_social_worker(v1::CreateReferralRequest {
            idempotency_key: key.into(),
            referral: Some(referral),
            local_note: String::new(),
        }))
        .await
        .map(|a| a.into_inner().referral.expect("referral"))
}

fn counts_of(counts: &[(CubeKey, i64)], measure: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (k, n) in counts.iter().filter(|(k, _)| k.measure == measure) {
        *out.entry(k.key.clone()).or_insert(0) += n;
    }
    out
}

#[tokio::test]
async fn the_pilot_orients_into_three_parcours_and_refers_only_from_the_socio_professional_one() {
    on_every_backend(|backend| async move {
        let t = start(backend, 1).await;
        let consent = t
            .social_consent(
                "p-consent",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let case_id = consent.case_id.clone();
        let o = |parcours, referent| orientation(&case_id, PILOT_CDAS, parcours, referent, true);
        let socio_pro = || {
            o(
                v1::Parcours::SocioProfessionnel,
                v1::OrganismeReferent::FranceTravail,
            )
        };

        // On the pilot's office, no referral before an orientation.
        let refused = refer_from(&t, "p-ref-0", &consent, PILOT_CDAS)
            .await
            .expect_err("not oriented");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("RecordOrientation"),
            "{refused:?}"
        );

        // An RSA beneficiary is oriented by the Département, not France Travail.
        let wrong_side = t
            .emploi()
            .await
            .record_orientation(t.as_counsellor(record("p-o-ft", socio_pro(), grid(&t, 0))))
            .await
            .expect_err("France Travail does not decide for an RSA beneficiary");
        assert_eq!(wrong_side.code(), Code::FailedPrecondition);
        assert!(wrong_side.message().contains("L. 262-29"), "{wrong_side:?}");

        // The grid is answered whole, from its answers; the office is a pilot's one.
        let mut partial = grid(&t, 0);
        partial.pop();
        for (request, field) in [
            (record("p-o-1", socio_pro(), partial), "criteria"),
            (
                record(
                    "p-o-2",
                    socio_pro(),
                    grid(&t, 0)
                        .into_iter()
                        .map(|mut a| {
                            a.answer = "maybe".into();
                            a
                        })
                        .collect(),
                ),
                "criteria[0].answer",
            ),
            (
                record(
                    "p-o-3",
                    orientation(
                        &case_id,
                        "AD-RENNES",
                        v1::Parcours::SocioProfessionnel,
                        v1::OrganismeReferent::FranceTravail,
                        true,
                    ),
                    grid(&t, 0),
                ),
                "orientation.office_code",
            ),
            (
                record(
                    "p-o-4",
                    o(
                        v1::Parcours::SocioProfessionnel,
                        v1::OrganismeReferent::Departement,
                    ),
                    grid(&t, 0),
                ),
                "orientation.referent",
            ),
            (
                record(
                    "p-o-5",
                    o(
                        v1::Parcours::Unspecified,
                        v1::OrganismeReferent::FranceTravail,
                    ),
                    grid(&t, 0),
                ),
                "orientation.parcours",
            ),
        ] {
            let status = orient_at_social(&t, request).await.expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(status.message().contains(field), "{field}: {status:?}");
        }

        // Oriented to the social parcours: no accompagnement global.
        let social = orient_at_social(
            &t,
            record(
                "p-o-social",
                o(v1::Parcours::Social, v1::OrganismeReferent::Departement),
                grid(&t, 2),
            ),
        )
        .await
        .expect("oriented to the social parcours");
        let decided = social.orientation.expect("orientation");
        assert_eq!(decided.decided_by, "sw-rennes-1");
        assert_eq!(
            decided.decided_by_institution,
            v1::Institution::Social as i32
        );
        assert_eq!(social.criteria.len(), 9);
        let refused = refer_from(&t, "p-ref-1", &consent, PILOT_CDAS)
            .await
            .expect_err("social parcours");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("socio_professionnel"),
            "{refused:?}"
        );
        let again = orient_at_social(
            &t,
            record(
                "p-o-social-again",
                o(v1::Parcours::Social, v1::OrganismeReferent::Departement),
                grid(&t, 2),
            ),
        )
        .await
        .expect_err("already there");
        assert_eq!(again.code(), Code::FailedPrecondition);

        // Re-oriented to the socio-professional parcours, the person is referred.
        orient_at_social(&t, record("p-o-sp", socio_pro(), grid(&t, 1)))
            .await
            .expect("socio-professional");
        let referral = refer_from(&t, "p-ref-2", &consent, PILOT_CDAS)
            .await
            .expect("referred from the socio-professional parcours");
        let carried = referral
            .orientation
            .expect("the referral names its orientation");
        assert_eq!(carried.parcours, v1::Parcours::SocioProfessionnel as i32);

        // The partner holds the orientation, never its grid; this side holds both.
        eventually("the referral at emploi", async || {
            t.case_at_emploi(&case_id).await.is_some()
        })
        .await;
        let at_emploi = t.case_at_emploi(&case_id).await.expect("case");
        assert_eq!(at_emploi.orientations.len(), 1);
        assert!(at_emploi.orientations[0].criteria.is_empty());
        let at_social = t.case_at_social(&case_id).await.expect("case");
        let parcours: Vec<i32> = at_social
            .orientations
            .iter()
            .map(|o| o.orientation.as_ref().expect("o").parcours)
            .collect();
        assert_eq!(
            parcours,
            [
                v1::Parcours::Social as i32,
                v1::Parcours::SocioProfessionnel as i32
            ]
        );
        assert!(at_social.orientations.iter().all(|o| o.criteria.len() == 9));

        // In support, the social barriers lifted: back to the emploi parcours.
        t.enter_referred("p", &case_id).await;
        t.clock.advance(chrono::Duration::days(60));
        orient_at_social(
            &t,
            record(
                "p-o-emploi",
                o(v1::Parcours::Emploi, v1::OrganismeReferent::FranceTravail),
                grid(&t, 0),
            ),
        )
        .await
        .expect("change of parcours");
        eventually("the change at emploi", async || {
            t.case_at_emploi(&case_id)
                .await
                .is_some_and(|c| c.orientations.len() == 2)
        })
        .await;
        let at_emploi = t.case_at_emploi(&case_id).await.expect("case");
        let last = at_emploi.orientations[1].orientation.as_ref().expect("o");
        assert_eq!(last.parcours, v1::Parcours::Emploi as i32);
        assert!(at_emploi.orientations[1].criteria.is_empty());

        // The crossing is audited at both ends under its own purpose, with
        // no value of the grid.
        for institution in [Institution::Social, Institution::Emploi] {
            let store = t.store(institution).await;
            let records = store
                .audit()
                .search(&AuditFilter {
                    case_id: Some(case_id.clone()),
                    purpose: Some(Purpose::Orientation),
                    limit: 10,
                    ..AuditFilter::default()
                })
                .await
                .expect("audit");
            assert_eq!(records.len(), 1, "{institution:?}: {records:?}");
            let entry = &records[0].1;
            assert!(entry.method.ends_with("/ReceiveParcoursChange"));
            assert!(entry.fields.iter().any(|f| f.contains("parcours")));
            assert!(
                entry.fields.iter().all(|f| !f.contains("criteria")),
                "{:?}",
                entry.fields
            );
        }

        // The committee's counts: orientations and changes where decided,
        // the entry by the parcours it came from where the person signed.
        let social_counts = t
            .store(Institution::Social)
            .await
            .statistics()
            .await
            .expect("counts");
        assert_eq!(
            counts_of(&social_counts, "orientations"),
            BTreeMap::from([("social".to_owned(), 1)])
        );
        assert_eq!(
            counts_of(&social_counts, "parcours_changes"),
            BTreeMap::from([
                ("social->socio_professionnel".to_owned(), 1),
                ("socio_professionnel->emploi".to_owned(), 1)
            ])
        );
        assert!(
            social_counts
                .iter()
                .filter(|(k, _)| k.measure == "orientations")
                .all(|(k, _)| k.office == PILOT_CDAS && k.network == "social")
        );
        let emploi_store = t.store(Institution::Emploi).await;
        let emploi_counts = emploi_store.statistics().await.expect("counts");
        assert!(counts_of(&emploi_counts, "orientations").is_empty());
        assert_eq!(
            counts_of(&emploi_counts, "entries_by_parcours"),
            BTreeMap::from([("socio_professionnel".to_owned(), 1)])
        );
        t.assert_counts_equal_a_recount(Institution::Social).await;
        t.assert_counts_equal_a_recount(Institution::Emploi).await;

        // The steering committee sees them, under secrecy (1 here).
        let dashboard = t.dashboard().await;
        for name in [
            "orientations.by_office",
            "parcours_changes.by_office",
            "entries_by_parcours.by_office",
        ] {
            let table = dashboard
                .tables
                .iter()
                .find(|tb| tb.name == name)
                .unwrap_or_else(|| panic!("{name} published"));
            assert!(!table.withheld, "{name}");
        }
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_change_of_parcours_comes_only_from_the_side_that_decided_it_and_only_about_a_known_case()
{
    let t = start(Backend::Sqlite, 1).await;
    let forged = |case_id: &str, decided_by: v1::Institution| {
        let mut o = orientation(
            case_id,
            PILOT_CDAS,
            v1::Parcours::Social,
            v1::OrganismeReferent::Departement,
            true,
        );
        o.decided_by_institution = decided_by as i32;
        o.decided_by = "someone".into();
        o.decided_at = Some(timestamp(t.clock.now()));
        t.as_service(
            Institution::Emploi,
            Institution::Social,
            v1::ReceiveParcoursChangeRequest {
                idempotency_key: format!("forged-{case_id}-{decided_by:?}"),
                case_id: case_id.into(),
                orientation: Some(o),
            },
        )
    };
    let case_id = t.enter_case("forge").await;
    // France Travail's service cannot pass off the Département's decision.
    let status = t
        .social()
        .await
        .receive_parcours_change(forged(&case_id, v1::Institution::Social))
        .await
        .expect_err("not the sender's decision");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("decided_by_institution"),
        "{status:?}"
    );
    // Nor speak of a case the Département does not hold.
    let unknown = "0190a0b0-0000-7000-8000-0000000000ff";
    let status = t
        .social()
        .await
        .receive_parcours_change(forged(unknown, v1::Institution::Emploi))
        .await
        .expect_err("unknown case");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // An agent cannot call the partner's crossing.
    let status = t
        .social()
        .await
        .receive_parcours_change(t.as_social_worker(v1::ReceiveParcoursChangeRequest {
            idempotency_key: "agent".into(),
            case_id: case_id.clone(),
            orientation: None,
        }))
        .await
        .expect_err("agents do not call crossings");
    assert_eq!(status.code(), Code::PermissionDenied);
    t.shutdown().await;
}

#[tokio::test]
async fn seine_et_marne_organises_no_parcours_and_refers_as_before() {
    let t = start_under(Backend::Sqlite, 1, false, "seine-et-marne-2020").await;
    let office = t
        .agreement
        .offices
        .iter()
        .find(|o| o.network() == passerelle_domain::Network::Social)
        .map(|o| o.code.clone())
        .expect("office");
    let status = t
        .social()
        .await
        .record_orientation(t.as_social_worker(record(
            "sem-o",
            orientation(
                "0190a0b0-0000-7000-8000-000000000077",
                &office,
                v1::Parcours::SocioProfessionnel,
                v1::OrganismeReferent::FranceTravail,
                true,
            ),
            vec![],
        )))
        .await
        .expect_err("no parcours");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("no parcours"), "{status:?}");
    // Its referrals go as they always did.
    t.enter_case("sem").await;
    t.shutdown().await;
}
