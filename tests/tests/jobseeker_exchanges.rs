//! The data exchanges of title II: the monthly RSA jobseeker list (LRSA-DE)
//! and the jobseeker file (DUDE) reach habilitated Département agents only,
//! carry only their categories, resume where a download stopped, and every
//! read (or refusal) leaves an audit record.

use passerelle_boundary::audit::Decision;
use passerelle_domain::{DataCategory, Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tokio_stream::StreamExt;
use tonic::Code;

const MONTH: &str = "2026-11";
const PPAE_CANARY: &str = "Démarches auprès des entreprises du BTP (PPAE)";

fn record(i: usize) -> v1::JobseekerRecord {
    v1::JobseekerRecord {
        jobseeker_number: format!("{:07}X", 1_000_000 + i),
        first_name: format!("Prénom{i}"),
        last_name: "Le Bihan".into(),
        birth_date: "1985-02-11".into(),
        registration_date: "2025-06-02".into(),
        registration_category: "1".into(),
        agency_code: "PE-RENNES".into(),
        support_modality: if i.is_multiple_of(3) {
            "global"
        } else {
            "renforce"
        }
        .into(),
        // Two people out of three receive the RSA.
        rsa_beneficiary: i % 3 != 1,
        profile: Some(v1::JobseekerProfile {
            target_jobs: vec!["F1702".into()],
            education_level: "CAP".into(),
            driving_licence: false,
        }),
        employment_plan: vec![PPAE_CANARY.into()],
        history: vec![v1::JobSearchEvent {
            date: "2026-10-14".into(),
            kind: "application".into(),
            summary: "Candidature maçon coffreur".into(),
        }],
    }
}

fn coordinator<T>(t: &TestStack, from: Institution, message: T) -> tonic::Request<T> {
    t.as_agent(
        from,
        Role::Coordinator,
        "coordination",
        Institution::Emploi,
        message,
    )
}

fn departement_agent<T>(t: &TestStack, agent: &str, message: T) -> tonic::Request<T> {
    t.as_agent(
        Institution::Social,
        Role::SocialWorker,
        agent,
        Institution::Emploi,
        message,
    )
}

async fn register(t: &TestStack, people: usize) {
    let mut emploi = t.emploi().await;
    let all: Vec<_> = (0..people).map(record).collect();
    // At most 1,000 records per call.
    for (i, chunk) in all.chunks(1_000).enumerate() {
        emploi
            .record_jobseekers(coordinator(
                t,
                Institution::Emploi,
                v1::RecordJobseekersRequest {
                    idempotency_key: format!("register-{i}"),
                    jobseekers: chunk.to_vec(),
                },
            ))
            .await
            .expect("register");
    }
    let published = emploi
        .publish_rsa_jobseeker_list(coordinator(
            t,
            Institution::Emploi,
            v1::PublishRsaJobseekerListRequest {
                idempotency_key: "publish".into(),
                month: MONTH.into(),
            },
        ))
        .await
        .expect("published")
        .into_inner();
    assert_eq!(
        published.rows as usize,
        (0..people).filter(|i| i % 3 != 1).count()
    );
}

async fn set(t: &TestStack, key: &str, agent: &str, scope: v1::HabilitationScope, grant: bool) {
    let mut emploi = t.emploi().await;
    if grant {
        emploi
            .grant_habilitation(coordinator(
                t,
                Institution::Emploi,
                v1::GrantHabilitationRequest {
                    idempotency_key: key.into(),
                    agent: agent.into(),
                    scope: scope as i32,
                },
            ))
            .await
            .expect("granted");
    } else {
        emploi
            .revoke_habilitation(coordinator(
                t,
                Institution::Emploi,
                v1::RevokeHabilitationRequest {
                    idempotency_key: key.into(),
                    agent: agent.into(),
                    scope: scope as i32,
                },
            ))
            .await
            .expect("revoked");
    }
}

async fn download(
    t: &TestStack,
    agent: &str,
    after_seq: u64,
) -> Result<Vec<v1::RsaJobseekerRow>, tonic::Status> {
    let mut stream = t
        .emploi()
        .await
        .stream_rsa_jobseeker_list(departement_agent(
            t,
            agent,
            v1::StreamRsaJobseekerListRequest {
                month: MONTH.into(),
                after_seq,
            },
        ))
        .await?
        .into_inner();
    let mut rows = vec![];
    while let Some(chunk) = stream.next().await {
        rows.extend(chunk?.rows);
    }
    Ok(rows)
}

#[tokio::test]
async fn the_rsa_list_reaches_habilitated_agents_only_and_resumes() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        register(&t, 1_200).await;
        let expected = (0..1_200).filter(|i| i % 3 != 1).count();

        let denied = download(&t, "sw-list", 0)
            .await
            .expect_err("no habilitation");
        assert_eq!(denied.code(), Code::PermissionDenied);
        set(
            &t,
            "g1",
            "sw-list",
            v1::HabilitationScope::RsaJobseekerList,
            true,
        )
        .await;
        let rows = download(&t, "sw-list", 0).await.expect("habilitated");
        assert_eq!(rows.len(), expected);
        assert!(
            rows.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
            "in seq order"
        );
        assert_eq!(rows[0].seq, 1);
        assert!(
            rows.iter()
                .all(|r| !r.jobseeker_number.is_empty() && !r.agency_code.is_empty())
        );

        // An interrupted download resumes after the last row it got.
        let rest = download(&t, "sw-list", 700).await.expect("resumed");
        assert_eq!(rest.len(), expected - 700);
        assert_eq!(rest[0].seq, 701);
        assert_eq!(rest[0], rows[700]);

        // A counsellor is not the list's reader; another agent is not habilitated.
        let counsellor = t
            .emploi()
            .await
            .stream_rsa_jobseeker_list(t.as_counsellor(v1::StreamRsaJobseekerListRequest {
                month: MONTH.into(),
                after_seq: 0,
            }))
            .await
            .expect_err("not a Département agent");
        assert_eq!(counsellor.code(), Code::PermissionDenied);
        let unknown_month = t
            .emploi()
            .await
            .stream_rsa_jobseeker_list(departement_agent(
                &t,
                "sw-list",
                v1::StreamRsaJobseekerListRequest {
                    month: "2026-10".into(),
                    after_seq: 0,
                },
            ))
            .await
            .expect_err("not published");
        assert_eq!(unknown_month.code(), Code::NotFound);

        // Withdrawn: the next read is refused.
        set(
            &t,
            "r1",
            "sw-list",
            v1::HabilitationScope::RsaJobseekerList,
            false,
        )
        .await;
        assert_eq!(
            download(&t, "sw-list", 0)
                .await
                .expect_err("withdrawn")
                .code(),
            Code::PermissionDenied
        );

        // Every read and every refusal is in the employment side's audit log.
        let entries = t.audit_entries(Institution::Emploi).await;
        let reads: Vec<_> = entries
            .iter()
            .filter(|e| e.method.ends_with("/StreamRsaJobseekerList"))
            .collect();
        let decisions: Vec<_> = reads
            .iter()
            .map(|e| (e.agent.as_deref().unwrap_or_default(), e.decision))
            .collect();
        assert!(decisions.contains(&("sw-list", Decision::Denied)));
        assert_eq!(
            decisions
                .iter()
                .filter(|(a, d)| *a == "sw-list" && *d == Decision::Allowed)
                .count(),
            2,
            "the two downloads; the unknown month returned nothing"
        );
        for read in reads.iter().filter(|e| e.decision == Decision::Allowed) {
            assert!(read.categories.iter().all(|c| matches!(
                c,
                DataCategory::Public | DataCategory::Identity | DataCategory::Employment
            )));
            assert_eq!(
                read.purpose,
                Some(passerelle_domain::Purpose::RsaJobseekerList)
            );
            assert_eq!(
                read.legal_basis,
                Some(passerelle_domain::LegalBasis::LegalObligation)
            );
        }
        let again = t
            .emploi()
            .await
            .publish_rsa_jobseeker_list(coordinator(
                &t,
                Institution::Emploi,
                v1::PublishRsaJobseekerListRequest {
                    idempotency_key: "publish-again".into(),
                    month: MONTH.into(),
                },
            ))
            .await
            .expect_err("a month is fixed once");
        assert_eq!(again.code(), Code::FailedPrecondition);
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_jobseeker_file_is_read_per_agent_habilitation_and_kept_nowhere_else() {
    on_every_backend(|backend| async move {
        let t = start(backend, 11).await;
        register(&t, 10).await;
        let number = record(4).jobseeker_number;
        let read = async |agent: &str| {
            t.emploi()
                .await
                .get_jobseeker_file(departement_agent(
                    &t,
                    agent,
                    v1::GetJobseekerFileRequest {
                        jobseeker_number: number.clone(),
                    },
                ))
                .await
        };
        // The list's habilitation does not open the files.
        set(
            &t,
            "g-list",
            "sw-dude",
            v1::HabilitationScope::RsaJobseekerList,
            true,
        )
        .await;
        assert_eq!(
            read("sw-dude")
                .await
                .expect_err("no file habilitation")
                .code(),
            Code::PermissionDenied
        );

        // The Département sees how many of its agents are habilitated and asks for changes.
        let mut emploi = t.emploi().await;
        emploi
            .request_habilitation_change(coordinator(
                &t,
                Institution::Social,
                v1::RequestHabilitationChangeRequest {
                    idempotency_key: "ask".into(),
                    agent: "sw-dude".into(),
                    scope: v1::HabilitationScope::JobseekerFile as i32,
                    habilitate: true,
                },
            ))
            .await
            .expect("asked");
        let counts = async || {
            t.emploi()
                .await
                .count_habilitations(coordinator(
                    &t,
                    Institution::Social,
                    v1::CountHabilitationsRequest {},
                ))
                .await
                .expect("counts")
                .into_inner()
                .counts
                .iter()
                .map(|c| (c.scope, c.agents, c.pending_requests))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            counts().await,
            vec![
                (v1::HabilitationScope::RsaJobseekerList as i32, 1, 0),
                (v1::HabilitationScope::JobseekerFile as i32, 0, 1),
            ]
        );
        set(
            &t,
            "g-file",
            "sw-dude",
            v1::HabilitationScope::JobseekerFile,
            true,
        )
        .await;
        assert_eq!(
            counts().await[1],
            (v1::HabilitationScope::JobseekerFile as i32, 1, 0)
        );

        let file = read("sw-dude")
            .await
            .expect("habilitated")
            .into_inner()
            .file
            .expect("file");
        assert_eq!(file.jobseeker_number, number);
        assert_eq!(file.employment_plan, vec![PPAE_CANARY.to_owned()]);
        assert_eq!(file.history.len(), 1);
        assert_eq!(
            file.profile.map(|p| p.target_jobs),
            Some(vec!["F1702".to_owned()])
        );
        assert_eq!(
            read("sw-other").await.expect_err("per agent").code(),
            Code::PermissionDenied
        );

        // Audited with its subject and the categories that left.
        let entries = t.audit_entries(Institution::Emploi).await;
        let subject = format!("jobseeker:{number}");
        let allowed: Vec<_> = entries
            .iter()
            .filter(|e| e.method.ends_with("/GetJobseekerFile") && e.decision == Decision::Allowed)
            .collect();
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].case_id.as_deref(), Some(subject.as_str()));
        assert_eq!(allowed[0].agent.as_deref(), Some("sw-dude"));
        assert!(allowed[0].categories.contains(&DataCategory::Employment));
        assert!(!allowed[0].categories.contains(&DataCategory::Contact));
        let refused = entries
            .iter()
            .filter(|e| e.method.ends_with("/GetJobseekerFile") && e.decision == Decision::Denied)
            .count();
        assert_eq!(refused, 2);

        // Nothing of it is kept on the Département's side.
        let social = all_text(&t.database_url(Institution::Social)).await;
        assert!(!social.iter().any(|(_, v)| v.contains(PPAE_CANARY)));
        let emploi = all_text(&t.database_url(Institution::Emploi)).await;
        assert!(
            emploi.iter().any(|(_, v)| v.contains(PPAE_CANARY)),
            "the canary is real"
        );
        t.shutdown().await;
    })
    .await;
}
