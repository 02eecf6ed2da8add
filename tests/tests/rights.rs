//! The person's rights and the DPO's tools, over real gRPC on both
//! backends: the register lists what the contract declares, the access
//! report lists what is held and what crossed, the joint one merges both
//! institutions' parts, and a rewritten audit log is caught.

use std::collections::BTreeSet;

use passerelle_boundary::audit::{AuditEntry, chain_hash};
use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use prost_reflect::ReflectMessage;
use serde_json::Value;
use sqlx::Row;
use tonic::Code;

fn json(document: Option<v1::Document>) -> Value {
    let document = document.expect("a document");
    assert_eq!(document.content_type, "application/json");
    serde_json::from_str(&document.body).expect("JSON")
}

/// Whether `t`'s agreement runs the processing of `purpose` (as the contract
/// names it): its register lists only those.
fn runs(t: &TestStack, purpose: &str) -> bool {
    v1::Purpose::from_str_name(purpose)
        .and_then(passerelle_contract::convert::purpose)
        .is_none_or(|p| t.agreement.runs(p))
}

/// (purpose, legal basis) of every crossing the contract declares.
fn contract_bases() -> BTreeSet<(String, String)> {
    passerelle_rights::Catalogue::from_contract()
        .expect("catalogue")
        .rpcs
        .iter()
        .filter_map(|r| r.crossing.as_ref())
        .map(|c| (c.purpose.clone(), c.legal_basis.clone()))
        .collect()
}

async fn register(
    t: &TestStack,
    institution: Institution,
    format: v1::DocumentFormat,
) -> v1::Document {
    let request = t.as_dpo(
        institution,
        v1::GetProcessingRegisterRequest {
            format: format as i32,
            ..Default::default()
        },
    );
    let answer = match institution {
        Institution::Emploi => t.emploi().await.get_processing_register(request).await,
        _ => t.social().await.get_processing_register(request).await,
    };
    answer
        .expect("register")
        .into_inner()
        .document
        .expect("document")
}

#[tokio::test]
async fn the_register_lists_every_purpose_and_legal_basis_the_agreement_runs() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // Crossings to count.
        t.enter_case("register").await;
        let mut listed = BTreeSet::new();
        let mut purposes = BTreeSet::new();
        for institution in [Institution::Emploi, Institution::Social] {
            let listing = json(Some(
                register(&t, institution, v1::DocumentFormat::Json).await,
            ));
            for activity in listing["activities"].as_array().expect("activities") {
                purposes.insert(activity["purpose"].as_str().expect("purpose").to_owned());
                for basis in activity["legal_bases"].as_array().expect("bases") {
                    listed.insert((
                        activity["purpose"].as_str().expect("purpose").to_owned(),
                        basis["basis"].as_str().expect("basis").to_owned(),
                    ));
                    assert!(!basis["reference"].as_str().expect("reference").is_empty());
                }
                assert!(!activity["title"].as_str().expect("title").is_empty());
                assert!(
                    !activity["data_subjects"]
                        .as_array()
                        .expect("subjects")
                        .is_empty()
                );
            }
            // What crossed is counted from the log: referral crossings were made.
            let made = listing["crossings_made"].as_array().expect("made");
            assert!(
                made.iter().any(
                    |c| c["purpose"] == "Orientation vers l'accompagnement global"
                        && c["decision"] == "autorisé"
                        && c["count"].as_u64() > Some(0)
                ),
                "{backend:?}: {made:?}"
            );
            let referral = listing["activities"]
                .as_array()
                .expect("activities")
                .iter()
                .find(|a| a["code"] == "referral")
                .expect("referral activity");
            assert_eq!(
                referral["retention"][0]["months_after_end"], 24,
                "the agreement's retention"
            );
            let html = register(&t, institution, v1::DocumentFormat::Html).await;
            assert!(html.body.starts_with("<!DOCTYPE html>"));
            assert!(html.body.contains("Registre des activités de traitement"));
            let md = register(&t, institution, v1::DocumentFormat::Markdown).await;
            assert!(
                md.body
                    .starts_with("# Registre des activités de traitement")
            );
        }
        let run: BTreeSet<_> = contract_bases()
            .into_iter()
            .filter(|(purpose, _)| runs(&t, purpose))
            .collect();
        assert_eq!(listed, run, "{backend:?}");
        // Ille-et-Vilaine runs the parcours, and no axe 3.
        assert!(purposes.contains("PURPOSE_ORIENTATION"));
        assert!(!purposes.contains("PURPOSE_EXCLUSIVE_SOCIAL_SUPPORT"));
        let every_purpose: BTreeSet<String> = passerelle_contract::descriptor_pool()
            .get_enum_by_name("passerelle.v1.Purpose")
            .expect("Purpose")
            .values()
            .filter(|v| v.number() != 0 && runs(&t, v.name()))
            .map(|v| v.name().to_owned())
            .collect();
        assert_eq!(purposes, every_purpose, "{backend:?}");
        t.shutdown().await;
    })
    .await;
}

