//! Statistical secrecy for published tables with hierarchical headings: the
//! rows may be grouped (offices by network) and so may the columns (months
//! by quarter and year), and every subtotal is published beside the cells.
//!
//! Every published figure is a node; every heading that is not a leaf gives
//! relations "this node is the sum of its children". The rules:
//! - primary: a node of 1 to `threshold − 1` persons is masked;
//! - sensitive attribute: no 0 % or 100 % cell in a row;
//! - secondary: no relation may hold exactly one masked node, else its
//!   value is the difference of the others.
//!
//! The table's own margins (its total row and total column) are masked on
//! their values and their relations alone, never to protect an inner cell:
//! two tables of the same measure share their margins, and must therefore
//! mask them alike, or one would give away what the other hides.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A heading that sums leaves of its axis: a network over its offices, a
/// quarter or a year over its months.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub label: String,
    /// What the heading is: "network", "quarter", "year"…
    pub level: String,
    /// Indices of the leaves it sums.
    pub members: Vec<usize>,
}

/// A table as computed: exact counts at the leaves; groups and totals implied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    /// `counts[r][c]`, leaves only.
    pub counts: Vec<Vec<u64>>,
    /// Columns are values of a sensitive attribute (health, say).
    pub sensitive: bool,
    #[serde(default)]
    pub row_groups: Vec<Group>,
    #[serde(default)]
    pub column_groups: Vec<Group>,
    /// What a leaf row or column is: "office", "month", "key"…
    #[serde(default)]
    pub row_level: String,
    #[serde(default)]
    pub column_level: String,
}

/// One heading of a published axis: leaves first, then groups, then "total".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heading {
    pub label: String,
    pub level: String,
}

pub const TOTAL: &str = "total";

/// A table as published: every node, `None` where masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub rows: Vec<Heading>,
    pub columns: Vec<Heading>,
    /// `cells[row heading][column heading]`, totals and groups included.
    pub cells: Vec<Vec<Option<u64>>>,
    /// Too small to protect: nothing of it is published.
    pub withheld: bool,
    pub sensitive: bool,
    /// The relations (sum, then parts), as (row, column) heading indices.
    #[serde(skip)]
    relations: Vec<Vec<(usize, usize)>>,
}

/// An axis as nodes: leaves, groups, total; and each non-leaf's children.
struct Axis {
    headings: Vec<Heading>,
    /// For each node, its leaves.
    leaves: Vec<Vec<usize>>,
    /// For each node that is not a leaf, its direct children.
    children: Vec<(usize, Vec<usize>)>,
}

impl Axis {
    fn new(labels: &[String], level: &str, groups: &[Group]) -> Self {
        let n = labels.len();
        let mut headings: Vec<Heading> = labels
            .iter()
            .map(|l| Heading {
                label: l.clone(),
                level: level.to_owned(),
            })
            .collect();
        let mut leaves: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let mut sets: Vec<BTreeSet<usize>> = (0..n).map(|i| BTreeSet::from([i])).collect();
        for g in groups {
            headings.push(Heading {
                label: g.label.clone(),
                level: g.level.clone(),
            });
            let set: BTreeSet<usize> = g.members.iter().copied().filter(|&m| m < n).collect();
            leaves.push(set.iter().copied().collect());
            sets.push(set);
        }
        headings.push(Heading {
            label: TOTAL.to_owned(),
            level: TOTAL.to_owned(),
        });
        leaves.push((0..n).collect());
        sets.push((0..n).collect());
        // A node's children: the largest other nodes strictly inside it, and
        // its leaves that none of them holds.
        let mut children = vec![];
        for parent in n..sets.len() {
            let inside: Vec<usize> = (0..sets.len())
                .filter(|&o| o != parent && o >= n)
                .filter(|&o| sets[o].is_subset(&sets[parent]) && sets[o] != sets[parent])
                .collect();
            let maximal: Vec<usize> = inside
                .iter()
                .copied()
                .filter(|&o| {
                    !inside
                        .iter()
                        .any(|&b| b != o && sets[o].is_subset(&sets[b]) && sets[o] != sets[b])
                })
                .collect();
            let mut kids = maximal.clone();
            for &leaf in &sets[parent] {
                if !maximal.iter().any(|&m| sets[m].contains(&leaf)) {
                    kids.push(leaf);
                }
            }
            children.push((parent, kids));
        }
        Axis {
            headings,
            leaves,
            children,
        }
    }

