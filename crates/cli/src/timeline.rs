//! A simulated year, run day by day on the services' shared clock: every
//! person is a task that waits for the day of its next step; the clock
//! moves on to the nearest day anyone waits for only once every task still
//! running is waiting (or done). The steps of one day therefore run side by
//! side, and no step ever runs on another day than its own, however many
//! people are in flight.
//!
//! Steps that compete for something scarce (a counsellor's last place, an
//! office's quota) may instead take their turn: after the day's other steps,
//! one at a time in the order of their turn, so that a replay's outcome
//! depends on its seed only, not on which call the machine happened to
//! finish first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use passerelle_domain::{Clock, ManualClock};
use tokio::sync::oneshot;

/// The instant a replay's services run at: in this process, and in the file
/// services in their own processes read.
#[derive(Debug, Clone)]
pub struct SimulatedYear {
    clock: ManualClock,
    file: Option<PathBuf>,
}

impl SimulatedYear {
    pub fn new(start: DateTime<Utc>, file: Option<PathBuf>) -> Self {
        SimulatedYear {
            clock: ManualClock::new(start),
            file,
        }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        self.clock.set(at);
        if let Some(file) = &self.file {
            // Services on another day than the driver would make every
            // figure wrong: a replay cannot go on without its clock.
            if let Err(e) = passerelle_runtime::simulated_clock::set_simulated_time(file, at) {
                panic!("cannot write the simulated clock {}: {e}", file.display());
            }
        }
    }
}

impl Clock for SimulatedYear {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// The day-stepped clock of a replay.
#[derive(Debug)]
pub struct Timeline {
    clock: SimulatedYear,
    origin: DateTime<Utc>,
    /// Whether turns are kept; without, a turn is the day's free part.
    turns: bool,
    state: Mutex<State>,
}

/// A moment of a day: its free part (turn 0), where steps run side by
/// side, then each turn taken, one at a time.
type Moment = (i64, u64);

#[derive(Debug, Default)]
struct State {
    /// Where the clock stands: days since the origin, and the turn.
    now: Moment,
    /// Tasks taking part and not done.
    live: usize,
    /// Of those, the ones waiting for a later moment, by moment.
    waiting: BTreeMap<Moment, Vec<oneshot::Sender<()>>>,
    parked: usize,
}

/// A task's place on the timeline: while it lives the clock waits for it;
/// dropped (done, failed or cancelled), it no longer holds the day back.
#[derive(Debug)]
pub struct Place {
    timeline: Arc<Timeline>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.timeline.lock();
        state.live -= 1;
        self.timeline.advance(&mut state);
    }
}

