//! Test harness: the three services on port 0 with real gRPC, on SQLite and,
//! when `PASSERELLE_TEST_POSTGRES` is set, on PostgreSQL too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use passerelle_cli::stack::{Databases, Stack, StackOptions};
use passerelle_contract::v1;
use passerelle_contract::v1::emploi_service_client::EmploiServiceClient;
use passerelle_contract::v1::pilotage_service_client::PilotageServiceClient;
use passerelle_contract::v1::social_service_client::SocialServiceClient;
use passerelle_domain::{Institution, ManualClock, Role};
use passerelle_storage::InstitutionStore;
use passerelle_storage::testing::{fresh_postgres_database, postgres_base_url};
use tonic::Request;
use tonic::transport::Channel;

pub use passerelle_contract::v1 as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL when configured. With `PASSERELLE_REQUIRE_POSTGRES`
/// set (CI), a missing PostgreSQL fails instead of being skipped.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    if postgres_base_url().is_some() {
        out.push(Backend::Postgres);
    } else if std::env::var_os("PASSERELLE_REQUIRE_POSTGRES").is_some() {
        panic!("PASSERELLE_REQUIRE_POSTGRES is set but PASSERELLE_TEST_POSTGRES is not");
    }
    out
}

/// The instant every test starts at.
/// Where a Seine-et-Marne stack starts: in the agreement's second year.
pub fn t0_seine_et_marne() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2021-03-01T09:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-03T09:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

#[derive(Debug)]
pub struct TestStack {
    pub stack: Stack,
    pub clock: ManualClock,
    pub backend: Backend,
    /// The agreement the three services run under.
    pub agreement: passerelle_domain::agreement::Agreement,
    _dir: tempfile::TempDir,
}

pub async fn start(backend: Backend, min_cell_size: u64) -> TestStack {
    start_with(backend, min_cell_size, false).await
}

/// Like [`start`], with TLS everywhere (mutual between services) when `tls`.
pub async fn start_with(backend: Backend, min_cell_size: u64, tls: bool) -> TestStack {
    start_under(backend, min_cell_size, tls, "ille-et-vilaine-2023").await
}

/// Like [`start_with`], the three services running under `agreement`.
pub async fn start_under(
    backend: Backend,
    min_cell_size: u64,
    tls: bool,
    agreement: &str,
) -> TestStack {
    start_limited(backend, min_cell_size, tls, agreement, Default::default()).await
}

/// Like [`start_under`], with the edge's `limits`.
pub async fn start_limited(
    backend: Backend,
    min_cell_size: u64,
    tls: bool,
    agreement: &str,
    limits: passerelle_runtime::config::LimitsConfig,
) -> TestStack {
    start_stack(backend, min_cell_size, tls, agreement, limits, None).await
}

/// Like [`start`], each service in its own process started with
/// `executable serve <institution>` (the bench measures each one's memory so).
pub async fn start_in_processes(backend: Backend, executable: std::path::PathBuf) -> TestStack {
    let agreement = "ille-et-vilaine-2023";
    start_stack(
        backend,
        11,
        false,
        agreement,
        Default::default(),
        Some(executable),
    )
    .await
}

