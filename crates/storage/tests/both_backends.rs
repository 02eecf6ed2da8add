//! The store behaves the same on SQLite and PostgreSQL. PostgreSQL runs when
//! PASSERELLE_TEST_POSTGRES is set (CI sets it).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_domain::*;
use passerelle_storage::institution::{CounsellorEntry, ErasureReason, Origin};
use passerelle_storage::testing::{fresh_postgres_database, postgres_base_url};
use passerelle_storage::{InstitutionStore, PilotageStore};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_735_689_600, 123_456_000).expect("valid")
}

async fn urls(label: &str) -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = vec![(
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
        Some(dir),
    )];
    if let Some(base) = postgres_base_url() {
        out.push((
            fresh_postgres_database(&base, label)
                .await
                .expect("postgres database"),
            None,
        ));
    }
    out
}

/// A partner service's call about `case_id`, the `i`th of a run.
fn inbound_entry(i: usize, case_id: &str) -> AuditEntry {
    AuditEntry {
        at: t0(),
        direction: Direction::Inbound,
        agent: Some(format!("agent-{i}")),
        agent_institution: Some(Institution::Emploi),
        agent_role: Some(Role::Service),
        counterpart: Some(Institution::Emploi),
        method: "/x".into(),
        case_id: Some(case_id.into()),
        purpose: Some(Purpose::Referral),
        legal_basis: Some(LegalBasis::Consent),
        consent_id: None,
        categories: Default::default(),
        fields: vec![],
        decision: Decision::Allowed,
        reason: None,
    }
}

fn consent(case_id: &str) -> Consent {
    Consent {
        consent_id: "c-1".into(),
        case_id: case_id.into(),
        purposes: [Purpose::Referral, Purpose::GlobalSupport].into(),
        recipients: [Institution::Emploi].into(),
        categories: [DataCategory::Identity, DataCategory::Case].into(),
        evidence: Evidence {
            kind: EvidenceKind::SignedReferralForm,
            document_sha256: "ab".repeat(32),
            signed_at: t0(),
            collected_by: "sw-1".into(),
        },
        valid_from: t0(),
        valid_until: t0() + Duration::days(365),
        state: ConsentState::Given,
        state_changed_at: t0(),
        holder: Institution::Social,
    }
}

fn referral(case_id: &str) -> Referral {
    Referral {
        case_id: case_id.into(),
        referring_network: Network::Social,
        referred_by: "sw-1".into(),
        office_code: "CDAS-1".into(),
        person: PersonIdentity {
            first_name: "Léa".into(),
            last_name: "Martin".into(),
            birth_date: NaiveDate::from_ymd_opt(1988, 4, 12).expect("valid"),
            jobseeker_number: None,
        },
        contact: Contact::default(),
        barriers: vec![Barrier {
            category: BarrierCategory::Housing,
            level: BarrierLevel::High,
        }],
        employment: EmploymentSummary::default(),
        referred_at: t0(),
        consent_id: "c-1".into(),
        checks: vec![CheckAnswer {
            code: "wants_to_work".into(),
            met: true,
        }],
        association_id: Some("asll-77".into()),
        orientation: None,
    }
}

#[tokio::test]
async fn institution_store_round_trips_on_every_backend() {
    for (url, _dir) in urls("store").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        tx.upsert_consent(&consent("k-1")).await.expect("consent");
        assert!(
            tx.insert_referral(&referral("k-1"), Origin::Local)
                .await
                .expect("referral")
        );
        assert!(
            !tx.insert_referral(&referral("k-1"), Origin::Local)
                .await
                .expect("again"),
            "second insert is a no-op"
        );
        // Every lifecycle column round-trips: a queued entry, its referent, a follow-up.
        let mut case = Case::referred(&referral("k-1"), 45);
        case.referral_state = ReferralState::Accepted;
        case.referral_decided_at = Some(t0() + Duration::days(2));
        case.state = CaseState::Queued;
        case.queued_at = Some(t0() + Duration::days(9));
        case.pending_entry = Some(CaseEntry {
            pair: Pair {
                counsellor: "c-1".into(),
                social_worker: "sw-1".into(),
            },
            track: Track::Global,
            entered_at: t0() + Duration::days(9),
            evidence: vec![consent("k-1").evidence],
            referent: Referent::Pair,
        });
        case.missed_appointments = 2;
        case.follow_up_due_at = Some(t0() + Duration::days(200));
        case.follow_up_in_employment = Some(true);
        case.exclusive_started_at = Some(t0() + Duration::days(10));
        case.entry_evidence = vec![consent("k-1").evidence];
        tx.save_case(&case, None).await.expect("case");
        tx.enqueue("m-1", &Outbound::Referral(referral("k-1")), t0())
            .await
            .expect("enqueue");
        tx.save_response("/m", "key", "sha", b"resp", t0());
        // Notes written "z" then "a": they come back in the order written.
        for topic in ["z-first", "a-second"] {
            tx.insert_note("k-1", "sw-1", topic, &format!("{topic} note"), t0())
                .await
                .expect("note");
        }
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");

        assert_eq!(
            store.consents_for_case("k-1").await.expect("read"),
            vec![consent("k-1")],
            "{url}"
        );
        // Everything kept of the case, in one read.
        let parts = store
            .case_parts("k-1")
            .await
            .expect("parts")
            .expect("a case");
        assert_eq!(parts.case, case, "{url}");
        assert!(!parts.restricted);
        assert_eq!(parts.consents, vec![consent("k-1")], "{url}");
        assert_eq!(parts.referral, Some(referral("k-1")), "{url}");
        let topics: Vec<_> = parts.notes.iter().map(|n| n.topic.as_str()).collect();
        assert_eq!(topics, ["z-first", "a-second"], "{url}");
        assert_eq!(parts.notes[0].note, "z-first note");
        assert_eq!(parts.notes[0].author, "sw-1");
        assert_eq!(parts.notes[0].written_at, t0());
        assert!(parts.diagnoses.is_empty() && parts.orientations.is_empty());
        assert!(parts.plan.is_none() && parts.plan_summaries.is_empty());
        assert!(
            store
                .case_parts("k-unknown")
                .await
                .expect("parts")
                .is_none(),
            "{url}"
        );
        assert_eq!(store.case("k-1").await.expect("read"), Some(case), "{url}");
        assert_eq!(
            store.referral("k-1").await.expect("read"),
            Some(referral("k-1"))
        );
        let pending = store.pending_outbox(10).await.expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].message, Outbound::Referral(referral("k-1")));

        // A withdrawal replaces the given state; an older given state does not come back.
        let mut withdrawn = consent("k-1");
        withdrawn.state = ConsentState::Withdrawn;
        withdrawn.state_changed_at = t0() + Duration::days(1);
        let mut tx = store.begin().await.expect("begin");
        tx.upsert_consent(&withdrawn).await.expect("withdraw");
        tx.upsert_consent(&consent("k-1"))
            .await
            .expect("stale share");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        let stored = store
            .stored_response("/m", "key")
            .await
            .expect("lookup")
            .expect("stored");
        assert_eq!(stored.response, b"resp");
        assert_eq!(
            store.consents_for_case("k-1").await.expect("read")[0].state,
            ConsentState::Withdrawn
        );

        // The delivery and its audit record commit together.
        let crossing = AuditEntry {
            direction: Direction::Outbound,
            agent: None,
            agent_institution: Some(Institution::Social),
            agent_role: None,
            counterpart: Some(Institution::Emploi),
            method: "/passerelle.v1.EmploiService/ReceiveReferral".into(),
            ..inbound_entry(0, "k-1")
        };
        store
            .mark_delivered(&[(pending[0].id, crossing.clone())], t0())
            .await
            .expect("delivered");
        assert!(store.pending_outbox(10).await.expect("pending").is_empty());
        let recorded = store.audit().entries().await.expect("audit");
        assert_eq!(recorded.last(), Some(&crossing));
        // What left is kept as a row, without the person's data it carried.
        let kept = passerelle_storage::testing::text_rows(
            store.database(),
            "SELECT case_id, kind, payload FROM outbox WHERE delivered_at IS NOT NULL",
        )
        .await
        .expect("outbox");
        assert_eq!(
            kept,
            vec![vec!["k-1".to_owned(), "referral".to_owned(), String::new()]],
            "{url}"
        );
    }
}

