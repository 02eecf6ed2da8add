//! `passerelle`: run the three services locally, play the demo scenario, mint
//! development tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use passerelle_cli::replay::{Replay, load_agreement};
use passerelle_cli::stack::{
    DEV_TOKEN_TTL_SECONDS, Databases, INSTITUTIONS, Stack, StackOptions, dev_signer,
};
use passerelle_cli::{audit, demo, fault, register, report};
use passerelle_domain::{Institution, Role, SystemClock};
use passerelle_runtime::config::audience_of;
use passerelle_runtime::server::termination_signal;

#[derive(Debug, Parser)]
#[command(
    name = "passerelle",
    about = "Passerelle: joint employment and social support, across an enforced GDPR boundary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the three services on embedded SQLite in a fresh directory, run a
    /// realistic scenario and print the steering committee's indicators.
    Demo {
        /// How many people go through the scenario.
        #[arg(long, default_value_t = 300)]
        people: u64,
        /// Seed of the synthetic scenario (same seed, same run).
        #[arg(long, default_value_t = 35)]
        seed: u64,
        /// Keep the data here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the committee's reports are written (one folder per agreement).
        #[arg(long, default_value = "passerelle-report")]
        report_dir: PathBuf,
    },
    /// The whole year's flow of N synthetic people (every step of the case's
    /// life, both networks, the agreement's rules) through the three services
    /// on a simulated clock, each day's steps side by side; ends with the
    /// committee's indicators and the throughput achieved.
    Replay {
        /// How many people arrive over the year.
        #[arg(long, default_value_t = 10_000)]
        people: u64,
        #[command(flatten)]
        year: YearArgs,
        /// Each service in its own process (`passerelle serve`), on a clock
        /// shared through a file; prints each one's peak memory.
        #[arg(long)]
        processes: bool,
        /// Steps competing for a scarce place (a portfolio's last one, an
        /// office's quota) take turns in the people's order: same seed, same
        /// figures, at some cost in speed.
        #[arg(long)]
        turns: bool,
    },
    /// The crash test: the replay twice with each service in its own
    /// process, undisturbed then with services killed (SIGKILL) at seeded
    /// moments and restarted; the committee's figures must end equal (every
    /// count, no secrecy) and both audit chains verify. Exits with 1 otherwise.
    Fault {
        #[arg(long, default_value_t = 300)]
        people: u64,
        /// How many kills in the disturbed run.
        #[arg(long, default_value_t = 5)]
        kills: u32,
        /// How long (seconds) the service struck second stays down (the
        /// replay's calls wait up to 300 s for a service).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=240))]
        outage: u64,
        #[command(flatten)]
        year: YearArgs,
        /// Run on PostgreSQL: a server where fresh databases may be created
        /// for each run, e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Run one service, as its own binary does (`passerelle-emploi` …):
    /// settings from defaults, then --config FILE, then PASSERELLE_* variables.
    Serve {
        /// emploi, social or pilotage.
        institution: String,
        /// The rest is the service binary's own arguments (--config FILE, --check-config).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write the steering committee's report (HTML with charts, and CSV)
    /// from a running steering service.
    Report {
        /// The steering service.
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        pilotage: String,
        /// The agreement the services run under.
        #[arg(long, default_value = "ille-et-vilaine-2023")]
        agreement: String,
        /// Development keys (as `passerelle up` made them).
        #[arg(long, default_value = ".passerelle")]
        data_dir: PathBuf,
        #[arg(long, default_value = "passerelle-report")]
        out: PathBuf,
    },
    /// Start the employment (:50051), social (:50052) and steering (:50053)
    /// services locally and serve until interrupted.
    Up {
        /// Keys and SQLite files live here.
        #[arg(long, default_value = ".passerelle")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// TLS everywhere (mutual between services) with development
        /// certificates under DATA_DIR/tls; health stays in plaintext on port + 100.
        #[arg(long)]
        tls: bool,
        /// The agreement to run: a shipped one (ille-et-vilaine-2023,
        /// seine-et-marne-2020) or an agreement file of the same form.
        #[arg(
            long,
            env = "PASSERELLE_AGREEMENT",
            default_value = "ille-et-vilaine-2023"
        )]
        agreement: String,
        /// Express renewals of the agreement signed so far: each extends its
        /// term, within what the agreement allows.
        #[arg(long, default_value_t = 0)]
        renewals: u32,
    },
    /// Write an institution's record of processing activities (GDPR art. 30)
    /// from the contract and the agreement, with the crossings its audit
    /// log shows over the last year when a database is given.
    Register {
        /// emploi or social.
        #[arg(long)]
        institution: String,
        /// A shipped agreement or an agreement file.
        #[arg(long, default_value = "ille-et-vilaine-2023")]
        agreement: String,
        /// markdown, html or json.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// The institution's database (its audit log), e.g. sqlite://.passerelle/emploi.db.
        #[arg(long)]
        database: Option<String>,
        /// Write here instead of the standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase (or, with --dry-run, list) what the agreement's retention lets
    /// go: each case in its own transaction with its audit record, so a run
    /// stopped at any point and run again ends in the same state. The
    /// services also purge on their own, at each housekeeping pass.
    Purge {
        /// emploi or social.
        #[arg(long)]
        institution: String,
        /// The institution's database, e.g. sqlite://.passerelle/emploi.db.
        #[arg(long)]
        database: String,
        /// A shipped agreement or an agreement file.
        #[arg(long, default_value = "ille-et-vilaine-2023")]
        agreement: String,
        /// List what would go, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The audit log's tools.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print a token signed by the local development issuer.
    Token {
        /// emploi, social or pilotage.
        #[arg(long)]
        institution: String,
        /// counsellor, social_worker, coordinator, association_worker, steering or dpo.
        #[arg(long)]
        role: String,
        /// The agent's identifier (the token's `sub`).
        #[arg(long)]
        subject: String,
        /// The service to call (emploi, social, pilotage); defaults to the agent's own.
        #[arg(long)]
        audience: Option<String>,
        #[arg(long, default_value = ".passerelle")]
        data_dir: PathBuf,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = DEV_TOKEN_TTL_SECONDS)]
        ttl: u64,
        /// The approved association an association worker refers for (claim `org`).
        #[arg(long)]
        org: Option<String>,
        /// The office a coordinator acts for (claim `office`): they reach that office's cases.
        #[arg(long)]
        office: Option<String>,
    },
}

