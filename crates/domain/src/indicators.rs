//! Aggregates for the steering committee, with statistical secrecy applied
//! where they are computed: a cell of fewer than `min_cell_size` persons is
//! never published.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secrecy::{Published, Table};
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
        Cell {
            key: key.into(),
            count: (!masked).then_some(count),
        }
    }

    pub fn is_suppressed(&self) -> bool {
        self.count.is_none()
    }
}

/// Publishes a group of cells whose total is published elsewhere. When exactly
/// one cell would be masked, its value could be rebuilt by difference, so the
/// smallest other non-zero cell is masked too (secondary suppression).
pub fn publish_group(raw: &[(String, u64)], min_cell_size: u64) -> Vec<Cell> {
    let mut cells: Vec<Cell> = raw
        .iter()
        .map(|(k, c)| Cell::publish(k.clone(), *c, min_cell_size))
        .collect();
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
    pub flow: CaseFlow,
}

/// What became of referrals and entries at one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFlow {
    /// Referrals the partner's network sent to this source.
    pub referrals_received: u64,
    pub referrals_accepted: u64,
    pub referrals_refused: u64,
    pub referrals_expired: u64,
    /// Keyed by the agreement's refusal reason codes.
    pub refusals_by_reason: Vec<(String, u64)>,
    /// Diagnoses awaiting this source's validation (prescriber rule).
    pub diagnoses_awaiting_validation: u64,
    pub not_entered_at_diagnosis: u64,
    pub queued: u64,
    pub exclusive_support_entries: u64,
    pub exclusive_support_in_progress: u64,
    pub followed_up_in_employment: u64,
    /// Two-way tables, exact.
    #[serde(default)]
    pub tables: Vec<RawTable>,
}

/// A two-way table as a source computes it: exact counts by (row, column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawTable {
    pub name: String,
    pub sensitive: bool,
    pub counts: Vec<(String, String, u64)>,
}

impl RawTable {
    pub fn new(name: &str, sensitive: bool) -> Self {
        RawTable {
            name: name.to_owned(),
            sensitive,
            counts: vec![],
        }
    }

    pub fn add(&mut self, row: &str, column: &str, n: u64) {
        match self
            .counts
            .iter_mut()
            .find(|(r, c, _)| r == row && c == column)
        {
            Some(slot) => slot.2 += n,
            None => self.counts.push((row.to_owned(), column.to_owned(), n)),
        }
    }

    /// The table with `columns` always present (a column of zeros still
    /// says something), rows and columns in order.
    pub fn to_table(&self, columns: &[&str]) -> Table {
        let mut rows: Vec<String> = self.counts.iter().map(|(r, _, _)| r.clone()).collect();
        rows.sort();
        rows.dedup();
        let mut cols: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        for (_, c, _) in &self.counts {
            if !cols.contains(c) {
                cols.push(c.clone());
            }
        }
        let counts = rows
            .iter()
            .map(|r| {
                cols.iter()
                    .map(|c| {
                        self.counts
                            .iter()
                            .filter(|(rr, cc, _)| rr == r && cc == c)
                            .map(|(_, _, n)| n)
                            .sum()
                    })
                    .collect()
            })
            .collect();
        Table {
            rows,
            columns: cols,
            counts,
            sensitive: self.sensitive,
        }
    }
}

/// The columns every table shows, by table name.
pub fn table_columns(name: &str) -> &'static [&'static str] {
    match name {
        "exits_by_office" => &["job", "training", "other"],
        "referrals_by_month" => &["emploi", "social"],
        "entry_delay_by_year" => &["0-7", "8-14", "15-21", "22-30", "31-60", "61+"],
        "age_band_by_office" => &[
            "moins de 26 ans",
            "26-44 ans",
            "45-54 ans",
            "55 ans et plus",
        ],
        "rsa_by_office" => &["rsa", "hors rsa"],
        _ => &[],
    }
}

/// What one source contributed to a dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: Institution,
    pub computed_at: DateTime<Utc>,
    /// False when the source did not answer and its last snapshot is used.
    pub fresh: bool,
}