/// The case's consents as `store` reads them.
async fn consents_of(store: &InstitutionStore, case_id: &str) -> Vec<Consent> {
    store.consents_for_case(case_id).await.expect("read")
}

/// A case's consents are read as they stand after every kind of change to
/// them (on SQLite they are kept between reads; a withdrawal must take
/// effect on the next one), and a change rolled back changes nothing.
#[tokio::test]
async fn a_consent_is_read_as_it_stands_after_every_change_on_every_backend() {
    for (url, _dir) in urls("consent_reads").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        tx.upsert_consent(&consent("k-1")).await.expect("given");
        tx.commit().await.expect("commit");
        assert_eq!(
            consents_of(&store, "k-1").await,
            vec![consent("k-1")],
            "{url}"
        );
        assert_eq!(
            consents_of(&store, "k-1").await,
            vec![consent("k-1")],
            "read again: {url}"
        );
        assert!(consents_of(&store, "k-2").await.is_empty(), "{url}");
        // A second store on the same database (a test's, a tool's) sees
        // the first's changes too.
        let beside = InstitutionStore::connect(&url, 2, Institution::Social)
            .await
            .expect("connect");
        assert_eq!(
            consents_of(&beside, "k-1").await,
            vec![consent("k-1")],
            "{url}"
        );

        // Withdrawn in a group-committed change.
        let mut withdrawn = consent("k-1");
        withdrawn.state = ConsentState::Withdrawn;
        withdrawn.state_changed_at = t0() + Duration::days(1);
        store
            .write(async |tx| tx.upsert_consent(&withdrawn).await)
            .await
            .expect("withdraw");
        assert_eq!(
            consents_of(&store, "k-1").await,
            vec![withdrawn.clone()],
            "{url}"
        );
        assert_eq!(
            consents_of(&beside, "k-1").await,
            vec![withdrawn.clone()],
            "{url}"
        );

        // A consent recorded for a case read before, when it had none.
        let mut other = consent("k-2");
        other.consent_id = "c-2".into();
        store
            .write(async |tx| tx.upsert_consent(&other).await)
            .await
            .expect("record");
        assert_eq!(
            consents_of(&store, "k-2").await,
            vec![other.clone()],
            "{url}"
        );

        // A transaction rolled back (dropped) leaves the consents as they were.
        let mut tx = store.begin().await.expect("begin");
        tx.erase_consents("k-2").await.expect("erase");
        drop(tx);
        assert_eq!(
            consents_of(&store, "k-2").await,
            vec![other.clone()],
            "{url}"
        );

        // A lone statement outside any transaction, as a tool would run it.
        passerelle_storage::testing::execute(
            store.database(),
            "UPDATE consents SET state = 'given' WHERE case_id = 'k-1'",
        )
        .await
        .expect("update");
        assert_eq!(
            consents_of(&store, "k-1").await[0].state,
            ConsentState::Given,
            "{url}"
        );

        // Erased.
        let mut tx = store.begin().await.expect("begin");
        tx.erase_consents("k-2").await.expect("erase");
        tx.commit().await.expect("commit");
        assert!(consents_of(&store, "k-2").await.is_empty(), "{url}");
        assert_eq!(consents_of(&store, "k-1").await.len(), 1, "{url}");
    }
}

/// A case read whole is read as it stands after every kind of change to
/// it (on SQLite it is kept between reads, case by case): compared each
/// time with a store that never read it before.
/// A case referred here, with its referral, as a change of a batch writes it.
async fn referred(store: &InstitutionStore, case_id: &str) -> Case {
    let case = Case::referred(&referral(case_id), 45);
    store
        .write(async |tx| {
            tx.insert_referral(&referral(case_id), Origin::Local)
                .await?;
            tx.save_case(&case, None).await?;
            tx.update_statistics().await
        })
        .await
        .expect("referred");
    case
}

/// Erases a case at the person's request, just read: kept until then on
/// SQLite, nothing of it kept after.
async fn erase(store: &InstitutionStore, url: &str, case_id: &str) {
    assert_eq!(
        store.keeps_anything_of(case_id),
        url.starts_with("sqlite"),
        "{url}: kept before its erasure (SQLite only)"
    );
    let mut tx = store.begin().await.expect("begin");
    tx.erase_case(case_id, ErasureReason::Request, false, t0())
        .await
        .expect("erased");
    tx.update_statistics().await.expect("counts");
    tx.commit().await.expect("commit");
    assert!(
        !store.keeps_anything_of(case_id),
        "{url}: nothing of an erased case stays in memory"
    );
}

#[tokio::test]
async fn a_write_transaction_reads_its_case_as_it_stands_after_every_change_on_every_backend() {
    for (url, _dir) in urls("case_rows").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        // Another store on the same database: another pool, as a tool's.
        let beside = InstitutionStore::connect(&url, 1, Institution::Social)
            .await
            .expect("connect");
        let as_it_stands = async |what: &str| {
            let read = async |store: &InstitutionStore| {
                let mut tx = store.begin().await.expect("begin");
                tx.case("k-1").await.expect("read")
            };
            let fresh = read(
                &InstitutionStore::connect(&url, 1, Institution::Social)
                    .await
                    .expect("connect"),
            )
            .await;
            assert_eq!(read(&store).await, fresh, "{url}: after {what}");
            // Read twice: the second may be the kept one.
            assert_eq!(read(&store).await, fresh, "{url}: after {what}, again");
            // And in a batch of changes, as a call's change reads it.
            let in_batch = store
                .write(async |tx| tx.case("k-1").await)
                .await
                .expect("batch");
            assert_eq!(in_batch, fresh, "{url}: after {what}, in a batch");
            fresh
        };
        assert!(as_it_stands("nothing").await.is_none());
        let mut case = referred(&store, "k-1").await;
        assert!(as_it_stands("the referral").await.is_some());

        // A batch's change reads the case, changes it, reads it again.
        case.referral_state = ReferralState::Accepted;
        case.referral_decided_at = Some(t0() + Duration::days(2));
        let (before, after) = store
            .write(async |tx| {
                let before = tx.case("k-1").await?.expect("a case");
                tx.save_case(&case, None).await?;
                let after = tx.case("k-1").await?.expect("a case");
                tx.update_statistics().await?;
                Ok::<_, passerelle_storage::StoreError>((before, after))
            })
            .await
            .expect("accepted");
        assert_eq!(before.referral_state, ReferralState::Pending, "{url}");
        assert_eq!(after.referral_state, ReferralState::Accepted, "{url}");
        let read = as_it_stands("its acceptance").await.expect("a case");
        assert_eq!(read.referral_state, ReferralState::Accepted, "{url}");

        // Its own change, read and dropped: never served to the next.
        let mut tx = store.begin().await.expect("begin");
        let mut dropped = case.clone();
        dropped.refusal_reason = Some("dropped".into());
        tx.save_case(&dropped, None).await.expect("save");
        assert_eq!(
            tx.case("k-1")
                .await
                .expect("read")
                .expect("a case")
                .refusal_reason
                .as_deref(),
            Some("dropped"),
            "{url}: a transaction reads its own change"
        );
        drop(tx);
        let read = as_it_stands("a dropped change").await.expect("a case");
        assert_eq!(read.refusal_reason, case.refusal_reason, "{url}");

        // Another pool's change, then a lone statement as a tool would run it.
        case.refusal_reason = Some("another pool".into());
        let mut tx = beside.begin().await.expect("begin");
        tx.save_case(&case, None).await.expect("save");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        let read = as_it_stands("another pool's change").await.expect("a case");
        assert_eq!(
            read.refusal_reason.as_deref(),
            Some("another pool"),
            "{url}"
        );
        passerelle_storage::testing::execute(
            store.database(),
            "UPDATE cases SET refusal_reason = 'a tool' WHERE case_id = 'k-1'",
        )
        .await
        .expect("update");
        let read = as_it_stands("a lone update").await.expect("a case");
        assert_eq!(read.refusal_reason.as_deref(), Some("a tool"), "{url}");

        erase(&store, &url, "k-1").await;
        assert!(as_it_stands("its erasure").await.is_none());
    }
}