/// The leaf paths of a message, as the access report names them.
fn leaf_paths(message: &prost_reflect::DynamicMessage, prefix: &str, out: &mut BTreeSet<String>) {
    use prost_reflect::Value as V;
    fn walk(value: &V, path: String, out: &mut BTreeSet<String>) {
        match value {
            V::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}[{i}]"), out);
                }
            }
            V::Message(m) if m.descriptor().full_name() == "google.protobuf.Timestamp" => {
                out.insert(path);
            }
            V::Message(m) => leaf_paths(m, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        walk(value, path, out);
    }
}

fn dynamic<M: prost::Message + prost::Name>(m: &M) -> prost_reflect::DynamicMessage {
    let descriptor = passerelle_contract::descriptor_pool()
        .get_message_by_name(&M::full_name())
        .expect("in the contract");
    prost_reflect::DynamicMessage::decode(descriptor, m.encode_to_vec().as_slice()).expect("decode")
}

/// Sequence numbers of the crossings about `case_id` in `institution`'s log.
async fn crossing_seqs(t: &TestStack, institution: Institution, case_id: &str) -> Vec<i64> {
    let audit = t.store(institution).await.audit().clone();
    audit
        .records()
        .await
        .expect("records")
        .iter()
        .filter_map(|r| {
            let e: AuditEntry = serde_json::from_str(&r.entry_json).expect("entry");
            (e.case_id.as_deref() == Some(case_id) && e.purpose.is_some()).then_some(r.seq)
        })
        .collect()
}

fn report_seqs(part: &Value) -> Vec<i64> {
    part["crossings"]
        .as_array()
        .expect("crossings")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect()
}

fn values(part: &Value) -> Vec<&Value> {
    part["values"].as_array().expect("values").iter().collect()
}

