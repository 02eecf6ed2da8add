//! The consents of the cases last asked about, kept between calls: every
//! crossing on the basis of consent reads its case's consents, and they
//! change rarely (recorded, withdrawn, expired by the clock, erased).
//!
//! Kept exactly as fresh as a read: what was read is kept under the count
//! of commits that had changed the consent table before the read began
//! ([`crate::Database::consent_changes`], counted by SQLite's update hook on
//! every row whatever the statement, once the commit is visible, whichever
//! of this process's pools on the file made it), and only if no such commit
//! came while it was read. Any later such commit makes
//! everything kept stale at once. The count moves before the writing call is
//! answered, so a withdrawal takes effect on the next call. Expiry needs
//! nothing: the boundary judges the consents against its clock each time.
//!
//! SQLite only, whose one process is the database's only writer (a
//! `passerelle purge --database` from another process is for a stopped
//! service); on PostgreSQL another replica's withdrawal would not be seen
//! here, so every read goes to the database.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use passerelle_domain::Consent;

/// Cases kept at most: a few hundred KiB.
const MOST_CASES: usize = 1024;

pub(crate) type ConsentCache = CaseCache<Vec<Consent>>;

/// What was read of each case, as of a count of changing commits.
#[derive(Debug)]
pub(crate) struct CaseCache<T> {
    kept: Mutex<Kept<T>>,
}

#[derive(Debug)]
struct Kept<T> {
    /// The count of changing commits what is kept was read under.
    changes: u64,
    by_case: HashMap<Box<str>, T>,
}

impl<T> Default for CaseCache<T> {
    fn default() -> Self {
        CaseCache {
            kept: Mutex::new(Kept {
                changes: 0,
                by_case: HashMap::new(),
            }),
        }
    }
}

impl<T: Clone> CaseCache<T> {
    /// The case's value if kept and nothing changed since (`changes` read
    /// now).
    pub(crate) fn get(&self, case_id: &str, changes: u64) -> Option<T> {
        let mut kept = self.lock();
        if changes > kept.changes {
            // All kept is older than a commit since: forgotten.
            kept.by_case.clear();
            kept.changes = changes;
        }
        if changes == kept.changes {
            kept.by_case.get(case_id).cloned()
        } else {
            // The caller's count is older than a read already kept.
            None
        }
    }

    /// Keeps `value`, read after `before` and before `after` (counts of
    /// changing commits), unless a commit came in between: what was read
    /// may already be stale then.
    pub(crate) fn put(&self, case_id: &str, value: &T, before: u64, after: u64) {
        if before != after {
            return;
        }
        let mut kept = self.lock();
        if before < kept.changes {
            return;
        }
        if before > kept.changes {
            kept.by_case.clear();
            kept.changes = before;
        }
        if kept.by_case.len() >= MOST_CASES && !kept.by_case.contains_key(case_id) {
            kept.by_case.clear();
        }
        kept.by_case.insert(case_id.into(), value.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept<T>> {
        // What is kept is whole at every step: a panic elsewhere leaves it usable.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_kept_until_the_next_changing_commit() {
        let cache = CaseCache::<u32>::default();
        assert_eq!(cache.get("a", 0), None);
        cache.put("a", &1, 0, 0);
        assert_eq!(cache.get("a", 0), Some(1));
        assert_eq!(cache.get("b", 0), None);
        // A commit changed the table: nothing kept before it is served.
        assert_eq!(cache.get("a", 1), None);
        cache.put("a", &2, 1, 1);
        assert_eq!(cache.get("a", 1), Some(2));
    }

    #[test]
    fn a_read_a_commit_overtook_is_not_kept() {
        let cache = CaseCache::<u32>::default();
        // A commit came while it was read: it may hold the old value.
        cache.put("a", &1, 0, 1);
        assert_eq!(cache.get("a", 1), None);
        // Read under 0, but a read under 1 was kept first: the older is refused.
        cache.put("b", &2, 1, 1);
        cache.put("a", &1, 0, 0);
        assert_eq!(cache.get("a", 1), None);
        assert_eq!(cache.get("b", 1), Some(2));
        // A caller whose count is older is served nothing, and forgets nothing.
        assert_eq!(cache.get("b", 0), None);
        assert_eq!(cache.get("b", 1), Some(2));
    }

    #[test]
    fn past_its_bound_the_cache_starts_over() {
        let cache = CaseCache::<usize>::default();
        for i in 0..MOST_CASES {
            cache.put(&format!("case-{i}"), &i, 0, 0);
        }
        assert_eq!(cache.get("case-7", 0), Some(7));
        cache.put("case-7", &70, 0, 0);
        assert_eq!(
            cache.get("case-8", 0),
            Some(8),
            "a case kept already is replaced"
        );
        cache.put("one-more", &1, 0, 0);
        assert_eq!(cache.get("one-more", 0), Some(1));
        assert_eq!(cache.get("case-8", 0), None);
    }
}