#[tokio::test]
async fn a_case_is_read_whole_as_it_stands_after_every_change_on_every_backend() {
    for (url, _dir) in urls("case_reads").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let as_it_stands = async |what: &str| {
            let read = store.case_parts("k-1").await.expect("read");
            let fresh = InstitutionStore::connect(&url, 1, Institution::Social)
                .await
                .expect("connect")
                .case_parts("k-1")
                .await
                .expect("read");
            assert_eq!(read, fresh, "{url}: after {what}");
            // Read twice: the second may be the kept one.
            assert_eq!(
                store.case_parts("k-1").await.expect("read"),
                fresh,
                "{url}: after {what}, read again"
            );
            fresh
        };
        assert!(as_it_stands("nothing").await.is_none());
        let mut case = referred(&store, "k-1").await;
        assert!(as_it_stands("the referral").await.is_some());
        // Another case's change leaves this one's read as it was.
        let mut other = consent("k-2");
        other.consent_id = "c-2".into();
        let mut tx = store.begin().await.expect("begin");
        tx.upsert_consent(&other).await.expect("consent");
        tx.commit().await.expect("commit");
        as_it_stands("another case's consent").await;

        case.referral_state = ReferralState::Accepted;
        case.referral_decided_at = Some(t0() + Duration::days(2));
        store
            .write(async |tx| {
                tx.save_case(&case, None).await?;
                tx.update_statistics().await
            })
            .await
            .expect("accepted");
        let parts = as_it_stands("its acceptance").await.expect("a case");
        assert_eq!(parts.case.referral_state, ReferralState::Accepted);

        let mut tx = store.begin().await.expect("begin");
        tx.upsert_consent(&consent("k-1")).await.expect("consent");
        tx.insert_note("k-1", "sw-1", "first", "a note", t0())
            .await
            .expect("note");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        let parts = as_it_stands("a consent and a note").await.expect("a case");
        assert_eq!((parts.consents.len(), parts.notes.len()), (1, 1));

        store
            .write(async |tx| {
                tx.append_orientation(&oriented_to_social("k-1"), Origin::Local)
                    .await?;
                tx.update_statistics().await
            })
            .await
            .expect("oriented");
        as_it_stands("an orientation").await;

        // A change rolled back (dropped) leaves it as it was.
        let mut tx = store.begin().await.expect("begin");
        tx.insert_note("k-1", "sw-1", "second", "dropped", t0())
            .await
            .expect("note");
        drop(tx);
        let parts = as_it_stands("a dropped change").await.expect("a case");
        assert_eq!(parts.notes.len(), 1);

        let mut tx = store.begin().await.expect("begin");
        assert!(tx.restrict("k-1", t0()).await.expect("restricted"));
        tx.commit().await.expect("commit");
        assert!(
            as_it_stands("a restriction")
                .await
                .expect("a case")
                .restricted
        );
        let mut tx = store.begin().await.expect("begin");
        assert!(tx.lift_restriction("k-1").await.expect("lifted"));
        tx.commit().await.expect("commit");
        assert!(
            !as_it_stands("its lifting")
                .await
                .expect("a case")
                .restricted
        );

        // A lone statement outside any transaction, as a tool would run it.
        passerelle_storage::testing::execute(
            store.database(),
            "UPDATE local_notes SET note = 'rewritten' WHERE case_id = 'k-1'",
        )
        .await
        .expect("update");
        let parts = as_it_stands("a lone update").await.expect("a case");
        assert_eq!(parts.notes[0].note, "rewritten");

        erase(&store, &url, "k-1").await;
        assert!(as_it_stands("its erasure").await.is_none());
    }
}

#[tokio::test]
async fn audit_log_chains_and_refuses_changes_on_every_backend() {
    for (url, _dir) in urls("audit").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        for i in 0..3 {
            store
                .audit()
                .append(inbound_entry(i, "k"))
                .await
                .expect("append");
        }
        store.audit().verify().await.expect("intact");
        assert_eq!(store.audit().entries().await.expect("entries").len(), 3);
        let tamper = passerelle_storage::testing::execute(
            store.database(),
            "UPDATE audit_log SET decision = 'denied' WHERE seq = 2",
        )
        .await;
        assert!(tamper.is_err(), "{url}: the audit log must refuse updates");
        let delete =
            passerelle_storage::testing::execute(store.database(), "DELETE FROM audit_log").await;
        assert!(delete.is_err(), "{url}: the audit log must refuse deletes");
    }
}

