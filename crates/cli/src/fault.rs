//! The crash test: the same replay twice, its three services each in its
//! own process, once undisturbed and once with each service killed with
//! SIGKILL at seeded moments and restarted. Nothing lost, nothing
//! duplicated means the committee's figures end the same, every count of
//! them (the threshold of secrecy is 1 here); both institutions' audit
//! chains must verify, each against the heads its partner keeps of it.

use std::path::PathBuf;
use std::time::Duration;

use passerelle_contract::v1::GetDashboardResponse;
use passerelle_domain::{Clock, Institution};

use crate::demo::{self, Rng, Tally};
use crate::replay::{Replay, start_of_year};
use crate::stack::{Databases, INSTITUTIONS, Stack};
use crate::timeline::SimulatedYear;
use passerelle_storage::InstitutionStore;
use passerelle_storage::testing::fresh_postgres_database;

/// One kill: the service, the day of the year, how long into that day's
/// traffic (milliseconds) it strikes, and how long the service stays down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub institution: Institution,
    pub day: i64,
    pub after_ms: u64,
    /// A SIGTERM (the service drains, as a pod being replaced) instead of SIGKILL.
    pub graceful: bool,
    /// An outage: the partner's messages wait in its outbox meanwhile.
    pub down_ms: u64,
}

/// `kills` kills drawn from the seed: every service in turn, on days of the
/// year's busy part (people arrive all year; most are in support by autumn).
/// Every fourth is a SIGTERM under load, and after the second the service
/// stays down `outage_ms` while its partner goes on (simulated days of
/// messages wait in the partner's outbox).
pub fn schedule(seed: u64, kills: u32, outage_ms: u64) -> Vec<Kill> {
    let mut rng = Rng::new(seed ^ 0x5EED_0FFA_17FA);
    let mut plan: Vec<Kill> = (0..kills)
        .map(|i| Kill {
            // The two institutions most, the steering service too.
            institution: match i % 5 {
                0 | 2 => Institution::Emploi,
                1 | 3 => Institution::Social,
                _ => Institution::Pilotage,
            },
            day: rng.between(5, 300),
            after_ms: rng.between(0, 40) as u64,
            graceful: i % 4 == 3,
            down_ms: if i == 1 { outage_ms } else { 0 },
        })
        .collect();
    plan.sort_by_key(|k| k.day);
    plan
}

/// What the two runs showed.
#[derive(Debug)]
pub struct Outcome {
    pub undisturbed: Tally,
    pub disturbed: Tally,
    pub kills_done: Vec<Kill>,
    /// The first figure that differs, if any (as the two dashboards show it).
    pub difference: Option<String>,
    /// Audit chains that did not verify, named.
    pub broken_chains: Vec<String>,
    /// Institutions whose kept counts differ from a recount of their cases.
    pub miscounted: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.difference.is_none() && self.broken_chains.is_empty() && self.miscounted.is_empty()
    }
}

/// The dashboard without the instants it was assembled at.
fn figures(mut dashboard: GetDashboardResponse) -> GetDashboardResponse {
    if let Some(d) = dashboard.dashboard.as_mut() {
        d.assembled_at = None;
        for source in &mut d.sources {
            source.computed_at = None;
        }
    }
    dashboard
}

