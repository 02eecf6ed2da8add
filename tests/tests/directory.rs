//! The resource directory (axe 1): data·inclusion import and export, search
//! as professionals use it, who may change what, and the history of changes.

use chrono::{DateTime, Utc};
use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use v1::directory_service_client::DirectoryServiceClient;

const STRUCTURES: &str = include_str!("../fixtures/data-inclusion/structures.json");
const SERVICES: &str = include_str!("../fixtures/data-inclusion/services.json");

async fn directory(t: &TestStack) -> DirectoryServiceClient<Channel> {
    DirectoryServiceClient::new(t.channel(Institution::Social).await)
}

fn as_coordinator<T>(t: &TestStack, from: Institution, message: T) -> tonic::Request<T> {
    t.as_agent(
        from,
        Role::Coordinator,
        "coordination",
        Institution::Social,
        message,
    )
}

fn as_agent_of<T>(t: &TestStack, from: Institution, message: T) -> tonic::Request<T> {
    let role = match from {
        Institution::Emploi => Role::Counsellor,
        _ => Role::SocialWorker,
    };
    t.as_agent(from, role, "agent-1", Institution::Social, message)
}

async fn import(
    t: &TestStack,
    key: &str,
    structures: &str,
    services: &str,
) -> v1::ImportDataInclusionResponse {
    directory(t)
        .await
        .import_data_inclusion(as_coordinator(
            t,
            Institution::Social,
            v1::ImportDataInclusionRequest {
                idempotency_key: key.into(),
                structures_json: structures.into(),
                services_json: services.into(),
            },
        ))
        .await
        .expect("import")
        .into_inner()
}

async fn export(t: &TestStack) -> (serde_json::Value, serde_json::Value) {
    let e = directory(t)
        .await
        .export_data_inclusion(as_coordinator(
            t,
            Institution::Emploi,
            v1::ExportDataInclusionRequest {},
        ))
        .await
        .expect("export")
        .into_inner();
    (
        serde_json::from_str(&e.structures_json).expect("json"),
        serde_json::from_str(&e.services_json).expect("json"),
    )
}

fn by_id(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(items) = v.as_array_mut() {
        items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    }
    v
}

#[tokio::test]
async fn a_data_inclusion_directory_round_trips_without_loss() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        let report = import(&t, "i1", STRUCTURES, SERVICES).await;
        assert_eq!(
            (report.structures_imported, report.services_imported),
            (4, 5)
        );
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        let (structures, services) = export(&t).await;
        // Every field comes back, those this model does not know included.
        assert_eq!(
            by_id(structures.clone()),
            by_id(serde_json::from_str(STRUCTURES).expect("json"))
        );
        assert_eq!(
            by_id(services.clone()),
            by_id(serde_json::from_str(SERVICES).expect("json"))
        );

        // Published, then loaded by another Département: the same export.
        let other = start(backend, 11).await;
        let report = import(&other, "i2", &structures.to_string(), &services.to_string()).await;
        assert!(report.rejected.is_empty());
        assert_eq!(export(&other).await, (structures, services));
        other.shutdown().await;
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_records_are_reported_one_by_one_and_the_rest_imported() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        let structures = r#"[
            {"id": "ok-1", "source": "cd35", "nom": "CCAS de Vitré", "code_insee": "35360"},
            {"id": "bad-insee", "source": "cd35", "nom": "Mairie", "code_insee": "3536"},
            {"id": "bad-shape", "source": "cd35", "nom": 42}
        ]"#;
        let services = r#"[
            {"id": "svc-ok", "structure_id": "ok-1", "source": "cd35", "nom": "Aide alimentaire d'urgence",
             "thematiques": ["equipement-et-alimentation--alimentation"]},
            {"id": "svc-theme", "structure_id": "ok-1", "source": "cd35", "nom": "Voyages",
             "thematiques": ["tourisme--voyager"]},
            {"id": "svc-orphan", "structure_id": "nowhere", "source": "cd35", "nom": "Orphelin"},
            {"id": "svc-short", "structure_id": "ok-1", "source": "cd35", "nom": "A"}
        ]"#;
        let report = import(&t, "bad", structures, services).await;
        assert_eq!((report.structures_imported, report.services_imported), (1, 1));
        let rejected: Vec<(&str, u32, &str, &str)> = report
            .rejected
            .iter()
            .map(|r| (r.collection.as_str(), r.index, r.id.as_str(), r.field.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                ("structures", 1, "bad-insee", "code_insee"),
                ("structures", 2, "bad-shape", "nom"),
                ("services", 1, "svc-theme", "thematiques[0]"),
                ("services", 3, "svc-short", "nom"),
                ("services", 2, "svc-orphan", "structure_id"),
            ]
        );
        assert!(report.rejected.iter().all(|r| !r.reason.is_empty()));
        let not_json = directory(&t)
            .await
            .import_data_inclusion(as_coordinator(
                &t,
                Institution::Social,
                v1::ImportDataInclusionRequest {
                    idempotency_key: "nj".into(),
                    structures_json: "{not json".into(),
                    services_json: "[]".into(),
                },
            ))
            .await
            .expect_err("not an array");
        assert_eq!(not_json.code(), Code::InvalidArgument);
        t.shutdown().await;
    })
    .await;
}

