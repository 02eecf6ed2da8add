//! The casework application services on an in-memory SQLite store, with an
//! injected clock and no network: each rule of an operation, fast.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use passerelle_boundary::audit::Direction;
use passerelle_boundary::{Caller, CrossingControl, Decision, Minimiser};
use passerelle_domain::agreement::shipped;
use passerelle_domain::{
    CheckAnswer, Consent, Contact, DataCategory, DomainError, EmploymentSummary, Evidence,
    EvidenceKind, Institution, ManualClock, NewConsent, Outbound, PersonIdentity, Purpose,
    ReferralDraft, ReferralState, Role, Side,
};
use passerelle_runtime::{AppError, Call};
use passerelle_storage::InstitutionStore;
use tokio::sync::Notify;

use super::Casework;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 10, 5, 9, 0, 0)
        .single()
        .expect("date")
}

struct Fixture {
    casework: Casework,
    clock: ManualClock,
}

/// A social side under the Seine-et-Marne agreement, on a fresh in-memory database.
async fn social() -> Fixture {
    // A named in-memory database shared by the pool's connections, one per test.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = format!(
        "sqlite:file:casework_{}_{n}?mode=memory&cache=shared",
        std::process::id()
    );
    let store = InstitutionStore::connect(&url, 4, Institution::Social)
        .await
        .expect("store");
    let clock = ManualClock::new(t0());
    let crossings = CrossingControl {
        own: Institution::Social,
        minimiser: Minimiser::from_contract(),
        audit: Arc::new(store.audit().clone()),
        clock: Arc::new(clock.clone()),
        consents: Some(Arc::new(store.clone())),
    };
    let agreement = shipped("seine-et-marne-2020").expect("agreement");
    let casework = Casework {
        term_end: agreement.term.ends_after(0),
        side: Side::Social,
        store,
        clock: Arc::new(clock.clone()),
        wake_relay: Arc::new(Notify::new()),
        agreement: Arc::new(agreement),
        crossings,
    };
    Fixture { casework, clock }
}

impl Fixture {
    /// A consent recorded by `sw` for a new case.
    async fn consent(&self, sw: &Caller) -> Consent {
        let call = call(sw, "/m/RecordConsent", "consent", "d");
        let consent = self.casework.record_consent(call, consent_for(None, t0()));
        consent.await.expect("consent")
    }

    /// A case referred by `sw` to the employment side under its consent.
    async fn referred(&self, sw: &Caller) -> Consent {
        let consent = self.consent(sw).await;
        let draft = referral(&consent.case_id, &consent.consent_id);
        let call = call(sw, "/m/CreateReferral", "referral", "d");
        let referred = self.casework.create_referral(call, draft, "");
        referred.await.expect("referred");
        consent
    }
}

fn worker(agent: &str) -> Caller {
    Caller {
        agent: agent.into(),
        institution: Institution::Social,
        role: Role::SocialWorker,
        issuer: "test".into(),
        organisation: None,
        office: None,
    }
}

fn call<'a>(caller: &'a Caller, method: &'a str, key: &'a str, digest: &'a str) -> Call<'a> {
    Call {
        caller,
        method,
        key,
        digest,
        crossing: None,
    }
}

fn consent_for(case_id: Option<&str>, now: DateTime<Utc>) -> NewConsent {
    NewConsent {
        case_id: case_id.map(Into::into),
        purposes: [Purpose::Referral, Purpose::GlobalSupport].into(),
        recipients: [Institution::Emploi].into(),
        categories: [DataCategory::Identity, DataCategory::Barrier].into(),
        evidence: Evidence {
            kind: EvidenceKind::SignedReferralForm,
            document_sha256: "ab".repeat(32),
            signed_at: now,
            collected_by: "sw-1".into(),
        },
        valid_from: now,
        valid_until: now + Duration::days(400),
    }
}

fn referral(case_id: &str, consent_id: &str) -> ReferralDraft {
    ReferralDraft {
        case_id: case_id.into(),
        office_code: "MDS-01".into(),
        person: PersonIdentity {
            first_name: "Anaïs".into(),
            last_name: "Le Bihan".into(),
            birth_date: NaiveDate::from_ymd_opt(1991, 5, 17).expect("date"),
            jobseeker_number: None,
        },
        contact: Contact::default(),
        barriers: vec![],
        employment: EmploymentSummary::default(),
        consent_id: consent_id.into(),
        checks: [
            "social_barriers_block_job_search",
            "needs_coordinated_support",
            "wants_to_engage",
        ]
        .iter()
        .map(|code| CheckAnswer {
            code: (*code).into(),
            met: true,
        })
        .collect(),
    }
}