/// The figures once every message has reached its partner: the same twice,
/// a second apart, or `target` itself (the undisturbed run's figures).
async fn settled(
    stack: &Stack,
    target: Option<&GetDashboardResponse>,
) -> anyhow::Result<GetDashboardResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = figures(demo::dashboard(stack).await?);
    loop {
        if target == Some(&last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = figures(demo::dashboard(stack).await?);
        let fresh = now
            .dashboard
            .as_ref()
            .is_some_and(|d| d.sources.iter().all(|s| s.fresh));
        if (fresh && now == last && target.is_none()) || tokio::time::Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Where two dashboards first differ, as their debug text shows it.
fn first_difference(a: &GetDashboardResponse, b: &GetDashboardResponse) -> Option<String> {
    if a == b {
        return None;
    }
    let (a, b) = (format!("{a:#?}"), format!("{b:#?}"));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let context =
        |lines: &[&str]| lines[at.saturating_sub(6)..(at + 1).min(lines.len())].join("\n");
    Some(format!(
        "undisturbed:\n{}\nwith kills:\n{}",
        context(&a),
        context(&b)
    ))
}

async fn broken_chains(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let url = |i| stack.config(i).database_url.0;
    let mut broken = vec![];
    for (own, partner) in [
        (Institution::Emploi, Institution::Social),
        (Institution::Social, Institution::Emploi),
    ] {
        let found = crate::audit::verify(&url(own), Some(&url(partner))).await?;
        if !found.intact() {
            broken.push(format!("{own}: {found}"));
        }
    }
    Ok(broken)
}

/// Each institution whose committee counts, kept change by change, differ
/// from a recount of its cases: a crash or a batch must never let them drift.
async fn miscounted(stack: &Stack, run: &str) -> anyhow::Result<Vec<String>> {
    let mut differ = vec![];
    for own in [Institution::Emploi, Institution::Social] {
        let store = InstitutionStore::connect(&stack.config(own).database_url.0, 2, own).await?;
        let kept = passerelle_domain::statistics::summed(store.statistics().await?);
        let recounted = store.recount().await?;
        if kept != recounted {
            let keys = kept
                .keys()
                .chain(recounted.keys())
                .filter(|k| kept.get(*k) != recounted.get(*k))
                .count();
            differ.push(format!(
                "{own} ({run}): {keys} count(s) differ from a recount"
            ));
        }
        store.database().close().await;
    }
    Ok(differ)
}

/// Kills each planned service once the clock reaches its day, and starts it again.
async fn strike(
    stack: &Stack,
    clock: &SimulatedYear,
    origin: chrono::DateTime<chrono::Utc>,
    plan: &[Kill],
    done: &mut Vec<Kill>,
) -> anyhow::Result<()> {
    for kill in plan {
        while (clock.now() - origin).num_days() < kill.day {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(kill.after_ms)).await;
        if kill.graceful {
            stack.stop(kill.institution).await?;
        } else {
            stack.kill(kill.institution).await?;
        }
        done.push(*kill);
        tokio::time::sleep(Duration::from_millis(kill.down_ms)).await;
        stack.restart(kill.institution).await?;
    }
    Ok(())
}

/// Each service's database for one run: SQLite files in the run's
/// directory, or fresh databases on the PostgreSQL server at `postgres`.
async fn databases(postgres: Option<&str>) -> anyhow::Result<Databases> {
    let Some(base) = postgres else {
        return Ok(Databases::Sqlite);
    };
    let mut urls = vec![];
    for institution in INSTITUTIONS {
        urls.push(fresh_postgres_database(base, &format!("fault_{institution}")).await?);
    }
    Ok(Databases::Postgres(
        urls.try_into()
            .map_err(|_| anyhow::anyhow!("three databases"))?,
    ))
}

/// Runs `replay` undisturbed, then again with `kills` kills, and compares.
pub async fn run(
    replay: &Replay,
    executable: PathBuf,
    kills: u32,
    outage_ms: u64,
    postgres: Option<&str>,
) -> anyhow::Result<Outcome> {
    let base = replay.data_dir.clone();
    let mut setup = replay.clone();
    setup.processes = Some(executable);
    setup.turns = true;
    setup.min_cell_size = 1;

    setup.data_dir = base.join("undisturbed");
    setup.databases = databases(postgres).await?;
    let (stack, clock) = setup.start().await?;
    let (undisturbed, _) = setup.run(&stack, &clock).await?;
    let expected = settled(&stack, None).await?;
    let mut broken = broken_chains(&stack).await?;
    let mut counts = miscounted(&stack, "undisturbed").await?;
    stack.shutdown().await?;

    setup.data_dir = base.join("killed");
    setup.databases = databases(postgres).await?;
    let plan = schedule(replay.seed, kills, outage_ms);
    let (stack, clock) = setup.start().await?;
    let mut kills_done = vec![];
    let origin = start_of_year(&setup.rules);
    let (ran, struck) = {
        let replayed = setup.run(&stack, &clock);
        let striking = strike(&stack, &clock, origin, &plan, &mut kills_done);
        tokio::pin!(replayed, striking);
        let mut struck = None;
        // The kills stop with the replay: those planned after its last day never come.
        let ran = loop {
            tokio::select! {
                ran = &mut replayed => break ran,
                result = &mut striking, if struck.is_none() => struck = Some(result),
            }
        };
        (ran, struck)
    };
    if let Some(struck) = struck {
        struck?;
    }
    // A kill may have struck as the replay ended: all three serve again.
    for institution in INSTITUTIONS {
        if stack.process_id(institution).is_none() {
            stack.restart(institution).await?;
        }
    }
    let (disturbed, _) = ran?;
    let found = settled(&stack, Some(&expected)).await?;
    broken.extend(broken_chains(&stack).await?);
    counts.extend(miscounted(&stack, "with kills").await?);
    stack.shutdown().await?;
    Ok(Outcome {
        undisturbed,
        disturbed,
        kills_done,
        difference: first_difference(&expected, &found),
        broken_chains: broken,
        miscounted: counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_contract::v1;

    fn dashboard(entries: u64) -> GetDashboardResponse {
        GetDashboardResponse {
            dashboard: Some(v1::Dashboard {
                assembled_at: Some(prost_types::Timestamp {
                    seconds: entries as i64,
                    nanos: 0,
                }),
                entries: Some(v1::Cell {
                    count: entries,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            calendar: None,
        }
    }

    #[test]
    fn figures_compare_every_count_and_ignore_when_they_were_assembled() {
        let (a, b) = (figures(dashboard(40)), figures(dashboard(40)));
        assert_eq!(first_difference(&a, &b), None);
        let c = figures(dashboard(41));
        let difference = first_difference(&a, &c).expect("one count differs");
        assert!(
            difference.contains("40") && difference.contains("41"),
            "{difference}"
        );
    }

    #[test]
    fn the_schedule_is_the_seeds_and_strikes_every_service() {
        let plan = schedule(7, 5, 3_000);
        assert_eq!(plan, schedule(7, 5, 3_000));
        assert_ne!(plan, schedule(8, 5, 3_000));
        assert!(plan.windows(2).all(|w| w[0].day <= w[1].day));
        for institution in INSTITUTIONS {
            assert!(plan.iter().any(|k| k.institution == institution));
        }
        assert_eq!(plan.iter().filter(|k| k.graceful).count(), 1);
        assert_eq!(plan.iter().filter(|k| k.down_ms > 0).count(), 1);
    }
}
