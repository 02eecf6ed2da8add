//! The committee's full dashboard over 1,000,000 cases and 10,000,000 case
//! events: `cargo bench -p passerelle-tests --bench dashboard` (`--cases N`
//! to change the size; PostgreSQL too when PASSERELLE_TEST_POSTGRES is set).
//!
//! 1. Every event goes through the incremental path the store runs at each
//!    commit: the case's counts before and after the change, and their
//!    difference added to the kept counts. Reported: events/s and memory.
//! 2. The kept counts are checked against a recount of every case's final
//!    state (the scan they spare), timed too.
//! 3. The counts are loaded into a real employment service's database, and
//!    the steering service's GetDashboard is called over gRPC: it pulls the
//!    counts from both institutions, keeps a snapshot, and publishes every
//!    table under statistical secrecy. Reported: time per dashboard and the
//!    memory it takes.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use passerelle_domain::case::{CaseEntry, CaseExit, ExitReason, Pair, Referent, Track};
use passerelle_domain::person::{DisabilityDeclaration, EducationLevel, Participant, Sex};
use passerelle_domain::statistics::{
    CaseFacts, CubeKey, ReferralFacts, contributions, difference, summed,
};
use passerelle_domain::{BarrierCategory, Case, Institution, Network, Referral, ReferralState};
use passerelle_tests::pb as v1;
use passerelle_tests::{Backend, backends, start_under};

const EVENTS_PER_CASE: u64 = 10;

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A small deterministic generator: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One case's life as the employment side sees it: ten events, each a
/// change of the case written in its own transaction.
struct Life {
    facts: CaseFacts,
    rng: Rng,
    at: DateTime<Utc>,
}

impl Life {
    fn new(index: u64, start: DateTime<Utc>) -> Self {
        let mut rng = Rng(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5151);
        // Two years of referrals, 7 agencies and 14 local offices.
        let referred_at = start + Duration::minutes(rng.below(2 * 365 * 24 * 60) as i64);
        let social = rng.below(2) == 0;
        let office = if social {
            format!("MDS-{:02}", rng.below(14) + 1)
        } else {
            format!("AGENCE-{}", rng.below(7) + 1)
        };
        let referral = Referral {
            case_id: format!("case-{index:08}").into(),
            referring_network: if social {
                Network::Social
            } else {
                Network::Emploi
            },
            referred_by: "agent".into(),
            office_code: office,
            person: passerelle_domain::PersonIdentity {
                first_name: String::new(),
                last_name: String::new(),
                birth_date: NaiveDate::from_ymd_opt(1960 + rng.below(45) as i32, 1, 1)
                    .expect("date"),
                jobseeker_number: None,
            },
            contact: Default::default(),
            barriers: vec![],
            employment: Default::default(),
            referred_at,
            consent_id: Default::default(),
            checks: vec![],
            association_id: None,
            orientation: None,
        };
        let barriers = BarrierCategory::ALL
            .iter()
            .copied()
            .filter(|_| rng.below(4) == 0)
            .collect();
        let facts = CaseFacts {
            own: Institution::Emploi,
            case: Case::referred(&referral, 30),
            referred_here: !social,
            entry_recorded_here: false,
            referral: Some(ReferralFacts {
                birth_date: referral.person.birth_date,
                rsa_beneficiary: rng.below(3) > 0,
                registered: rng.below(10) > 0,
                registration_date: NaiveDate::from_ymd_opt(2018, 1 + rng.below(12) as u32, 1),
                barriers,
                association: false,
            }),
            diagnosis_authors: vec![],
            plan_actions: vec![],
            orientations: vec![],
        };
        Life {
            facts,
            rng,
            at: referred_at,
        }
    }

    /// Moves the case on by one event.
    fn step(&mut self, event: u64) {
        self.at += Duration::days(1 + self.rng.below(12) as i64);
        let at = self.at;
        let f = &mut self.facts;
        let c = &mut f.case;
        let accepted = c.referral_state == ReferralState::Accepted;
        match event {
            0 => {} // the referral itself: its counts are the first "after"
            1 => {
                c.referral_decided_at = Some(at);
                c.referral_state = match self.rng.below(100) {
                    0..=84 => ReferralState::Accepted,
                    85..=92 => {
                        c.refusal_reason = Some("criteria_not_met".into());
                        ReferralState::Refused
                    }
                    _ => ReferralState::Expired,
                };
            }
            2 | 3 if accepted => {
                f.diagnosis_authors.push(if event == 2 {
                    Institution::Social
                } else {
                    Institution::Emploi
                });
                c.diagnosed_at.get_or_insert(at);
                if event == 3 {
                    c.state = passerelle_domain::CaseState::Diagnosed;
                }
            }
            4 if accepted => {
                let entry = CaseEntry {
                    pair: Pair {
                        counsellor: "c".into(),
                        social_worker: "s".into(),
                    },
                    track: Track::Global,
                    entered_at: at,
                    evidence: vec![],
                    referent: Referent::Pair,
                };
                if c.enter(&entry, support()).is_ok() && c.entered_at.is_some() {
                    f.entry_recorded_here = true;
                    c.participant = Some(Participant {
                        sex: if self.rng.below(2) == 0 {
                            Sex::Female
                        } else {
                            Sex::Male
                        },
                        education: [
                            EducationLevel::Isced0To2,
                            EducationLevel::Isced3To4,
                            EducationLevel::Isced5To8,
                        ][self.rng.below(3) as usize],
                        jobless_household: self.rng.below(3) == 0,
                        single_adult_with_children: self.rng.below(6) == 0,
                        disability: DisabilityDeclaration::NotDeclared,
                    });
                }
            }
            5 | 7 => {
                // A plan update: actions under a few themes.
                let themes = ["mobilite", "logement-hebergement", "recherche-emploi"];
                f.plan_actions = themes
                    .iter()
                    .take(1 + self.rng.below(3) as usize)
                    .map(|t| ((*t).to_owned(), 1 + self.rng.below(3)))
                    .collect();
            }
            6 => c.missed_appointments += 1,
            8 if c.entered_at.is_some() => {
                let reason = [
                    ExitReason::Job,
                    ExitReason::Training,
                    ExitReason::EndedByPerson,
                ][self.rng.below(3) as usize];
                let _ = c.exit(
                    &CaseExit {
                        reason,
                        exited_at: at,
                    },
                    Some(6),
                );
                c.qualification_gained = reason == ExitReason::Training && self.rng.below(2) == 0;
            }
            9 if c.follow_up_due_at.is_some() => {
                c.follow_up_in_employment = Some(self.rng.below(3) > 0);
            }
            _ => {} // a write that changes none of the counts
        }
    }
}