    fn total(&self) -> usize {
        self.headings.len() - 1
    }
}

fn relations(rows: &Axis, cols: &Axis) -> Vec<Vec<(usize, usize)>> {
    let mut out = vec![];
    for (parent, kids) in &rows.children {
        for j in 0..cols.headings.len() {
            let mut rel = vec![(*parent, j)];
            rel.extend(kids.iter().map(|&k| (k, j)));
            out.push(rel);
        }
    }
    for (parent, kids) in &cols.children {
        for i in 0..rows.headings.len() {
            let mut rel = vec![(i, *parent)];
            rel.extend(kids.iter().map(|&k| (i, k)));
            out.push(rel);
        }
    }
    out
}

impl Table {
    /// A plain two-way table: leaves only, total row and column implied.
    pub fn new(rows: Vec<String>, columns: Vec<String>, counts: Vec<Vec<u64>>) -> Self {
        Table {
            rows,
            columns,
            counts,
            ..Table::default()
        }
    }

    pub fn row_total(&self, r: usize) -> u64 {
        self.counts[r].iter().sum()
    }

    pub fn column_total(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    /// Applies the secrecy rules with `threshold` (11 by default).
    pub fn publish(&self, threshold: u64) -> Published {
        self.publish_with(threshold, true)
    }

    fn publish_with(&self, threshold: u64, secondary: bool) -> Published {
        let rows = Axis::new(&self.rows, &self.row_level, &self.row_groups);
        let cols = Axis::new(&self.columns, &self.column_level, &self.column_groups);
        let (nr, nc) = (rows.headings.len(), cols.headings.len());
        let (tr, tc) = (rows.total(), cols.total());
        let value = |i: usize, j: usize| -> u64 {
            rows.leaves[i]
                .iter()
                .map(|&r| {
                    cols.leaves[j]
                        .iter()
                        .map(|&c| self.counts[r][c])
                        .sum::<u64>()
                })
                .sum()
        };
        let values: Vec<Vec<u64>> = (0..nr)
            .map(|i| (0..nc).map(|j| value(i, j)).collect())
            .collect();
        let margin = |(i, j): (usize, usize)| i == tr || j == tc;
        let mut masked = vec![vec![false; nc]; nr];
        for i in 0..nr {
            for j in 0..nc {
                let n = values[i][j];
                // Primary: a few persons can be recognised.
                let small = n > 0 && n < threshold;
                // Sensitive: 0 % or 100 % of a row tells it of everyone in it.
                let row_total = values[i][tc];
                let certain =
                    self.sensitive && j != tc && row_total > 0 && (n == 0 || n == row_total);
                masked[i][j] = small || certain;
            }
        }
        let relations = relations(&rows, &cols);
        let (outer, inner): (Vec<_>, Vec<_>) = relations
            .iter()
            .partition(|rel| rel.iter().all(|&node| margin(node)));
        // Margins first, among themselves, then inner cells, never margins.
        let protected = !secondary
            || (protect(&outer, &values, &mut masked, |_| true)
                && protect(&inner, &values, &mut masked, |node| !margin(node)));
        Published {
            rows: rows.headings,
            columns: cols.headings,
            cells: (0..nr)
                .map(|i| {
                    (0..nc)
                        .map(|j| (protected && !masked[i][j]).then_some(values[i][j]))
                        .collect()
                })
                .collect(),
            withheld: !protected,
            sensitive: self.sensitive,
            relations,
        }
    }
}

/// Secondary suppression over `relations`: while one holds exactly one
/// masked node, mask beside it the smallest unmasked part that `may_mask`
/// allows (zeros last: a masked zero protects nothing when the rest is
/// known). False when some relation cannot be protected.
fn protect(
    relations: &[&Vec<(usize, usize)>],
    values: &[Vec<u64>],
    masked: &mut [Vec<bool>],
    may_mask: impl Fn((usize, usize)) -> bool,
) -> bool {
    loop {
        let mut changed = false;
        for rel in relations {
            if rel.iter().filter(|&&(i, j)| masked[i][j]).count() != 1 {
                continue;
            }
            // Parts before the sum: masking the sum would hide a subtotal
            // that other relations need.
            let candidate = |from: &[(usize, usize)]| {
                from.iter()
                    .copied()
                    .filter(|&(i, j)| !masked[i][j] && may_mask((i, j)))
                    .min_by_key(|&(i, j)| (values[i][j] == 0, values[i][j]))
            };
            match candidate(&rel[1..]).or_else(|| candidate(&rel[..1])) {
                Some((i, j)) => {
                    masked[i][j] = true;
                    changed = true;
                }
                None => return false,
            }
        }
        if !changed {
            return true;
        }
    }
}

impl Published {
    /// The published value at (row label, column label), if published.
    pub fn get(&self, row: &str, column: &str) -> Option<u64> {
        let i = self.rows.iter().position(|h| h.label == row)?;
        let j = self.columns.iter().position(|h| h.label == column)?;
        self.cells[i][j]
    }

