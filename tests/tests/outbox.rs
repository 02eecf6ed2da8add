//! Idempotency keys and the transactional outbox: nothing lost, nothing twice.

use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

#[tokio::test]
async fn the_same_idempotency_key_creates_one_referral() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social_consent(
                "c-idem",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let request = v1::CreateReferralRequest {
            idempotency_key: "referral-idem-1".into(),
            referral: Some(referral(&consent.case_id, &consent.consent_id, "Nolwenn")),
            local_note: "premier contact".into(),
        };
        let mut social = t.social().await;
        let first = social
            .create_referral(t.as_social_worker(request.clone()))
            .await
            .expect("first")
            .into_inner();
        let second = social
            .create_referral(t.as_social_worker(request.clone()))
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(first, second, "a replay returns the first answer");

        // Concurrent replays too.
        let mut replays = vec![];
        for _ in 0..4 {
            let mut client = t.social().await;
            let req = t.as_social_worker(request.clone());
            replays.push(tokio::spawn(async move {
                client.create_referral(req).await.map(|r| r.into_inner())
            }));
        }
        for replay in replays {
            assert_eq!(replay.await.expect("task").expect("replay"), first);
        }

        let mut changed = request.clone();
        changed.local_note = "autre chose".into();
        let status = social
            .create_referral(t.as_social_worker(changed))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("idempotency_key:"));

        let store = t.store(Institution::Social).await;
        assert_eq!(
            store
                .local_notes(&consent.case_id)
                .await
                .expect("notes")
                .len(),
            1
        );
        let emploi = t.store(Institution::Emploi).await;
        referral_held(&emploi, &consent.case_id).await;
        eventually("outbox drained", async || {
            store.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        let queued: i64 = passerelle_storage::testing::count(
            store.database(),
            "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'referral'",
        )
        .await
        .expect("count");
        assert_eq!(queued, 1, "{backend:?}: one referral, one message");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_referral_made_while_the_employment_side_is_down_arrives_once_it_is_back() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social_consent(
                "c-down",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        t.stack.stop(Institution::Emploi).await.expect("stop");

        t.social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "referral-down".into(),
                referral: Some(referral(&consent.case_id, &consent.consent_id, "Tanguy")),
                local_note: String::new(),
            }))
            .await
            .expect("accepted while the partner is down");
        let social = t.store(Institution::Social).await;
        eventually("a failed attempt is recorded", async || {
            passerelle_storage::testing::count(
                social.database(),
                "SELECT COALESCE(MAX(attempts), 0) AS n FROM outbox",
            )
            .await
            .expect("q")
                > 0
        })
        .await;
        // The referral waits, behind the consent share if that had not left before the stop.
        let waiting = social.pending_outbox(10).await.expect("outbox");
        assert!(
            waiting.iter().any(|m| m.message.kind() == "referral"),
            "{waiting:?}"
        );

        t.stack.restart(Institution::Emploi).await.expect("restart");
        let emploi = t.store(Institution::Emploi).await;
        referral_held(&emploi, &consent.case_id).await;
        eventually("outbox drained", async || {
            social.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        assert_eq!(
            social.outbox_depth().await.expect("depth").abandoned,
            0,
            "{backend:?}"
        );
        t.shutdown().await;
    })
    .await;
}

/// Found by an outside tester: idempotency keys were scoped per RPC only, so a
/// second agent sending the same key and body received the first agent's case
/// and consent identifiers. A key is now the caller's own.
#[tokio::test]
async fn another_agents_identical_request_under_the_same_key_is_its_own() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let request = v1::RecordConsentRequest {
            idempotency_key: "shared-key-1".into(),
            consent: Some(consent(
                &t.clock,
                &[v1::Purpose::Referral],
                &[v1::Institution::Emploi],
            )),
        };
        let as_agent = |agent: &str| {
            t.as_agent(
                Institution::Social,
                passerelle_domain::Role::SocialWorker,
                agent,
                Institution::Social,
                request.clone(),
            )
        };
        let mut social = t.social().await;
        let first = social
            .record_consent(as_agent("sw-rennes-1"))
            .await
            .expect("first")
            .into_inner()
            .consent
            .expect("consent");
        let other = social
            .record_consent(as_agent("sw-vitre-2"))
            .await
            .expect("another agent")
            .into_inner()
            .consent
            .expect("consent");
        assert_ne!(other.consent_id, first.consent_id);
        assert_ne!(other.case_id, first.case_id);
        // The first agent's own replay still gets its own answer.
        let replay = social
            .record_consent(as_agent("sw-rennes-1"))
            .await
            .expect("replay")
            .into_inner()
            .consent
            .expect("consent");
        assert_eq!(replay, first);
        t.shutdown().await;
    })
    .await;
}