fn support() -> &'static passerelle_domain::agreement::SupportPeriod {
    static SUPPORT: std::sync::OnceLock<passerelle_domain::agreement::SupportPeriod> =
        std::sync::OnceLock::new();
    SUPPORT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/agreements/seine-et-marne-2020.toml"
        );
        let text = std::fs::read_to_string(path).expect("agreement file");
        passerelle_domain::agreement::Agreement::from_toml(&text)
            .expect("agreement")
            .global_support
    })
}

/// Runs every case's ten events through the incremental path.
fn fold(cases: u64) -> (BTreeMap<CubeKey, i64>, BTreeMap<CubeKey, i64>, u64) {
    let start: DateTime<Utc> = "2020-01-01T08:00:00Z".parse().expect("date");
    let mut kept: BTreeMap<CubeKey, i64> = BTreeMap::new();
    let mut finals: Vec<(CubeKey, i64)> = vec![];
    let mut recount: BTreeMap<CubeKey, i64> = BTreeMap::new();
    let mut events = 0;
    for index in 0..cases {
        let mut life = Life::new(index, start);
        let mut before = vec![];
        for event in 0..EVENTS_PER_CASE {
            life.step(event);
            let after = contributions(&life.facts);
            for (k, n) in difference(&before, &after) {
                *kept.entry(k).or_insert(0) += n;
            }
            before = after;
            events += 1;
        }
        finals.extend(before);
        if finals.len() > 100_000 {
            for (k, n) in finals.drain(..) {
                *recount.entry(k).or_insert(0) += n;
            }
        }
    }
    for (k, n) in finals {
        *recount.entry(k).or_insert(0) += n;
    }
    (summed(kept), summed(recount), events)
}

async fn dashboard(backend: Backend, counts: &BTreeMap<CubeKey, i64>) {
    let t = start_under(backend, 11, false, "seine-et-marne-2020").await;
    let url = t.database_url(Institution::Emploi);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("emploi database");
    let loading = Instant::now();
    let rows: Vec<_> = counts.iter().collect();
    for chunk in rows.chunks(1_000) {
        let mut sql = String::from(
            "INSERT INTO statistics (measure, month, office, network, breakdown, value) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 6;
            sql.push_str(&format!(
                "{}(${}, ${}, ${}, ${}, ${}, ${})",
                if i == 0 { "" } else { ", " },
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (k, n) in chunk {
            q = q
                .bind(k.measure.clone())
                .bind(k.month.clone())
                .bind(k.office.clone())
                .bind(k.network.clone())
                .bind(k.key.clone())
                .bind(**n);
        }
        q.execute(&pool).await.expect("load counts");
    }
    println!(
        "{backend:?}: {} counts loaded into the employment service in {:.1} s",
        rows.len(),
        loading.elapsed().as_secs_f64()
    );
    let mut times = vec![];
    let mut tables = 0;
    reset_peak();
    for _ in 0..5 {
        let began = Instant::now();
        let d = t
            .pilotage()
            .await
            .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
            .await
            .expect("dashboard")
            .into_inner()
            .dashboard
            .expect("dashboard");
        times.push(began.elapsed().as_secs_f64() * 1000.0);
        tables = d.tables.len();
        assert!(d.entries.is_some_and(|c| !c.suppressed && c.count > 0));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{backend:?}: full dashboard ({tables} tables, pulled, snapshotted and published) p50 {:.0} ms, min {:.0} ms, max {:.0} ms; peak memory during the calls {:.0} MiB (services and client in one process)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        peak_mib()
    );
    t.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases = args
        .iter()
        .position(|a| a == "--cases")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000u64);
    reset_peak();
    let began = Instant::now();
    let (kept, recount, events) = fold(cases);
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{cases} cases, {events} events through the incremental path in {seconds:.1} s ({:.0} events/s, diff and fold; the store adds the reads and upserts of each commit); peak memory {:.0} MiB",
        events as f64 / seconds,
        peak_mib()
    );
    assert_eq!(kept, recount, "the kept counts are exactly a recount");
    println!(
        "{} kept counts, equal to a recount of every case's final state",
        kept.len()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for backend in backends() {
        runtime.block_on(dashboard(backend, &kept));
    }
}