/// Whose year a replay runs, and where its data goes.
#[derive(Debug, clap::Args)]
struct YearArgs {
    /// A shipped agreement id or an agreement file.
    #[arg(long, default_value = "ille-et-vilaine-2023")]
    agreement: String,
    /// Seed of the synthetic people (same seed, same people).
    #[arg(long, default_value_t = 35)]
    seed: u64,
    /// Keep the data (and the services' logs) here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check a database's audit chain offline and, given the partner's
    /// database, against the heads the partner keeps of it. Exits with 1
    /// when a record differs, naming the first one.
    Verify {
        /// The institution's database, e.g. sqlite://.passerelle/emploi.db.
        #[arg(long)]
        database: String,
        /// The partner's database, which keeps this log's heads.
        #[arg(long)]
        partner_database: Option<String>,
    },
}

/// Starts the three services of `replay`, runs its people through their
/// year and prints the committee's indicators.
#[allow(clippy::print_stdout)]
async fn replay_and_show(
    replay: &Replay,
) -> anyhow::Result<(
    Stack,
    demo::Tally,
    passerelle_contract::v1::GetDashboardResponse,
)> {
    let (stack, clock) = replay.start().await?;
    println!(
        "\n{} — three services on 127.0.0.1 (emploi {}, social {}, pilotage {}{}), data in {}",
        replay.rules.name,
        stack.addresses[0],
        stack.addresses[1],
        stack.addresses[2],
        if replay.processes.is_some() {
            ", each in its own process"
        } else {
            ""
        },
        replay.data_dir.display()
    );
    println!(
        "Running {} people through referral, consent, shared diagnosis, entry and exit…",
        replay.people
    );
    let (tally, dashboard) = replay.run(&stack, &clock).await?;
    print!("{}", demo::render(&dashboard, &tally, &replay.rules)?);
    Ok((stack, tally, dashboard))
}

