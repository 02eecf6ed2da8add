//! A budget of refused calls per peer. Every refusal is counted and the
//! first ones of a window are audited one by one; past the budget a peer's
//! refusals are shed (answered at once, RESOURCE_EXHAUSTED) and coalesced
//! into one audit record per peer and window, so whoever can reach the port
//! cannot grow the audit log without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with one more refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Within the budget: audit it as usual.
    Record,
    /// Past it: answer at once; the count is recorded when the window ends.
    Shed,
}

/// A peer's shed refusals over an ended window: one audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced {
    pub peer: Option<IpAddr>,
    pub shed: u64,
    pub window: Duration,
}

#[derive(Debug)]
struct PeerWindow {
    started: Instant,
    refused: u64,
    shed: u64,
}

#[derive(Debug)]
pub struct DenialBudget {
    per_window: u64,
    window: Duration,
    peers: Mutex<HashMap<Option<IpAddr>, PeerWindow>>,
}

impl DenialBudget {
    pub fn new(per_window: u64, window: Duration) -> Self {
        DenialBudget {
            per_window,
            window,
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts one refused call from `peer` at `now`.
    pub fn charge(&self, peer: Option<IpAddr>, now: Instant) -> Charge {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = peers.entry(peer).or_insert(PeerWindow {
            started: now,
            refused: 0,
            shed: 0,
        });
        // A peer whose window ended and shed nothing starts afresh; one that
        // shed keeps its window until `ended` has taken the count.
        if now.duration_since(entry.started) >= self.window && entry.shed == 0 {
            *entry = PeerWindow {
                started: now,
                refused: 0,
                shed: 0,
            };
        }
        entry.refused += 1;
        if entry.refused > self.per_window {
            entry.shed += 1;
            Charge::Shed
        } else {
            Charge::Record
        }
    }

    /// Takes the counts of the windows that ended by `now` (or all, at
    /// shutdown), forgetting those peers.
    pub fn ended(&self, now: Instant, all: bool) -> Vec<Coalesced> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        peers.retain(|peer, w| {
            let over = all || now.duration_since(w.started) >= self.window;
            if over && w.shed > 0 {
                out.push(Coalesced {
                    peer: *peer,
                    shed: w.shed,
                    window: now.duration_since(w.started),
                });
            }
            !over
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_refusals_are_shed_then_counted_once_per_window() {
        let budget = DenialBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let charges: Vec<_> = (0..5).map(|_| budget.charge(a, t0)).collect();
        assert_eq!(
            charges,
            [
                Charge::Record,
                Charge::Record,
                Charge::Record,
                Charge::Shed,
                Charge::Shed
            ]
        );
        // Another peer has its own budget.
        assert_eq!(budget.charge(b, t0), Charge::Record);
        assert!(budget.ended(t0 + Duration::from_secs(5), false).is_empty());
        let ended = budget.ended(t0 + Duration::from_secs(10), false);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].peer, ended[0].shed), (a, 2));
        // A new window starts with a full budget.
        assert_eq!(
            budget.charge(a, t0 + Duration::from_secs(11)),
            Charge::Record
        );
        assert!(budget.ended(t0 + Duration::from_secs(12), true).is_empty());
    }
}
