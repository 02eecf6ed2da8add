//! Statistical secrecy for published two-way tables (rows × columns, with
//! their margins published): no cell under the threshold, secondary
//! suppression until no masked cell can be rebuilt by sum or difference
//! along any row or column, and, for a sensitive attribute, no 0 % or 100 %
//! cell (which would tell every person of the row the attribute's value).

// Rows and columns are walked by index on purpose: each cell is read along both.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

/// A table as computed: exact counts, margins implied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    /// `counts[r][c]`.
    pub counts: Vec<Vec<u64>>,
    /// Columns are values of a sensitive attribute (health, say).
    pub sensitive: bool,
}

/// A table as published: `None` where masked. Margins are always published
/// (masking them would only hide what the institutions already report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    pub cells: Vec<Vec<Option<u64>>>,
    pub row_totals: Vec<u64>,
    pub column_totals: Vec<u64>,
    /// Too small to protect (a line with one masked cell and nothing to
    /// mask beside it): nothing of it is published, margins included.
    pub withheld: bool,
}

impl Table {
    pub fn row_total(&self, r: usize) -> u64 {
        self.counts[r].iter().sum()
    }

    pub fn column_total(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    /// Applies the secrecy rules with `threshold` (11 by default).
    pub fn publish(&self, threshold: u64) -> Published {
        let (n_rows, n_cols) = (self.rows.len(), self.columns.len());
        let mut masked = vec![vec![false; n_cols]; n_rows];
        for r in 0..n_rows {
            let total = self.row_total(r);
            for c in 0..n_cols {
                let n = self.counts[r][c];
                // Primary: a few persons can be recognised.
                let small = n > 0 && n < threshold;
                // Sensitive: 0 % or 100 % of a row tells it of everyone in it.
                let certain = self.sensitive && total > 0 && (n == 0 || n == total);
                masked[r][c] = small || certain;
            }
        }
        // Secondary: a line (row or column) with exactly one masked cell
        // gives it away by difference with the published margin; mask the
        // smallest other cell of that line, preferring one that is alone
        // masked in its crossing line too. Repeat until no line has one.
        let mut unprotectable = false;
        loop {
            let mut changed = false;
            for r in 0..n_rows {
                let hidden = (0..n_cols).filter(|&c| masked[r][c]).count();
                if hidden == 1 {
                    match self.partner(&masked, (0..n_cols).map(|c| (r, c))) {
                        Some(c) => {
                            masked[r][c] = true;
                            changed = true;
                        }
                        None => unprotectable = true,
                    }
                }
            }
            for c in 0..n_cols {
                let hidden = (0..n_rows).filter(|&r| masked[r][c]).count();
                if hidden == 1 {
                    match self.partner(&masked, (0..n_rows).map(|r| (r, c))) {
                        Some(r) => {
                            masked[r][c] = true;
                            changed = true;
                        }
                        None => unprotectable = true,
                    }
                }
            }
            if !changed {
                break;
            }
        }
        if unprotectable {
            return Published {
                rows: self.rows.clone(),
                columns: self.columns.clone(),
                cells: vec![vec![None; n_cols]; n_rows],
                row_totals: vec![],
                column_totals: vec![],
                withheld: true,
            };
        }
        Published {
            withheld: false,
            rows: self.rows.clone(),
            columns: self.columns.clone(),
            cells: (0..n_rows)
                .map(|r| {
                    (0..n_cols)
                        .map(|c| (!masked[r][c]).then_some(self.counts[r][c]))
                        .collect()
                })
                .collect(),
            row_totals: (0..n_rows).map(|r| self.row_total(r)).collect(),
            column_totals: (0..n_cols).map(|c| self.column_total(c)).collect(),
        }
    }

    /// The cell to mask beside the line's only masked one: the smallest
    /// unmasked cell, zeros last (a masked zero protects nothing when the
    /// other cells are known). Returns its index along the line.
    fn partner(
        &self,
        masked: &[Vec<bool>],
        line: impl Iterator<Item = (usize, usize)>,
    ) -> Option<usize> {
        line.enumerate()
            .filter(|(_, (r, c))| !masked[*r][*c])
            .min_by_key(|(_, (r, c))| {
                let n = self.counts[*r][*c];
                (n == 0, n)
            })
            .map(|(i, _)| i)
    }
}

impl Published {
    /// What an attacker rebuilds from the published figures alone: each
    /// masked cell alone in its row or column is the margin minus the rest;
    /// repeated until nothing more comes. Returns the cells rebuilt.
    pub fn rebuildable(&self) -> Vec<(usize, usize, u64)> {
        if self.withheld {
            return vec![];
        }
        let mut known = self.cells.clone();
        let mut rebuilt = vec![];
        loop {
            let mut progress = false;
            for r in 0..known.len() {
                let hidden: Vec<usize> = (0..known[r].len())
                    .filter(|&c| known[r][c].is_none())
                    .collect();
                if let [c] = hidden[..] {
                    let rest: u64 = known[r].iter().flatten().sum();
                    let value = self.row_totals[r].saturating_sub(rest);
                    known[r][c] = Some(value);
                    rebuilt.push((r, c, value));
                    progress = true;
                }
            }
            for c in 0..self.column_totals.len() {
                let hidden: Vec<usize> = (0..known.len())
                    .filter(|&r| known[r][c].is_none())
                    .collect();
                if let [r] = hidden[..] {
                    let rest: u64 = known.iter().filter_map(|row| row[c]).sum();
                    let value = self.column_totals[c].saturating_sub(rest);
                    known[r][c] = Some(value);
                    rebuilt.push((r, c, value));
                    progress = true;
                }
            }
            if !progress {
                return rebuilt;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offices × exit type, built so that primary suppression alone leaks:
    /// each small cell is alone in its row, and the margins are published.
    fn leaky() -> Table {
        Table {
            rows: vec!["MDS-01".into(), "MDS-02".into(), "MDS-03".into()],
            columns: vec!["job".into(), "training".into(), "other".into()],
            counts: vec![vec![40, 3, 25], vec![31, 18, 27], vec![12, 22, 5]],
            sensitive: false,
        }
    }

    fn primary_only(t: &Table, threshold: u64) -> Published {
        Published {
            rows: t.rows.clone(),
            columns: t.columns.clone(),
            cells: t
                .counts
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|&n| (n == 0 || n >= threshold).then_some(n))
                        .collect()
                })
                .collect(),
            row_totals: (0..t.rows.len()).map(|r| t.row_total(r)).collect(),
            column_totals: (0..t.columns.len()).map(|c| t.column_total(c)).collect(),
            withheld: false,
        }
    }