impl Timeline {
    /// A timeline starting at day 0, the clock's current instant; keeping
    /// turns, or running every step of a day side by side.
    pub fn new(clock: SimulatedYear, turns: bool) -> Arc<Self> {
        Arc::new(Timeline {
            origin: clock.now(),
            clock,
            turns,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `n` places at once, before their tasks start: the day cannot
    /// move on while they have not run their steps of today.
    pub fn join(self: &Arc<Self>, n: usize) -> Vec<Place> {
        self.lock().live += n;
        (0..n)
            .map(|_| Place {
                timeline: self.clone(),
            })
            .collect()
    }

    /// The instant of `day`.
    pub fn date(&self, day: i64) -> DateTime<Utc> {
        self.origin + Duration::days(day)
    }

    pub fn today(&self) -> i64 {
        self.lock().now.0
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Returns on `day` (at once if it has come). The caller holds a place.
    pub async fn at(&self, day: i64) {
        self.until((day, 0)).await;
    }

    /// Returns on `day` once its free steps are done and every turn before
    /// `turn` has been taken: the caller runs alone. Each caller of a day
    /// takes its own turn (a person's index, say).
    pub async fn in_turn(&self, day: i64, turn: u64) {
        let turn = if self.turns {
            turn.saturating_add(1)
        } else {
            0
        };
        self.until((day, turn)).await;
    }

    async fn until(&self, moment: Moment) {
        let woken = {
            let mut state = self.lock();
            if moment <= state.now {
                return;
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.entry(moment).or_default().push(tx);
            state.parked += 1;
            self.advance(&mut state);
            rx
        };
        // A dropped sender means the timeline went away: nothing to wait for.
        let _ = woken.await;
    }

    /// Moves the clock to the nearest awaited moment while every live task waits.
    fn advance(&self, state: &mut State) {
        while state.live > 0 && state.parked == state.live {
            let Some((moment, woken)) = state.waiting.pop_first() else {
                return;
            };
            if moment.0 != state.now.0 {
                self.clock.set(self.date(moment.0));
            }
            state.now = moment;
            state.parked -= woken.len();
            for tx in woken {
                let _ = tx.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Arc<Timeline> {
        Timeline::new(
            SimulatedYear::new(
                DateTime::parse_from_rfc3339("2024-01-01T09:00:00Z")
                    .expect("valid")
                    .to_utc(),
                None,
            ),
            true,
        )
    }

    #[tokio::test]
    async fn each_step_runs_on_its_own_day_and_a_day_waits_for_every_task() {
        let t = timeline();
        let log = Arc::new(Mutex::new(vec![]));
        let mut places = t.join(3);
        let mut tasks = vec![];
        for (who, days) in [("a", vec![0, 2, 5]), ("b", vec![1, 2]), ("c", vec![5, 9])] {
            let (t, log, place) = (t.clone(), log.clone(), places.pop().expect("place"));
            tasks.push(tokio::spawn(async move {
                let _place = place;
                for day in days {
                    t.at(day).await;
                    // A slow step: the day must not move on meanwhile.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    let today = (t.now() - t.date(0)).num_days();
                    log.lock().expect("log").push((who, day, today));
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let log = log.lock().expect("log").clone();
        assert_eq!(log.len(), 7);
        for (who, day, today) in &log {
            assert_eq!(day, today, "{who}'s step of day {day} ran on day {today}");
        }
        let days: Vec<i64> = log.iter().map(|(_, d, _)| *d).collect();
        let mut sorted = days.clone();
        sorted.sort();
        assert_eq!(days, sorted, "the days come in order");
        assert_eq!(t.today(), 9);
    }

    #[tokio::test]
    async fn a_task_that_stops_early_does_not_hold_the_day_back() {
        let t = timeline();
        let mut places = t.join(2);
        let quitter = places.pop().expect("place");
        let stayer = places.pop().expect("place");
        let t2 = t.clone();
        let waiting = tokio::spawn(async move {
            let _place = stayer;
            t2.at(30).await;
            t2.today()
        });
        tokio::task::yield_now().await;
        assert_eq!(t.today(), 0, "the quitter is still live");
        drop(quitter);
        assert_eq!(waiting.await.expect("task"), 30);
    }

    #[tokio::test]
    async fn turns_run_one_at_a_time_in_order_after_the_free_steps() {
        let t = timeline();
        let log = Arc::new(Mutex::new(vec![]));
        let mut tasks = vec![];
        let mut places = t.join(3);
        // Started in reverse, with a free step first for some: the order of
        // turns is the turn's, whatever the order tasks reach them.
        for (who, turn, free_first) in [("c", 7, true), ("b", 3, false), ("a", 1, true)] {
            let (t, log, place) = (t.clone(), log.clone(), places.pop().expect("place"));
            tasks.push(tokio::spawn(async move {
                let _place = place;
                t.at(4).await;
                if free_first {
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                    log.lock().expect("log").push(format!("{who} free"));
                }
                t.in_turn(4, turn).await;
                log.lock().expect("log").push(format!("{who} starts"));
                // Slow and awaiting: still nobody else runs meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                log.lock().expect("log").push(format!("{who} ends"));
                // Same day after its turn: runs at once.
                t.at(4).await;
                t.in_turn(4, turn).await;
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let log = log.lock().expect("log").clone();
        let frees = &log[..2];
        assert!(frees.contains(&"a free".into()) && frees.contains(&"c free".into()));
        assert_eq!(
            &log[2..],
            [
                "a starts", "a ends", "b starts", "b ends", "c starts", "c ends"
            ]
        );
        assert_eq!(t.today(), 4);
    }
}