    /// Indices of the headings of one level.
    pub fn rows_of(&self, level: &str) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].level == level)
            .collect()
    }

    pub fn columns_of(&self, level: &str) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&j| self.columns[j].level == level)
            .collect()
    }

    /// What an attacker rebuilds from the published figures alone: a masked
    /// node alone unknown in a relation is the difference of the others;
    /// repeated until nothing more comes. Returns the nodes rebuilt.
    pub fn rebuildable(&self) -> Vec<(usize, usize, u64)> {
        if self.withheld {
            return vec![];
        }
        let mut known = self.cells.clone();
        let mut rebuilt = vec![];
        loop {
            let mut progress = false;
            for rel in &self.relations {
                let unknown: Vec<usize> = (0..rel.len())
                    .filter(|&k| known[rel[k].0][rel[k].1].is_none())
                    .collect();
                if let [k] = unknown[..] {
                    let sum = |nodes: &[(usize, usize)]| -> i128 {
                        nodes
                            .iter()
                            .map(|&(i, j)| i128::from(known[i][j].unwrap_or(0)))
                            .sum()
                    };
                    let v = if k == 0 {
                        sum(&rel[1..])
                    } else {
                        sum(&rel[..1]) - sum(&rel[1..])
                    };
                    let (i, j) = rel[k];
                    let v = u64::try_from(v).unwrap_or(0);
                    known[i][j] = Some(v);
                    rebuilt.push((i, j, v));
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
        Table::new(
            vec!["MDS-01".into(), "MDS-02".into(), "MDS-03".into()],
            vec!["job".into(), "training".into(), "other".into()],
            vec![vec![40, 3, 25], vec![31, 18, 27], vec![12, 22, 5]],
        )
    }

    /// No masked node may be alone unknown in any of its relations.
    fn assert_protected(p: &Published) {
        for rel in &p.relations {
            let hidden = rel
                .iter()
                .filter(|&&(i, j)| p.cells[i][j].is_none())
                .count();
            assert_ne!(hidden, 1, "{rel:?} in {p:?}");
        }
    }

    #[test]
    fn the_table_built_to_leak_does_leak_with_primary_suppression_alone() {
        let naive = leaky().publish_with(11, false);
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
        assert_protected(&published);
        // The margins are the exact ones, none of them small.
        for (office, total) in [("MDS-01", 68), ("MDS-02", 76), ("MDS-03", 39)] {
            assert_eq!(published.get(office, TOTAL), Some(total));
        }
        assert_eq!(published.get(TOTAL, TOTAL), Some(183));
    }

    #[test]
    fn no_cell_of_a_sensitive_attribute_says_all_or_none() {
        // Office × health barrier (yes / no): MDS-02's 14 people all have one.
        let mut table = Table::new(
            vec!["MDS-01".into(), "MDS-02".into(), "MDS-03".into()],
            vec!["health barrier".into(), "none".into()],
            vec![vec![20, 30], vec![14, 0], vec![25, 15]],
        );
        table.sensitive = true;
        let published = table.publish(11);
        assert_eq!(
            published.cells[1][..2],
            [None, None],
            "100 % and 0 % masked"
        );
        assert!(published.rebuildable().is_empty(), "{published:?}");
        // The same figures on a non-sensitive attribute stay published.
        table.sensitive = false;
        assert_eq!(table.publish(11).cells[1][..2], [Some(14), Some(0)]);
    }

    #[test]
    fn the_threshold_is_configurable() {
        let published = leaky().publish(20);
        assert_eq!(published.cells[1][1], None, "18 < 20");
        assert!(published.rebuildable().is_empty());
    }

    /// Offices grouped by network, months grouped by quarter: the network's
    /// figure for a month is published, so a masked office-month beside
    /// published ones of the same network would be its difference.
    #[test]
    fn subtotals_are_relations_too() {
        let mut table = Table::new(
            vec!["A1".into(), "A2".into(), "M1".into(), "M2".into()],
            vec!["2024-01".into(), "2024-02".into(), "2024-03".into()],
            vec![
                vec![30, 4, 25],
                vec![28, 40, 33],
                vec![35, 31, 29],
                vec![26, 3, 44],
            ],
        );
        table.row_groups = vec![
            Group {
                label: "emploi".into(),
                level: "network".into(),
                members: vec![0, 1],
            },
            Group {
                label: "social".into(),
                level: "network".into(),
                members: vec![2, 3],
            },
        ];
        table.column_groups = vec![Group {
            label: "2024-T1".into(),
            level: "quarter".into(),
            members: vec![0, 1, 2],
        }];
        let naive = table.publish_with(11, false);
        assert!(
            !naive.rebuildable().is_empty(),
            "built to leak through subtotals"
        );
        let published = table.publish(11);
        assert_protected(&published);
        assert!(published.rebuildable().is_empty(), "{published:?}");
        assert_eq!(published.get("emploi", "2024-T1"), Some(160));
        assert_eq!(published.rows_of("network").len(), 2);
        assert_eq!(published.columns_of("quarter").len(), 1);
    }

    #[test]
    fn small_margins_are_masked_alike_in_every_table_that_shares_them() {
        // Exits by office and exits by month: both have the exit types as
        // columns, so both publish the same column totals. "training" (7)
        // is small; the table by month masks more inner cells than the one
        // by office, yet both must publish the same margins.
        let by_office = Table::new(
            vec!["MDS-01".into(), "MDS-02".into()],
            vec!["job".into(), "training".into(), "other".into()],
            vec![vec![40, 3, 25], vec![31, 4, 27]],
        );
        let by_month = Table::new(
            vec!["2024-01".into(), "2024-02".into(), "2024-03".into()],
            vec!["job".into(), "training".into(), "other".into()],
            vec![vec![20, 2, 12], vec![26, 5, 2], vec![25, 0, 38]],
        );
        let (a, b) = (by_office.publish(11), by_month.publish(11));
        for column in ["job", "training", "other", TOTAL] {
            assert_eq!(a.get(TOTAL, column), b.get(TOTAL, column), "{column}");
        }
        assert_eq!(a.get(TOTAL, "training"), None, "7 < 11");
        assert!(a.rebuildable().is_empty() && b.rebuildable().is_empty());
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
            let (rows, cols) = (1 + next(6) as usize, 1 + next(6) as usize);
            let mut table = Table::new(
                (0..rows).map(|r| format!("r{r}")).collect(),
                (0..cols).map(|c| format!("c{c}")).collect(),
                // Mostly small counts, so that many cells are masked.
                (0..rows)
                    .map(|_| (0..cols).map(|_| next(30)).collect())
                    .collect(),
            );
            table.sensitive = next(2) == 0;
            // Random groups, some nested in others.
            for (n, axis) in [(rows, 0), (cols, 1)] {
                for g in 0..next(3) {
                    let members: Vec<usize> = (0..n).filter(|_| next(2) == 0).collect();
                    let group = Group {
                        label: format!("G{axis}-{g}"),
                        level: "group".into(),
                        members,
                    };
                    if axis == 0 {
                        table.row_groups.push(group);
                    } else {
                        table.column_groups.push(group);
                    }
                }
            }
            let published = table.publish(11);
            if published.withheld {
                assert!(published.cells.iter().flatten().all(Option::is_none));
                continue;
            }
            assert!(
                published.rebuildable().is_empty(),
                "{table:?} -> {published:?}"
            );
            assert_protected(&published);
            for row in &published.cells {
                for n in row.iter().flatten() {
                    assert!(*n == 0 || *n >= 11, "small node published: {table:?}");
                }
            }
        }
    }

    #[test]
    fn a_single_office_hides_its_small_columns_margins_too() {
        // One office: its small cell is its column's total.
        let table = Table::new(
            vec!["MDS-01".into()],
            vec!["job".into(), "training".into(), "other".into()],
            vec![vec![4, 30, 12]],
        );
        let published = table.publish(11);
        assert_eq!(published.get("MDS-01", "job"), None);
        assert_eq!(published.get(TOTAL, "job"), None);
        assert!(published.rebuildable().is_empty(), "{published:?}");
        assert_protected(&published);
    }
}
