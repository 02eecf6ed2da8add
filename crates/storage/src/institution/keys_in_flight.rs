//! Idempotency keys being served in this process right now. Calls under
//! one key look up its stored answer side by side (replays run in
//! parallel), but only one at a time goes on to write under it; a call that
//! waited for another's write looks again before writing. That spares every
//! change a look-up of its key inside the batch (a round trip each): a key
//! can then only have been written since its call's own look-up by another
//! replica, and the key's unique index catches that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct KeysInFlight {
    keys: Mutex<HashMap<(String, String), Key>>,
}

#[derive(Debug)]
struct Key {
    /// Calls holding a ticket for the key.
    tickets: usize,
    /// Whether one of them is writing under it.
    writing: bool,
    /// Writes under the key finished since its entry was made.
    written: u64,
    /// Rings when a write under the key finishes.
    done: Arc<Notify>,
}

/// A call's ticket for a key, taken before it looks up the key's stored
/// answer and kept until the call is answered (or cancelled).
#[derive(Debug)]
pub struct KeyTicket {
    keys: Arc<KeysInFlight>,
    key: (String, String),
    /// Writes under the key finished when the ticket was taken.
    written_at_start: u64,
    writing: bool,
}

impl KeysInFlight {
    /// A ticket for `(method, key)`; take it before looking the key up.
    pub(crate) fn ticket(self: &Arc<Self>, method: &str, key: &str) -> KeyTicket {
        let key = (method.to_owned(), key.to_owned());
        let mut keys = self.lock();
        let entry = keys.entry(key.clone()).or_insert_with(|| Key {
            tickets: 0,
            writing: false,
            written: 0,
            done: Arc::new(Notify::new()),
        });
        entry.tickets += 1;
        KeyTicket {
            keys: self.clone(),
            written_at_start: entry.written,
            key,
            writing: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Key>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyTicket {
    /// Waits until no other call of this process writes under the key, then
    /// holds it for this one. `true` if another's write under the key
    /// finished since the ticket was taken: its answer must be looked up
    /// again before writing.
    pub async fn write(&mut self) -> bool {
        loop {
            let done = {
                let mut keys = self.keys.lock();
                let entry = keys.get_mut(&self.key).expect("a ticket keeps its key");
                if !entry.writing {
                    entry.writing = true;
                    self.writing = true;
                    return entry.written != self.written_at_start;
                }
                entry.done.clone()
            };
            let finished = done.notified();
            tokio::pin!(finished);
            // Registered before looking again: a write finishing in between is heard.
            finished.as_mut().enable();
            let still_writing = self
                .keys
                .lock()
                .get(&self.key)
                .is_some_and(|entry| entry.writing);
            if still_writing {
                finished.await;
            }
        }
    }
}

impl Drop for KeyTicket {
    fn drop(&mut self) {
        let mut keys = self.keys.lock();
        let Some(entry) = keys.get_mut(&self.key) else {
            return;
        };
        if self.writing {
            entry.writing = false;
            entry.written += 1;
            entry.done.notify_waiters();
        }
        entry.tickets -= 1;
        if entry.tickets == 0 {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys_held(keys: &KeysInFlight) -> usize {
        keys.lock().len()
    }

    #[tokio::test]
    async fn one_call_at_a_time_writes_under_a_key_and_the_next_hears_of_it() {
        let keys = Arc::new(KeysInFlight::default());
        let mut first = keys.ticket("/m", "k");
        let mut second = keys.ticket("/m", "k");
        let mut other_key = keys.ticket("/m", "other");
        let mut other_method = keys.ticket("/n", "k");
        assert!(!first.write().await, "nothing written under the key yet");
        assert!(!other_key.write().await, "another key is free");
        assert!(!other_method.write().await, "keys are scoped by method");
        let waiting = tokio::spawn(async move {
            let written_meanwhile = second.write().await;
            (second, written_meanwhile)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the first still writes");
        drop(first);
        let (second, written_meanwhile) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a finished write hands the key on")
            .expect("task");
        assert!(written_meanwhile, "the second must look the key up again");
        drop((second, other_key, other_method));
        assert_eq!(keys_held(&keys), 0, "keys no call holds are forgotten");
    }

    #[tokio::test]
    async fn look_ups_under_one_key_do_not_wait_for_each_other() {
        let keys = Arc::new(KeysInFlight::default());
        let tickets: Vec<_> = (0..64).map(|_| keys.ticket("/m", "k")).collect();
        assert_eq!(keys_held(&keys), 1);
        drop(tickets);
        assert_eq!(keys_held(&keys), 0);
        // A ticket taken after a write finished needs no second look-up:
        // its own look-up came after the write.
        let mut writer = keys.ticket("/m", "k");
        let mut later = keys.ticket("/m", "k");
        assert!(!writer.write().await);
        drop(writer);
        let mut latest = keys.ticket("/m", "k");
        assert!(later.write().await, "taken before the write finished");
        drop(later);
        assert!(latest.write().await, "a write finished after it was taken");
    }

    #[tokio::test]
    async fn a_call_cancelled_while_waiting_to_write_leaves_the_key_to_the_others() {
        let keys = Arc::new(KeysInFlight::default());
        let mut first = keys.ticket("/m", "k");
        assert!(!first.write().await);
        let mut cancelled = keys.ticket("/m", "k");
        let waited = tokio::time::timeout(Duration::from_millis(20), cancelled.write()).await;
        assert!(waited.is_err(), "still written");
        drop((cancelled, first));
        let mut again = keys.ticket("/m", "k");
        let free = tokio::time::timeout(Duration::from_secs(5), again.write()).await;
        assert_eq!(free.ok(), Some(false), "free, and taken after the write");
    }
}