    #[test]
    fn the_table_built_to_leak_does_leak_with_primary_suppression_alone() {
        let naive = primary_only(&leaky(), 11);
        let rebuilt = naive.rebuildable();
        assert!(rebuilt.contains(&(0, 1, 3)), "{rebuilt:?}");
        assert!(rebuilt.contains(&(2, 2, 5)), "{rebuilt:?}");
    }

    #[test]
    fn secondary_suppression_leaves_nothing_to_rebuild() {
        let published = leaky().publish(11);
        assert_eq!(published.cells[0][1], None);
        assert_eq!(published.cells[2][2], None);
        assert!(published.rebuildable().is_empty(), "{published:?}");
        // Every row and column holds zero or at least two masked cells.
        for r in 0..3 {
            assert_ne!(published.cells[r].iter().filter(|c| c.is_none()).count(), 1);
        }
        for c in 0..3 {
            assert_ne!(
                published
                    .cells
                    .iter()
                    .filter(|row| row[c].is_none())
                    .count(),
                1
            );
        }
        // The margins are the exact ones.
        assert_eq!(published.row_totals, vec![68, 76, 39]);
    }

    #[test]
    fn no_cell_of_a_sensitive_attribute_says_all_or_none() {
        // Office × health barrier (yes / no): MDS-02's 14 people all have one.
        let table = Table {
            rows: vec!["MDS-01".into(), "MDS-02".into(), "MDS-03".into()],
            columns: vec!["health barrier".into(), "none".into()],
            counts: vec![vec![20, 30], vec![14, 0], vec![25, 15]],
            sensitive: true,
        };
        let published = table.publish(11);
        assert_eq!(published.cells[1], vec![None, None], "100 % and 0 % masked");
        assert!(published.rebuildable().is_empty(), "{published:?}");
        // The same figures on a non-sensitive attribute stay published.
        let plain = Table {
            sensitive: false,
            ..table
        };
        assert_eq!(plain.publish(11).cells[1], vec![Some(14), Some(0)]);
    }

    #[test]
    fn the_threshold_is_configurable() {
        let published = leaky().publish(20);
        assert_eq!(published.cells[1][1], None, "18 < 20");
        assert!(published.rebuildable().is_empty());
    }

    #[test]
    fn no_random_table_leaks_after_protection() {
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for _ in 0..2_000 {
            let (rows, cols) = (1 + next(6) as usize, 1 + next(5) as usize);
            let table = Table {
                rows: (0..rows).map(|r| format!("r{r}")).collect(),
                columns: (0..cols).map(|c| format!("c{c}")).collect(),
                // Mostly small counts, so that many cells are masked.
                counts: (0..rows)
                    .map(|_| (0..cols).map(|_| next(30)).collect())
                    .collect(),
                sensitive: next(2) == 0,
            };
            let published = table.publish(11);
            assert!(
                published.rebuildable().is_empty(),
                "{table:?} -> {published:?}"
            );
            for (r, row) in published.cells.iter().enumerate() {
                for (c, cell) in row.iter().enumerate() {
                    if let Some(n) = cell {
                        assert!(*n == 0 || *n >= 11, "small cell {r},{c} published");
                    }
                }
            }
        }
    }

    #[test]
    fn a_table_too_small_to_protect_is_withheld() {
        // One office: its only small cell would be its column's total.
        let table = Table {
            rows: vec!["MDS-01".into()],
            columns: vec!["job".into(), "training".into(), "other".into()],
            counts: vec![vec![4, 30, 12]],
            sensitive: false,
        };
        let published = table.publish(11);
        assert!(published.withheld);
        assert!(published.row_totals.is_empty() && published.column_totals.is_empty());
        assert!(published.cells[0].iter().all(Option::is_none));
    }
}