/// A client that retries before its first call was answered sends the same
/// key again while the first is still being written: every one of the calls
/// gets the first's answer, and the change is made once. (The change no
/// longer looks its key up inside the batch: one call of a process writes
/// under a key at a time, and the next looks again.)
#[tokio::test]
async fn calls_under_one_key_at_the_same_time_make_one_change_and_share_its_answer() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let request = v1::RecordConsentRequest {
            idempotency_key: "retried-at-once-1".into(),
            consent: Some(consent(
                &t.clock,
                &[v1::Purpose::Referral],
                &[v1::Institution::Emploi],
            )),
        };
        let calls = (0..16).map(|_| {
            let request = t.as_agent(
                Institution::Social,
                passerelle_domain::Role::SocialWorker,
                "sw-rennes-1",
                Institution::Social,
                request.clone(),
            );
            async {
                let mut social = t.social().await;
                social.record_consent(request).await
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let first = answers[0].as_ref().expect("answered").get_ref().clone();
        for answer in &answers {
            let answer = answer.as_ref().expect("every call is answered");
            assert_eq!(answer.get_ref(), &first, "{backend:?}");
        }
        let social = t.store(Institution::Social).await;
        let consents: i64 = passerelle_storage::testing::count(
            social.database(),
            "SELECT COUNT(*) AS n FROM consents",
        )
        .await
        .expect("count");
        assert_eq!(consents, 1, "one consent made, {backend:?}");
        t.shutdown().await;
    })
    .await;
}

/// Found by measuring an outage from outside: every local commit woke the
/// relay, so the first waiting message was tried once per commit instead of
/// on the backoff's schedule. Under a steady stream of commits, the attempts
/// now follow the backoff (50 ms doubling to 400 ms in test stacks).
#[tokio::test]
async fn an_outage_is_retried_on_the_backoffs_schedule_whatever_commits_locally() {
    let t = start(Backend::Sqlite, 11).await;
    t.stack.stop(Institution::Emploi).await.expect("stop");
    let social = t.store(Institution::Social).await;
    let attempts = async || {
        passerelle_storage::testing::count(
            social.database(),
            "SELECT COALESCE(MAX(attempts), 0) AS n FROM outbox",
        )
        .await
        .expect("q")
    };
    // A first message waits for the partner.
    t.social_consent("c-outage-0", &[v1::Purpose::Referral])
        .await;
    eventually("a failed attempt", async || attempts().await > 0).await;
    let began = std::time::Instant::now();
    let before = attempts().await;
    // Two seconds of local commits, each of which used to wake the relay.
    let mut commits = 0;
    while began.elapsed() < std::time::Duration::from_secs(2) {
        commits += 1;
        t.social_consent(&format!("c-outage-{commits}"), &[v1::Purpose::Referral])
            .await;
    }
    let tried = attempts().await - before;
    assert!(commits > 20, "enough commits to tell: {commits}");
    // 2 s of backoff capped at 400 ms: about 5 to 8 attempts, never one per commit.
    assert!(tried <= 12, "{tried} attempts during {commits} commits");
    t.shutdown().await;
}

