//! Aggregates for the steering committee, with statistical secrecy applied
//! where they are computed: a cell of fewer than `min_cell_size` persons is
//! never published.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::person::BarrierCategory;
use crate::secrecy::{Group, Published, TOTAL, Table};
use crate::statistics::{self, CubeKey, Kind, MEASURES, Measure};
use crate::vocabulary::Institution;

/// One published figure, read from a published table; `None` when masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub key: String,
    pub count: Option<u64>,
}

/// Exact aggregates from one institution; secrecy is applied on publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicators {
    pub source: Institution,
    pub computed_at: DateTime<Utc>,
    /// The source's incremental counts (see [`crate::statistics`]).
    pub counts: Vec<(CubeKey, i64)>,
    /// The employment side's working-time register, in thousandths of a
    /// full-time counsellor; zero at the social side.
    pub counsellor_fte_per_mille: u64,
}

/// What one source contributed to a dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: Institution,
    pub computed_at: DateTime<Utc>,
    /// False when the source did not answer and its last snapshot is used.
    pub fresh: bool,
}

/// The delay from referral to entry over one period, against the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelayFigure {
    pub period: String,
    /// month, quarter or year.
    pub level: String,
    pub entries: Cell,
    /// Averages in days; `None` when too few persons back them.
    pub referral_to_entry: Option<f64>,
    pub referral_to_diagnosis: Option<f64>,
    pub diagnosis_to_entry: Option<f64>,
    /// The agreement's target for the period's year, in days.
    pub target_days: Option<u32>,
}

/// Entries in one year against the agreement's per-counsellor target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YearFigure {
    pub year: String,
    pub entries: Cell,
    pub per_counsellor: Option<f64>,
    pub target_per_counsellor: Option<u32>,
}

/// The dedicated counsellors' means against the agreement's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staffing {
    /// Full-time equivalents in the working-time register.
    pub counsellors_fte: f64,
    /// What the agreement provides.
    pub agreed_fte: f64,
    pub average_portfolio: Option<f64>,
    pub portfolio_min: u32,
    pub portfolio_max: u32,
    pub steady_portfolio_target: Option<u32>,
    pub entries_by_year: Vec<YearFigure>,
    pub participants: Cell,
    pub participants_target: Option<u32>,
}

/// One European Social Fund indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsfFigure {
    pub code: String,
    pub label: String,
    pub count: Cell,
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
    pub delays: Vec<DelayFigure>,
    pub staffing: Staffing,
    pub esf: Vec<EsfFigure>,
    pub sources: Vec<SourceStatus>,
    pub min_cell_size: u64,
}

/// The sources' counts added up.
fn merged(snapshots: &[(Indicators, bool)]) -> BTreeMap<CubeKey, i64> {
    statistics::summed(snapshots.iter().flat_map(|(i, _)| i.counts.iter().cloned()))
}

/// Every month from the first to the last, so that a series has no hole.
fn months_between(found: &BTreeSet<String>) -> Vec<String> {
    let (Some(first), Some(last)) = (found.first(), found.last()) else {
        return vec![];
    };
    let parse = |m: &str| -> Option<(i32, u32)> {
        let (y, mo) = m.split_once('-')?;
        Some((y.parse().ok()?, mo.parse().ok()?))
    };
    let (Some((mut y, mut m)), Some(end)) = (parse(first), parse(last)) else {
        return found.iter().cloned().collect();
    };
    let mut out = vec![];
    while (y, m) <= end {
        out.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// Months as leaves, grouped by quarter and by year.
fn month_axis(months: &[String]) -> Vec<Group> {
    let mut groups: Vec<Group> = vec![];
    for (level, label_of) in [
        ("quarter", statistics::quarter as fn(&str) -> String),
        ("year", statistics::year),
    ] {
        for (i, m) in months.iter().enumerate() {
            let label = label_of(m);
            match groups
                .iter_mut()
                .find(|g| g.level == level && g.label == label)
            {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    label,
                    level: level.to_owned(),
                    members: vec![i],
                }),
            }
        }
    }
    groups
}