#[tokio::test]
async fn a_replayed_consent_gets_the_first_answer_and_another_request_under_its_key_is_refused() {
    let f = social().await;
    let sw = worker("sw-1");
    let cw = &f.casework;
    let first = cw
        .record_consent(
            call(&sw, "/m/RecordConsent", "k1", "d1"),
            consent_for(None, t0()),
        )
        .await
        .expect("recorded");
    let again = cw
        .record_consent(
            call(&sw, "/m/RecordConsent", "k1", "d1"),
            consent_for(None, t0()),
        )
        .await
        .expect("replayed");
    assert_eq!(again, first);
    assert_eq!(
        cw.store
            .consents_for_case(&first.case_id)
            .await
            .expect("read")
            .len(),
        1
    );
    let other = cw
        .record_consent(
            call(&sw, "/m/RecordConsent", "k1", "d2"),
            consent_for(None, t0()),
        )
        .await;
    assert!(matches!(
        other,
        Err(AppError(DomainError::IdempotencyConflict))
    ));
    // One consent message for the partner, not two.
    let pending = cw.store.pending_outbox(10).await.expect("outbox");
    assert_eq!(pending.len(), 1);
    assert!(matches!(pending[0].message, Outbound::Consent(_)));
}

#[tokio::test]
async fn a_referral_without_a_consent_is_refused_and_the_refusal_audited() {
    let f = social().await;
    let sw = worker("sw-1");
    let refused = f
        .casework
        .create_referral(
            call(&sw, "/m/CreateReferral", "r1", "d"),
            referral("case-1", "none"),
            "",
        )
        .await;
    assert!(matches!(
        refused,
        Err(AppError(DomainError::PermissionDenied(_)))
    ));
    let entries = f.casework.store.audit().entries().await.expect("audit");
    let denial = entries.last().expect("a record");
    assert_eq!(denial.decision, Decision::Denied);
    assert_eq!(denial.direction, Direction::Outbound);
    assert_eq!(
        denial.method,
        "/passerelle.v1.EmploiService/ReceiveReferral"
    );
    assert_eq!(denial.case_id.as_deref(), Some("case-1"));
    assert!(
        f.casework
            .store
            .pending_outbox(10)
            .await
            .expect("outbox")
            .is_empty()
    );
}

#[tokio::test]
async fn a_referral_under_its_consent_opens_the_case_queues_it_for_the_partner_and_counts_it() {
    let f = social().await;
    let sw = worker("sw-1");
    let cw = &f.casework;
    let consent = f.consent(&sw).await;
    let wrong = cw
        .create_referral(
            call(&sw, "/m/CreateReferral", "r0", "d"),
            referral(&consent.case_id, "another-consent"),
            "",
        )
        .await;
    assert!(
        matches!(wrong, Err(AppError(DomainError::Invalid(e))) if e.field == "referral.consent_id")
    );
    let sent = cw
        .create_referral(
            call(&sw, "/m/CreateReferral", "r1", "d"),
            referral(&consent.case_id, &consent.consent_id),
            "note kept here",
        )
        .await
        .expect("referred");
    assert_eq!(sent.referred_by, "sw-1");
    let case = cw
        .store
        .case(&consent.case_id)
        .await
        .expect("read")
        .expect("case");
    assert_eq!(case.referral_state, ReferralState::Pending);
    assert_eq!(
        case.referral_expires_at,
        t0() + Duration::days(i64::from(cw.agreement.referral.expiry_days))
    );
    let kinds: Vec<_> = cw
        .store
        .pending_outbox(10)
        .await
        .expect("outbox")
        .iter()
        .map(|m| m.message.kind())
        .collect();
    assert_eq!(kinds, ["consent", "referral"]);
    let notes = cw.store.local_notes(&consent.case_id).await.expect("notes");
    let notes: Vec<_> = notes
        .iter()
        .map(|n| (n.author.as_str(), n.note.as_str()))
        .collect();
    assert_eq!(notes, [("sw-1", "note kept here")]);
    // The committee's counts follow the case in the same transaction.
    let counts = cw.store.statistics().await.expect("counts");
    assert!(!counts.is_empty());
    assert_eq!(
        counts
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        cw.store.recount().await.expect("recount")
    );
}

#[tokio::test]
async fn the_side_that_sent_a_referral_does_not_decide_it() {
    let f = social().await;
    let sw = worker("sw-1");
    let cw = &f.casework;
    let consent = f.referred(&sw).await;
    let refused = cw
        .decide_referral(
            call(&sw, "/m/DecideReferral", "x", "d"),
            &consent.case_id,
            ReferralState::Accepted,
            None,
            "",
        )
        .await;
    assert!(matches!(
        refused,
        Err(AppError(DomainError::FailedPrecondition(_)))
    ));
    let no_reason = cw
        .decide_referral(
            call(&sw, "/m/DecideReferral", "y", "d"),
            &consent.case_id,
            ReferralState::Refused,
            None,
            "",
        )
        .await;
    assert!(
        matches!(no_reason, Err(AppError(DomainError::Invalid(e))) if e.field == "refusal_reason")
    );
}

