//! Aggregates for the steering committee, with statistical secrecy applied
//! where they are computed: a cell of fewer than `min_cell_size` persons is
//! never published.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocabulary::Institution;

/// One published count; `None` when suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub key: String,
    pub count: Option<u64>,
}

impl Cell {
    /// Primary suppression: 1..min-1 persons is masked; zero reveals nobody.
    pub fn publish(key: impl Into<String>, count: u64, min_cell_size: u64) -> Self {
        let masked = count > 0 && count < min_cell_size;
        Cell { key: key.into(), count: (!masked).then_some(count) }
    }

    pub fn is_suppressed(&self) -> bool {
        self.count.is_none()
    }
}

/// Publishes a group of cells whose total is published elsewhere. When exactly
/// one cell would be masked, its value could be rebuilt by difference, so the
/// smallest other non-zero cell is masked too (secondary suppression).
pub fn publish_group(raw: &[(String, u64)], min_cell_size: u64) -> Vec<Cell> {
    let mut cells: Vec<Cell> = raw.iter().map(|(k, c)| Cell::publish(k.clone(), *c, min_cell_size)).collect();
    if cells.iter().filter(|c| c.is_suppressed()).count() == 1 {
        let smallest_other = raw
            .iter()
            .enumerate()
            .filter(|(i, (_, c))| !cells[*i].is_suppressed() && *c > 0)
            .min_by_key(|(_, (_, c))| *c)
            .map(|(i, _)| i);
        if let Some(i) = smallest_other {
            cells[i].count = None;
        }
    }
    cells
}

/// Exact aggregates from one institution; secrecy is applied on publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicators {
    pub source: Institution,
    pub computed_at: DateTime<Utc>,
    pub referrals_sent: u64,
    pub entries: u64,
    pub in_progress: u64,
    pub entry_delay_days_sum: u64,
    pub entry_delay_count: u64,
    /// Keyed by [`crate::ExitType`] code.
    pub exits_by_type: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cells_are_masked_but_zero_is_not() {
        assert_eq!(Cell::publish("a", 10, 11).count, None);
        assert_eq!(Cell::publish("a", 11, 11).count, Some(11));
        assert_eq!(Cell::publish("a", 0, 11).count, Some(0));
    }

    #[test]
    fn a_lone_masked_cell_takes_a_neighbour_with_it() {
        let raw = vec![("job".to_owned(), 40), ("training".to_owned(), 3), ("other".to_owned(), 25)];
        let cells = publish_group(&raw, 11);
        let masked: Vec<_> = cells.iter().filter(|c| c.is_suppressed()).map(|c| c.key.as_str()).collect();
        assert_eq!(masked, vec!["training", "other"]);
    }

    #[test]
    fn nothing_masked_when_all_cells_are_large() {
        let raw = vec![("job".to_owned(), 40), ("other".to_owned(), 12)];
        assert!(publish_group(&raw, 11).iter().all(|c| !c.is_suppressed()));
    }
}
