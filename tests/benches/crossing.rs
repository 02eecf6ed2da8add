//! Throughput and latency of the audited crossing, side by side with a bare
//! tonic unary call, in the same process and with the same client loop:
//! `cargo bench -p passerelle-tests --bench crossing` (`--seconds N` per
//! level, 3 by default). On SQLite, and on PostgreSQL when
//! `PASSERELLE_TEST_POSTGRES` names a server.
//!
//! Measured, for 1, 16 and 64 calls in flight on one channel and 64 over
//! four channels: the bare call (gRPC health Check on a plain tonic server,
//! no token, no database), a replayed crossing (`ReceivePlanSummary` with
//! the same key: token, consent check, minimisation, a durable audit record,
//! the stored answer), a new crossing (a fresh key each call: the change
//! written too), on one case and spread over 64 (one case's changes take
//! turns: they rewrite the same rows; different cases' need not), an
//! agent's local read (`GetCase`), a Département agent's read of a
//! jobseeker's file at the employment side (`GetJobseekerFile`:
//! habilitation, minimisation, audit), and referrals delivered end to end
//! per second (made at the social side, held at the employment side). Then
//! the process's resident memory. Before the levels, the four calls in turn
//! at a steady 1,000 a second (an open loop) and the memory under that
//! load. On PostgreSQL, what a second replica of the employment service adds
//! to the crossing. With `--processes`, each service runs in its own process
//! (this binary, as `serve`) and each one's resident memory is printed.
//! `--only TEXT` runs the rows whose name holds TEXT (and the bare call), to
//! profile one; `--backend sqlite|postgres` runs one backend only. Timings
//! are only printed here, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use passerelle_cli::stack::resident_mib;
use passerelle_domain::{Clock, Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::{
    TestStack, backends, eventually, start, start_in_processes, timestamp, with_token,
};
use tonic::transport::Channel;

/// One call, made again and again by each worker.
type Call =
    Arc<dyn Fn(Channel, u64) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `in_flight` workers over `channels` channels call `call` for `seconds`.
async fn measure(channels: &[Channel], in_flight: usize, seconds: f64, call: &Call) -> Figures {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let serial = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..in_flight {
        let channel = channels[w % channels.len()].clone();
        let call = call.clone();
        let (serial, errors) = (serial.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = vec![];
            while Instant::now() < deadline {
                let n = serial.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                if call(channel.clone(), n).await {
                    latencies.push(began.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let began = Instant::now();
    let mut all = vec![];
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = began.elapsed().as_secs_f64().max(seconds);
    all.sort();
    Figures {
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// A plain tonic server answering the gRPC health check: the floor (with
/// TCP_NODELAY, as the services have: without it its p99 is Nagle's 40 ms).
async fn bare_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    format!("http://{address}")
}

fn bare_call() -> Call {
    Arc::new(|channel, _| {
        Box::pin(async move {
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
        })
    })
}

fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Cases the crossings fall on, each with the plan summary sent for it.
type Cases = Arc<Vec<(String, v1::PlanSummary)>>;

/// Cases the "64 cases" row spreads its crossings over: as many as calls
/// in flight at most (one case's changes take turns by design: they
/// rewrite the same rows).
const SPREAD_OVER: usize = 64;

/// A case at both sides with a plan summary, and the tokens to call with.
async fn a_case(t: &TestStack, label: &str) -> (String, v1::PlanSummary) {
    let case_id = t.enter_case(label).await;
    t.social()
        .await
        .update_plan(t.social_plan_request(&format!("{label}-plan"), &case_id, "Un logement"))
        .await
        .expect("plan");
    let emploi = t.store(Institution::Emploi).await;
    eventually("the summary at emploi", async || {
        !emploi
            .plan_summaries(&case_id)
            .await
            .expect("read")
            .is_empty()
    })
    .await;
    let summary = v1::PlanSummary {
        case_id: case_id.clone(),
        kind: v1::PlanKind::Social as i32,
        themes: vec![],
        updated_at: Some(timestamp(t.clock.now())),
    };
    (case_id, summary)
}

/// A jobseeker registered at the employment side, and a Département agent
/// habilitated to read its file (DUDE); returns the jobseeker's number.
async fn a_jobseeker_file(t: &TestStack, agent: &str) -> String {
    let number = "7000001B".to_owned();
    let mut emploi = t.emploi().await;
    let coordinator = |message| {
        t.as_agent(
            Institution::Emploi,
            Role::Coordinator,
            "coordination",
            Institution::Emploi,
            message,
        )
    };
    emploi
        .record_jobseekers(coordinator(v1::RecordJobseekersRequest {
            idempotency_key: "bench-jobseeker".into(),
            jobseekers: vec![v1::JobseekerRecord {
                jobseeker_number: number.clone(),
                first_name: "Maëlle".into(),
                last_name: "Le Bihan".into(),
                birth_date: "1985-02-11".into(),
                registration_date: "2025-06-02".into(),
                registration_category: "1".into(),
                agency_code: "PE-RENNES".into(),
                support_modality: "global".into(),
                rsa_beneficiary: true,
                profile: Some(v1::JobseekerProfile {
                    target_jobs: vec!["F1702".into()],
                    education_level: "CAP".into(),
                    driving_licence: false,
                }),
                employment_plan: vec!["Rechercher un emploi de maçon".into()],
                history: vec![],
            }],
        }))
        .await
        .expect("registered");
    emploi
        .grant_habilitation(t.as_agent(
            Institution::Emploi,
            Role::Coordinator,
            "coordination",
            Institution::Emploi,
            v1::GrantHabilitationRequest {
                idempotency_key: "bench-habilitation".into(),
                agent: agent.into(),
                scope: v1::HabilitationScope::JobseekerFile as i32,
            },
        ))
        .await
        .expect("habilitated");
    number
}

fn partner_read_call(token: String, number: String) -> Call {
    Arc::new(move |channel, _| {
        let request = authorised(
            v1::GetJobseekerFileRequest {
                jobseeker_number: number.clone(),
            },
            &token,
        );
        Box::pin(async move {
            v1::emploi_service_client::EmploiServiceClient::new(channel)
                .get_jobseeker_file(request)
                .await
                .is_ok()
        })
    })
}

/// A crossing replayed under one key (`fresh_keys_of: None`) or under a
/// new key each call, unique to the level it is named after; call `n` is
/// about the `n`th of `cases`, in turn.
fn crossing_call(token: String, cases: Cases, fresh_keys_of: Option<&str>) -> Call {
    let level = fresh_keys_of.map(str::to_owned);
    Arc::new(move |channel, n| {
        let key = match &level {
            None => "bench-replayed".to_owned(),
            Some(level) => format!("bench-new-{level}-{n}"),
        };
        let (case_id, summary) = &cases[n as usize % cases.len()];
        let request = authorised(
            v1::ReceivePlanSummaryRequest {
                idempotency_key: key,
                case_id: case_id.clone(),
                summary: Some(summary.clone()),
            },
            &token,
        );
        Box::pin(async move {
            v1::emploi_service_client::EmploiServiceClient::new(channel)
                .receive_plan_summary(request)
                .await
                .is_ok()
        })
    })
}

fn read_call(token: String, case_id: String) -> Call {
    Arc::new(move |channel, _| {
        let request = authorised(
            v1::GetCaseRequest {
                case_id: case_id.clone(),
            },
            &token,
        );
        Box::pin(async move {
            v1::emploi_service_client::EmploiServiceClient::new(channel)
                .get_case(request)
                .await
                .is_ok()
        })
    })
}

/// Referrals made at the social side by `in_flight` workers for `seconds`
/// (each a new person's consent, then the referral), and how many per
/// second reached the employment side: from the first call until the last
/// referral is held there (the relay's delivery, its audit record and the
/// partner's crossing included).
async fn referrals_delivered(
    t: &TestStack,
    channels: &[Channel],
    in_flight: usize,
    seconds: f64,
) -> Figures {
    // Opened once: polling must not compete with what it measures.
    let emploi = t.store(Institution::Emploi).await;
    let held = async || -> i64 {
        passerelle_storage::testing::count(emploi.database(), "SELECT COUNT(*) AS n FROM referrals")
            .await
            .expect("count")
    };
    let before = held().await;
    let token = t
        .stack
        .token(
            Institution::Social,
            Role::SocialWorker,
            "sw-rennes-1",
            Institution::Social,
        )
        .expect("token");
    let consent = passerelle_tests::consent(
        &t.clock,
        &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
        &[v1::Institution::Emploi, v1::Institution::Social],
    );
    let referral = t.referral("", "", "Bench");
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(seconds);
    // Keys unique to the level (in flight, channels): another level's keys would be replays.
    let level = format!("{in_flight}-{}", channels.len());
    let serial = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..in_flight {
        let level = level.clone();
        let mut social = v1::social_service_client::SocialServiceClient::new(
            channels[w % channels.len()].clone(),
        );
        let (serial, errors) = (serial.clone(), errors.clone());
        let (token, consent, referral) = (token.clone(), consent.clone(), referral.clone());
        workers.push(tokio::spawn(async move {
            let mut made = 0u64;
            while Instant::now() < deadline {
                let n = serial.fetch_add(1, Ordering::Relaxed);
                let recorded = social
                    .record_consent(with_token(
                        v1::RecordConsentRequest {
                            idempotency_key: format!("bench-consent-{level}-{n}"),
                            consent: Some(consent.clone()),
                        },
                        &token,
                    ))
                    .await
                    .ok()
                    .and_then(|answer| answer.into_inner().consent);
                let Some(recorded) = recorded else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let referral = v1::Referral {
                    case_id: recorded.case_id,
                    consent_id: recorded.consent_id,
                    ..referral.clone()
                };
                let sent = social
                    .create_referral(with_token(
                        v1::CreateReferralRequest {
                            idempotency_key: format!("bench-referral-{level}-{n}"),
                            referral: Some(referral),
                            local_note: String::new(),
                        },
                        &token,
                    ))
                    .await;
                match sent {
                    Ok(_) => made += 1,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            made
        }));
    }
    let mut made = 0;
    for w in workers {
        made += w.await.expect("worker");
    }
    let target = before + made as i64;
    while held().await < target {
        if began.elapsed() > Duration::from_secs_f64(seconds * 20.0 + 30.0) {
            eprintln!(
                "referrals not all delivered: {} of {made}",
                held().await - before
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    Figures {
        per_second: (held().await - before) as f64 / elapsed,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// `rate` calls a second for `seconds`, taken in turn from `calls`, each
/// started on time whatever the others' progress (an open loop, as many
/// independent clients make): the load the services must bear, not the most
/// they can take. Memory is read under this load.
async fn paced(calls: &[(Channel, Call)], rate: u64, seconds: f64) -> Figures {
    // Ticks of 10 ms: tokio's timer resolution is a millisecond.
    let ticks_per_second = 100;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / ticks_per_second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = rate.div_ceil(u64::from(ticks_per_second));
    let began = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    let mut latencies = vec![];
    let mut errors = 0;
    let mut settle = |done: Result<Option<Duration>, tokio::task::JoinError>| match done {
        Ok(Some(latency)) => latencies.push(latency),
        _ => errors += 1,
    };
    let mut n = 0u64;
    for _ in 0..(seconds * f64::from(ticks_per_second)) as u64 {
        tick.tick().await;
        for _ in 0..per_tick {
            let (channel, call) = &calls[n as usize % calls.len()];
            let (channel, call) = (channel.clone(), call.clone());
            running.spawn(async move {
                let started = Instant::now();
                call(channel, n).await.then(|| started.elapsed())
            });
            n += 1;
        }
        while let Some(done) = running.try_join_next() {
            settle(done);
        }
    }
    while let Some(done) = running.join_next().await {
        settle(done);
    }
    let elapsed = began.elapsed().as_secs_f64();
    latencies.sort();
    Figures {
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        errors,
    }
}

fn print_row(
    backend: passerelle_tests::Backend,
    name: &str,
    in_flight: usize,
    channels: usize,
    f: &Figures,
    bare: f64,
) {
    println!(
        "{:<10} {:<28} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>8.3} {:>7}",
        format!("{backend:?}"),
        name,
        if in_flight == 0 {
            // Paced: as many in flight as the rate and the latency make.
            "open".to_owned()
        } else if channels > 1 {
            format!("{in_flight}/{channels}ch")
        } else {
            in_flight.to_string()
        },
        f.per_second,
        f.p50_ms,
        f.p99_ms,
        f.per_second / bare,
        f.errors
    );
}

/// The steady load under which memory is read (the 1,000 req/s).
const PACED_RATE: u64 = 1_000;

const LEVELS: [(usize, usize); 4] = [(1, 1), (16, 1), (64, 1), (64, 4)];

/// The token of the case's counsellor, reading it at the employment side.
fn read_token(t: &TestStack, counsellor: &str) -> String {
    t.stack
        .token(
            Institution::Emploi,
            Role::Counsellor,
            counsellor,
            Institution::Emploi,
        )
        .expect("token")
}

/// The Département agent habilitated to read jobseeker files.
const PARTNER_AGENT: &str = "sw-bench";

/// The token of the Département agent habilitated to read jobseeker files.
fn partner_token(t: &TestStack) -> String {
    t.stack
        .token(
            Institution::Social,
            Role::SocialWorker,
            PARTNER_AGENT,
            Institution::Emploi,
        )
        .expect("token")
}

/// The social service's token for calls to the employment side.
fn service_token_of(t: &TestStack) -> String {
    let request = t.as_service(Institution::Social, Institution::Emploi, ());
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("token")
        .to_owned()
}

/// What a second replica of the employment service adds on PostgreSQL: 64
/// calls in flight over two channels, both to one replica, then one channel
/// to each of two.
async fn two_replicas(t: &TestStack, one_case: &Cases, spread: &Cases, seconds: f64, bare: f64) {
    let token = &service_token_of(t);
    let replica = t
        .stack
        .start_replica(Institution::Emploi)
        .await
        .expect("a second replica");
    let first = t.stack.url(Institution::Emploi);
    let second = format!("http://{}", replica.addr);
    for (replicas, urls) in [(1, [&first, &first]), (2, [&first, &second])] {
        let open = [channel(urls[0]).await, channel(urls[1]).await];
        let calls: [(&str, Call); 3] = [
            (
                "crossing, replayed",
                crossing_call(token.to_owned(), one_case.clone(), None),
            ),
            (
                "crossing, new",
                crossing_call(
                    token.to_owned(),
                    one_case.clone(),
                    Some(&format!("replicas-{replicas}")),
                ),
            ),
            (
                "crossing, new, 64 cases",
                crossing_call(
                    token.to_owned(),
                    spread.clone(),
                    Some(&format!("replicas-spread-{replicas}")),
                ),
            ),
        ];
        for (name, call) in &calls {
            let f = measure(&open, 64, seconds, call).await;
            print_row(
                passerelle_tests::Backend::Postgres,
                &format!("{name}, {replicas} repl."),
                64,
                2,
                &f,
                bare,
            );
        }
    }
    replica.shutdown().await.expect("replica stops");
}

/// Each service's resident memory now and at its peak (with `--processes`),
/// or this whole process's.
fn print_memory(backend: passerelle_tests::Backend, t: &TestStack, processes: bool, when: &str) {
    let backend = format!("{backend:?}");
    let (now, peak) = resident_mib(None);
    if processes {
        println!(
            "{backend:<10} resident memory {when} of this process (the bare server and the clients): {now:.0} MiB now, {peak:.0} MiB at peak"
        );
        for institution in [
            Institution::Emploi,
            Institution::Social,
            Institution::Pilotage,
        ] {
            let pid = t.stack.process_id(institution).expect("its own process");
            let (now, peak) = resident_mib(Some(pid));
            println!(
                "{backend:<10} resident memory {when} of passerelle-{institution}: {now:.0} MiB now, {peak:.0} MiB at peak"
            );
        }
    } else {
        println!(
            "{backend:<10} resident memory {when} of this process (three services, the bare server and the clients): {now:.0} MiB now, {peak:.0} MiB at peak"
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // With --processes this binary is also each service's process.
    if args.get(1).is_some_and(|a| a == "serve") {
        let institution = args.get(2).cloned().unwrap_or_default();
        let rest = args.into_iter().skip(3);
        if let Err(e) = passerelle_cli::stack::serve(&institution, rest).await {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
        return;
    }
    let processes = args.iter().any(|a| a == "--processes");
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // `--only TEXT`: the rows whose name holds TEXT (the bare call always
    // runs, for the ratio), to profile one of them.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let wanted = |name: &str| name.starts_with("bare") || name.contains(only.as_str());
    let bare_url = bare_server().await;
    println!(
        "{:<10} {:<28} {:>9} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "backend", "call", "in flight", "req/s", "p50 ms", "p99 ms", "× bare", "errors"
    );
    // `--backend sqlite|postgres`: one backend only (to profile it).
    let backend_wanted = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .map(|b| b.to_lowercase());
    for backend in backends().into_iter().filter(|b| {
        backend_wanted
            .as_ref()
            .is_none_or(|w| format!("{b:?}").to_lowercase() == *w)
    }) {
        let t = if processes {
            let executable = std::env::current_exe().expect("this bench's executable");
            start_in_processes(backend, executable).await
        } else {
            start(backend, 11).await
        };
        let (case_id, summary) = a_case(&t, "bench").await;
        let one_case: Cases = Arc::new(vec![(case_id.clone(), summary.clone())]);
        // Set up only when its rows run: each case takes a few calls.
        let mut spread = vec![(case_id.clone(), summary.clone())];
        if wanted("64 cases") {
            for i in 1..SPREAD_OVER {
                spread.push(a_case(&t, &format!("bench-{i}")).await);
            }
        }
        let spread: Cases = Arc::new(spread);
        // The pair's counsellor reads the case.
        let counsellor = t
            .case_at_emploi(&case_id)
            .await
            .and_then(|v| v.case)
            .and_then(|c| c.pair)
            .map(|p| p.counsellor)
            .expect("pair");
        let number = a_jobseeker_file(&t, PARTNER_AGENT).await;
        let emploi_url = t.stack.url(Institution::Emploi);
        let social_url = t.stack.url(Institution::Social);
        // First, before any level pushes memory to its peak: the four calls
        // in turn at a steady 1,000 a second, and each service's memory under it.
        if wanted("paced") {
            let emploi = channel(&emploi_url).await;
            let token = service_token_of(&t);
            let calls: Vec<(Channel, Call)> = vec![
                (
                    emploi.clone(),
                    crossing_call(token.clone(), one_case.clone(), None),
                ),
                (
                    emploi.clone(),
                    crossing_call(token, one_case.clone(), Some("paced")),
                ),
                (
                    emploi.clone(),
                    read_call(read_token(&t, &counsellor), case_id.clone()),
                ),
                (emploi, partner_read_call(partner_token(&t), number.clone())),
            ];
            let f = paced(&calls, PACED_RATE, seconds.max(5.0)).await;
            print_row(backend, "paced mix (4 calls)", 0, 1, &f, f64::NAN);
            print_memory(backend, &t, processes, "at 1,000 calls/s");
        }
        // The bare call's rate at 64 in flight, beside the replicas' rows.
        let mut bare_at_64 = f64::NAN;
        for (in_flight, channels) in LEVELS {
            // Fresh tokens at each level: a long run outlives a service token.
            let service_token = service_token_of(&t);
            let level = format!("{in_flight}-{channels}");
            let calls: [(&str, Call, &str); 6] = [
                ("bare tonic (health)", bare_call(), bare_url.as_str()),
                (
                    "crossing, replayed",
                    crossing_call(service_token.clone(), one_case.clone(), None),
                    emploi_url.as_str(),
                ),
                (
                    "crossing, new",
                    crossing_call(service_token.clone(), one_case.clone(), Some(&level)),
                    emploi_url.as_str(),
                ),
                (
                    "crossing, new, 64 cases",
                    crossing_call(
                        service_token.clone(),
                        spread.clone(),
                        Some(&format!("spread-{level}")),
                    ),
                    emploi_url.as_str(),
                ),
                (
                    "local read (GetCase)",
                    read_call(read_token(&t, &counsellor), case_id.clone()),
                    emploi_url.as_str(),
                ),
                (
                    "partner read (DUDE)",
                    partner_read_call(partner_token(&t), number.clone()),
                    emploi_url.as_str(),
                ),
            ];
            let mut bare = f64::NAN;
            for (name, call, url) in calls.iter().filter(|(name, ..)| wanted(name)) {
                let mut open = vec![];
                for _ in 0..channels {
                    open.push(channel(url).await);
                }
                let f = measure(&open, in_flight, seconds, call).await;
                if name.starts_with("bare") {
                    bare = f.per_second;
                    if in_flight == 64 {
                        bare_at_64 = bare;
                    }
                }
                print_row(backend, name, in_flight, channels, &f, bare);
            }
            if wanted("referrals delivered") {
                let mut open = vec![];
                for _ in 0..channels {
                    open.push(channel(&social_url).await);
                }
                let f = referrals_delivered(&t, &open, in_flight, seconds).await;
                print_row(
                    backend,
                    "referrals delivered",
                    in_flight,
                    channels,
                    &f,
                    bare,
                );
            }
        }
        if backend == passerelle_tests::Backend::Postgres && !processes && wanted("repl.") {
            two_replicas(&t, &one_case, &spread, seconds, bare_at_64).await;
        }
        print_memory(backend, &t, processes, "at the end");
        t.shutdown().await;
    }
}
