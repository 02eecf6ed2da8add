//! A clock shared through a file, for replays and fault tests that run the
//! services as separate processes on one simulated year: the driver writes
//! the instant, every service reads it on each call. Never in production
//! (the configuration key says so, and the service warns at start).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use passerelle_domain::Clock;

/// The services' side: the instant in the file, read on every call so a
/// step the driver runs after moving the clock never sees the day before.
#[derive(Debug)]
pub struct SimulatedClock {
    path: PathBuf,
    /// The last instant read, kept in case the file cannot be read.
    last_millis: AtomicI64,
}

impl SimulatedClock {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let millis = read_millis(path)?;
        Ok(SimulatedClock {
            path: path.to_path_buf(),
            last_millis: AtomicI64::new(millis),
        })
    }
}

fn read_millis(path: &Path) -> std::io::Result<i64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Clock for SimulatedClock {
    fn now(&self) -> DateTime<Utc> {
        // The writer replaces the file whole (rename), so a read sees the
        // old instant or the new one, never a mix.
        let millis = match read_millis(&self.path) {
            Ok(millis) => {
                self.last_millis.store(millis, Ordering::Relaxed);
                millis
            }
            Err(_) => self.last_millis.load(Ordering::Relaxed),
        };
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }
}

/// The driver's side: sets the instant every service reads.
pub fn set_simulated_time(path: &Path, at: DateTime<Utc>) -> std::io::Result<()> {
    let next = path.with_extension("next");
    std::fs::write(&next, at.timestamp_millis().to_string())?;
    std::fs::rename(next, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_read_what_the_driver_last_wrote() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clock");
        let first = DateTime::parse_from_rfc3339("2023-09-04T09:00:00Z")
            .expect("valid")
            .to_utc();
        set_simulated_time(&path, first).expect("written");
        let clock = SimulatedClock::open(&path).expect("opens");
        assert_eq!(clock.now(), first);
        let later = first + chrono::Duration::days(41);
        set_simulated_time(&path, later).expect("written");
        assert_eq!(clock.now(), later);
        // Gone (or unreadable), the last instant read stands.
        std::fs::remove_file(&path).expect("removed");
        assert_eq!(clock.now(), later);
    }
}