/// What a run of the demo, a replay or the crash test needs: quiet logs
/// (errors only, unless `RUST_LOG` says otherwise) and where its data goes:
/// `data_dir`, or a temporary directory removed at the end.
fn scratch(
    name: &str,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(
    passerelle_telemetry::TelemetryGuard,
    tempfile::TempDir,
    PathBuf,
)> {
    let telemetry = passerelle_telemetry::init(passerelle_telemetry::TelemetryConfig::from_env(
        name,
        passerelle_telemetry::Format::Text,
        "error",
    ));
    let temp = tempfile::tempdir()?;
    let root = data_dir.unwrap_or_else(|| temp.path().to_path_buf());
    Ok((telemetry, temp, root))
}

fn institution(text: &str) -> anyhow::Result<Institution> {
    Institution::from_code(text)
        .with_context(|| format!("unknown institution {text}: emploi, social or pilotage"))
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Report {
            pilotage,
            agreement,
            data_dir,
            out,
        } => {
            let rules = passerelle_domain::agreement::shipped(&agreement)?;
            let token = dev_signer(&data_dir)?.sign(
                "copil",
                Institution::Pilotage,
                Role::Steering,
                &audience_of(Institution::Pilotage),
                300,
            )?;
            let mut request = tonic::Request::new(passerelle_contract::v1::GetDashboardRequest {});
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let channel = tonic::transport::Channel::from_shared(pilotage)?
                .connect()
                .await?;
            let answer =
                passerelle_contract::v1::pilotage_service_client::PilotageServiceClient::new(
                    channel,
                )
                .max_decoding_message_size(passerelle_contract::MAX_AGGREGATES_MESSAGE)
                .get_dashboard(request)
                .await?
                .into_inner();
            let page = report::write(&out, &answer, &rules)?;
            println!("{}", page.display());
        }
        Command::Demo {
            people,
            seed,
            data_dir,
            report_dir,
        } => {
            let (_telemetry, _temp, root) = scratch("passerelle-demo", data_dir)?;
            // Each agreement in its own years, with its own three services and databases.
            for agreement in ["ille-et-vilaine-2023", "seine-et-marne-2020"] {
                let replay = Replay::new(agreement, people, seed, root.join(agreement))?;
                let began = std::time::Instant::now();
                let (stack, _tally, dashboard) = replay_and_show(&replay).await?;
                let page = report::write(&report_dir.join(agreement), &dashboard, &replay.rules)?;
                println!("Rapport du comité : {}", page.display());
                for file in
                    demo::dpo_documents(&stack, &report_dir.join(agreement).join("rgpd")).await?
                {
                    println!(
                        "Pour le délégué à la protection des données : {}",
                        file.display()
                    );
                }
                println!("Done in {:.1} s.", began.elapsed().as_secs_f64());
                stack.shutdown().await?;
            }
        }
        Command::Replay {
            people,
            year:
                YearArgs {
                    agreement,
                    seed,
                    data_dir,
                },
            processes,
            turns,
        } => {
            let (_telemetry, _temp, root) = scratch("passerelle-replay", data_dir)?;
            let mut replay = Replay::new(&agreement, people, seed, root)?;
            replay.data_dir = replay.data_dir.join(&replay.agreement);
            replay.turns = turns;
            if processes {
                replay.processes = Some(std::env::current_exe()?);
            }
            let began = std::time::Instant::now();
            let (stack, tally, _) = replay_and_show(&replay).await?;
            let seconds = began.elapsed().as_secs_f64();
            println!(
                "{people} personnes en {seconds:.1} s : {:.0} personnes/s, {:.0} appels gRPC/s ({} appels, plus {} renvoyés parce que le partenaire n'avait pas encore reçu le message attendu). Cible : 100 000 personnes en moins de 60 s ({:.0} personnes/s).",
                people as f64 / seconds,
                tally.rpc_calls as f64 / seconds,
                tally.rpc_calls,
                tally.not_yet_calls,
                100_000.0 / 60.0
            );
            for institution in INSTITUTIONS {
                if let Some(pid) = stack.process_id(institution) {
                    let (_, peak) = passerelle_cli::stack::resident_mib(Some(pid));
                    println!(
                        "passerelle-{institution}: {peak:.0} MiB de mémoire résidente au plus haut"
                    );
                }
            }
            stack.shutdown().await?;
        }
        Command::Fault {
            people,
            kills,
            outage,
            year:
                YearArgs {
                    agreement,
                    seed,
                    data_dir,
                },
            postgres,
        } => {
            let (_telemetry, _temp, root) = scratch("passerelle-fault", data_dir)?;
            let replay = Replay::new(&agreement, people, seed, root.clone())?;
            println!(
                "{people} people, seed {seed}, {} on {}: once undisturbed, once with {kills} services killed (SIGKILL; every fourth SIGTERM) and restarted; data and logs in {}",
                replay.rules.name,
                if postgres.is_some() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                },
                root.display()
            );
            let began = std::time::Instant::now();
            let outcome = fault::run(
                &replay,
                std::env::current_exe()?,
                kills,
                outage * 1000,
                postgres.as_deref(),
            )
            .await?;
            for kill in &outcome.kills_done {
                println!(
                    "{} passerelle-{} on day {} ({} ms into its traffic){}",
                    if kill.graceful {
                        "stopped (SIGTERM)"
                    } else {
                        "killed (SIGKILL)"
                    },
                    kill.institution,
                    kill.day,
                    kill.after_ms,
                    match kill.down_ms {
                        0 => String::new(),
                        ms => format!(", down {:.0} s", ms as f64 / 1000.0),
                    }
                );
            }
            println!(
                "undisturbed: {} entries, {} calls sent again; with kills: {} entries, {} calls sent again (no service answered); {:.1} s",
                outcome.undisturbed.entered,
                outcome.undisturbed.retried_calls,
                outcome.disturbed.entered,
                outcome.disturbed.retried_calls,
                began.elapsed().as_secs_f64()
            );
            match &outcome.difference {
                None => println!("The committee's figures are equal, every count of them."),
                Some(difference) => println!("The committee's figures differ:\n{difference}"),
            }
            for chain in &outcome.broken_chains {
                println!("Audit chain broken: {chain}");
            }
            if outcome.broken_chains.is_empty() {
                println!(
                    "Both audit chains verify, each against its partner's heads, in both runs."
                );
            }
            for institution in &outcome.miscounted {
                println!("Counts drifted: {institution}");
            }
            if outcome.miscounted.is_empty() {
                println!("Each institution's counts equal a recount of its cases, in both runs.");
            }
            if !outcome.passed() {
                std::process::exit(1);
            }
        }
        Command::Serve { institution, args } => {
            passerelle_cli::stack::serve(&institution, args).await?;
        }
        Command::Up {
            data_dir,
            host,
            tls,
            agreement,
            renewals,
        } => {
            let (agreement, agreement_file, rules) = load_agreement(&agreement)?;
            let telemetry =
                passerelle_telemetry::init(passerelle_telemetry::TelemetryConfig::from_env(
                    "passerelle-local",
                    passerelle_telemetry::Format::Json,
                    "info",
                ));
            let addresses = [50051, 50052, 50053].map(|port| SocketAddr::new(host, port));
            let options = StackOptions {
                data_dir: data_dir.clone(),
                databases: Databases::Sqlite,
                addresses: Some(addresses),
                quick_retries: false,
                min_cell_size: 11,
                tls,
                agreement,
                agreement_file,
                agreement_renewals: renewals,
                limits: Default::default(),
                processes: None,
            };
            let stack = Stack::start(options, Arc::new(SystemClock)).await?;
            let ends_on = rules.term.ends_after(renewals);
            if ends_on < chrono::Utc::now().date_naive() {
                eprintln!(
                    "Note: agreement {} ended on {ends_on}: new referrals and entries are refused. Run an agreement in force (--agreement FILE) or record its renewals (--renewals N).",
                    rules.id
                );
            }
            eprintln!(
                "Passerelle is up: emploi {}, social {}, pilotage {} (data in {}).",
                addresses[0],
                addresses[1],
                addresses[2],
                data_dir.display()
            );
            eprintln!(
                "Get a token with: passerelle token --institution social --role social_worker --subject sw-1"
            );
            termination_signal().await;
            eprintln!("Stopping…");
            stack.shutdown().await?;
            telemetry.shutdown().await;
        }
        Command::Register {
            institution: inst,
            agreement,
            format,
            database,
            out,
        } => {
            let inst = institution(&inst)?;
            let (_, _, rules) = load_agreement(&agreement)?;
            let document = register::write(inst, &rules, &format, database.as_deref()).await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, document)?;
                    println!("{}", path.display());
                }
                None => print!("{document}"),
            }
        }
        Command::Purge {
            institution: inst,
            database,
            agreement,
            dry_run,
        } => {
            let inst = institution(&inst)?;
            let (_, _, rules) = load_agreement(&agreement)?;
            let store = passerelle_storage::InstitutionStore::connect(&database, 2, inst).await?;
            let mut total = 0;
            loop {
                let batch = passerelle_casework::rights::purge(
                    &store,
                    &rules,
                    chrono::Utc::now(),
                    dry_run,
                    passerelle_casework::rights::PURGE_BATCH,
                )
                .await?;
                for c in &batch {
                    println!(
                        "{} {} case {} (ended {})",
                        if dry_run { "would erase" } else { "erased" },
                        if c.consents_only {
                            "the consent records of"
                        } else {
                            "the data of"
                        },
                        c.case_id,
                        c.ended_at.date_naive()
                    );
                }
                total += batch.len();
                if dry_run || batch.len() < passerelle_casework::rights::PURGE_BATCH {
                    break;
                }
            }
            println!("{total} case(s).");
        }
        Command::Audit {
            action:
                AuditAction::Verify {
                    database,
                    partner_database,
                },
        } => {
            let found = audit::verify(&database, partner_database.as_deref()).await?;
            print!("{found}");
            if !found.intact() {
                std::process::exit(1);
            }
        }
        Command::Token {
            institution: inst,
            role,
            subject,
            audience,
            data_dir,
            ttl,
            org,
            office,
        } => {
            let inst = institution(&inst)?;
            let role = Role::from_code(&role).with_context(|| format!("unknown role {role}"))?;
            if role == Role::Service {
                anyhow::bail!(
                    "the development issuer vouches for agents only: a service signs its own calls with its key (services refuse a service token from this issuer)"
                );
            }
            let audience = audience
                .as_deref()
                .map(institution)
                .transpose()?
                .unwrap_or(inst);
            let affiliation = passerelle_boundary::identity::Affiliation {
                organisation: org.as_deref(),
                office: office.as_deref(),
            };
            let token = dev_signer(&data_dir)?.sign_with(
                &subject,
                inst,
                role,
                affiliation,
                &audience_of(audience),
                ttl,
            )?;
            println!("{token}");
        }
    }
    Ok(())
}