/// A database deployed before migration `last + 1`: the institution's
/// migrations up to `last` only, applied from a copy of their directory.
async fn migrated_up_to(url: &str, last: u32) -> sqlx::AnyConnection {
    use sqlx::Connection;
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/institution")
        .join(backend);
    let earlier = tempfile::tempdir().expect("tempdir");
    for file in std::fs::read_dir(&all).expect("migrations") {
        let path = file.expect("migration").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let version: u32 = name
            .split('_')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        if version <= last {
            std::fs::copy(&path, earlier.path().join(name)).expect("copy");
        }
    }
    sqlx::any::install_default_drivers();
    let url = if backend == "sqlite" {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .expect("migrations")
        .run(&mut conn)
        .await
        .expect("earlier migrations");
    conn
}

#[tokio::test]
async fn an_audit_log_written_before_its_hashes_lost_their_index_still_chains_on_every_backend() {
    use passerelle_boundary::audit::{GENESIS_HASH, chain_hash};
    for (url, _dir) in urls("audit_rebuilt").await {
        // Three records chained as the store did, before migration 15.
        let mut conn = migrated_up_to(&url, 14).await;
        let mut prev_hash = GENESIS_HASH.to_owned();
        for seq in 1..=3_i64 {
            let entry = inbound_entry(seq as usize, &format!("case-{seq}"));
            let entry_json = entry.canonical_json();
            let hash = chain_hash(&prev_hash, &entry_json);
            sqlx::query(
                "INSERT INTO audit_log (seq, at, method, case_id, decision, entry_json, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, 'allowed', $5, $6, $7)",
            )
            .bind(seq)
            .bind(seq * 1_000_000)
            .bind(entry.method.clone())
            .bind(entry.case_id.as_ref().map(|c| c.to_string()))
            .bind(entry_json)
            .bind(prev_hash.clone())
            .bind(hash.clone())
            .execute(&mut conn)
            .await
            .expect("an earlier record");
            prev_hash = hash;
        }
        drop(conn);
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("the later migrations");
        let audit = store.audit();
        audit
            .append(inbound_entry(4, "case-4"))
            .await
            .expect("append");
        audit
            .verify()
            .await
            .expect("the chain runs through the rebuild");
        let kept = audit.records().await.expect("records");
        assert_eq!(kept.len(), 4, "{url}");
        assert_eq!(
            kept[3].prev_hash, prev_hash,
            "{url}: appended after the earlier head"
        );
        let db = store.database();
        use passerelle_storage::testing::{count, execute};
        let (by_case, unique_hash) = if url.starts_with("sqlite:") {
            (
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'audit_by_case'",
                "SELECT COUNT(*) FROM pragma_index_list('audit_log') WHERE \"unique\" = 1",
            )
        } else {
            (
                "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'audit_log' AND indexname = 'audit_by_case'",
                "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'audit_log' AND indexdef LIKE '%UNIQUE%(hash)%'",
            )
        };
        assert_eq!(
            count(db, by_case).await.expect("index"),
            1,
            "{url}: the index by case"
        );
        assert_eq!(
            count(db, unique_hash).await.expect("index"),
            0,
            "{url}: no index on hashes"
        );
        let tamper = execute(db, "UPDATE audit_log SET decision = 'denied' WHERE seq = 2").await;
        assert!(
            tamper.is_err(),
            "{url}: the rebuilt log must refuse updates"
        );
        let delete = execute(db, "DELETE FROM audit_log WHERE seq = 1").await;
        assert!(
            delete.is_err(),
            "{url}: the rebuilt log must refuse deletes"
        );
    }
}

#[tokio::test]
async fn pilotage_snapshots_round_trip_on_every_backend() {
    for (url, _dir) in urls("pilotage").await {
        let store = PilotageStore::connect(&url, 2).await.expect("connect");
        let count = |measure: &str, month: &str, key: &str, n: i64| {
            (
                statistics::CubeKey {
                    measure: measure.into(),
                    month: month.into(),
                    office: "MDS-01".into(),
                    network: "social".into(),
                    key: key.into(),
                },
                n,
            )
        };
        let indicators = Indicators {
            source: Institution::Emploi,
            computed_at: t0(),
            // In key order, as the snapshot gives them back.
            counts: vec![
                count("barriers", "2025-01", "mobilite", 30),
                count("barriers", "2025-01", "sante", 12),
                count("delay_days", "2025-02", "referral_to_entry", 600),
                count("entries", "2025-02", "", 30),
            ],
            counsellor_fte_per_mille: 7_200,
        };
        store.save_snapshot(&indicators, t0()).await.expect("save");
        assert_eq!(
            store
                .latest_snapshot(Institution::Emploi)
                .await
                .expect("read"),
            Some(indicators)
        );
        assert_eq!(
            store
                .latest_snapshot(Institution::Social)
                .await
                .expect("read"),
            None
        );
    }
}

/// Two writers read and rewrite the same case (an agent's change and the
/// partner's event): the second must start from the first's result. Without
/// row locks, PostgreSQL's READ COMMITTED lets the second overwrite it.
#[tokio::test]
async fn concurrent_rewrites_of_a_case_lose_nothing_on_every_backend() {
    for (url, _dir) in urls("lostupdate").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        tx.save_case(&Case::referred(&referral("k-2"), 30), None)
            .await
            .expect("case");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");

        let mut first = store.begin().await.expect("begin");
        let mut case = first.case("k-2").await.expect("read").expect("case");
        let second = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                let mut case = tx.case("k-2").await.expect("read").expect("case");
                case.exit_reason = Some(ExitReason::Training);
                tx.save_case(&case, None).await.expect("save");
                tx.update_statistics().await.expect("counts");
                tx.commit().await.expect("commit");
            })
        };
        // Give the second writer every chance to read before the first commits.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        case.renewals = 1;
        first.save_case(&case, None).await.expect("save");
        first.update_statistics().await.expect("counts");
        first.commit().await.expect("commit");
        second.await.expect("second writer");

        let merged = store.case("k-2").await.expect("read").expect("case");
        assert_eq!(
            (merged.renewals, merged.exit_reason),
            (1, Some(ExitReason::Training)),
            "{url}: a change was lost"
        );
    }
}

/// Only one relay at a time: a second lease is refused while the first is
/// held (PostgreSQL; several replicas share it), and granted once released.
/// Two handles on one fresh PostgreSQL database (two replicas of the
/// social service), when a server is configured.
async fn two_replicas_on_postgres(label: &str) -> Option<(InstitutionStore, InstitutionStore)> {
    let url = fresh_postgres_database(&postgres_base_url()?, label)
        .await
        .expect("database");
    let connect = async || {
        InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect")
    };
    Some((connect().await, connect().await))
}

#[tokio::test]
async fn one_relay_lease_at_a_time_on_postgres() {
    let Some((first, second)) = two_replicas_on_postgres("lease").await else {
        return;
    };
    let lease = first
        .try_relay_lease()
        .await
        .expect("lease")
        .expect("granted");
    assert!(
        second.try_relay_lease().await.expect("lease").is_none(),
        "two relays at once"
    );
    lease.release().await;
    assert!(
        second.try_relay_lease().await.expect("lease").is_some(),
        "released with the first"
    );
}

/// A change's audit records are appended when its batch commits: on
/// PostgreSQL another replica appends to the one chain while the batch is
/// still running its changes (the chain's lock is taken at commit only),
/// and both records are in the chain once the batch commits.
#[tokio::test]
async fn a_running_batch_does_not_hold_the_chain_on_postgres() {
    let Some((running, other_replica)) = two_replicas_on_postgres("chain-lock").await else {
        return;
    };
    let (holder, release) =
        hold_batch_recording(&running, "k-held", Some(inbound_entry(1, "k-in-change"))).await;
    // Would wait for the batch's commit, which waits for this test, if the
    // batch held the chain's lock.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        other_replica
            .audit()
            .append(inbound_entry(2, "k-other-replica")),
    )
    .await
    .expect("the other replica appended while the batch runs")
    .expect("append");
    release.send(()).expect("holder waits");
    holder.await.expect("joined").expect("the batch committed");
    let entries = running.audit().entries().await.expect("entries");
    let cases: Vec<_> = entries.iter().filter_map(|e| e.case_id.clone()).collect();
    assert_eq!(cases, ["k-other-replica", "k-in-change"]);
    running.audit().verify().await.expect("one intact chain");
}

/// Two replicas' batches each hold their changes' locks until they commit:
/// a change that would wait on the other's (here, the same idempotency key
/// written by both) waits a batch's commit at most, then fails alone as
/// busy; it does not hold its own batch, and the other's, in a deadlock
/// PostgreSQL breaks only after a second, batch after batch.
#[tokio::test]
async fn a_change_waiting_on_another_replicas_batch_gives_up_as_busy_on_postgres() {
    let Some((first, second)) = two_replicas_on_postgres("lock-wait").await else {
        return;
    };
    let (holder, release) = hold_batch(&first, "k-both-replicas").await;
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        second.write(async |tx| store_answer(tx, "k-both-replicas").await),
    )
    .await
    .expect("the change gave up while the other batch was still open");
    match waited {
        Err(e) => assert!(e.is_busy(), "busy, to be retried: {e}"),
        Ok(()) => panic!("two replicas wrote the same key"),
    }
    // The second replica's batch went on without it.
    second
        .write(async |tx| store_answer(tx, "k-second-alone").await)
        .await
        .expect("the next change");
    release.send(()).expect("holder waits");
    holder
        .await
        .expect("joined")
        .expect("the first batch committed");
    assert!(
        second
            .stored_response("/batch", "k-both-replicas")
            .await
            .expect("read")
            .is_some()
    );
}