/// The steering committee's published figures: combined across sources,
/// then put under statistical secrecy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    pub assembled_at: DateTime<Utc>,
    pub entries: Cell,
    pub in_progress: Cell,
    /// `None` when fewer than `min_cell_size` entries back the average.
    pub average_entry_delay_days: Option<f64>,
    pub exits_by_type: Vec<Cell>,
    pub referrals_by_network: Vec<Cell>,
    /// Keys: accepted, refused, expired.
    pub referral_outcomes: Vec<Cell>,
    /// Keys: the agreement's refusal reasons.
    pub refusals_by_reason: Vec<Cell>,
    /// Keys: emploi, social (the party whose validation is awaited).
    pub awaiting_validation_by_party: Vec<Cell>,
    pub not_entered_at_diagnosis: Cell,
    pub queued: Cell,
    pub exclusive_support_entries: Cell,
    pub tables: Vec<(String, Published)>,
    pub sources: Vec<SourceStatus>,
    pub min_cell_size: u64,
}

impl Dashboard {
    pub fn publish(
        snapshots: &[(Indicators, bool)],
        min_cell_size: u64,
        assembled_at: DateTime<Utc>,
    ) -> Self {
        let sum = |f: fn(&Indicators) -> u64| snapshots.iter().map(|(i, _)| f(i)).sum::<u64>();
        let delay_count = sum(|i| i.entry_delay_count);
        let average_entry_delay_days = (delay_count >= min_cell_size && delay_count > 0)
            .then(|| sum(|i| i.entry_delay_days_sum) as f64 / delay_count as f64);
        let mut exits: Vec<(String, u64)> = Vec::new();
        for (indicators, _) in snapshots {
            for (key, n) in &indicators.exits_by_type {
                match exits.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 += n,
                    None => exits.push((key.clone(), *n)),
                }
            }
        }
        let referrals: Vec<(String, u64)> = [Institution::Emploi, Institution::Social]
            .iter()
            .map(|network| {
                let n = snapshots
                    .iter()
                    .filter(|(i, _)| i.source == *network)
                    .map(|(i, _)| i.referrals_sent)
                    .sum();
                (network.code().to_owned(), n)
            })
            .collect();
        let flow = |f: fn(&CaseFlow) -> u64| sum_flow(snapshots, f);
        let outcomes = [
            ("accepted".to_owned(), flow(|f| f.referrals_accepted)),
            ("refused".to_owned(), flow(|f| f.referrals_refused)),
            ("expired".to_owned(), flow(|f| f.referrals_expired)),
        ];
        let mut reasons: Vec<(String, u64)> = Vec::new();
        for (indicators, _) in snapshots {
            for (key, n) in &indicators.flow.refusals_by_reason {
                match reasons.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 += n,
                    None => reasons.push((key.clone(), *n)),
                }
            }
        }
        reasons.sort();
        let awaiting: Vec<(String, u64)> = [Institution::Emploi, Institution::Social]
            .iter()
            .map(|party| {
                let n = snapshots
                    .iter()
                    .filter(|(i, _)| i.source == *party)
                    .map(|(i, _)| i.flow.diagnoses_awaiting_validation)
                    .sum();
                (party.code().to_owned(), n)
            })
            .collect();
        // Tables are combined across sources first, then protected.
        let mut merged: Vec<RawTable> = vec![];
        for (indicators, _) in snapshots {
            for t in &indicators.flow.tables {
                let slot = match merged.iter_mut().position(|m| m.name == t.name) {
                    Some(i) => &mut merged[i],
                    None => {
                        merged.push(RawTable::new(&t.name, t.sensitive));
                        merged.last_mut().expect("pushed")
                    }
                };
                slot.sensitive |= t.sensitive;
                for (r, c, n) in &t.counts {
                    slot.add(r, c, *n);
                }
            }
        }
        merged.sort_by(|a, b| a.name.cmp(&b.name));
        let tables = merged
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.to_table(table_columns(&t.name)).publish(min_cell_size),
                )
            })
            .collect();
        Dashboard {
            assembled_at,
            tables,
            referral_outcomes: publish_group(&outcomes, min_cell_size),
            refusals_by_reason: publish_group(&reasons, min_cell_size),
            awaiting_validation_by_party: publish_group(&awaiting, min_cell_size),
            not_entered_at_diagnosis: Cell::publish(
                "not_entered_at_diagnosis",
                flow(|f| f.not_entered_at_diagnosis),
                min_cell_size,
            ),
            queued: Cell::publish("queued", flow(|f| f.queued), min_cell_size),
            exclusive_support_entries: Cell::publish(
                "exclusive_support_entries",
                flow(|f| f.exclusive_support_entries),
                min_cell_size,
            ),
            entries: Cell::publish("entries", sum(|i| i.entries), min_cell_size),
            in_progress: Cell::publish("in_progress", sum(|i| i.in_progress), min_cell_size),
            average_entry_delay_days,
            exits_by_type: publish_group(&exits, min_cell_size),
            referrals_by_network: publish_group(&referrals, min_cell_size),
            sources: snapshots
                .iter()
                .map(|(i, fresh)| SourceStatus {
                    source: i.source,
                    computed_at: i.computed_at,
                    fresh: *fresh,
                })
                .collect(),
            min_cell_size,
        }
    }
}

