//! A simulated year, run day by day on the services' shared clock: every
//! person is a task that waits for the day of its next step; the clock
//! moves on to the nearest day anyone waits for only once every task still
//! running is waiting (or done). The steps of one day therefore run side by
//! side, and no step ever runs on another day than its own, however many
//! people are in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use passerelle_domain::{Clock, ManualClock};
use tokio::sync::oneshot;

/// The day-stepped clock of a replay.
#[derive(Debug)]
pub struct Timeline {
    clock: ManualClock,
    origin: DateTime<Utc>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Days since the origin the clock stands at.
    today: i64,
    /// Tasks taking part and not done.
    live: usize,
    /// Of those, the ones waiting for a later day, by day.
    waiting: BTreeMap<i64, Vec<oneshot::Sender<()>>>,
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
    /// A timeline starting at day 0, the clock's current instant.
    pub fn new(clock: ManualClock) -> Arc<Self> {
        Arc::new(Timeline {
            origin: clock.now(),
            clock,
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
        self.lock().today
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Returns on `day` (at once if it has come). The caller holds a place.
    pub async fn at(&self, day: i64) {
        let woken = {
            let mut state = self.lock();
            if day <= state.today {
                return;
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.entry(day).or_default().push(tx);
            state.parked += 1;
            self.advance(&mut state);
            rx
        };
        // A dropped sender means the timeline went away: nothing to wait for.
        let _ = woken.await;
    }

    /// Moves the clock to the nearest awaited day while every live task waits.
    fn advance(&self, state: &mut State) {
        while state.live > 0 && state.parked == state.live {
            let Some((day, woken)) = state.waiting.pop_first() else {
                return;
            };
            state.today = day;
            self.clock.set(self.date(day));
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
        Timeline::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2024-01-01T09:00:00Z")
                .expect("valid")
                .to_utc(),
        ))
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
}