/// Group commit: appends made at once, from two handles on the same database
/// (two replicas), are each committed when their caller hears back (another
/// connection reads the record at once) and form one linear chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_durable_when_answered_and_form_one_chain_on_every_backend() {
    const APPENDS: usize = 300;
    for (url, _dir) in urls("group-commit").await {
        let replicas = [
            InstitutionStore::connect(&url, 4, Institution::Social)
                .await
                .expect("connect"),
            InstitutionStore::connect(&url, 4, Institution::Social)
                .await
                .expect("connect"),
        ];
        let reader = InstitutionStore::connect(&url, 2, Institution::Social)
            .await
            .expect("connect");
        let mut appends = tokio::task::JoinSet::new();
        for i in 0..APPENDS {
            let log = replicas[i % 2].audit().clone();
            let reader = reader.audit().clone();
            appends.spawn(async move {
                let entry = inbound_entry(i, &format!("k-{}", i % 7));
                let record = log.append(entry).await.expect("append");
                let held = reader.hashes_at(&[record.seq]).await.expect("read");
                assert_eq!(
                    held,
                    vec![(record.seq, Some(record.hash.clone()))],
                    "record {} not committed when its caller was answered",
                    record.seq
                );
                (record.seq, i)
            });
        }
        let mut seqs = vec![];
        while let Some(done) = appends.join_next().await {
            seqs.push(done.expect("append task").0);
        }
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=APPENDS as i64).collect();
        assert_eq!(seqs, expected, "{url}: one record per caller, no gap");
        reader.audit().verify().await.expect("one intact chain");
        let mut agents: Vec<String> = reader
            .audit()
            .entries()
            .await
            .expect("entries")
            .into_iter()
            .filter_map(|e| e.agent)
            .collect();
        agents.sort();
        agents.dedup();
        assert_eq!(agents.len(), APPENDS, "{url}: every entry exactly once");
    }
}

/// A person oriented into a parcours and never referred: the orientations
/// count where decided (the first as an orientation, the next as a change),
/// match a recount, and go with the retention purge while their counts stay.
#[tokio::test]
async fn orientations_without_a_case_count_and_are_purged_on_every_backend() {
    use passerelle_domain::orientation::{OrganismeReferent, Orientation, Parcours};
    use std::collections::BTreeMap;
    for (url, _dir) in urls("orientations").await {
        let store = InstitutionStore::connect(&url, 2, Institution::Social)
            .await
            .expect("connect");
        let oriented = |parcours, days| Orientation {
            case_id: "k-oriented".into(),
            office_code: "AD-REDON-VALLONS".into(),
            parcours,
            criteria: vec![],
            referent: OrganismeReferent::Departement,
            rsa_beneficiary: true,
            decided_by_institution: Institution::Social,
            decided_by: "sw-1".into(),
            decided_at: t0() + Duration::days(days),
        };
        for o in [
            oriented(Parcours::Social, 0),
            oriented(Parcours::Emploi, 40),
        ] {
            let mut tx = store.begin().await.expect("begin");
            assert!(
                tx.append_orientation(&o, Origin::Local)
                    .await
                    .expect("append")
            );
            tx.update_statistics().await.expect("counts");
            tx.commit().await.expect("commit");
        }
        let kept: BTreeMap<_, _> = store
            .statistics()
            .await
            .expect("counts")
            .into_iter()
            .collect();
        let keys: Vec<(&str, &str, i64)> = kept
            .iter()
            .map(|(k, n)| (k.measure.as_str(), k.key.as_str(), *n))
            .collect();
        assert_eq!(
            keys,
            [
                ("orientations", "social", 1),
                ("parcours_changes", "social->emploi", 1)
            ],
            "{url}"
        );
        assert_eq!(kept, store.recount().await.expect("recount"), "{url}");

        let purge_at = |months| {
            (t0() + Duration::days(40))
                .checked_add_months(chrono::Months::new(months))
                .expect("date")
        };
        let early = store
            .purge_candidates(purge_at(23), 24, 60, 10)
            .await
            .expect("candidates");
        assert!(early.is_empty(), "{url}: {early:?}");
        let due = store
            .purge_candidates(purge_at(24), 24, 60, 10)
            .await
            .expect("candidates");
        assert_eq!(due.len(), 1, "{url}");
        assert_eq!(due[0].case_id, "k-oriented");
        let mut tx = store.begin().await.expect("begin");
        tx.erase_case("k-oriented", ErasureReason::Retention, true, purge_at(24))
            .await
            .expect("erase");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        assert!(
            store
                .orientations("k-oriented")
                .await
                .expect("read")
                .is_empty()
        );
        let after: BTreeMap<_, _> = store
            .statistics()
            .await
            .expect("counts")
            .into_iter()
            .collect();
        assert_eq!(after, kept, "{url}: the committee's counts stay");
        assert_eq!(after, store.recount().await.expect("recount"), "{url}");
    }
}