fn sum_flow(snapshots: &[(Indicators, bool)], f: fn(&CaseFlow) -> u64) -> u64 {
    snapshots.iter().map(|(i, _)| f(&i.flow)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indicators(
        source: Institution,
        referrals: u64,
        entries: u64,
        exits: &[(&str, u64)],
    ) -> Indicators {
        Indicators {
            source,
            computed_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            referrals_sent: referrals,
            entries,
            in_progress: entries / 2,
            entry_delay_days_sum: entries * 20,
            entry_delay_count: entries,
            exits_by_type: exits.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            flow: CaseFlow::default(),
        }
    }

    #[test]
    fn sources_are_combined_before_secrecy_is_applied() {
        let now = DateTime::from_timestamp(1_700_000_100, 0).expect("valid");
        // Each source alone has too few training exits to publish; together they have 12.
        let emploi = indicators(
            Institution::Emploi,
            30,
            40,
            &[("job", 15), ("training", 6), ("other", 4)],
        );
        let social = indicators(
            Institution::Social,
            25,
            0,
            &[("job", 0), ("training", 6), ("other", 9)],
        );
        let d = Dashboard::publish(&[(emploi, true), (social, false)], 11, now);
        assert_eq!(d.entries.count, Some(40));
        assert_eq!(d.average_entry_delay_days, Some(20.0));
        let exits: Vec<_> = d
            .exits_by_type
            .iter()
            .map(|c| (c.key.as_str(), c.count))
            .collect();
        assert_eq!(
            exits,
            vec![
                ("job", Some(15)),
                ("training", Some(12)),
                ("other", Some(13))
            ]
        );
        let referrals: Vec<_> = d.referrals_by_network.iter().map(|c| c.count).collect();
        assert_eq!(referrals, vec![Some(30), Some(25)]);
        assert!(!d.sources[1].fresh);
    }

    #[test]
    fn small_totals_are_masked_and_the_average_withheld() {
        let now = DateTime::from_timestamp(1_700_000_100, 0).expect("valid");
        let d = Dashboard::publish(
            &[(indicators(Institution::Emploi, 5, 7, &[("job", 3)]), true)],
            11,
            now,
        );
        assert_eq!(d.entries.count, None);
        assert_eq!(d.average_entry_delay_days, None);
        assert!(
            d.referrals_by_network
                .iter()
                .any(|c| c.key == "emploi" && c.count.is_none())
        );
    }

    #[test]
    fn small_cells_are_masked_but_zero_is_not() {
        assert_eq!(Cell::publish("a", 10, 11).count, None);
        assert_eq!(Cell::publish("a", 11, 11).count, Some(11));
        assert_eq!(Cell::publish("a", 0, 11).count, Some(0));
    }

    #[test]
    fn a_lone_masked_cell_takes_a_neighbour_with_it() {
        let raw = vec![
            ("job".to_owned(), 40),
            ("training".to_owned(), 3),
            ("other".to_owned(), 25),
        ];
        let cells = publish_group(&raw, 11);
        let masked: Vec<_> = cells
            .iter()
            .filter(|c| c.is_suppressed())
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(masked, vec!["training", "other"]);
    }

    #[test]
    fn nothing_masked_when_all_cells_are_large() {
        let raw = vec![("job".to_owned(), 40), ("other".to_owned(), 12)];
        assert!(publish_group(&raw, 11).iter().all(|c| !c.is_suppressed()));
    }
}