async fn search(
    t: &TestStack,
    from: Institution,
    q: v1::SearchServicesRequest,
) -> v1::SearchServicesResponse {
    directory(t)
        .await
        .search_services(as_agent_of(t, from, q))
        .await
        .expect("search")
        .into_inner()
}

fn ids(r: &v1::SearchServicesResponse) -> Vec<&str> {
    r.hits
        .iter()
        .map(|h| {
            h.service
                .as_ref()
                .map(|s| s.id.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn professionals_find_what_they_look_for() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        import(&t, "i", STRUCTURES, SERVICES).await;

        // Housing in Rennes: the CDAS's service, not Redon's grocery.
        let housing = search(
            &t,
            Institution::Emploi,
            v1::SearchServicesRequest {
                thematiques: vec!["logement-hebergement".into()],
                code_insee: "35238".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&housing), vec!["svc-cdas-logement"]);

        // Free text, accents and case ignored.
        let grocery = search(
            &t,
            Institution::Social,
            v1::SearchServicesRequest {
                text: "EPICERIE solidaire".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&grocery), vec!["svc-epicerie"]);
        let by_commune = search(
            &t,
            Institution::Social,
            v1::SearchServicesRequest {
                commune: "redon".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&by_commune), vec!["svc-epicerie"]);

        // Eligible across the Département: a Fougères person finds the permit aid and the CV workshop.
        let fougeres = search(
            &t,
            Institution::Emploi,
            v1::SearchServicesRequest {
                code_insee: "35115".into(),
                publics: vec!["beneficiaires-des-minimas-sociaux".into()],
                ..Default::default()
            },
        )
        .await;
        assert!(
            ids(&fougeres).contains(&"svc-mobilite-permis"),
            "{:?}",
            ids(&fougeres)
        );
        assert!(!ids(&fougeres).contains(&"svc-cdas-logement"));

        // Ranked: a word in the name weighs more than in the description.
        let permis = search(
            &t,
            Institution::Emploi,
            v1::SearchServicesRequest {
                text: "permis".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&permis).first(), Some(&"svc-mobilite-permis"));

        // Open now: Tuesday 24 November 2026, 15:00 in Rennes (14:00 UTC).
        let tuesday_afternoon: DateTime<Utc> = "2026-11-24T14:00:00Z".parse().expect("date");
        t.clock.set(tuesday_afternoon);
        let open = search(
            &t,
            Institution::Social,
            v1::SearchServicesRequest {
                open_now: true,
                ..Default::default()
            },
        )
        .await;
        // The grocery opens Tuesday afternoons; the CDAS too; the workshop's agency is open.
        assert!(ids(&open).contains(&"svc-epicerie"), "{:?}", ids(&open));
        t.clock.set("2026-11-24T12:15:00Z".parse().expect("date"));
        let lunch = search(
            &t,
            Institution::Social,
            v1::SearchServicesRequest {
                open_now: true,
                ..Default::default()
            },
        )
        .await;
        assert!(!ids(&lunch).contains(&"svc-epicerie"));
        assert!(
            !ids(&lunch).contains(&"svc-cdas-logement"),
            "closed 12:30-13:30"
        );

        // Paged: two at a time, every service once.
        let mut seen = vec![];
        let mut token = String::new();
        loop {
            let page = search(
                &t,
                Institution::Social,
                v1::SearchServicesRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(page.total, 5);
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5);
        let bad = directory(&t)
            .await
            .search_services(as_agent_of(
                &t,
                Institution::Social,
                v1::SearchServicesRequest {
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await
            .expect_err("page too large");
        assert_eq!(bad.code(), Code::InvalidArgument);
        t.shutdown().await;
    })
    .await;
}

fn service(id: &str, thematique: &str) -> v1::DirectoryEntry {
    v1::DirectoryEntry {
        id: id.into(),
        structure_id: "ft-agence-rennes-sud".into(),
        source: "cd35".into(),
        nom: format!("Service {id}"),
        thematiques: vec![thematique.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_departement_administers_and_the_employment_side_co_administers_where_agreed() {
    on_every_backend(|backend| async move {
        for (agreement, employment_may) in [
            ("ille-et-vilaine-2023", true),
            ("seine-et-marne-2020", false),
        ] {
            let t = start_under(backend, 11, false, agreement).await;
            import(&t, "i", STRUCTURES, SERVICES).await;
            let upsert = |from: Institution, key: &str, s: v1::DirectoryEntry| {
                as_coordinator(
                    &t,
                    from,
                    v1::UpsertServiceRequest {
                        idempotency_key: key.into(),
                        service: Some(s),
                        sensitive: None,
                    },
                )
            };
            let training = directory(&t)
                .await
                .upsert_service(upsert(
                    Institution::Emploi,
                    "e1",
                    service("svc-emploi-1", "trouver-un-emploi--suivre-ma-candidature"),
                ))
                .await;
            assert_eq!(
                training.is_ok(),
                employment_may,
                "{agreement}: {training:?}"
            );
            let housing = directory(&t)
                .await
                .upsert_service(upsert(
                    Institution::Emploi,
                    "e2",
                    service(
                        "svc-emploi-2",
                        "logement-hebergement--etre-accompagne-pour-se-loger",
                    ),
                ))
                .await
                .expect_err("not an employment-training sheet");
            assert_eq!(housing.code(), Code::PermissionDenied);
            // Nor may the employment side rewrite the Département's housing sheet.
            let mut hijack = service(
                "svc-cdas-logement",
                "trouver-un-emploi--suivre-ma-candidature",
            );
            hijack.structure_id = "cd35-cdas-rennes-champs-manceaux".into();
            let status = directory(&t)
                .await
                .upsert_service(upsert(Institution::Emploi, "e3", hijack))
                .await
                .expect_err("someone else's sheet");
            assert_eq!(status.code(), Code::PermissionDenied);
            directory(&t)
                .await
                .upsert_service(upsert(
                    Institution::Social,
                    "s1",
                    service(
                        "svc-social-1",
                        "logement-hebergement--etre-accompagne-pour-se-loger",
                    ),
                ))
                .await
                .expect("the Département administers everything");
            // A counsellor searches but does not write.
            let status = directory(&t)
                .await
                .upsert_service(t.as_agent(
                    Institution::Emploi,
                    Role::Counsellor,
                    "ft-1",
                    Institution::Social,
                    v1::UpsertServiceRequest {
                        idempotency_key: "c1".into(),
                        service: Some(service("svc-c", "trouver-un-emploi--suivre-ma-candidature")),
                        sensitive: None,
                    },
                ))
                .await
                .expect_err("coordinators only");
            assert_eq!(status.code(), Code::PermissionDenied);

            // Every change keeps who and when.
            let history = directory(&t)
                .await
                .get_history(as_coordinator(
                    &t,
                    Institution::Social,
                    v1::GetHistoryRequest {
                        collection: "services".into(),
                        id: "svc-social-1".into(),
                    },
                ))
                .await
                .expect("history")
                .into_inner()
                .changes;
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].changed_by, "coordination");
            assert_eq!(history[0].action, "upsert");
            t.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn sensitive_entries_are_flagged_and_contact_points_named_per_office() {
    on_every_backend(|backend| async move {
        let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
        import(&t, "i", STRUCTURES, SERVICES).await;
        let get = async |id: &str| {
            directory(&t)
                .await
                .get_service(as_agent_of(
                    &t,
                    Institution::Emploi,
                    v1::GetServiceRequest { id: id.into() },
                ))
                .await
                .expect("service")
                .into_inner()
                .hit
                .expect("hit")
        };
        assert!(get("svc-csapa").await.sensitive, "an addiction clinic");
        assert!(!get("svc-ft-atelier-cv").await.sensitive);
        // An administrator may flag what the words do not show.
        let flagged = directory(&t)
            .await
            .upsert_service(as_coordinator(
                &t,
                Institution::Social,
                v1::UpsertServiceRequest {
                    idempotency_key: "flag".into(),
                    service: get("svc-epicerie").await.service,
                    sensitive: Some(true),
                },
            ))
            .await
            .expect("flagged")
            .into_inner();
        assert!(flagged.sensitive);

        let set = |from: Institution, key: &str, office: &str| {
            as_coordinator(
                &t,
                from,
                v1::SetContactPointRequest {
                    idempotency_key: key.into(),
                    contact_point: Some(v1::ContactPoint {
                        office_code: office.into(),
                        name: "Claire Morvan".into(),
                        phone: "+33160000000".into(),
                        email: "referent.ag@example.org".into(),
                        ..Default::default()
                    }),
                },
            )
        };
        directory(&t)
            .await
            .set_contact_point(set(Institution::Emploi, "cp1", "PE-77-01"))
            .await
            .expect("an agency's contact point");
        let status = directory(&t)
            .await
            .set_contact_point(set(Institution::Emploi, "cp2", "MDS-01"))
            .await
            .expect_err("not the employment side's office");
        assert_eq!(status.code(), Code::PermissionDenied);
        directory(&t)
            .await
            .set_contact_point(set(Institution::Social, "cp3", "MDS-01"))
            .await
            .expect("an MDS's contact point");
        let listed = directory(&t)
            .await
            .list_contact_points(as_agent_of(
                &t,
                Institution::Emploi,
                v1::ListContactPointsRequest {},
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.contact_points.len(), 2);
        assert_eq!(
            listed.offices_without.len(),
            14 - 2,
            "7 agencies and 7 MDS in Seine-et-Marne"
        );

        // The employment side does not host the directory by default.
        let status = DirectoryServiceClient::new(t.channel(Institution::Emploi).await)
            .list_contact_points(t.as_agent(
                Institution::Emploi,
                Role::Counsellor,
                "ft-1",
                Institution::Emploi,
                v1::ListContactPointsRequest {},
            ))
            .await
            .expect_err("not hosted there");
        assert_eq!(status.code(), Code::Unimplemented);
        t.shutdown().await;
    })
    .await;
}