#[tokio::test]
async fn the_access_report_lists_what_is_held_and_what_crossed_and_the_joint_one_merges_both() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("access").await;
        // A local note at social, kept there only.
        let consent_id = t.case_at_social(&case_id).await.expect("case").consents[0]
            .consent_id
            .clone();
        t.social()
            .await
            .update_plan(t.social_plan_request(
                "plan-access",
                &case_id,
                "Trouver un logement près de Redon",
            ))
            .await
            .expect("plan");

        let social_store = t.store(Institution::Social).await;
        eventually("the plan's summary delivered", async || {
            social_store.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        // The social side's own report: everything it holds, exactly.
        let report = json(Some(
            t.social_access_report(&case_id, v1::DocumentFormat::Json, false)
                .await
                .expect("report"),
        ));
        let parts = report["parts"].as_array().expect("parts");
        assert_eq!(parts.len(), 1);
        let own = &parts[0];
        assert_eq!(own["institution"], "Le Département");
        // Every leaf of the agent's view of the case is in the report, and
        // the report holds nothing else but the local-only parts.
        let view = t.case_at_social(&case_id).await.expect("view");
        let mut expected = BTreeSet::new();
        for (name, part) in [
            ("case", view.case.as_ref().map(dynamic)),
            ("referral", view.referral.as_ref().map(dynamic)),
        ] {
            leaf_paths(&part.expect("part"), name, &mut expected);
        }
        for (i, d) in view.diagnoses.iter().enumerate() {
            leaf_paths(&dynamic(d), &format!("diagnoses[{i}]"), &mut expected);
        }
        for (i, c) in view.consents.iter().enumerate() {
            leaf_paths(&dynamic(c), &format!("consents[{i}]"), &mut expected);
        }
        for (i, s) in view.plan_summaries.iter().enumerate() {
            leaf_paths(&dynamic(s), &format!("plan_summaries[{i}]"), &mut expected);
        }
        if let Some(plan) = &view.plan {
            leaf_paths(&dynamic(plan), "plan", &mut expected);
        }
        let listed: BTreeSet<String> = values(own)
            .iter()
            .map(|v| v["path"].as_str().expect("path").to_owned())
            .collect();
        assert_eq!(listed, expected, "{backend:?}");
        let first_name = values(own)
            .into_iter()
            .find(|v| v["path"] == "referral.person.first_name")
            .expect("first name");
        assert_eq!(first_name["value"], "Nolwenn");
        assert_eq!(first_name["category"], "DATA_CATEGORY_IDENTITY");
        assert_eq!(
            first_name["kept_until"],
            "pendant l'accompagnement, puis 24 mois après sa fin"
        );
        assert!(
            values(own)
                .iter()
                .any(|v| v["value"] == "Trouver un logement près de Redon"
                    && v["category"] == "DATA_CATEGORY_LOCAL_ONLY"),
            "the plan's local title is the person's too"
        );
        assert!(
            values(own)
                .iter()
                .any(|v| v["path"] == "consents[0].consent_id"
                    && v["value"] == consent_id.as_str())
        );
        // The DPO's reading is on record, and is no crossing.
        let entries = social_store.audit().entries().await.expect("audit");
        let read = entries
            .iter()
            .find(|e| e.method.ends_with("/GetSubjectAccessReport"))
            .expect("the report's reading recorded");
        assert_eq!(read.agent.as_deref(), Some("dpo-social"));
        assert_eq!(read.case_id.as_deref(), Some(case_id.as_str()));
        assert_eq!(read.purpose, None);
        // Every crossing the log recorded about the case, no other.
        let own_seqs = crossing_seqs(&t, Institution::Social, &case_id).await;
        assert!(!own_seqs.is_empty());
        assert_eq!(report_seqs(own), own_seqs, "{backend:?}");

        // The joint report: the partner's part through a crossing of its own.
        let emploi_seqs = crossing_seqs(&t, Institution::Emploi, &case_id).await;
        let joint = json(Some(
            t.social_access_report(&case_id, v1::DocumentFormat::Json, true)
                .await
                .expect("joint report"),
        ));
        let parts = joint["parts"].as_array().expect("parts");
        assert_eq!(parts.len(), 2);
        let theirs = &parts[1];
        assert_eq!(theirs["institution"], "France Travail");
        assert_eq!(report_seqs(theirs), emploi_seqs, "{backend:?}");
        assert!(
            values(theirs)
                .iter()
                .any(|v| v["path"] == "referral.person.first_name" && v["value"] == "Nolwenn")
        );
        // What never leaves the employment side (the ESF questionnaire) is
        // counted, not shown.
        assert!(
            values(theirs)
                .iter()
                .all(|v| v["category"] != "DATA_CATEGORY_LOCAL_ONLY")
        );
        assert!(theirs["local_only_values"].as_u64() > Some(0));
        // Both ends audited it: legal obligation, subject access.
        for institution in [Institution::Emploi, Institution::Social] {
            let entries = t.audit_entries(institution).await;
            let crossing = entries
                .iter()
                .find(|e| e.method.ends_with("/GetSubjectAccessPart"))
                .unwrap_or_else(|| panic!("{institution} recorded the part"));
            assert_eq!(
                crossing.purpose,
                Some(passerelle_domain::Purpose::SubjectAccess)
            );
            assert_eq!(
                crossing.legal_basis,
                Some(passerelle_domain::LegalBasis::LegalObligation)
            );
        }
        // The document a person reads.
        let html = t
            .social_access_report(&case_id, v1::DocumentFormat::Html, true)
            .await
            .expect("html");
        assert_eq!(html.content_type, "text/html; charset=utf-8");
        assert!(html.body.contains("Vos données"));
        assert!(html.body.contains("Nolwenn"));
        assert!(html.body.contains("Données détenues par France Travail"));
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_institutions_dpo_asks_and_bad_input_is_named() {
    let t = start(Backend::Sqlite, 11).await;
    let case_id = t.enter_case("who").await;
    let request = v1::GetSubjectAccessReportRequest {
        case_id: case_id.clone(),
        format: v1::DocumentFormat::Json as i32,
        joint: false,
    };
    // The pair's own social worker is no DPO.
    let status = t
        .social()
        .await
        .get_subject_access_report(t.as_social_worker(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The other institution's DPO is not this one's.
    let status = t
        .social()
        .await
        .get_subject_access_report(t.as_agent(
            Institution::Emploi,
            passerelle_domain::Role::Dpo,
            "dpo-emploi",
            Institution::Social,
            request.clone(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = t
        .social()
        .await
        .get_subject_access_report(t.as_dpo(
            Institution::Social,
            v1::GetSubjectAccessReportRequest {
                case_id: "../../etc".into(),
                ..request.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("case_id"), "{status:?}");
    let status = t
        .social()
        .await
        .search_audit(t.as_dpo(
            Institution::Social,
            v1::SearchAuditRequest {
                limit: 100_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limit"), "{status:?}");
    t.shutdown().await;
}

#[tokio::test]
async fn the_dpo_searches_the_log_by_case_agent_purpose_decision_and_period() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("search").await;
        let other = t.enter_case("search-other").await;
        let search = async |filter: v1::SearchAuditRequest| {
            t.social()
                .await
                .search_audit(t.as_dpo(Institution::Social, filter))
                .await
                .expect("search")
                .into_inner()
        };
        let by_case = search(v1::SearchAuditRequest {
            case_id: case_id.clone(),
            limit: 1_000,
            ..Default::default()
        })
        .await;
        assert!(!by_case.records.is_empty());
        assert!(by_case.records.iter().all(|r| r.case_id == case_id));
        let referral_only = search(v1::SearchAuditRequest {
            case_id: case_id.clone(),
            purpose: v1::Purpose::Referral as i32,
            decision: v1::AuditDecision::Allowed as i32,
            limit: 1_000,
            ..Default::default()
        })
        .await;
        assert!(!referral_only.records.is_empty());
        assert!(referral_only.records.len() < by_case.records.len());
        assert!(
            referral_only
                .records
                .iter()
                .all(|r| r.purpose == v1::Purpose::Referral as i32
                    && r.decision == v1::AuditDecision::Allowed as i32)
        );
        let by_agent = search(v1::SearchAuditRequest {
            agent: "service:emploi".into(),
            limit: 1_000,
            ..Default::default()
        })
        .await;
        assert!(!by_agent.records.is_empty());
        assert!(by_agent.records.iter().all(|r| r.agent == "service:emploi"));
        assert!(by_agent.records.iter().any(|r| r.case_id == other));
        // Pages follow each other without a gap or a repeat.
        let first = search(v1::SearchAuditRequest {
            limit: 3,
            ..Default::default()
        })
        .await;
        assert_eq!(first.records.len(), 3);
        let second = search(v1::SearchAuditRequest {
            limit: 3,
            after_seq: first.next_after_seq,
            ..Default::default()
        })
        .await;
        assert_eq!(second.records[0].seq, first.records[2].seq + 1);
        // A period before anything happened holds nothing.
        let before = search(v1::SearchAuditRequest {
            to: Some(timestamp(t0() - chrono::Duration::days(1))),
            ..Default::default()
        })
        .await;
        assert!(before.records.is_empty(), "{backend:?}");
        t.shutdown().await;
    })
    .await;
}

/// Tampers with the employment side's log as someone with the database's
/// keys would: the append-only trigger off, one record changed.
async fn tamper(t: &TestStack, backend: Backend, seq: i64, rehash: bool) {
    let url = t.database_url(Institution::Emploi);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    match backend {
        Backend::Sqlite => {
            sqlx::query("DROP TRIGGER IF EXISTS audit_log_no_update")
                .execute(&pool)
                .await
                .expect("drop trigger");
        }
        Backend::Postgres => {
            sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
                .execute(&pool)
                .await
                .expect("disable trigger");
        }
    }
    // Holding off the service's own appends while the chain is rewritten.
    let mut tx = pool.begin().await.expect("begin");
    let lock = match backend {
        Backend::Sqlite => "DELETE FROM partner_audit_anchors WHERE 1 = 0",
        Backend::Postgres => "LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE",
    };
    sqlx::query(lock).execute(&mut *tx).await.expect("lock");
    let rows = sqlx::query(
        "SELECT seq, entry_json, prev_hash FROM audit_log WHERE seq >= $1 ORDER BY seq",
    )
    .bind(seq)
    .fetch_all(&mut *tx)
    .await
    .expect("rows");
    let mut prev: String = rows[0].try_get("prev_hash").expect("prev");
    for (i, row) in rows.iter().enumerate() {
        let at: i64 = row.try_get("seq").expect("seq");
        let mut entry: String = row.try_get("entry_json").expect("entry");
        if i == 0 {
            // Hides who did it.
            let changed = entry.replacen("\"agent\":\"", "\"agent\":\"x-", 1);
            assert_ne!(changed, entry);
            entry = changed;
        }
        if !rehash {
            sqlx::query("UPDATE audit_log SET entry_json = $1 WHERE seq = $2")
                .bind(&entry)
                .bind(at)
                .execute(&mut *tx)
                .await
                .expect("tamper");
            break;
        }
        let hash = chain_hash(&prev, &entry);
        sqlx::query(
            "UPDATE audit_log SET entry_json = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
        )
        .bind(&entry)
        .bind(&prev)
        .bind(&hash)
        .bind(at)
        .execute(&mut *tx)
        .await
        .expect("rewrite");
        prev = hash;
    }
    tx.commit().await.expect("commit");
    if backend == Backend::Postgres {
        sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
            .execute(&pool)
            .await
            .expect("enable trigger");
    }
    pool.close().await;
}

async fn verify(t: &TestStack) -> v1::VerifyAuditResponse {
    t.emploi()
        .await
        .verify_audit(t.as_dpo(Institution::Emploi, v1::VerifyAuditRequest {}))
        .await
        .expect("verify")
        .into_inner()
}

#[tokio::test]
async fn a_rewritten_audit_log_is_caught_by_its_chain_and_by_the_partners_anchor() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("tamper").await;
        let target = crossing_seqs(&t, Institution::Emploi, &case_id).await[0];
        // The partner keeps a head past the record about to be changed.
        let social = t.store(Institution::Social).await;
        eventually("an anchor of emploi's log at social", async || {
            social
                .audit()
                .partner_anchors()
                .await
                .expect("anchors")
                .iter()
                .any(|a| a.seq > target)
        })
        .await;
        let intact = verify(&t).await;
        assert!(intact.chain_intact && intact.anchors_match, "{intact:?}");
        assert!(intact.anchors_checked > 0);

        // One record changed: its own chain names it.
        tamper(&t, backend, target, false).await;
        let caught = verify(&t).await;
        assert!(!caught.chain_intact, "{backend:?}");
        assert_eq!(caught.first_broken_seq, target);
        let offline = passerelle_cli::audit::verify(
            &t.database_url(Institution::Emploi),
            Some(&t.database_url(Institution::Social)),
        )
        .await
        .expect("offline verification");
        assert_eq!(offline.first_broken_seq, Some(target));

        // Rewritten from there on with every hash recomputed: the chain holds,
        // the partner's anchor does not.
        tamper(&t, backend, target, true).await;
        let rewritten = verify(&t).await;
        assert!(rewritten.chain_intact, "{backend:?}: {rewritten:?}");
        assert!(!rewritten.anchors_match);
        let first_anchor_after = social
            .audit()
            .partner_anchors()
            .await
            .expect("anchors")
            .iter()
            .map(|a| a.seq)
            .filter(|s| *s >= target)
            .min()
            .expect("an anchor after");
        assert_eq!(rewritten.first_differing_seq, first_anchor_after);
        let offline = passerelle_cli::audit::verify(
            &t.database_url(Institution::Emploi),
            Some(&t.database_url(Institution::Social)),
        )
        .await
        .expect("offline verification");
        assert_eq!(offline.first_broken_seq, None);
        assert_eq!(offline.first_differing_seq, Some(first_anchor_after));
        t.shutdown().await;
    })
    .await;
}
