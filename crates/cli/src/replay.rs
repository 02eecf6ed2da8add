//! A replay's set-up: an agreement's three services (in this process or
//! each in its own), the simulated year they run on, and the year's people.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use passerelle_contract::v1::GetDashboardResponse;
use passerelle_domain::agreement::Agreement;

use crate::demo::{self, Tally};
use crate::stack::{Databases, Stack, StackOptions, clock_file};
use crate::timeline::SimulatedYear;

/// A shipped agreement by id, or an agreement file: its id, the file, its rules.
pub fn load_agreement(agreement: &str) -> anyhow::Result<(String, Option<PathBuf>, Agreement)> {
    match passerelle_domain::agreement::shipped(agreement) {
        Ok(rules) => Ok((agreement.to_owned(), None, rules)),
        Err(_) => {
            let text = std::fs::read_to_string(agreement).with_context(|| {
                format!("{agreement} is neither a shipped agreement (ille-et-vilaine-2023, seine-et-marne-2020) nor a readable agreement file")
            })?;
            let rules = Agreement::from_toml(&text)?;
            Ok((rules.id.clone(), Some(PathBuf::from(agreement)), rules))
        }
    }
}

/// Where a replay's year starts: the demo's dates for the shipped
/// agreements, the first day of the term for any other.
pub fn start_of_year(rules: &Agreement) -> DateTime<Utc> {
    let day = match rules.id.as_str() {
        "ille-et-vilaine-2023" => chrono::NaiveDate::from_ymd_opt(2023, 9, 4),
        "seine-et-marne-2020" => chrono::NaiveDate::from_ymd_opt(2020, 1, 6),
        _ => None,
    }
    .unwrap_or(rules.term.starts_on);
    day.and_hms_opt(9, 0, 0).unwrap_or_default().and_utc()
}

/// What a replay runs.
#[derive(Debug, Clone)]
pub struct Replay {
    /// A shipped agreement's id, or the id of the file's.
    pub agreement: String,
    pub agreement_file: Option<PathBuf>,
    pub rules: Agreement,
    pub people: u64,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub databases: Databases,
    /// Each service in its own process, started with this executable's
    /// `serve` command.
    pub processes: Option<PathBuf>,
    /// Scarce places taken in turn (see `demo::run`): same seed, same figures.
    pub turns: bool,
    /// The committee's secrecy threshold (1 compares every count exactly).
    pub min_cell_size: u64,
}

impl Replay {
    pub fn new(agreement: &str, people: u64, seed: u64, data_dir: PathBuf) -> anyhow::Result<Self> {
        let (agreement, agreement_file, rules) = load_agreement(agreement)?;
        Ok(Replay {
            agreement,
            agreement_file,
            rules,
            people,
            seed,
            data_dir,
            databases: Databases::Sqlite,
            processes: None,
            turns: false,
            min_cell_size: 11,
        })
    }

    /// The three services on the first day of the year.
    pub async fn start(&self) -> anyhow::Result<(Stack, SimulatedYear)> {
        let options = StackOptions {
            data_dir: self.data_dir.clone(),
            databases: self.databases.clone(),
            addresses: None,
            quick_retries: true,
            min_cell_size: self.min_cell_size,
            tls: false,
            agreement: self.agreement.clone(),
            agreement_file: self.agreement_file.clone(),
            agreement_renewals: 0,
            limits: Default::default(),
            processes: self.processes.clone(),
        };
        let clock = SimulatedYear::new(
            start_of_year(&self.rules),
            self.processes.as_ref().map(|_| clock_file(&self.data_dir)),
        );
        let stack = Stack::start(options, Arc::new(clock.clone())).await?;
        Ok((stack, clock))
    }

    /// The year's people through the running services, then the committee's dashboard.
    pub async fn run(
        &self,
        stack: &Stack,
        clock: &SimulatedYear,
    ) -> anyhow::Result<(Tally, GetDashboardResponse)> {
        let tally = demo::run(
            stack,
            clock,
            &self.rules,
            self.people,
            self.seed,
            self.turns,
        )
        .await?;
        let dashboard = demo::dashboard(stack).await?;
        Ok((tally, dashboard))
    }
}
