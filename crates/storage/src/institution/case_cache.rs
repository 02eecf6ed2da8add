//! What was read of the cases last asked about, kept between calls: every
//! crossing on the basis of consent reads its case's consents, an agent's
//! `GetCase` reads the whole case, and most changes read their case's row
//! first (`Tx::case`); all change far less often than they are read.
//!
//! Kept exactly as fresh as a read, case by case: a read is kept with the
//! number of the last commit before it began, and served as long as no
//! later commit changed a row of its case in the tables it was read from
//! ([`crate::sql::CaseStamps`]: SQLite's triggers and update hook see every
//! row, whatever the statement, and a commit is stamped once visible and
//! before its caller is answered, whichever of this process's pools on the
//! file made it; stamped already as it commits, for what write
//! transactions keep). A withdrawal thus takes effect on the next call. Expiry
//! needs nothing: the boundary judges the consents against its clock each
//! time.
//!
//! SQLite only, whose one process is the database's only writer (a
//! `passerelle purge --database` from another process is for a stopped
//! service); on PostgreSQL another replica's change would not be seen here,
//! so every read goes to the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::sql::CaseStamps;

/// Cases kept at most per cache.
const MOST_CASES: usize = 1024;
/// Bytes kept at most per cache (as [`Weigh`] counts them): a case's
/// notes are many and long for some.
const MOST_BYTES: usize = 4 << 20;

/// About how many bytes a value kept holds.
pub(crate) trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Vec<passerelle_domain::Consent> {
    fn weight(&self) -> usize {
        // A consent's sets and evidence: a few hundred bytes.
        64 + self.len() * 512
    }
}

impl Weigh for passerelle_domain::Case {
    fn weight(&self) -> usize {
        // Its dates, codes and a few short texts.
        1024
    }
}

impl Weigh for super::CaseParts {
    fn weight(&self) -> usize {
        // Decoded, the parts take about what they took stored.
        1024 + self.stored_bytes
    }
}

/// Everything kept of the cases by one store: each cache as fresh as a read.
#[derive(Debug)]
pub(crate) struct KeptCases {
    /// The consents of the cases last asked about.
    pub(crate) consents: CaseCache<Vec<passerelle_domain::Consent>>,
    /// The cases last read whole.
    pub(crate) parts: CaseCache<super::CaseParts>,
    /// The cases as write transactions last read them (`Tx::case`).
    pub(crate) rows: CaseCache<passerelle_domain::Case>,
}

impl KeptCases {
    pub(crate) fn new() -> Self {
        KeptCases {
            consents: CaseCache::new(super::CONSENT_TABLES),
            parts: CaseCache::new(super::CASE_TABLES),
            rows: CaseCache::new(super::CASE_ROW_TABLES),
        }
    }

    /// Lets go of what is kept of an erased case: its stamps already keep it
    /// from being served, and nothing of it stays in memory either.
    pub(crate) fn forget(&self, case_id: &str) {
        self.consents.lock().remove(case_id);
        self.parts.lock().remove(case_id);
        self.rows.lock().remove(case_id);
    }

    /// Whether anything of the case is kept.
    pub(crate) fn holds(&self, case_id: &str) -> bool {
        self.consents.lock().by_case.contains_key(case_id)
            || self.parts.lock().by_case.contains_key(case_id)
            || self.rows.lock().by_case.contains_key(case_id)
    }
}

/// What was read of each case, with the number it was read under.
#[derive(Debug)]
pub(crate) struct CaseCache<T> {
    /// The tables it is read from.
    tables: &'static [&'static str],
    kept: Mutex<Kept<T>>,
}

#[derive(Debug)]
struct Kept<T> {
    by_case: HashMap<Box<str>, (Arc<T>, u64)>,
    /// The weight of all kept.
    bytes: usize,
}