async fn start_stack(
    backend: Backend,
    min_cell_size: u64,
    tls: bool,
    agreement: &str,
    limits: passerelle_runtime::config::LimitsConfig,
    processes: Option<std::path::PathBuf>,
) -> TestStack {
    // The first initialisation in a test binary wins (the telemetry test's own).
    std::mem::forget(passerelle_telemetry::init(
        passerelle_telemetry::TelemetryConfig::from_env(
            "passerelle-tests",
            passerelle_telemetry::Format::Text,
            "warn",
        ),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let databases = match backend {
        Backend::Sqlite => Databases::Sqlite,
        Backend::Postgres => {
            let base = postgres_base_url().expect("postgres configured");
            let mut urls = vec![];
            for label in ["emploi", "social", "pilotage"] {
                urls.push(
                    fresh_postgres_database(&base, label)
                        .await
                        .expect("postgres database"),
                );
            }
            Databases::Postgres(urls.try_into().expect("three"))
        }
    };
    // Each agreement in its own years, while it is in force.
    let clock = ManualClock::new(match agreement {
        "seine-et-marne-2020" => t0_seine_et_marne(),
        _ => t0(),
    });
    let options = StackOptions {
        data_dir: dir.path().to_path_buf(),
        databases,
        addresses: None,
        quick_retries: true,
        min_cell_size,
        tls,
        agreement: agreement.into(),
        agreement_file: None,
        agreement_renewals: 0,
        limits,
        processes,
    };
    let stack = Stack::start(options, Arc::new(clock.clone()))
        .await
        .expect("stack starts");
    let t = TestStack {
        stack,
        clock,
        backend,
        agreement: passerelle_domain::agreement::shipped(agreement).expect("shipped agreement"),
        _dir: dir,
    };
    t.wait_ready().await;
    t.register_counsellor(COUNSELLOR, 1000).await;
    t
}

/// The counsellor of the test pair, full time in the register.
pub const COUNSELLOR: &str = "ft-counsellor-7";

impl TestStack {
    /// A channel as an agent's client has it: TLS checked against the CA
    /// when TLS is on, no client certificate.
    pub async fn channel(&self, institution: Institution) -> Channel {
        self.try_channel(institution, None).await.expect("connects")
    }

    /// A channel presenting `certificate_of`'s service certificate.
    pub async fn try_channel(
        &self,
        institution: Institution,
        certificate_of: Option<Institution>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Channel::from_shared(self.stack.url(institution)).expect("url");
        if self.stack.options.tls {
            let tls = self.stack.options.data_dir.join("tls");
            let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(
                    std::fs::read(tls.join("ca.pem")).expect("ca"),
                ),
            );
            if let Some(owner) = certificate_of {
                let read = |ext: &str| {
                    std::fs::read(tls.join(format!("{}.{ext}", owner.code()))).expect("certificate")
                };
                config = config.identity(tonic::transport::Identity::from_pem(
                    read("pem"),
                    read("key"),
                ));
            }
            endpoint = endpoint.tls_config(config)?;
        }
        endpoint.connect().await
    }

    pub async fn emploi(&self) -> EmploiServiceClient<Channel> {
        EmploiServiceClient::new(self.channel(Institution::Emploi).await)
    }

    pub async fn social(&self) -> SocialServiceClient<Channel> {
        SocialServiceClient::new(self.channel(Institution::Social).await)
    }

    pub async fn pilotage(&self) -> PilotageServiceClient<Channel> {
        PilotageServiceClient::new(self.channel(Institution::Pilotage).await)
            .max_decoding_message_size(passerelle_contract::MAX_AGGREGATES_MESSAGE)
    }

    /// Waits until every service reports SERVING.
    pub async fn wait_ready(&self) {
        self.stack.wait_ready().await.expect("services ready");
    }

    /// A request carrying an agent's token for `audience`'s service.
    pub fn as_agent<T>(
        &self,
        institution: Institution,
        role: Role,
        agent: &str,
        audience: Institution,
        message: T,
    ) -> Request<T> {
        let token = self
            .stack
            .token(institution, role, agent, audience)
            .expect("token");
        with_token(message, &token)
    }

    /// The data protection officer of `institution`, calling its own service.
    pub fn as_dpo<T>(&self, institution: Institution, message: T) -> Request<T> {
        self.as_agent(
            institution,
            Role::Dpo,
            &format!("dpo-{}", institution.code()),
            institution,
            message,
        )
    }

    /// The committee's dashboard, as the steering service publishes it.
    pub async fn dashboard(&self) -> v1::Dashboard {
        self.pilotage()
            .await
            .get_dashboard(self.as_steering(v1::GetDashboardRequest {}))
            .await
            .expect("dashboard")
            .into_inner()
            .dashboard
            .expect("dashboard")
    }

    /// The pair's counsellor ends support for `reason`.
    pub fn exit_request(
        &self,
        key: &str,
        case_id: &str,
        reason: v1::ExitReason,
    ) -> Request<v1::ExitCaseRequest> {
        self.as_counsellor(v1::ExitCaseRequest {
            idempotency_key: key.into(),
            case_id: case_id.into(),
            exit: Some(v1::CaseExit {
                reason: reason as i32,
                ..Default::default()
            }),
            qualification_gained: false,
        })
    }

    /// The social worker's plan for the case: one housing goal.
    pub fn social_plan_request(
        &self,
        key: &str,
        case_id: &str,
        goal: &str,
    ) -> Request<v1::UpdatePlanRequest> {
        self.as_social_worker(v1::UpdatePlanRequest {
            idempotency_key: key.into(),
            plan: Some(v1::Plan {
                case_id: case_id.into(),
                kind: v1::PlanKind::Social as i32,
                themes: vec![v1::PlanTheme {
                    theme: v1::Theme::Housing as i32,
                    goals: vec![v1::PlanGoal {
                        title: goal.into(),
                        actions: vec![],
                    }],
                }],
                ..Default::default()
            }),
        })
    }

    /// The social side's DPO asks for the access report of `case_id`.
    pub async fn social_access_report(
        &self,
        case_id: &str,
        format: v1::DocumentFormat,
        joint: bool,
    ) -> Result<v1::Document, tonic::Status> {
        let request = self.as_dpo(
            Institution::Social,
            v1::GetSubjectAccessReportRequest {
                case_id: case_id.into(),
                format: format as i32,
                joint,
            },
        );
        let answer = self
            .social()
            .await
            .get_subject_access_report(request)
            .await?;
        Ok(answer.into_inner().document.unwrap_or_default())
    }

    /// A coordinator of `office` at `institution`, calling their own service.
    pub fn as_coordinator_of<T>(
        &self,
        institution: Institution,
        office: &str,
        message: T,
    ) -> Request<T> {
        let token = self
            .stack
            .token_for_office(institution, Role::Coordinator, "coordinator", office)
            .expect("token");
        with_token(message, &token)
    }

    pub fn as_social_worker<T>(&self, message: T) -> Request<T> {
        self.as_agent(
            Institution::Social,
            Role::SocialWorker,
            "sw-rennes-1",
            Institution::Social,
            message,
        )
    }

    pub fn as_counsellor<T>(&self, message: T) -> Request<T> {
        self.as_agent(
            Institution::Emploi,
            Role::Counsellor,
            "ft-counsellor-7",
            Institution::Emploi,
            message,
        )
    }

    pub fn as_steering<T>(&self, message: T) -> Request<T> {
        self.as_agent(
            Institution::Pilotage,
            Role::Steering,
            "copil-1",
            Institution::Pilotage,
            message,
        )
    }

    /// A request signed with `from`'s own service key, as its relay sends.
    pub fn as_service<T>(&self, from: Institution, to: Institution, message: T) -> Request<T> {
        let config = self.stack.config(from);
        let signer = config.signer().expect("signer").expect("service identity");
        let token = signer
            .sign(
                &format!("service:{}", from.code()),
                from,
                Role::Service,
                &passerelle_runtime::config::audience_of(to),
                60,
            )
            .expect("token");
        with_token(message, &token)
    }

    /// Every record of a service's audit log, read from another connection
    /// (so only what is committed).
    pub async fn audit_entries(
        &self,
        institution: Institution,
    ) -> Vec<passerelle_boundary::AuditEntry> {
        self.store(institution)
            .await
            .audit()
            .entries()
            .await
            .expect("audit")
    }

    /// A second connection to a service's own database, to inspect it.
    pub async fn store(&self, institution: Institution) -> InstitutionStore {
        InstitutionStore::connect(
            &self.stack.config(institution).database_url.0,
            2,
            institution,
        )
        .await
        .expect("store")
    }

    /// The committee's counts kept at `institution` equal a recount of its cases.
    pub async fn assert_counts_equal_a_recount(&self, institution: Institution) {
        let store = self.store(institution).await;
        passerelle_storage::testing::counts_equal_to_a_recount(&store, &institution.to_string())
            .await;
    }

    pub fn database_url(&self, institution: Institution) -> String {
        self.stack.config(institution).database_url.0
    }

    /// A social worker records the person's consent for `purposes`, to both institutions.
    pub async fn social_consent(&self, key: &str, purposes: &[v1::Purpose]) -> v1::ConsentRecord {
        self.social()
            .await
            .record_consent(self.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: key.into(),
                consent: Some(consent(
                    &self.clock,
                    purposes,
                    &[v1::Institution::Emploi, v1::Institution::Social],
                )),
            }))
            .await
            .expect("consent recorded")
            .into_inner()
            .consent
            .expect("consent")
    }

    /// A social worker refers the person of `consent` to the employment side.
    pub async fn social_referral(
        &self,
        key: &str,
        consent: &v1::ConsentRecord,
        first_name: &str,
    ) -> Result<v1::Referral, tonic::Status> {
        let answer = self
            .social()
            .await
            .create_referral(self.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: key.into(),
                referral: Some(self.referral(&consent.case_id, &consent.consent_id, first_name)),
                local_note: String::new(),
            }))
            .await?;
        Ok(answer.into_inner().referral.unwrap_or_default())
    }

    /// A referral pushed straight at the employment side, signed as the
    /// social service's relay signs it (bypassing the social side's checks).
    pub fn direct_referral(
        &self,
        case_id: &str,
        consent_id: &str,
    ) -> Request<v1::ReceiveReferralRequest> {
        let mut r = self.referral(case_id, consent_id, "Gwenola");
        r.referring_network = v1::Network::Social as i32;
        r.referred_by = "sw-rennes-1".into();
        r.referred_at = Some(timestamp(t0()));
        self.as_service(
            Institution::Social,
            Institution::Emploi,
            v1::ReceiveReferralRequest {
                idempotency_key: format!("direct-{case_id}"),
                case_id: case_id.into(),
                referral: Some(r),
            },
        )
    }

    /// The case as the counsellor sees it at the employment side; `None`
    /// while that side does not know it yet (any other error fails the test).
    pub async fn case_at_emploi(&self, case_id: &str) -> Option<v1::GetCaseResponse> {
        let request = self.as_counsellor(v1::GetCaseRequest {
            case_id: case_id.into(),
        });
        match self.emploi().await.get_case(request).await {
            Ok(answer) => Some(answer.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("GetCase at emploi: {status:?}"),
        }
    }

    /// The case as the social worker sees it at the social side; `None` while unknown there.
    pub async fn case_at_social(&self, case_id: &str) -> Option<v1::GetCaseResponse> {
        let request = self.as_social_worker(v1::GetCaseRequest {
            case_id: case_id.into(),
        });
        match self.social().await.get_case(request).await {
            Ok(answer) => Some(answer.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("GetCase at social: {status:?}"),
        }
    }

    /// A person referred by the social side, accepted, diagnosed by both,
    /// signed in: returns the case's id once it is active at both sides.
    pub async fn enter_case(&self, label: &str) -> String {
        self.enter_case_named(label, "Nolwenn").await
    }

    /// A case entered into support for a person called `first_name`.
    pub async fn enter_case_named(&self, label: &str, first_name: &str) -> String {
        let consent = self
            .social_consent(
                &format!("{label}-consent"),
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let referral = self
            .social_referral(&format!("{label}-referral"), &consent, first_name)
            .await
            .expect("referral");
        self.enter_referred(label, &referral.case_id).await;
        referral.case_id
    }

    /// A case the social side referred, accepted, diagnosed by both and
    /// signed in; returns once it is active at both sides.
    pub async fn enter_referred(&self, label: &str, case_id: &str) {
        let case_id = case_id.to_owned();
        self.accept_at_emploi(&case_id).await;
        let half = v1::DiagnosisHalf {
            case_id: case_id.clone(),
            verdict: v1::Verdict::Agree as i32,
            ..Default::default()
        };
        let mut emploi = self.emploi().await;
        self.social()
            .await
            .record_diagnosis(self.as_social_worker(v1::RecordDiagnosisRequest {
                idempotency_key: format!("{label}-ds"),
                half: Some(half.clone()),
                local_note: String::new(),
            }))
            .await
            .expect("social half");
        emploi
            .record_diagnosis(self.as_counsellor(v1::RecordDiagnosisRequest {
                idempotency_key: format!("{label}-de"),
                half: Some(half),
                local_note: String::new(),
            }))
            .await
            .expect("employment half");
        eventually("diagnosed at emploi", async || {
            let answer = self.case_at_emploi(&case_id).await.expect("case");
            answer.case.map(|c| c.state) == Some(v1::CaseState::Diagnosed as i32)
        })
        .await;
        emploi
            .sign_contract(self.as_counsellor(v1::SignContractRequest {
                idempotency_key: format!("{label}-sign"),
                case_id: case_id.clone(),
                entry: Some(self.entry(label)),
                participant: Some(participant()),
            }))
            .await
            .expect("signed");
        // Known as active at both sides before the test goes on.
        eventually("the entry at social", async || {
            self.case_at_social(&case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| c.state == v1::CaseState::Active as i32)
        })
        .await;
    }

    /// A referral valid under this stack's agreement: one of its social
    /// offices, every check answered and met.
    pub fn referral(&self, case_id: &str, consent_id: &str, first_name: &str) -> v1::Referral {
        let mut r = referral(case_id, consent_id, first_name);
        r.office_code = self
            .agreement
            .offices
            .iter()
            .find(|o| o.network() == passerelle_domain::Network::Social)
            .map(|o| o.code.clone())
            .unwrap_or_default();
        r.checks = self
            .agreement
            .referral
            .checks
            .iter()
            .map(|c| v1::CheckAnswer {
                code: c.code.clone(),
                met: true,
            })
            .collect();
        r
    }

    /// The entry evidence this stack's agreement asks for, with the test pair.
    pub fn entry(&self, label: &str) -> v1::CaseEntry {
        use passerelle_domain::Clock;
        let kinds: Vec<v1::EvidenceKind> = match self.agreement.entry.evidence {
            passerelle_domain::agreement::EntryEvidence::SignedContractNamingSocialReferent => {
                vec![v1::EvidenceKind::SignedContract]
            }
            passerelle_domain::agreement::EntryEvidence::SignedReferralFormAndInterviewConclusion => {
                vec![
                    v1::EvidenceKind::SignedReferralForm,
                    v1::EvidenceKind::InterviewConclusion,
                ]
            }
        };
        v1::CaseEntry {
            pair: Some(v1::Pair {
                counsellor: COUNSELLOR.into(),
                social_worker: "sw-rennes-1".into(),
            }),
            track: v1::Track::Global as i32,
            evidence: kinds
                .into_iter()
                .map(|kind| v1::ConsentEvidence {
                    kind: kind as i32,
                    document_sha256: sha256_of(&format!("{label} {kind:?}")),
                    signed_at: Some(timestamp(self.clock.now())),
                    collected_by: COUNSELLOR.into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A coordinator puts a counsellor in the working-time register.
    pub async fn register_counsellor(&self, counsellor: &str, per_mille: u32) {
        let agency = self
            .agreement
            .offices
            .iter()
            .find(|o| o.network() == passerelle_domain::Network::Emploi)
            .map(|o| o.code.clone())
            .expect("an agency");
        let request = self.as_agent(
            Institution::Emploi,
            Role::Coordinator,
            "coordination-emploi",
            Institution::Emploi,
            v1::RegisterCounsellorRequest {
                idempotency_key: format!("register-{counsellor}-{per_mille}"),
                counsellor: counsellor.into(),
                working_time_per_mille: per_mille,
                office_code: agency,
            },
        );
        self.emploi()
            .await
            .register_counsellor(request)
            .await
            .expect("counsellor registered");
    }

    /// The employment side accepts a referral the social side sent, once it
    /// has it; returns once the social side knows.
    pub async fn accept_at_emploi(&self, case_id: &str) {
        eventually("the referral at emploi", async || {
            self.case_at_emploi(case_id).await.is_some()
        })
        .await;
        self.emploi()
            .await
            .decide_referral(self.as_counsellor(v1::DecideReferralRequest {
                idempotency_key: format!("accept-{case_id}"),
                case_id: case_id.into(),
                decision: v1::ReferralState::Accepted as i32,
                ..Default::default()
            }))
            .await
            .expect("referral accepted");
        eventually("the acceptance at social", async || {
            self.case_at_social(case_id)
                .await
                .and_then(|a| a.case)
                .is_some_and(|c| c.referral_state == v1::ReferralState::Accepted as i32)
        })
        .await;
    }

    pub async fn shutdown(self) {
        self.stack.shutdown().await.expect("clean shutdown");
    }
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Polls `condition` until it holds; fails the test after 20 seconds.
/// Waits until `store` holds the referral of `case_id` (delivered by the partner's relay).
pub async fn referral_held(store: &InstitutionStore, case_id: &str) {
    eventually(
        &format!("the referral held at {}", store.own().code()),
        async || store.referral(case_id).await.expect("read").is_some(),
    )
    .await;
}

pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `scenario` once per backend.
pub async fn on_every_backend<F, Fut>(scenario: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        scenario(backend).await;
    }
}

// ---- realistic inputs ---------------------------------------------------------------

pub fn sha256_of(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    passerelle_contract::convert::timestamp(at)
}

/// A consent the person signed on a referral form, for `purposes`, to `recipients`.
pub fn consent(
    clock: &ManualClock,
    purposes: &[v1::Purpose],
    recipients: &[v1::Institution],
) -> v1::ConsentRecord {
    use passerelle_domain::Clock;
    let now = clock.now();
    v1::ConsentRecord {
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        recipients: recipients.iter().map(|i| *i as i32).collect(),
        categories: [
            v1::DataCategory::Identity,
            v1::DataCategory::Contact,
            v1::DataCategory::Case,
            v1::DataCategory::Barrier,
            v1::DataCategory::Employment,
        ]
        .iter()
        .map(|c| *c as i32)
        .collect(),
        evidence: Some(v1::ConsentEvidence {
            kind: v1::EvidenceKind::SignedReferralForm as i32,
            document_sha256: sha256_of("fiche de liaison signée"),
            signed_at: Some(timestamp(now)),
            collected_by: "sw-rennes-1".into(),
        }),
        valid_from: Some(timestamp(now)),
        valid_until: Some(timestamp(now + chrono::Duration::days(365))),
        ..Default::default()
    }
}

/// A referral valid under the default (Ille-et-Vilaine) agreement; see
/// [`TestStack::referral`] for the stack's own agreement.
pub fn referral(case_id: &str, consent_id: &str, first_name: &str) -> v1::Referral {
    v1::Referral {
        case_id: case_id.into(),
        office_code: "AD-RENNES".into(),
        checks: ["lack_of_autonomy", "wants_to_work", "hard_to_project"]
            .iter()
            .map(|code| v1::CheckAnswer {
                code: (*code).into(),
                met: true,
            })
            .collect(),
        person: Some(v1::PersonIdentity {
            first_name: first_name.into(),
            last_name: "Le Gall".into(),
            birth_date: "1986-11-02".into(),
            jobseeker_number: "4471234A".into(),
        }),
        contact: Some(v1::Contact {
            phone: "06 12 34 56 78".into(),
            email: "a.legall@example.org".into(),
            postal_address: String::new(),
        }),
        barriers: vec![
            v1::Barrier {
                category: v1::BarrierCategory::Housing as i32,
                level: v1::BarrierLevel::High as i32,
            },
            v1::Barrier {
                category: v1::BarrierCategory::Mobility as i32,
                level: v1::BarrierLevel::Medium as i32,
            },
        ],
        employment: Some(v1::EmploymentSummary {
            registered: true,
            registration_date: "2024-09-15".into(),
            rsa_beneficiary: true,
        }),
        consent_id: consent_id.into(),
        ..Default::default()
    }
}

/// Debian's Chromium (or another Chrome), where the machine has one.
pub fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

/// The browser, or `None` when the machine has none and CI does not ask for
/// one (`PASSERELLE_REQUIRE_CHROMIUM`).
pub fn browser_or_skip() -> Option<std::path::PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("PASSERELLE_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required here (apt-get install chromium)"
        );
        eprintln!("no Chromium on this machine: the browser check is skipped");
    }
    found
}

/// A screenshot of `page` at `width` × `height` CSS pixels, as PNG bytes.
pub fn screenshot(
    browser: &std::path::Path,
    page: &std::path::Path,
    shot: &std::path::Path,
    (width, height): (u32, u32),
) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    png
}

/// Whether `page`, laid out `width` CSS pixels wide by the browser, is wider
/// than that (something spills out: the reader must scroll sideways).
pub fn overflows(browser: &std::path::Path, page: &std::path::Path, width: u32) -> bool {
    let probe = page.with_extension("probe.html");
    let html = std::fs::read_to_string(page).expect("page");
    let script = "<script>document.body.setAttribute('data-overflow', String(document.documentElement.scrollWidth > window.innerWidth));</script>";
    std::fs::write(&probe, html.replace("</body>", &format!("{script}</body>"))).expect("probe");
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--window-size={width},1000"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", probe.display()))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_file(&probe);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-overflow="), "the probe ran: {dom:.200}");
    dom.contains("data-overflow=\"true\"")
}

/// Every text value in every table of a database, to look for leaks.
pub async fn all_text(url: &str) -> Vec<(String, String)> {
    use sqlx::{Column, Row};
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    let tables: Vec<String> = if url.starts_with("sqlite") {
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .expect("tables")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect()
    } else {
        sqlx::query("SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&pool)
            .await
            .expect("tables")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect()
    };
    let mut out = vec![];
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        for row in rows {
            for column in row.columns() {
                let at = format!("{table}.{}", column.name());
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(column.ordinal()) {
                    out.push((at, text));
                } else if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(column.ordinal())
                {
                    // Stored answers and other blobs: read as the text they encode.
                    out.push((at, String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
        }
    }
    pool.close().await;
    out
}

/// An ESF questionnaire as a counsellor fills it in at entry.
pub fn participant() -> v1::ParticipantProfile {
    v1::ParticipantProfile {
        sex: v1::Sex::Female as i32,
        education: v1::EducationLevel::Isced34 as i32,
        jobless_household: true,
        single_adult_with_children: false,
        disability: v1::DisabilityDeclaration::Declared as i32,
    }
}

/// Raw bytes as a request body, to send what no generated client would.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