/// Answers are stored at the commit: one naming a case that a later change
/// of the same transaction erases is not stored (the erasure deletes the
/// stored answers naming the case), one queued after the erasure is, and an
/// erasure rolled back to its savepoint forgets nothing.
#[tokio::test]
async fn an_erasure_takes_the_answers_of_its_transaction_naming_the_case_on_every_backend() {
    for (url, _dir) in urls("erased-answers").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let (held, release) = hold_batch(&store, "holder").await;
        let answer = |key: &'static str, body: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        tx.save_response("/m", key, "sha", body.as_bytes(), t0());
                        Ok::<_, passerelle_storage::StoreError>(())
                    })
                    .await
            })
        };
        let erase = |case_id: &'static str, then_fail: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        tx.erase_case(case_id, ErasureReason::Request, false, t0())
                            .await?;
                        tx.update_statistics().await?;
                        if then_fail {
                            return Err(passerelle_storage::StoreError::Conflict("refused".into()));
                        }
                        Ok(())
                    })
                    .await
            })
        };
        // In one batch, in this order.
        let mut calls = vec![answer("before", r#"{"case_id":"k-erased"}"#)];
        until_waiting(&store, 1).await;
        calls.push(answer("other-case", r#"{"case_id":"k-kept"}"#));
        until_waiting(&store, 2).await;
        calls.push(erase("k-kept", true));
        until_waiting(&store, 3).await;
        calls.push(erase("k-erased", false));
        until_waiting(&store, 4).await;
        calls.push(answer("after", r#"{"case_id":"k-erased"}"#));
        until_waiting(&store, 5).await;
        release.send(()).expect("holder waits");
        held.await.expect("joins").expect("holder");
        let outcomes: Vec<bool> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|joined| joined.expect("joins").is_ok())
            .collect();
        assert_eq!(outcomes, [true, true, false, true, true], "{url}");
        for (key, stored) in [("before", false), ("other-case", true), ("after", true)] {
            let found = store.stored_response("/m", key).await.expect("read");
            assert_eq!(found.is_some(), stored, "{url}: {key}");
        }
    }
}

#[tokio::test]
async fn a_portfolio_counts_the_periods_not_yet_ended_on_every_backend() {
    for (url, _dir) in urls("portfolio").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Emploi)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        // Three people in global support with one counsellor, their periods
        // ending on days 10, 20 and 30; one more in another's portfolio.
        for (i, (counsellor, ends)) in [("c-1", 10), ("c-1", 20), ("c-1", 30), ("c-2", 30)]
            .into_iter()
            .enumerate()
        {
            let mut case = Case::referred(&referral(&format!("p-{i}")), 45);
            case.state = CaseState::Active;
            case.track = Track::Global;
            case.pair = Some(Pair {
                counsellor: counsellor.into(),
                social_worker: "sw-1".into(),
            });
            case.ends_at = Some(t0() + Duration::days(ends));
            tx.save_case(&case, Some(Institution::Emploi))
                .await
                .expect("case");
        }
        assert_eq!(tx.portfolio("c-1", t0()).await.expect("count"), 3);
        // Past its end a period frees its place, before the deadline pass closes it.
        let day = |d| t0() + Duration::days(d);
        assert_eq!(tx.portfolio("c-1", day(10)).await.expect("count"), 2);
        assert_eq!(tx.portfolio("c-1", day(25)).await.expect("count"), 1);
        // A restricted case stays open (nothing may change it), so it keeps its place.
        assert!(tx.restrict("p-1", day(5)).await.expect("restricted"));
        assert_eq!(tx.portfolio("c-1", day(25)).await.expect("count"), 2);
        assert_eq!(tx.portfolio("c-2", day(25)).await.expect("count"), 1);
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
    }
}

/// A change that writes a row under `key` (at once) and stores its answer
/// (at the commit): what an idempotent RPC's change does.
async fn store_answer(
    tx: &mut passerelle_storage::institution::Tx,
    key: &str,
) -> Result<(), passerelle_storage::StoreError> {
    let row = CounsellorEntry {
        counsellor: key.into(),
        working_time_per_mille: 1000,
        office_code: "office".into(),
    };
    tx.upsert_counsellor(&row, "batch", t0()).await?;
    tx.save_response("/batch", key, "sha", key.as_bytes(), t0());
    Ok(())
}

/// [`store_answer`] under `key` in a task of its own.
fn spawn_answer(
    store: &InstitutionStore,
    key: &'static str,
) -> tokio::task::JoinHandle<Result<(), passerelle_storage::StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.write(async |tx| store_answer(tx, key).await).await })
}

/// Whether [`store_answer`]'s change under `key` committed: its row and its
/// answer, both or neither.
async fn committed(store: &InstitutionStore, key: &str) -> bool {
    let answer = store
        .stored_response("/batch", key)
        .await
        .expect("read")
        .is_some();
    let mut tx = store.begin().await.expect("begin");
    let row = tx.counsellor(key).await.expect("read").is_some();
    assert_eq!(
        answer, row,
        "{key}: a change's row and its answer commit together"
    );
    answer
}

/// A change that stores `key`'s answer and then holds the batch open until
/// the returned sender is used (or dropped); answers once it has started.
async fn hold_batch(
    store: &InstitutionStore,
    key: &'static str,
) -> (
    tokio::task::JoinHandle<Result<(), passerelle_storage::StoreError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    hold_batch_recording(store, key, None).await
}

/// What a held change writes before it holds its batch open.
enum Held {
    /// A key's answer, and the record of the crossing that asked for it.
    Answer(&'static str, Option<AuditEntry>),
    /// A person's orientation, counted.
    Orientation(&'static str),
}

/// [`hold_batch`], the change also recording `entry` in the audit chain.
async fn hold_batch_recording(
    store: &InstitutionStore,
    key: &'static str,
    entry: Option<AuditEntry>,
) -> (
    tokio::task::JoinHandle<Result<(), passerelle_storage::StoreError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    hold_batch_writing(store, Held::Answer(key, entry)).await
}

/// A change that writes `held` and then holds its batch open until the
/// returned sender is used (or dropped); answers once it has written.
async fn hold_batch_writing(
    store: &InstitutionStore,
    held: Held,
) -> (
    tokio::task::JoinHandle<Result<(), passerelle_storage::StoreError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (release, until_released) = tokio::sync::oneshot::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let store = store.clone();
    let holder = tokio::spawn(async move {
        store
            .write(async |tx| {
                match &held {
                    Held::Answer(key, entry) => {
                        store_answer(tx, key).await?;
                        if let Some(entry) = entry {
                            tx.append_audit(entry);
                        }
                    }
                    Held::Orientation(case_id) => orient(tx, case_id).await?,
                }
                started.send(()).expect("test waits");
                // Released, or dropped by a test that aborts the holder.
                let _ = until_released.await;
                Ok(())
            })
            .await
    });
    running.await.expect("the holding change started");
    (holder, release)
}

/// Waits until `n` writers queue for the open batch.
async fn until_waiting(store: &InstitutionStore, n: usize) {
    for _ in 0..1_000 {
        if store.group_commit_counts().waiting == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!(
        "{n} writers never queued: {:?}",
        store.group_commit_counts()
    );
}

/// Changes arriving while a batch is open share its commit, and each writer
/// hears back only once its change is durable (readable by anyone).
#[tokio::test]
async fn writers_arriving_together_share_one_commit_on_every_backend() {
    for (url, _dir) in urls("groupcommit").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let before = store.group_commit_counts();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        store_answer(tx, "k-0").await?;
                        held.await.expect("released");
                        Ok::<_, passerelle_storage::StoreError>(())
                    })
                    .await
            })
        };
        let others: Vec<_> = (1..=20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("k-{i}");
                    store.write(async |tx| store_answer(tx, &key).await).await?;
                    // Answered: durable, so visible outside the batch.
                    let stored = store.stored_response("/batch", &key).await?;
                    Ok::<_, passerelle_storage::StoreError>(stored.is_some())
                })
            })
            .collect();
        until_waiting(&store, 20).await;
        release.send(()).expect("first writer waits");
        first.await.expect("joins").expect("first change");
        for other in others {
            assert!(other.await.expect("joins").expect("change"), "{url}");
        }
        let after = store.group_commit_counts();
        assert_eq!(
            (
                after.batches - before.batches,
                after.changes - before.changes
            ),
            (1, 21),
            "{url}: the 20 writers that queued behind the first joined its batch"
        );
    }
}

/// A change that fails, and one whose caller went away midway, are rolled
/// back alone: the batch's other changes commit.
#[tokio::test]
async fn failed_and_abandoned_changes_leave_nothing_on_every_backend() {
    for (url, _dir) in urls("groupcommitfail").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        // Holds the batch open after writing, until aborted.
        let (abandoned, release) = hold_batch(&store, "abandoned").await;
        let failing = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        store_answer(tx, "failed").await?;
                        Err::<(), _>(passerelle_storage::StoreError::Conflict("refused".into()))
                    })
                    .await
            })
        };
        let kept = spawn_answer(&store, "kept");
        until_waiting(&store, 2).await;
        abandoned.abort();
        assert!(abandoned.await.expect_err("aborted").is_cancelled());
        drop(release);
        assert!(matches!(
            failing.await.expect("joins"),
            Err(passerelle_storage::StoreError::Conflict(_))
        ));
        kept.await.expect("joins").expect("kept change");
        for (key, present) in [("abandoned", false), ("failed", false), ("kept", true)] {
            assert_eq!(committed(&store, key).await, present, "{url}: {key}");
        }
        // The batch is usable afterwards.
        store
            .write(async |tx| store_answer(tx, "after").await)
            .await
            .expect("a later change");
    }
}