impl<T: Weigh> CaseCache<T> {
    pub(crate) fn new(tables: &'static [&'static str]) -> Self {
        CaseCache {
            tables,
            kept: Mutex::new(Kept {
                by_case: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    /// The case's value: the one kept if none of its rows changed since, or
    /// else `read` (`None`: nothing to keep), kept if still current. No
    /// stamps (PostgreSQL): always `read`.
    pub(crate) async fn kept_or_read(
        &self,
        stamps: Option<&CaseStamps>,
        case_id: &str,
        read: impl AsyncFnOnce() -> crate::Result<Option<T>>,
    ) -> crate::Result<Option<Arc<T>>> {
        let Some(stamps) = stamps else {
            return Ok(read().await?.map(Arc::new));
        };
        if let Some(kept) = self.get(stamps, case_id) {
            return Ok(Some(kept));
        }
        // Taken before the read begins: a commit after it stamps later.
        let since = stamps.now();
        let value = read().await?.map(Arc::new);
        if let Some(value) = &value {
            self.put(stamps, case_id, value.clone(), since);
        }
        Ok(value)
    }

    /// The case's value if kept and none of its rows changed since.
    fn get(&self, stamps: &CaseStamps, case_id: &str) -> Option<Arc<T>> {
        let mut kept = self.lock();
        let (value, since) = kept.by_case.get(case_id)?;
        if stamps.changed_since(self.tables, case_id, *since) {
            kept.remove(case_id);
            return None;
        }
        Some(value.clone())
    }

    /// Keeps `value`, read after `since` was taken ([`CaseStamps::now`]),
    /// unless a commit changed the case since: what was read may already
    /// be stale then.
    fn put(&self, stamps: &CaseStamps, case_id: &str, value: Arc<T>, since: u64) {
        let weight = value.weight();
        if weight > MOST_BYTES || stamps.changed_since(self.tables, case_id, since) {
            return;
        }
        let mut kept = self.lock();
        match kept.by_case.get(case_id) {
            // A later read is kept already.
            Some((_, kept_since)) if *kept_since > since => return,
            _ => kept.remove(case_id),
        }
        // Room for it: any others go (read again when asked).
        while kept.by_case.len() >= MOST_CASES || kept.bytes + weight > MOST_BYTES {
            let Some(other) = kept.by_case.keys().next().cloned() else {
                break;
            };
            kept.remove(&other);
        }
        kept.bytes += weight;
        kept.by_case.insert(case_id.into(), (value, since));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept<T>> {
        // What is kept is whole at every step: a panic elsewhere leaves it usable.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Weigh> Kept<T> {
    fn remove(&mut self, case_id: &str) {
        if let Some((value, _)) = self.by_case.remove(case_id) {
            self.bytes -= value.weight();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &[&str] = &["consents"];

    /// A value weighing its own number of bytes.
    impl Weigh for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    fn value(cache: &CaseCache<u32>, stamps: &CaseStamps, case_id: &str) -> Option<u32> {
        cache.get(stamps, case_id).map(|v| *v)
    }

    #[test]
    fn a_read_is_kept_until_a_commit_changes_its_case() {
        let (stamps, cache) = (CaseStamps::default(), CaseCache::new(TABLES));
        assert_eq!(value(&cache, &stamps, "a"), None);
        cache.put(&stamps, "a", Arc::new(1), stamps.now());
        cache.put(&stamps, "b", Arc::new(2), stamps.now());
        assert_eq!(value(&cache, &stamps, "a"), Some(1));
        // Another case's change, or another table's, leaves it current.
        stamps.stamp("consents", "c");
        stamps.stamp("cases", "a");
        assert_eq!(value(&cache, &stamps, "a"), Some(1));
        stamps.stamp("consents", "a");
        assert_eq!(value(&cache, &stamps, "a"), None);
        assert_eq!(value(&cache, &stamps, "b"), Some(2));
        cache.put(&stamps, "a", Arc::new(3), stamps.now());
        assert_eq!(value(&cache, &stamps, "a"), Some(3));
    }

    #[tokio::test]
    async fn a_value_is_read_once_until_its_case_changes_and_always_without_stamps() {
        let (stamps, cache) = (CaseStamps::default(), CaseCache::new(TABLES));
        let reads = std::cell::Cell::new(0);
        let read = async || {
            reads.set(reads.get() + 1);
            Ok(Some(reads.get()))
        };
        let value = async |stamps| {
            cache
                .kept_or_read(stamps, "a", read)
                .await
                .unwrap()
                .map(|v| *v)
        };
        assert_eq!(value(Some(&stamps)).await, Some(1));
        assert_eq!(value(Some(&stamps)).await, Some(1), "kept");
        stamps.stamp("consents", "a");
        assert_eq!(value(Some(&stamps)).await, Some(2), "read again");
        assert_eq!(value(None).await, Some(3), "no stamps: read every time");
        assert_eq!(value(None).await, Some(4));
        // Nothing read, nothing kept.
        let none = cache
            .kept_or_read(Some(&stamps), "b", async || Ok(None))
            .await
            .unwrap();
        assert!(none.is_none() && cache.get(&stamps, "b").is_none());
    }

    #[test]
    fn a_read_a_commit_overtook_is_not_kept() {
        let (stamps, cache) = (CaseStamps::default(), CaseCache::new(TABLES));
        let since = stamps.now();
        // A commit came while it was read: it may hold the old value.
        stamps.stamp("consents", "a");
        cache.put(&stamps, "a", Arc::new(1), since);
        assert_eq!(value(&cache, &stamps, "a"), None);
        // A later read kept first is not replaced by an older one.
        let later = stamps.now();
        cache.put(&stamps, "b", Arc::new(2), later);
        cache.put(&stamps, "b", Arc::new(1), since);
        assert_eq!(value(&cache, &stamps, "b"), Some(2));
    }

    #[test]
    fn past_its_bound_one_case_makes_room() {
        let (stamps, cache) = (CaseStamps::default(), CaseCache::new(TABLES));
        for i in 0..MOST_CASES {
            cache.put(&stamps, &format!("case-{i}"), Arc::new(i as u32), 0);
        }
        cache.put(&stamps, "case-7", Arc::new(70), 0);
        assert_eq!(
            value(&cache, &stamps, "case-7"),
            Some(70),
            "replaced in place"
        );
        cache.put(&stamps, "one-more", Arc::new(1), 0);
        assert_eq!(value(&cache, &stamps, "one-more"), Some(1));
        let kept = (0..MOST_CASES)
            .filter(|i| value(&cache, &stamps, &format!("case-{i}")).is_some())
            .count();
        assert_eq!(kept, MOST_CASES - 1);
    }

    #[test]
    fn what_is_kept_weighs_no_more_than_its_bound() {
        let (stamps, cache) = (CaseStamps::default(), CaseCache::new(TABLES));
        let quarter = (MOST_BYTES / 4) as u32;
        for case in ["a", "b", "c", "d"] {
            cache.put(&stamps, case, Arc::new(quarter), 0);
        }
        let kept = |cache: &CaseCache<u32>| {
            ["a", "b", "c", "d", "e"]
                .iter()
                .filter(|case| value(cache, &stamps, case).is_some())
                .count()
        };
        assert_eq!(kept(&cache), 4);
        cache.put(&stamps, "e", Arc::new(quarter), 0);
        assert_eq!(kept(&cache), 4, "one made room");
        assert_eq!(value(&cache, &stamps, "e"), Some(quarter));
        // Replacing a case's value counts its new weight only.
        cache.put(&stamps, "e", Arc::new(quarter), 0);
        assert_eq!(kept(&cache), 4);
        assert_eq!(cache.lock().bytes, MOST_BYTES);
        // One heavier than the bound is not kept.
        cache.put(&stamps, "f", Arc::new(MOST_BYTES as u32 + 1), 0);
        assert_eq!(value(&cache, &stamps, "f"), None);
        assert_eq!(kept(&cache), 4);
    }
}