#[tokio::test]
async fn a_consent_is_withdrawn_where_it_is_held_and_only_once() {
    let f = social().await;
    let sw = worker("sw-1");
    let cw = &f.casework;
    let consent = f.consent(&sw).await;
    f.clock.advance(Duration::hours(1));
    let withdrawn = cw
        .withdraw_consent(
            call(&sw, "/m/WithdrawConsent", "w", "d"),
            &consent.consent_id,
        )
        .await
        .expect("withdrawn");
    assert_eq!(withdrawn.state_changed_at, t0() + Duration::hours(1));
    let twice = cw
        .withdraw_consent(
            call(&sw, "/m/WithdrawConsent", "w2", "d"),
            &consent.consent_id,
        )
        .await;
    assert!(matches!(
        twice,
        Err(AppError(DomainError::FailedPrecondition(_)))
    ));
    // From now on nothing about the case may leave.
    let after = cw
        .create_referral(
            call(&sw, "/m/CreateReferral", "r", "d"),
            referral(&consent.case_id, &consent.consent_id),
            "",
        )
        .await;
    assert!(matches!(
        after,
        Err(AppError(DomainError::PermissionDenied(_)))
    ));
}

#[tokio::test]
async fn an_unanswered_referral_received_from_the_partner_expires_on_the_agreements_day() {
    let f = social().await;
    let cw = &f.casework;
    let partner = Caller {
        agent: "service:emploi".into(),
        institution: Institution::Emploi,
        role: Role::Service,
        issuer: "test".into(),
        organisation: None,
        office: None,
    };
    let mut draft = referral("case-9", "c-9");
    draft.office_code = "PE-77-01".into();
    let mut received = draft.complete(
        passerelle_domain::Network::Emploi,
        "ft-1".into(),
        t0(),
        None,
    );
    received.checks = vec![];
    let wrong_network = {
        let mut r = received.clone();
        r.referring_network = passerelle_domain::Network::Social;
        cw.receive_referral(call(&partner, "/m/ReceiveReferral", "m0", "d"), r)
            .await
    };
    assert!(
        matches!(wrong_network, Err(AppError(DomainError::Invalid(e))) if e.field == "referral.referring_network")
    );
    received.checks = referral("case-9", "c-9").checks;
    cw.receive_referral(call(&partner, "/m/ReceiveReferral", "m1", "d"), received)
        .await
        .expect("received");
    let expiry = Duration::days(i64::from(cw.agreement.referral.expiry_days));
    f.clock.set(t0() + expiry - Duration::seconds(1));
    assert_eq!(cw.run_deadlines().await.expect("deadlines"), 0);
    f.clock.set(t0() + expiry);
    assert_eq!(cw.run_deadlines().await.expect("deadlines"), 1);
    let case = cw.store.case("case-9").await.expect("read").expect("case");
    assert_eq!(case.referral_state, ReferralState::Expired);
    let told: Vec<_> = cw.store.pending_outbox(10).await.expect("outbox");
    assert!(matches!(
        told.last().map(|m| &m.message),
        Some(Outbound::ReferralDecision { .. })
    ));
    // Nothing left to do the next time.
    assert_eq!(cw.run_deadlines().await.expect("deadlines"), 0);
}

#[tokio::test]
async fn no_new_referral_after_the_agreements_last_day_unless_a_renewal_is_recorded() {
    let mut f = social().await;
    let sw = worker("sw-1");
    let consent = f.consent(&sw).await;
    let last_day = f.casework.term_end;
    f.clock
        .set(last_day.and_hms_opt(23, 0, 0).expect("time").and_utc());
    assert!(f.casework.check_in_term("referral").is_ok());
    f.clock.advance(Duration::hours(2));
    assert_eq!(f.casework.term_days_left(), -1);
    let draft = referral(&consent.case_id, &consent.consent_id);
    let refused = f
        .casework
        .create_referral(
            call(&sw, "/m/CreateReferral", "late", "d"),
            draft.clone(),
            "",
        )
        .await;
    assert!(
        matches!(&refused, Err(AppError(DomainError::FailedPrecondition(why))) if why.contains(&last_day.to_string())),
        "{refused:?}"
    );
    // A renewal recorded moves the last day: a referral goes through again.
    f.casework.term_end = last_day + Duration::days(365);
    let now = f.casework.clock.now();
    let renewed = f
        .casework
        .record_consent(
            call(&sw, "/m/RecordConsent", "renewed", "d"),
            consent_for(None, now),
        )
        .await
        .expect("consent");
    let draft = referral(&renewed.case_id, &renewed.consent_id);
    f.casework
        .create_referral(call(&sw, "/m/CreateReferral", "renewed", "d"), draft, "")
        .await
        .expect("in force again");
}