/// An answer is stored at the commit: under a key another writer (another
/// replica) committed since the call looked it up, the batch fails as busy
/// and nothing of it commits; tried again, the call finds that answer.
#[tokio::test]
async fn a_key_taken_since_its_look_up_fails_the_batch_as_busy_on_every_backend() {
    for (url, _dir) in urls("taken-key").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        store
            .write(async |tx| store_answer(tx, "taken").await)
            .await
            .expect("the first writer");
        let (beside, release) = hold_batch(&store, "beside").await;
        let taken = spawn_answer(&store, "taken");
        until_waiting(&store, 1).await;
        release.send(()).expect("holder waits");
        for (key, outcome) in [("beside", beside), ("taken", taken)] {
            match outcome.await.expect("joins") {
                Err(e) => assert!(e.is_busy(), "{url}: {key}: busy, to be retried: {e}"),
                Ok(()) => panic!("{url}: {key}: a change under a taken key committed"),
            }
        }
        assert!(!committed(&store, "beside").await, "{url}");
        let counts = store.group_commit_counts();
        assert_eq!(
            (counts.batches, counts.changes),
            (1, 1),
            "{url}: only the first writer's"
        );
    }
}

/// A change's savepoint is released only when the next one is set (one
/// statement for both): a change failing after a kept one, in one batch,
/// undoes itself and nothing of the one before or after it.
#[tokio::test]
async fn a_failed_change_between_kept_ones_undoes_only_itself_on_every_backend() {
    for (url, _dir) in urls("groupcommitbetween").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        tx.save_case(&Case::referred(&referral("k-between"), 30), None)
            .await
            .expect("case");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        // A change reading its case first, then writing; or failing before
        // any statement.
        let spawn_write = |key: &'static str, writes: bool, fails: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        if writes {
                            let case = tx.case("k-between").await?;
                            assert!(case.is_some(), "the first read found the case");
                            store_answer(tx, key).await?;
                        }
                        if fails {
                            return Err(passerelle_storage::StoreError::Conflict("refused".into()));
                        }
                        Ok(())
                    })
                    .await
            })
        };
        // The first holds the batch until the others queue behind it, in order.
        let (first, release) = hold_batch(&store, "first").await;
        let mut others = vec![];
        for (i, (key, writes, fails)) in [
            ("second", true, true),
            ("third", true, false),
            ("fourth", false, true),
            ("fifth", true, true),
            ("sixth", true, false),
        ]
        .into_iter()
        .enumerate()
        {
            others.push((key, fails, spawn_write(key, writes, fails)));
            until_waiting(&store, i + 1).await;
        }
        release.send(()).expect("first waits");
        first.await.expect("joins").expect("first kept");
        for (key, fails, other) in others {
            let outcome = other.await.expect("joins");
            assert_eq!(outcome.is_err(), fails, "{url}: {key}: {outcome:?}");
        }
        for (key, present) in [
            ("first", true),
            ("second", false),
            ("third", true),
            ("fifth", false),
            ("sixth", true),
        ] {
            assert_eq!(committed(&store, key).await, present, "{url}: {key}");
        }
        let counts = store.group_commit_counts();
        assert_eq!(
            (counts.batches, counts.changes),
            (1, 3),
            "{url}: one batch, three kept"
        );
    }
}

/// A person oriented into the social parcours by the Département: counted
/// in figures (month, office) that every such person shares.
fn oriented_to_social(case_id: &str) -> orientation::Orientation {
    use passerelle_domain::orientation::{OrganismeReferent, Orientation, Parcours};
    Orientation {
        case_id: case_id.into(),
        office_code: "AD-REDON-VALLONS".into(),
        parcours: Parcours::Social,
        criteria: vec![],
        referent: OrganismeReferent::Departement,
        rsa_beneficiary: true,
        decided_by_institution: Institution::Social,
        decided_by: "sw-1".into(),
        decided_at: t0(),
    }
}

/// A change that orients `case_id`'s person, and counts it.
async fn orient(
    tx: &mut passerelle_storage::institution::Tx,
    case_id: &str,
) -> Result<(), passerelle_storage::StoreError> {
    tx.append_orientation(&oriented_to_social(case_id), Origin::Local)
        .await?;
    tx.update_statistics().await
}

/// The kept counts as (measure, breakdown, value), checked against a recount.
async fn counted(store: &InstitutionStore, url: &str) -> Vec<(String, String, i64)> {
    passerelle_storage::testing::counts_equal_to_a_recount(store, url)
        .await
        .into_iter()
        .map(|(k, n)| (k.measure, k.key, n))
        .collect()
}

fn social_orientations(n: i64) -> Vec<(String, String, i64)> {
    vec![("orientations".into(), "social".into(), n)]
}

/// A change's difference to the committee's counts is written with its
/// batch's commit: the differences of a change that fails, or whose caller
/// went away, go with the rest of it, and the kept counts equal a recount.
#[tokio::test]
async fn counts_commit_with_their_batch_and_leave_with_failed_changes_on_every_backend() {
    for (url, _dir) in urls("batchcounts").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let spawn_orient = |case_id: &'static str, fails: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        orient(tx, case_id).await?;
                        if fails {
                            return Err(passerelle_storage::StoreError::Conflict("refused".into()));
                        }
                        Ok(())
                    })
                    .await
            })
        };
        // Counted, then held open until aborted: its caller went away.
        let (abandoned, release) =
            hold_batch_writing(&store, Held::Orientation("k-abandoned")).await;
        let failed = spawn_orient("k-failed", true);
        until_waiting(&store, 1).await;
        let kept = spawn_orient("k-kept", false);
        until_waiting(&store, 2).await;
        abandoned.abort();
        assert!(abandoned.await.expect_err("aborted").is_cancelled());
        drop(release);
        assert!(failed.await.expect("joins").is_err(), "{url}");
        kept.await.expect("joins").expect("kept change");
        assert_eq!(store.group_commit_counts().batches, 1, "{url}: one batch");
        assert_eq!(
            counted(&store, &url).await,
            social_orientations(1),
            "{url}: the kept change's only"
        );
    }
}

/// The count rows are shared by every case of a month and office: a
/// running batch does not hold them (it writes its counts as it commits),
/// so another replica's change to the same counts commits meanwhile instead
/// of waiting for it and giving up as busy.
#[tokio::test]
async fn a_running_batch_does_not_hold_the_counts_on_postgres() {
    let Some((running, other_replica)) = two_replicas_on_postgres("count-lock").await else {
        return;
    };
    let (holder, release) = hold_batch_writing(&running, Held::Orientation("k-held")).await;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        other_replica.write(async |tx| orient(tx, "k-other-replica").await),
    )
    .await
    .expect("the other replica's change ended")
    .expect("committed while the batch runs");
    release.send(()).expect("holder waits");
    holder.await.expect("joined").expect("the batch committed");
    assert_eq!(counted(&running, "postgres").await, social_orientations(2));
}

/// A record written on its own (a replay, a read, a refusal) survives its
/// caller going away while it waits for the batch: it is durable once the
/// batch commits, though nobody waits for it any more.
#[tokio::test]
async fn a_record_outlives_its_caller_cancelled_while_it_waits_for_the_batch_on_every_backend() {
    for (url, _dir) in urls("cancelledrecord").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let (holder, release) = hold_batch(&store, "holder").await;
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.audit().append(inbound_entry(7, "k-cancelled")),
        )
        .await;
        assert!(cancelled.is_err(), "{url}: still waiting for the batch");
        release.send(()).expect("holder waits");
        holder.await.expect("joins").expect("holder kept");
        let mut found = false;
        for _ in 0..200 {
            let entries = store.audit().entries().await.expect("entries");
            if entries
                .iter()
                .any(|e| e.case_id.as_deref() == Some("k-cancelled"))
            {
                found = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(found, "{url}: the record of a cancelled caller was lost");
        store.audit().verify().await.expect("the chain verifies");
    }
}

