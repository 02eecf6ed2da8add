//! Need to know inside each institution: an agent reaches a case only as the
//! contract's scope for the RPC allows — its pair, its referrer, the authors
//! of its diagnosis, the coordinators — and local notes only the pair, the
//! coordinators and their authors read.

use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

/// Found by an outside tester: a counsellor who is not in the case's pair
/// renewed and then ended someone else's case, and any social worker's
/// `GetCase` returned any case, local notes included.
#[tokio::test]
async fn an_agent_outside_the_case_neither_changes_nor_reads_it() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("ntk").await;
        let renew = v1::RenewSupportRequest {
            idempotency_key: "ntk-renew".into(),
            case_id: case_id.clone(),
            exceptional: false,
            justification: String::new(),
        };
        let status = t
            .emploi()
            .await
            .renew_support(t.as_agent(
                Institution::Emploi,
                Role::Counsellor,
                "ft-counsellor-3",
                Institution::Emploi,
                renew.clone(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let exit = v1::ExitCaseRequest {
            idempotency_key: "ntk-exit".into(),
            case_id: case_id.clone(),
            exit: Some(v1::CaseExit {
                reason: v1::ExitReason::Training as i32,
                ..Default::default()
            }),
            qualification_gained: false,
        };
        let status = t
            .emploi()
            .await
            .exit_case(t.as_agent(
                Institution::Emploi,
                Role::Counsellor,
                "ft-counsellor-3",
                Institution::Emploi,
                exit.clone(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let get = v1::GetCaseRequest {
            case_id: case_id.clone(),
        };
        let status = t
            .social()
            .await
            .get_case(t.as_agent(
                Institution::Social,
                Role::SocialWorker,
                "sw-vitre-2",
                Institution::Social,
                get.clone(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        // The refusals are audited, naming the case.
        let denied = t
            .audit_entries(Institution::Emploi)
            .await
            .into_iter()
            .filter(|e| {
                e.decision == passerelle_boundary::Decision::Denied
                    && e.agent.as_deref() == Some("ft-counsellor-3")
                    && e.case_id.as_deref() == Some(case_id.as_str())
            })
            .count();
        assert_eq!(denied, 2);
        // Nothing changed: the pair's counsellor still renews, then ends it.
        let case = t
            .emploi()
            .await
            .renew_support(t.as_counsellor(renew))
            .await
            .expect("the pair renews")
            .into_inner()
            .case
            .expect("case");
        assert_eq!(case.renewals, 1);
        t.emploi()
            .await
            .exit_case(t.as_counsellor(exit))
            .await
            .expect("the pair ends it");
        // The pair's social worker and the coordinator of the case's office
        // read it; a coordinator of another office does not.
        let office = t.referral("x", "y", "z").office_code;
        t.social()
            .await
            .get_case(t.as_social_worker(get.clone()))
            .await
            .expect("the pair reads it");
        t.social()
            .await
            .get_case(t.as_coordinator_of(Institution::Social, &office, get.clone()))
            .await
            .expect("the office's coordinator reads it");
        let status = t
            .social()
            .await
            .get_case(t.as_coordinator_of(Institution::Social, "ANOTHER-OFFICE", get))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn local_notes_are_read_by_the_pair_the_coordinators_and_their_author_only() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social_consent(
                "notes-consent",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        t.social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "notes-referral".into(),
                referral: Some(t.referral(&consent.case_id, &consent.consent_id, "Loeiza")),
                local_note: "the referrer's own words".into(),
            }))
            .await
            .expect("referral");
        let read = |agent: &str, role| {
            t.as_agent(
                Institution::Social,
                role,
                agent,
                Institution::Social,
                v1::GetCaseRequest {
                    case_id: consent.case_id.clone(),
                },
            )
        };
        let by_author = t
            .social()
            .await
            .get_case(read("sw-rennes-1", Role::SocialWorker))
            .await
            .expect("the referrer reads the case")
            .into_inner();
        assert_eq!(by_author.local_notes, ["the referrer's own words"]);
        let office = t.referral("x", "y", "z").office_code;
        let by_coordinator = t
            .social()
            .await
            .get_case(t.as_coordinator_of(
                Institution::Social,
                &office,
                v1::GetCaseRequest {
                    case_id: consent.case_id.clone(),
                },
            ))
            .await
            .expect("the office's coordinator reads the case")
            .into_inner();
        assert_eq!(by_coordinator.local_notes, ["the referrer's own words"]);
        t.shutdown().await;
    })
    .await;
}

/// Driven by the contract, so a new RPC cannot escape it: every RPC whose
/// scope is the case's people refuses an agent of the serving institution
/// who is outside the case, whatever else its request says.
#[tokio::test]
async fn every_rpc_scoped_to_the_cases_people_refuses_an_agent_outside_the_case() {
    use passerelle_boundary::{CaseScope, Policy};
    use prost::Message;
    use prost_reflect::{DynamicMessage, Value};

    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let case_id = t.enter_case("every-rpc").await;
        let consent_id = t
            .store(Institution::Social)
            .await
            .consents_for_case(&case_id)
            .await
            .expect("consents")
            .first()
            .expect("a consent")
            .consent_id
            .to_string();
        let pool = passerelle_contract::descriptor_pool();
        let policy = Policy::from_contract().expect("policy");
        let mut scoped: Vec<_> = policy
            .rules()
            .filter(|r| r.scope == Some(CaseScope::CasePeople))
            .collect();
        scoped.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(scoped.len() >= 20, "{} scoped RPCs", scoped.len());
        for (i, rule) in scoped.into_iter().enumerate() {
            let method = pool
                .get_service_by_name(&rule.service)
                .and_then(|s| s.methods().find(|m| m.name() == rule.method))
                .expect("method");
            let mut request = DynamicMessage::new(method.input());
            let mut names_the_case = false;
            for field in method.input().fields() {
                match field.name() {
                    "case_id" => {
                        request.set_field(&field, Value::String(case_id.clone()));
                        names_the_case = true;
                    }
                    "consent_id" => {
                        request.set_field(&field, Value::String(consent_id.clone()));
                        names_the_case = true;
                    }
                    "idempotency_key" => {
                        request.set_field(&field, Value::String(format!("stranger-{i}")));
                    }
                    _ => {
                        if let Some(inner) = field.kind().as_message().cloned()
                            && let Some(inner_case) = inner.get_field_by_name("case_id")
                        {
                            let mut nested = DynamicMessage::new(inner);
                            nested.set_field(&inner_case, Value::String(case_id.clone()));
                            request.set_field(&field, Value::Message(nested));
                            names_the_case = true;
                        }
                    }
                }
            }
            assert!(names_the_case, "{} names no case", rule.path);
            let institution = rule.server;
            let role = if institution == Institution::Emploi {
                Role::Counsellor
            } else {
                Role::SocialWorker
            };
            if !rule.roles.contains(&role) {
                // The institution's DPO answers for every case it holds: no
                // caller of the only role allowed is outside the case.
                assert!(rule.roles.iter().all(|r| *r == Role::Dpo), "{}", rule.path);
                continue;
            }
            let token = t
                .stack
                .token(institution, role, "outside-the-case", institution)
                .expect("token");
            let mut grpc = tonic::client::Grpc::new(t.channel(institution).await);
            grpc.ready().await.expect("ready");
            let path = http::uri::PathAndQuery::try_from(rule.path.as_str()).expect("path");
            let status = grpc
                .unary(with_token(request.encode_to_vec(), &token), path, RawCodec)
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{}: {status:?}",
                rule.path
            );
        }
        t.shutdown().await;
    })
    .await;
}