/// Found by measuring crashes from outside: when the audit record of a
/// delivered crossing could not be written, the delivery was kept without
/// it. Now the delivery and its record commit together: until the record
/// can be written the message stays pending and is sent again (the partner
/// answers the same key once), and it ends recorded exactly once.
#[tokio::test]
async fn a_delivery_is_never_kept_without_its_audit_record() {
    let t = start(Backend::Sqlite, 11).await;
    let consent = t
        .social_consent("c-audit-fails", &[v1::Purpose::Referral])
        .await;
    let social = t.store(Institution::Social).await;
    eventually("the consent shared", async || {
        social.outbox_depth().await.expect("depth").pending == 0
    })
    .await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&t.database_url(Institution::Social))
        .await
        .expect("connect");
    // The audit log refuses the delivery's record, as a full disk would.
    sqlx::query(
        "CREATE TRIGGER refuse_referral_record BEFORE INSERT ON audit_log
         WHEN NEW.method LIKE '%EmploiService/ReceiveReferral'
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    t.social_referral("r-audit-fails", &consent, "Tanguy")
        .await
        .expect("referral");
    let emploi = t.store(Institution::Emploi).await;
    referral_held(&emploi, &consent.case_id).await;
    let sent_records = async || {
        social
            .audit()
            .entries()
            .await
            .expect("audit")
            .iter()
            .filter(|e| {
                e.method.ends_with("EmploiService/ReceiveReferral")
                    && e.case_id.as_deref() == Some(consent.case_id.as_str())
            })
            .count()
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Not recorded, so not kept as delivered.
    assert_eq!(sent_records().await, 0);
    assert_eq!(social.outbox_depth().await.expect("depth").pending, 1);
    sqlx::query("DROP TRIGGER refuse_referral_record")
        .execute(&pool)
        .await
        .expect("drop trigger");
    eventually("delivered and recorded", async || {
        social.outbox_depth().await.expect("depth").pending == 0
    })
    .await;
    assert_eq!(sent_records().await, 1);
    assert_eq!(social.outbox_depth().await.expect("depth").abandoned, 0);
    social.audit().verify().await.expect("chain");
    pool.close().await;
    t.shutdown().await;
}

/// Found by measuring heavy writes from outside: a write that waited past
/// SQLite's busy timeout answered INTERNAL ("database is locked"), which
/// integrators do not retry. Busy is UNAVAILABLE: retry after a pause.
#[tokio::test]
async fn a_busy_database_is_unavailable_not_internal() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    let store = passerelle_storage::InstitutionStore::connect(&url, 2, Institution::Social)
        .await
        .expect("store");
    sqlx::any::install_default_drivers();
    let other = sqlx::AnyPool::connect(&url).await.expect("second writer");
    let mut holder = other.acquire().await.expect("connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .expect("the other writer holds the lock");
    // Waits out the busy timeout, then gives up.
    let Err(busy) = store.begin().await else {
        panic!("a write began while another writer held the lock");
    };
    assert!(busy.is_busy(), "{busy}");
    let status = tonic::Status::from(passerelle_runtime::AppError::from(busy));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("locked"), "no internal detail");
    sqlx::query("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("release");
    drop(holder);
    other.close().await;
    // Free again: the same call goes through.
    let tx = store.begin().await.expect("begins once free");
    tx.commit().await.expect("commit");
}

/// The relay delivers different cases side by side, each case's messages in
/// the order they were written: plan versions queued for several cases
/// while the employment side is down end, at that side, as each case's last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_cases_messages_arrive_in_order_while_cases_go_side_by_side() {
    const CASES: usize = 6;
    const VERSIONS: u32 = 4;
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let mut cases = vec![];
        for c in 0..CASES {
            cases.push(t.enter_case(&format!("order-{c}")).await);
        }
        t.stack.stop(Institution::Emploi).await.expect("stop");
        let mut social = t.social().await;
        for version in 1..=VERSIONS {
            for (c, case_id) in cases.iter().enumerate() {
                let mut request =
                    t.social_plan_request(&format!("plan-{c}-{version}"), case_id, "Un logement");
                // Version n has n goals: the partner's summary says which arrived last.
                let plan = request.get_mut().plan.as_mut().expect("plan");
                plan.themes[0].goals = (1..=version)
                    .map(|g| v1::PlanGoal {
                        title: format!("Objectif {g}"),
                        actions: vec![],
                    })
                    .collect();
                social.update_plan(request).await.expect("plan updated");
            }
        }
        t.stack.restart(Institution::Emploi).await.expect("restart");
        let social_store = t.store(Institution::Social).await;
        eventually("outbox drained", async || {
            social_store.outbox_depth().await.expect("depth").pending == 0
        })
        .await;
        let emploi = t.store(Institution::Emploi).await;
        for case_id in &cases {
            let summaries = emploi.plan_summaries(case_id).await.expect("read");
            let goals: Vec<u32> = summaries
                .iter()
                .flat_map(|s| s.themes.iter().map(|t| t.goals))
                .collect();
            assert_eq!(
                goals,
                vec![VERSIONS],
                "{backend:?} {case_id}: the last version last"
            );
        }
        assert_eq!(
            social_store.outbox_depth().await.expect("depth").abandoned,
            0
        );
        t.shutdown().await;
    })
    .await;
}