/// A crossing's record, to be written with its change.
fn pending(store: &InstitutionStore, entry: AuditEntry) -> passerelle_boundary::PendingRecord {
    passerelle_boundary::PendingRecord::new(entry, std::sync::Arc::new(store.audit().clone()))
}

/// A crossing's record joins the batch of the change it asks for: it
/// commits with it, stays when the change fails (the caller hears of the
/// failure once the record is durable), and records appended inside a
/// change that is rolled back leave no gap in the chain.
#[tokio::test]
async fn crossing_records_commit_with_their_changes_and_outlive_their_failures_on_every_backend() {
    use passerelle_storage::StoreError;
    for (url, _dir) in urls("recorded").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let before = store.group_commit_counts();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        store_answer(tx, "first").await?;
                        started.send(()).expect("test waits");
                        held.await.expect("released");
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        };
        running.await.expect("first change holds the batch");
        let kept = {
            let store = store.clone();
            tokio::spawn(async move {
                let entry = pending(&store, inbound_entry(1, "k-kept"));
                store
                    .write_recorded(&entry, async |tx| store_answer(tx, "kept").await)
                    .await
            })
        };
        until_waiting(&store, 1).await;
        let refused = {
            let store = store.clone();
            tokio::spawn(async move {
                let entry = pending(&store, inbound_entry(2, "k-refused"));
                let refused = store
                    .write_recorded(&entry, async |tx| {
                        store_answer(tx, "refused").await?;
                        Err::<(), _>(StoreError::Conflict("refused".into()))
                    })
                    .await;
                // Told of the failure only once its record is durable.
                let log = store.audit().entries().await.expect("entries");
                let recorded = log.iter().any(|e| e.agent.as_deref() == Some("agent-2"));
                (refused, recorded)
            })
        };
        until_waiting(&store, 2).await;
        let rolled_back = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(async |tx| {
                        tx.append_audit(&inbound_entry(3, "k-rolled-back"));
                        Err::<(), _>(StoreError::Conflict("undone".into()))
                    })
                    .await
            })
        };
        until_waiting(&store, 3).await;
        let alone = {
            let store = store.clone();
            tokio::spawn(async move { store.audit().append(inbound_entry(4, "k-alone")).await })
        };
        until_waiting(&store, 4).await;
        release.send(()).expect("first writer waits");
        first.await.expect("joins").expect("first change");
        kept.await.expect("joins").expect("kept change");
        let (refused, recorded) = refused.await.expect("joins");
        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{url}");
        assert!(
            recorded,
            "{url}: the refused change's record is durable when it is answered"
        );
        assert!(matches!(
            rolled_back.await.expect("joins"),
            Err(StoreError::Conflict(_))
        ));
        let alone = alone.await.expect("joins").expect("record alone");
        assert_eq!(alone.seq, 3, "{url}: the rolled-back record left no gap");
        let after = store.group_commit_counts();
        assert_eq!(
            after.batches - before.batches,
            1,
            "{url}: one commit for all"
        );
        for (key, present) in [("first", true), ("kept", true), ("refused", false)] {
            assert_eq!(committed(&store, key).await, present, "{url}: {key}");
        }
        let agents: Vec<Option<String>> = store
            .audit()
            .entries()
            .await
            .expect("entries")
            .into_iter()
            .map(|e| e.agent)
            .collect();
        assert_eq!(
            agents,
            ["agent-1", "agent-2", "agent-4"].map(|a| Some(a.to_owned())),
            "{url}: the crossings' records, in the order they joined, and not the one undone"
        );
        store.audit().verify().await.expect("one intact chain");
        // The chain goes on from there in the next batch.
        store
            .write_recorded(&pending(&store, inbound_entry(5, "k-next")), async |tx| {
                store_answer(tx, "next").await
            })
            .await
            .expect("a later crossing");
        store.audit().verify().await.expect("still intact");
    }
}

/// A partner's plan summary never replaces this side's own plan (each kind
/// has one holder, and the committee's counts read own plans without
/// noting the case for a summary).
#[tokio::test]
async fn a_partners_summary_never_replaces_an_own_plan_on_every_backend() {
    for (url, _dir) in urls("plans").await {
        let store = InstitutionStore::connect(&url, 4, Institution::Social)
            .await
            .expect("connect");
        let mut tx = store.begin().await.expect("begin");
        let own = serde_json::json!({"themes": "own"});
        let summary = serde_json::json!({"themes": "partner's"});
        tx.save_plan("k-1", plan::PlanKind::Social, Origin::Local, &own, t0())
            .await
            .expect("own plan");
        tx.save_plan(
            "k-1",
            plan::PlanKind::Social,
            Origin::Partner,
            &summary,
            t0(),
        )
        .await
        .expect("a summary of the same kind");
        tx.save_plan(
            "k-1",
            plan::PlanKind::Employment,
            Origin::Partner,
            &summary,
            t0(),
        )
        .await
        .expect("the partner's own kind");
        tx.update_statistics().await.expect("counts");
        tx.commit().await.expect("commit");
        let rows = passerelle_storage::testing::text_rows(
            store.database(),
            "SELECT kind, origin, body FROM plans WHERE case_id = 'k-1' ORDER BY kind",
        )
        .await
        .expect("plans");
        let kept: Vec<(String, String, String)> = rows
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("employment".into(), "partner".into(), summary.to_string()),
                ("social".into(), "local".into(), own.to_string()),
            ],
            "{url}"
        );
    }
}

/// Delivered messages stay in the outbox, so it grows with every change told
/// to the partner, orientations stay until the retention purge, and every
/// case erased leaves a line in `erased_cases`: the
/// questions asked of them on every change, relay pass or housekeeping pass
/// read through indexes, never the whole table (at 100,000 people the
/// outbox's scans took a fifth of the replay's time).
#[tokio::test]
async fn tables_that_only_grow_are_never_read_whole_on_every_backend() {
    for (url, _dir) in urls("growing_tables").await {
        let store = InstitutionStore::connect(&url, 2, Institution::Social)
            .await
            .expect("connect");
        let plans = passerelle_storage::testing::growing_table_lookup_plans(&store)
            .await
            .expect("plans");
        assert_eq!(plans.len(), 4);
        for (lookup, plan) in plans {
            let (table, index) = match lookup {
                "purge_unreferred_orientations" => ("orientations", Some("orientations_by_date")),
                "purge_kept_consents" => ("erased_cases", Some("erased_cases_keeping_consents")),
                _ => ("outbox", None),
            };
            let whole = plan.iter().find(|step| {
                let step = step.trim();
                step.contains(&format!("Seq Scan on {table}"))
                    || step == format!("SCAN {table}")
                    || step.starts_with(&format!("SCAN {table} ")) && !step.contains("USING")
            });
            assert!(
                whole.is_none(),
                "{url}: {lookup} reads the whole {table}: {plan:#?}"
            );
            assert!(
                plan.iter().any(|step| step.contains(table)),
                "{url}: {lookup}'s plan names no {table} step: {plan:#?}"
            );
            if let Some(index) = index {
                assert!(
                    plan.iter().any(|step| step.contains(index)),
                    "{url}: {lookup} does not read through {index}: {plan:#?}"
                );
            }
        }
    }
}