/// (network, office) pairs as leaves labelled by office, grouped by network.
fn office_axis(pairs: &[(String, String)]) -> (Vec<String>, Vec<Group>) {
    let mut groups: Vec<Group> = vec![];
    for (i, (network, _)) in pairs.iter().enumerate() {
        match groups.iter_mut().find(|g| &g.label == network) {
            Some(g) => g.members.push(i),
            None => groups.push(Group {
                label: network.clone(),
                level: "network".to_owned(),
                members: vec![i],
            }),
        }
    }
    (pairs.iter().map(|(_, o)| o.clone()).collect(), groups)
}

/// The keys a measure shows: its fixed ones, then any other found.
fn keys_of(m: &Measure, found: &BTreeSet<String>, extra: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = m.keys.iter().map(|k| (*k).to_owned()).collect();
    for k in extra.iter().chain(found) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// Refusals grouped under one "refused" heading.
fn key_groups(m: &Measure, keys: &[String]) -> Vec<Group> {
    if m.code != statistics::REFERRAL_OUTCOMES.code {
        return vec![];
    }
    let members: Vec<usize> = (0..keys.len())
        .filter(|&i| keys[i].starts_with(statistics::REFUSED_PREFIX))
        .collect();
    if members.is_empty() {
        return vec![];
    }
    vec![Group {
        label: "refused".to_owned(),
        level: "outcome".to_owned(),
        members,
    }]
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The published tables of one measure.
fn measure_tables(
    m: &Measure,
    cube: &BTreeMap<CubeKey, i64>,
    extra_keys: &[String],
    threshold: u64,
) -> Vec<(String, Published)> {
    let cells: Vec<(&CubeKey, u64)> = cube
        .iter()
        .filter(|(k, _)| k.measure == m.code)
        .map(|(k, n)| (k, count(*n)))
        .collect();
    let months: BTreeSet<String> = cells.iter().map(|(k, _)| k.month.clone()).collect();
    let months = months_between(&months);
    let mut pairs: Vec<(String, String)> = cells
        .iter()
        .map(|(k, _)| (k.network.clone(), k.office.clone()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let (offices, networks) = office_axis(&pairs);
    let found: BTreeSet<String> = cells
        .iter()
        .map(|(k, _)| k.key.clone())
        .filter(|k| !k.is_empty())
        .collect();
    let keys = keys_of(m, &found, extra_keys);
    let table = |rows: Vec<String>,
                 row_groups: Vec<Group>,
                 row_level: &str,
                 columns: Vec<String>,
                 column_groups: Vec<Group>,
                 column_level: &str,
                 at: &dyn Fn(&CubeKey) -> (usize, usize)| {
        let mut counts = vec![vec![0u64; columns.len()]; rows.len()];
        for (k, n) in &cells {
            let (r, c) = at(k);
            if r < rows.len() && c < columns.len() {
                counts[r][c] += n;
            }
        }
        Table {
            rows,
            columns,
            counts,
            sensitive: m.sensitive,
            row_groups,
            column_groups,
            row_level: row_level.to_owned(),
            column_level: column_level.to_owned(),
        }
        .publish(threshold)
    };
    let office_of = |k: &CubeKey| {
        pairs
            .iter()
            .position(|(n, o)| *n == k.network && *o == k.office)
            .unwrap_or(usize::MAX)
    };
    let month_of = |k: &CubeKey| {
        months
            .iter()
            .position(|x| *x == k.month)
            .unwrap_or(usize::MAX)
    };
    let key_of = |k: &CubeKey| keys.iter().position(|x| *x == k.key).unwrap_or(usize::MAX);
    let keyless = keys.is_empty();
    match (m.kind, keyless) {
        (Kind::Days, _) => vec![],
        (Kind::Stock, true) => vec![(
            m.code.to_owned(),
            table(
                offices,
                networks,
                "office",
                vec!["now".into()],
                vec![],
                "now",
                &|k| (office_of(k), 0),
            ),
        )],
        (Kind::Stock, false) => vec![(
            m.code.to_owned(),
            table(
                offices,
                networks,
                "office",
                keys.clone(),
                key_groups(m, &keys),
                "key",
                &|k| (office_of(k), key_of(k)),
            ),
        )],
        (Kind::Flow, true) => vec![(
            m.code.to_owned(),
            table(
                offices,
                networks,
                "office",
                months.clone(),
                month_axis(&months),
                "month",
                &|k| (office_of(k), month_of(k)),
            ),
        )],
        (Kind::Flow, false) => vec![
            (
                format!("{}.by_month", m.code),
                table(
                    months.clone(),
                    month_axis(&months),
                    "month",
                    keys.clone(),
                    key_groups(m, &keys),
                    "key",
                    &|k| (month_of(k), key_of(k)),
                ),
            ),
            (
                format!("{}.by_office", m.code),
                table(
                    offices,
                    networks,
                    "office",
                    keys.clone(),
                    key_groups(m, &keys),
                    "key",
                    &|k| (office_of(k), key_of(k)),
                ),
            ),
        ],
    }
}

impl Dashboard {
    pub fn publish(
        snapshots: &[(Indicators, bool)],
        agreement: &AgreementRules,
        min_cell_size: u64,
        assembled_at: DateTime<Utc>,
    ) -> Self {
        let cube = merged(snapshots);
        let mut tables: Vec<(String, Published)> = vec![];
        for m in MEASURES {
            let extra: Vec<String> = match m.code {
                "referral_outcomes" => agreement
                    .refusal_reasons
                    .iter()
                    .map(|r| format!("{}{r}", statistics::REFUSED_PREFIX))
                    .collect(),
                "barriers" => BarrierCategory::ALL
                    .iter()
                    .map(|b| b.code().to_owned())
                    .collect(),
                "actions" => crate::plan::Theme::ALL
                    .iter()
                    .map(|t| t.code().to_owned())
                    .collect(),
                _ => vec![],
            };
            tables.extend(measure_tables(m, &cube, &extra, min_cell_size));
        }
        let find = |name: &str| tables.iter().find(|(n, _)| n == name).map(|(_, p)| p);
        let cell = |table: &str, row: &str, column: &str, key: &str| Cell {
            key: key.to_owned(),
            count: find(table).and_then(|p| p.get(row, column)),
        };
        let total_row = |table: &str, keys: &[&str]| -> Vec<Cell> {
            keys.iter().map(|k| cell(table, TOTAL, k, k)).collect()
        };
        let entries = cell("entries", TOTAL, TOTAL, "entries");
        let delays_by_month = DelaySums::by_month(&cube);
        let all = DelaySums::within(&delays_by_month, |_| true);
        let average_entry_delay_days = average(all.referral_to_entry, all.entries, min_cell_size);
        let refusal_keys: Vec<String> = find("referral_outcomes.by_office")
            .map(|p| {
                p.columns
                    .iter()
                    .filter(|h| h.label.starts_with(statistics::REFUSED_PREFIX))
                    .map(|h| h.label.clone())
                    .collect()
            })
            .unwrap_or_default();
        let refusals_by_reason = refusal_keys
            .iter()
            .map(|k| {
                let reason = k.trim_start_matches(statistics::REFUSED_PREFIX);
                cell("referral_outcomes.by_office", TOTAL, k, reason)
            })
            .collect();
        let mut referral_outcomes = total_row("referral_outcomes.by_office", &["accepted"]);
        referral_outcomes.push(if refusal_keys.is_empty() {
            Cell {
                key: "refused".into(),
                count: Some(0),
            }
        } else {
            cell("referral_outcomes.by_office", TOTAL, "refused", "refused")
        });
        referral_outcomes.extend(total_row("referral_outcomes.by_office", &["expired"]));
        let delays = delay_figures(&tables, &delays_by_month, agreement, min_cell_size);
        let staffing = staffing(snapshots, &tables, agreement, min_cell_size);
        let esf = esf_figures(&tables);
        Dashboard {
            assembled_at,
            in_progress: cell("in_progress", TOTAL, TOTAL, "in_progress"),
            average_entry_delay_days,
            exits_by_type: total_row("exits.by_office", &["job", "training", "other"]),
            referrals_by_network: ["emploi", "social"]
                .iter()
                .map(|n| Cell {
                    key: (*n).to_owned(),
                    count: match find("referrals") {
                        Some(p) if p.rows.iter().any(|h| h.label == *n) => p.get(n, TOTAL),
                        _ => Some(0),
                    },
                })
                .collect(),
            referral_outcomes,
            refusals_by_reason,
            awaiting_validation_by_party: total_row("awaiting_validation", &["emploi", "social"]),
            not_entered_at_diagnosis: cell(
                "kept_out_at_diagnosis",
                TOTAL,
                TOTAL,
                "not_entered_at_diagnosis",
            ),
            queued: cell("queued", TOTAL, TOTAL, "queued"),
            exclusive_support_entries: cell(
                "exclusive_entries",
                TOTAL,
                TOTAL,
                "exclusive_support_entries",
            ),
            entries,
            delays,
            staffing,
            esf,
            tables,
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

/// What of the agreement the dashboard reads: its targets and means.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgreementRules {
    pub refusal_reasons: Vec<String>,
    pub entry_delay_targets: Vec<(i32, u32)>,
    pub entries_per_counsellor_per_year: Option<u32>,
    pub participants: Option<u32>,
    pub steady_portfolio: Option<u32>,
    pub agreed_fte: f64,
    pub portfolio_min: u32,
    pub portfolio_max: u32,
}

impl From<&crate::agreement::Agreement> for AgreementRules {
    fn from(a: &crate::agreement::Agreement) -> Self {
        AgreementRules {
            refusal_reasons: a
                .referral
                .refusal_reasons
                .iter()
                .map(|r| r.code.clone())
                .collect(),
            entry_delay_targets: a
                .targets
                .entry_delay
                .iter()
                .map(|t| (t.year, t.days))
                .collect(),
            entries_per_counsellor_per_year: a.targets.entries_per_counsellor_per_year,
            participants: a.targets.participants,
            steady_portfolio: a.targets.steady_portfolio,
            agreed_fte: a.capacity.counsellors_fte,
            portfolio_min: a.capacity.portfolio_min,
            portfolio_max: a.capacity.portfolio_max,
        }
    }
}

/// An average over `persons`, published only when enough persons back it.
fn average(days: i64, persons: i64, threshold: u64) -> Option<f64> {
    (count(persons) >= threshold && persons > 0).then(|| days as f64 / persons as f64)
}

/// Entries and their delays summed over some months.
#[derive(Debug, Clone, Copy, Default)]
struct DelaySums {
    entries: i64,
    referral_to_entry: i64,
    /// Entries with a diagnosis date, which the two legs are averaged over.
    diagnosed: i64,
    referral_to_diagnosis: i64,
    diagnosis_to_entry: i64,
}

impl DelaySums {
    /// One pass over the counts, by month.
    fn by_month(cube: &BTreeMap<CubeKey, i64>) -> BTreeMap<&str, DelaySums> {
        let mut out: BTreeMap<&str, DelaySums> = BTreeMap::new();
        for (k, n) in cube {
            let mut add = |field: fn(&mut DelaySums) -> &mut i64| {
                *field(out.entry(k.month.as_str()).or_default()) += n;
            };
            match (k.measure.as_str(), k.key.as_str()) {
                ("entries", "") => add(|s| &mut s.entries),
                ("delay_days", "referral_to_entry") => add(|s| &mut s.referral_to_entry),
                ("delay_days", "diagnosed") => add(|s| &mut s.diagnosed),
                ("delay_days", "referral_to_diagnosis") => add(|s| &mut s.referral_to_diagnosis),
                ("delay_days", "diagnosis_to_entry") => add(|s| &mut s.diagnosis_to_entry),
                _ => {}
            }
        }
        out
    }

    fn within(by_month: &BTreeMap<&str, DelaySums>, keep: impl Fn(&str) -> bool) -> DelaySums {
        let mut total = DelaySums::default();
        for (_, s) in by_month.iter().filter(|(m, _)| keep(m)) {
            total.entries += s.entries;
            total.referral_to_entry += s.referral_to_entry;
            total.diagnosed += s.diagnosed;
            total.referral_to_diagnosis += s.referral_to_diagnosis;
            total.diagnosis_to_entry += s.diagnosis_to_entry;
        }
        total
    }
}

/// Entry delays per month, quarter and year; the entries are the entries
/// table's published totals, the averages need enough persons behind them.
fn delay_figures(
    tables: &[(String, Published)],
    by_month: &BTreeMap<&str, DelaySums>,
    agreement: &AgreementRules,
    threshold: u64,
) -> Vec<DelayFigure> {
    let Some((_, entries)) = tables.iter().find(|(n, _)| n == "entries") else {
        return vec![];
    };
    let mut out = vec![];
    for heading in &entries.columns {
        if heading.level == TOTAL {
            continue;
        }
        let label = &heading.label;
        let s = DelaySums::within(by_month, |month| match heading.level.as_str() {
            "month" => month == label,
            "quarter" => statistics::quarter(month) == *label,
            _ => statistics::year(month) == *label,
        });
        let year: Option<i32> = statistics::year(label).parse().ok();
        out.push(DelayFigure {
            period: label.clone(),
            level: heading.level.clone(),
            entries: Cell {
                key: label.clone(),
                count: entries.get(TOTAL, label),
            },
            referral_to_entry: average(s.referral_to_entry, s.entries, threshold),
            referral_to_diagnosis: average(s.referral_to_diagnosis, s.diagnosed, threshold),
            diagnosis_to_entry: average(s.diagnosis_to_entry, s.diagnosed, threshold),
            target_days: agreement
                .entry_delay_targets
                .iter()
                .find(|(y, _)| Some(*y) == year)
                .map(|(_, d)| *d),
        });
    }
    out
}

fn staffing(
    snapshots: &[(Indicators, bool)],
    tables: &[(String, Published)],
    agreement: &AgreementRules,
    threshold: u64,
) -> Staffing {
    let fte = snapshots
        .iter()
        .map(|(i, _)| i.counsellor_fte_per_mille)
        .sum::<u64>() as f64
        / 1000.0;
    let find = |name: &str| tables.iter().find(|(n, _)| n == name).map(|(_, p)| p);
    let in_progress = find("in_progress").and_then(|p| p.get(TOTAL, TOTAL));
    let per = |n: Option<u64>| n.filter(|_| fte > 0.0).map(|n| n as f64 / fte);
    let entries_by_year = find("entries")
        .map(|p| {
            p.columns_of("year")
                .into_iter()
                .map(|j| {
                    let year = p.columns[j].label.clone();
                    let n = p.get(TOTAL, &year);
                    YearFigure {
                        entries: Cell {
                            key: year.clone(),
                            count: n,
                        },
                        per_counsellor: per(n),
                        target_per_counsellor: agreement.entries_per_counsellor_per_year,
                        year,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let participants = find("entries").and_then(|p| p.get(TOTAL, TOTAL));
    Staffing {
        counsellors_fte: fte,
        agreed_fte: agreement.agreed_fte,
        // An average over too few persons would say too much about them.
        average_portfolio: per(in_progress.filter(|n| *n >= threshold)),
        portfolio_min: agreement.portfolio_min,
        portfolio_max: agreement.portfolio_max,
        steady_portfolio_target: agreement.steady_portfolio,
        entries_by_year,
        participants: Cell {
            key: "participants".into(),
            count: participants,
        },
        participants_target: agreement.participants,
    }
}

/// The ESF indicators, each read from the one table that publishes it.
fn esf_figures(tables: &[(String, Published)]) -> Vec<EsfFigure> {
    let find = |name: &str| tables.iter().find(|(n, _)| n == name).map(|(_, p)| p);
    let from = |table: &str, key: &str, code: &str, label: &str| EsfFigure {
        code: code.to_owned(),
        label: label.to_owned(),
        count: Cell {
            key: code.to_owned(),
            count: find(table).and_then(|p| p.get(TOTAL, key)),
        },
    };
    let participants = "esf_participants.by_month";
    vec![
        from(participants, "participants", "participants", "Participants"),
        from(
            participants,
            "CO01_unemployed",
            "CO01",
            "Chômeurs, y compris de longue durée",
        ),
        from(
            participants,
            "CO02_long_term_unemployed",
            "CO02",
            "Chômeurs de longue durée",
        ),
        from(participants, "CO03_inactive", "CO03", "Inactifs"),
        from(participants, "CO06_below_25", "CO06", "Moins de 25 ans"),
        from(participants, "CO07_above_54", "CO07", "Plus de 54 ans"),
        from(participants, "CO09_isced_0_2", "CO09", "Niveau CITE 1 ou 2"),
        from(participants, "CO10_isced_3_4", "CO10", "Niveau CITE 3 ou 4"),
        from(participants, "CO11_isced_5_8", "CO11", "Niveau CITE 5 à 8"),
        from(
            participants,
            "CO12_jobless_household",
            "CO12",
            "Ménage sans emploi",
        ),
        from(
            participants,
            "CO14_single_adult_with_children",
            "CO14",
            "Adulte seul avec enfants à charge",
        ),
        from(
            "disability.by_month",
            "declared",
            "CO16",
            "Participants handicapés",
        ),
        from(
            "esf_results.by_month",
            "CR01_job_searching",
            "CR01",
            "En recherche d'emploi à la sortie",
        ),
        from(
            "exits.by_month",
            "training",
            "CR02",
            "En formation à la sortie",
        ),
        from(
            "esf_results.by_month",
            "CR03_qualification",
            "CR03",
            "Qualifiés à la sortie",
        ),
        from("exits.by_month", "job", "CR04", "En emploi à la sortie"),
        from(
            "follow_up.by_month",
            "in_employment",
            "CR06",
            "En emploi six mois après la sortie",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(measure: &str, month: &str, office: &str, network: &str, key: &str) -> CubeKey {
        CubeKey {
            measure: measure.into(),
            month: month.into(),
            office: office.into(),
            network: network.into(),
            key: key.into(),
        }
    }

    fn source(source: Institution, counts: Vec<(CubeKey, i64)>, fte: u64) -> Indicators {
        Indicators {
            source,
            computed_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            counts,
            counsellor_fte_per_mille: fte,
        }
    }

    fn rules() -> AgreementRules {
        AgreementRules {
            refusal_reasons: vec!["capacity".into(), "criteria_not_met".into()],
            entry_delay_targets: vec![(2020, 30), (2021, 21)],
            entries_per_counsellor_per_year: Some(127),
            agreed_fte: 2.0,
            portfolio_min: 70,
            portfolio_max: 100,
            ..AgreementRules::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_100, 0).expect("valid")
    }

    #[test]
    fn sources_are_combined_before_secrecy_is_applied() {
        // Each source alone has too few training exits to publish; together 12.
        let emploi = source(
            Institution::Emploi,
            vec![
                (key("exits", "2020-03", "A1", "emploi", "training"), 6),
                (key("exits", "2020-03", "A1", "emploi", "job"), 15),
                (key("entries", "2020-01", "A1", "emploi", ""), 40),
                (
                    key("delay_days", "2020-01", "A1", "emploi", "referral_to_entry"),
                    800,
                ),
            ],
            2000,
        );
        let social = source(
            Institution::Social,
            vec![
                (key("exits", "2020-03", "A1", "emploi", "training"), 6),
                (key("exits", "2020-03", "A1", "emploi", "other"), 13),
            ],
            0,
        );
        let d = Dashboard::publish(&[(emploi, true), (social, false)], &rules(), 11, now());
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
        assert!(!d.sources[1].fresh);
        // 40 entries in 2020 for 2 counsellors against 127 each.
        let year = &d.staffing.entries_by_year[0];
        assert_eq!(
            (year.year.as_str(), year.per_counsellor),
            ("2020", Some(20.0))
        );
        assert_eq!(year.target_per_counsellor, Some(127));
    }

    #[test]
    fn every_measure_is_published_by_month_quarter_year_office_and_network() {
        let mut counts = vec![];
        for (month, n) in [("2020-01", 12), ("2020-02", 15), ("2020-04", 3)] {
            counts.push((key("referrals", month, "A1", "emploi", ""), n));
            counts.push((key("referrals", month, "MDS-1", "social", ""), n + 10));
        }
        counts.push((key("referrals", "2020-04", "A2", "emploi", ""), 20));
        let d = Dashboard::publish(
            &[(source(Institution::Emploi, counts, 0), true)],
            &rules(),
            11,
            now(),
        );
        let (_, t) = d
            .tables
            .iter()
            .find(|(n, _)| n == "referrals")
            .expect("table");
        // The gap month is there, at zero; quarters and years are headings.
        assert_eq!(t.get("A1", "2020-03"), Some(0));
        assert_eq!(t.get("social", "2020-T1"), Some(22 + 25));
        assert_eq!(t.get("emploi", "2020"), Some(50));
        assert_eq!(t.get("emploi", "2020-04"), Some(23));
        assert_eq!(t.get("A1", "2020-04"), None, "3 < 11");
        // A1's year is published, so its first quarter hides with April's.
        assert_eq!(t.get("A1", "2020-T1"), None);
        assert!(t.rebuildable().is_empty());
        let networks: Vec<_> = d.referrals_by_network.iter().map(|c| c.count).collect();
        assert_eq!(networks, vec![Some(50), Some(60)]);
    }

    #[test]
    fn delays_are_set_against_the_years_target_and_need_enough_persons() {
        let counts = vec![
            (key("entries", "2020-05", "A1", "emploi", ""), 20),
            (
                key("delay_days", "2020-05", "A1", "emploi", "referral_to_entry"),
                500,
            ),
            (
                key("delay_days", "2020-05", "A1", "emploi", "diagnosed"),
                20,
            ),
            (
                key(
                    "delay_days",
                    "2020-05",
                    "A1",
                    "emploi",
                    "referral_to_diagnosis",
                ),
                200,
            ),
            (
                key(
                    "delay_days",
                    "2020-05",
                    "A1",
                    "emploi",
                    "diagnosis_to_entry",
                ),
                300,
            ),
            (key("entries", "2021-02", "A1", "emploi", ""), 4),
            (
                key("delay_days", "2021-02", "A1", "emploi", "referral_to_entry"),
                40,
            ),
        ];
        let d = Dashboard::publish(
            &[(source(Institution::Emploi, counts, 0), true)],
            &rules(),
            11,
            now(),
        );
        let year = |y: &str| {
            d.delays
                .iter()
                .find(|f| f.period == y && f.level == "year")
                .expect("year")
        };
        assert_eq!(year("2020").referral_to_entry, Some(25.0));
        assert_eq!(year("2020").diagnosis_to_entry, Some(15.0));
        assert_eq!(year("2020").target_days, Some(30));
        // Four entries in 2021: no average, and the count is masked.
        assert_eq!(year("2021").referral_to_entry, None);
        assert_eq!(year("2021").entries.count, None);
        assert_eq!(year("2021").target_days, Some(21));
        assert!(
            d.delays
                .iter()
                .any(|f| f.level == "quarter" && f.period == "2020-T2")
        );
    }

    #[test]
    fn refusals_are_grouped_and_read_from_the_same_table_as_the_outcomes() {
        let counts = vec![
            (
                key("referral_outcomes", "2020-02", "A1", "emploi", "accepted"),
                40,
            ),
            (
                key(
                    "referral_outcomes",
                    "2020-02",
                    "A1",
                    "emploi",
                    "refused:capacity",
                ),
                12,
            ),
            (
                key(
                    "referral_outcomes",
                    "2020-02",
                    "A1",
                    "emploi",
                    "refused:criteria_not_met",
                ),
                14,
            ),
        ];
        let d = Dashboard::publish(
            &[(source(Institution::Social, counts, 0), true)],
            &rules(),
            11,
            now(),
        );
        let outcomes: Vec<_> = d
            .referral_outcomes
            .iter()
            .map(|c| (c.key.as_str(), c.count))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("accepted", Some(40)),
                ("refused", Some(26)),
                ("expired", Some(0))
            ]
        );
        let reasons: Vec<_> = d
            .refusals_by_reason
            .iter()
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(reasons, vec!["capacity", "criteria_not_met"]);
    }
}
