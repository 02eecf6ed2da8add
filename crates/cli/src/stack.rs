//! Three services wired together on one machine: development keys, one
//! configuration per service, each with its own database.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use passerelle_boundary::{KeyPair, Principals, Signer};
use passerelle_domain::{Clock, Institution, Role};
use passerelle_runtime::config::{
    DatabaseUrl, Endpoints, IssuerConfig, LimitsConfig, ServiceIdentityConfig, TlsConfig,
    audience_of,
};
use passerelle_runtime::{ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;

/// Issuer of the local development tokens (`passerelle token`).
pub const DEV_ISSUER: &str = "passerelle-dev";
/// Tokens minted for local use live this long.
pub const DEV_TOKEN_TTL_SECONDS: u64 = 12 * 3600;

pub const INSTITUTIONS: [Institution; 3] = [
    Institution::Emploi,
    Institution::Social,
    Institution::Pilotage,
];

/// Where each service's data goes.
#[derive(Debug, Clone)]
pub enum Databases {
    /// One SQLite file per service under the data directory.
    Sqlite,
    /// One PostgreSQL database per service: emploi, social, pilotage.
    Postgres([String; 3]),
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub data_dir: PathBuf,
    pub databases: Databases,
    /// Fixed addresses (emploi, social, pilotage), or port 0 for each.
    pub addresses: Option<[SocketAddr; 3]>,
    /// Fast retries for tests and demos; production defaults otherwise.
    pub quick_retries: bool,
    /// Statistical secrecy threshold of the steering service.
    pub min_cell_size: u64,
    /// TLS everywhere, mutual between services, with development certificates.
    pub tls: bool,
    /// The shipped agreement the three services run under…
    pub agreement: String,
    /// …or an agreement file of the same form, which wins.
    pub agreement_file: Option<PathBuf>,
    /// Express renewals of the agreement signed so far.
    pub agreement_renewals: u32,
    /// What one client may ask of a service at once.
    pub limits: LimitsConfig,
    /// Each service in its own process (this executable's `passerelle
    /// serve`), on a clock shared through a file of the data directory;
    /// all three in this process when `None`.
    pub processes: Option<PathBuf>,
}

fn issuer_of(institution: Institution) -> String {
    format!("passerelle-{}-service", institution.code())
}

fn key_path(dir: &Path, name: &str, public: bool) -> PathBuf {
    dir.join("keys").join(format!(
        "{name}.{}",
        if public { "pub.pem" } else { "key.pem" }
    ))
}

/// Creates the key pair `name` under `dir/keys` unless it exists.
pub fn ensure_key(dir: &Path, name: &str) -> anyhow::Result<()> {
    let private = key_path(dir, name, false);
    if private.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("keys"))?;
    let pair = KeyPair::generate()?;
    write_private(&private, &pair.private_pem)?;
    std::fs::write(key_path(dir, name, true), pair.public_pem)?;
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(pem.as_bytes())?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, pem)?;
        Ok(())
    }
}

/// A development CA and one certificate per service under `dir/tls`, unless
/// they exist. Each certificate names its institution twice, as a SPIFFE-style
/// URI and as a DNS name, and is valid for localhost and 127.0.0.1.
pub fn ensure_dev_certificates(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let tls = dir.join("tls");
    if tls.join("ca.pem").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&tls)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Passerelle development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    std::fs::write(tls.join("ca.pem"), ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    for institution in INSTITUTIONS {
        let code = institution.code();
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            format!("passerelle-{code}"),
        ])?;
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://passerelle.local/passerelle/{code}").try_into()?,
        ));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("passerelle-{code}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        std::fs::write(
            tls.join(format!("{code}.pem")),
            params.signed_by(&key, &issuer)?.pem(),
        )?;
        write_private(&tls.join(format!("{code}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

/// The development issuer's signer, for `passerelle token` and the demo.
pub fn dev_signer(data_dir: &Path) -> anyhow::Result<Signer> {
    let path = key_path(data_dir, "dev-issuer", false);
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no development key at {}: run `passerelle up` first",
            path.display()
        )
    })?;
    Ok(Signer::ed25519(DEV_ISSUER, &pem)?)
}

/// The configuration of one service of the local stack.
pub fn service_config(
    options: &StackOptions,
    institution: Institution,
    addresses: &[SocketAddr; 3],
) -> ServiceConfig {
    let dir = &options.data_dir;
    let index = INSTITUTIONS
        .iter()
        .position(|i| *i == institution)
        .unwrap_or(0);
    let scheme = if options.tls { "https" } else { "http" };
    let url = |i: usize| format!("{scheme}://{}", addresses[i]);
    // The development issuer vouches for agents only; each other service's
    // own key for that service only.
    let mut trusted_issuers = vec![IssuerConfig {
        issuer: DEV_ISSUER.into(),
        public_key_file: key_path(dir, "dev-issuer", true),
        institutions: INSTITUTIONS.into_iter().collect(),
        principals: Principals::Agents,
        max_token_lifetime_seconds: None,
    }];
    for other in INSTITUTIONS.into_iter().filter(|o| *o != institution) {
        trusted_issuers.push(IssuerConfig {
            issuer: issuer_of(other),
            public_key_file: key_path(dir, other.code(), true),
            institutions: BTreeSet::from([other]),
            principals: Principals::Service,
            max_token_lifetime_seconds: None,
        });
    }
    let mut config = ServiceConfig::defaults(institution);
    config.listen = addresses[index];
    config.database_url = DatabaseUrl(match &options.databases {
        Databases::Sqlite => format!(
            "sqlite://{}",
            dir.join(format!("{}.sqlite", institution.code())).display()
        ),
        Databases::Postgres(urls) => urls[index].clone(),
    });
    config.audience = audience_of(institution);
    config.trusted_issuers = trusted_issuers;
    config.service_identity = Some(ServiceIdentityConfig {
        issuer: issuer_of(institution),
        private_key_file: key_path(dir, institution.code(), false),
    });
    if options.tls {
        let tls = dir.join("tls");
        config.tls = Some(TlsConfig {
            cert_file: tls.join(format!("{}.pem", institution.code())),
            key_file: tls.join(format!("{}.key", institution.code())),
            ca_file: tls.join("ca.pem"),
            require_client_certificate: false,
            // Probes' plaintext port: next to the service's, or any free one.
            health_listen: Some(match addresses[index].port() {
                0 => SocketAddr::new(addresses[index].ip(), 0),
                port => SocketAddr::new(addresses[index].ip(), port + 100),
            }),
        });
    }
    config.endpoints = Endpoints {
        emploi: Some(url(0)),
        social: Some(url(1)),
    };
    config.steering.min_cell_size = options.min_cell_size;
    config.agreement = options.agreement.clone();
    config.agreement_file = options.agreement_file.clone();
    config.agreement_renewals = options.agreement_renewals;
    config.limits = options.limits.clone();
    if options.processes.is_some() {
        config.simulated_clock_file = Some(clock_file(dir));
    }
    if options.quick_retries {
        config.casework.outbox.poll_interval_ms = 100;
        config.casework.outbox.initial_backoff_ms = 50;
        config.casework.outbox.max_backoff_ms = 400;
        config.casework.outbox.request_timeout_ms = 2_000;
        config.casework.housekeeping_interval_ms = 100;
        config.casework.audit_anchor_interval_ms = 200;
        config.limits.refusal_window_ms = config.limits.refusal_window_ms.min(3_000);
    }
    config
}

/// Runs one service as its binary does (`passerelle-emploi` …), given its
/// institution's code and the binary's arguments: what a stack of processes
/// starts with `serve`. It ends with the process that started it (on Linux),
/// so a replay or a test stopped by any signal leaves no service behind.
pub async fn serve(
    institution: &str,
    args: impl IntoIterator<Item = String>,
) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    let institution = Institution::from_code(institution).with_context(|| {
        format!("unknown institution {institution}: emploi, social or pilotage")
    })?;
    let start: passerelle_runtime::binary::Start = match institution {
        Institution::Emploi => |c, l, k| Box::pin(passerelle_emploi::start(c, l, k)),
        Institution::Social => |c, l, k| Box::pin(passerelle_social::start(c, l, k)),
        Institution::Pilotage => |c, l, k| Box::pin(passerelle_pilotage::start(c, l, k)),
    };
    let program = format!("passerelle serve {}", institution.code());
    passerelle_runtime::binary::run_with_args(
        institution,
        start,
        std::iter::once(program).chain(args),
    )
    .await
}

/// A process's resident memory now and at its peak, in MiB (Linux; NaN
/// elsewhere): this one's, or the process `pid`'s.
pub fn resident_mib(pid: Option<u32>) -> (f64, f64) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Where the services of a stack of processes read the time.
pub fn clock_file(data_dir: &Path) -> PathBuf {
    data_dir.join("clock")
}

/// The three services, running.
#[derive(Debug)]
pub struct Stack {
    pub options: StackOptions,
    pub addresses: [SocketAddr; 3],
    pub clock: Arc<dyn Clock>,
    /// Taken out while a service stops or starts; never held across an await.
    handles: [std::sync::Mutex<Option<Running>>; 3],
    /// The ports taken at start, until each service's first start uses its own.
    reserved: [std::sync::Mutex<Option<TcpListener>>; 3],
    signer: Signer,
    /// Agents' tokens, kept as a client keeps its access token (signing one
    /// per call cost the replay's driver a twentieth of its time).
    tokens: KeptTokens,
}

/// Whose token, for which audience: institution, role, agent, audience.
type TokenFor = (Institution, Role, String, Institution);

/// Tokens handed out, each signed again once `kept_for` has gone.
#[derive(Debug)]
struct KeptTokens {
    kept_for: std::time::Duration,
    tokens: std::sync::Mutex<HashMap<TokenFor, (String, std::time::Instant)>>,
}

impl KeptTokens {
    fn new(kept_for: std::time::Duration) -> Self {
        KeptTokens {
            kept_for,
            tokens: Default::default(),
        }
    }

    /// The token kept for `key` if signed less than `kept_for` before `now`,
    /// else a new one from `sign`, kept from `now`.
    fn get_or_sign(
        &self,
        key: TokenFor,
        now: std::time::Instant,
        sign: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, signed_at)) = tokens.get(&key)
            && now.saturating_duration_since(*signed_at) < self.kept_for
        {
            return Ok(token.clone());
        }
        let token = sign()?;
        tokens.insert(key, (token.clone(), now));
        Ok(token)
    }
}

/// One service, in this process or in its own.
#[derive(Debug)]
enum Running {
    Here(ServiceHandle),
    Process(tokio::process::Child),
}

/// Starts a service in this process, on `reserved` if the stack holds its
/// port already, else on the configured address.
async fn start_one(
    config: ServiceConfig,
    clock: Arc<dyn Clock>,
    reserved: Option<TcpListener>,
) -> anyhow::Result<ServiceHandle> {
    let listener = match reserved {
        Some(listener) => listener,
        None => TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?,
    };
    match config.institution {
        Institution::Emploi => passerelle_emploi::start(config, listener, clock).await,
        Institution::Social => passerelle_social::start(config, listener, clock).await,
        Institution::Pilotage => passerelle_pilotage::start(config, listener, clock).await,
    }
}

impl Stack {
    pub async fn start(options: StackOptions, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.data_dir)?;
        if options.processes.is_some() {
            passerelle_runtime::simulated_clock::set_simulated_time(
                &clock_file(&options.data_dir),
                clock.now(),
            )?;
        }
        for name in ["dev-issuer", "emploi", "social", "pilotage"] {
            ensure_key(&options.data_dir, name)?;
        }
        if options.tls {
            ensure_dev_certificates(&options.data_dir)?;
        }
        // Three ports taken now so each service knows where the others are,
        // and kept until each service starts on its own: let go earlier, a
        // port could be given to another socket of the machine meanwhile.
        let mut reserved: [std::sync::Mutex<Option<TcpListener>>; 3] = Default::default();
        let addresses = match options.addresses {
            // Services of this process: every port bound before the first
            // service starts. A client or a service dialling one not
            // listening yet could otherwise be given that very port for its
            // own end (fixed ports may lie in the ephemeral range; Linux then
            // connects the socket to itself), and the service could not
            // listen on it.
            Some(fixed) if options.processes.is_none() => {
                for (address, kept) in fixed.iter().zip(&mut reserved) {
                    let listener = TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen on {address}"))?;
                    *kept
                        .get_mut()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
                }
                fixed
            }
            Some(fixed) => fixed,
            None => {
                let mut found = [SocketAddr::from(([127, 0, 0, 1], 0)); 3];
                for (slot, kept) in found.iter_mut().zip(&mut reserved) {
                    let listener = TcpListener::bind("127.0.0.1:0").await?;
                    *slot = listener.local_addr()?;
                    *kept
                        .get_mut()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
                }
                found
            }
        };
        let stack = Stack {
            signer: dev_signer(&options.data_dir)?,
            options,
            addresses,
            clock,
            handles: Default::default(),
            reserved,
            // Half a token's life: a kept one never nears its expiry.
            tokens: KeptTokens::new(std::time::Duration::from_secs(DEV_TOKEN_TTL_SECONDS / 2)),
        };
        for institution in INSTITUTIONS {
            stack.restart(institution).await?;
        }
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// Waits until every running service reports SERVING (its database is up).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        for institution in INSTITUTIONS {
            let Some(url) = self.health_url(institution) else {
                continue;
            };
            let channel = tonic::transport::Channel::from_shared(url)?.connect_lazy();
            let mut health = HealthClient::new(channel);
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if status
                    .as_ref()
                    .is_ok_and(|s| *s == ServingStatus::Serving as i32)
                {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{institution} did not become ready: {status:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn index(institution: Institution) -> usize {
        INSTITUTIONS
            .iter()
            .position(|i| *i == institution)
            .unwrap_or(0)
    }

    pub fn config(&self, institution: Institution) -> ServiceConfig {
        service_config(&self.options, institution, &self.addresses)
    }

    pub fn url(&self, institution: Institution) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addresses[Self::index(institution)])
    }

    /// Where health answers in plaintext: the service itself, or its
    /// probe listener when TLS is on.
    pub fn health_url(&self, institution: Institution) -> Option<String> {
        match self.slot(institution).as_ref()? {
            Running::Here(handle) => Some(format!(
                "http://{}",
                handle.health_addr.unwrap_or(handle.addr)
            )),
            // Processes of a stack run without TLS: health answers on the service's port.
            Running::Process(_) => Some(format!(
                "http://{}",
                self.addresses[Self::index(institution)]
            )),
        }
    }

    /// Stops one service (its database stays): a process is asked with
    /// SIGTERM and drains like a pod would.
    pub async fn stop(&self, institution: Institution) -> anyhow::Result<()> {
        let running = self.slot(institution).take();
        match running {
            Some(Running::Here(handle)) => handle.shutdown().await?,
            Some(Running::Process(mut child)) => {
                let pid = child
                    .id()
                    .and_then(|id| rustix::process::Pid::from_raw(id as i32));
                if let Some(pid) = pid {
                    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
                }
                child.wait().await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Kills one service's process with SIGKILL, as a crash or the OOM
    /// killer would: nothing drains, nothing is flushed.
    pub async fn kill(&self, institution: Institution) -> anyhow::Result<()> {
        let running = self.slot(institution).take();
        match running {
            Some(Running::Process(mut child)) => {
                child.start_kill()?;
                child.wait().await?;
                Ok(())
            }
            other => {
                *self.slot(institution) = other;
                anyhow::bail!("only a service in its own process can be killed")
            }
        }
    }

    fn slot(&self, institution: Institution) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.handles[Self::index(institution)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Another replica of `institution` in this process, on a port of its
    /// own and the same database: what a second pod adds (PostgreSQL; one
    /// audit chain and one relay at a time across replicas). The caller
    /// shuts it down.
    pub async fn start_replica(&self, institution: Institution) -> anyhow::Result<ServiceHandle> {
        anyhow::ensure!(
            matches!(self.options.databases, Databases::Postgres(_)),
            "replicas share a PostgreSQL database; SQLite has one writer"
        );
        let mut config = self.config(institution);
        config.listen = SocketAddr::new(config.listen.ip(), 0);
        start_one(config, self.clock.clone(), None).await
    }

    /// The process ids of the services in their own processes.
    pub fn process_id(&self, institution: Institution) -> Option<u32> {
        match self.slot(institution).as_ref()? {
            Running::Process(child) => child.id(),
            Running::Here(_) => None,
        }
    }

    /// Starts (or starts again) one service on its address.
    pub async fn restart(&self, institution: Institution) -> anyhow::Result<()> {
        self.stop(institution).await?;
        let reserved = self.reserved[Self::index(institution)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let running = match &self.options.processes {
            None => Running::Here(
                start_one(self.config(institution), self.clock.clone(), reserved).await?,
            ),
            // The process binds the port itself: the stack lets it go just before.
            Some(executable) => {
                drop(reserved);
                Running::Process(self.spawn(executable, institution)?)
            }
        };
        *self.slot(institution) = Some(running);
        self.wait_ready().await
    }

    /// `passerelle serve <institution>` with the stack's configuration of
    /// it, its logs appended to `<institution>.log` in the data directory.
    fn spawn(
        &self,
        executable: &Path,
        institution: Institution,
    ) -> anyhow::Result<tokio::process::Child> {
        let dir = &self.options.data_dir;
        let code = institution.code();
        let config_file = dir.join(format!("{code}.toml"));
        std::fs::write(&config_file, toml::to_string(&self.config(institution))?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{code}.log")))?;
        let mut command = tokio::process::Command::new(executable);
        command
            .args(["serve", code, "--config"])
            .arg(&config_file)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // The driver's death takes its services with it.
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        command
            .spawn()
            .with_context(|| format!("cannot start {} serve {code}", executable.display()))
    }

    /// A development token for an agent of an approved association, which
    /// acts under the Département's delegation.
    pub fn association_token(&self, agent: &str, association: &str) -> anyhow::Result<String> {
        Ok(self.signer.sign_for_organisation(
            agent,
            Institution::Social,
            Role::AssociationWorker,
            association,
            &audience_of(Institution::Social),
            DEV_TOKEN_TTL_SECONDS,
        )?)
    }

    /// A development token for an agent: the one handed out before while
    /// it has more than half its life ahead (tokens live on the wall clock,
    /// not the simulated one).
    pub fn token(
        &self,
        institution: Institution,
        role: Role,
        agent: &str,
        audience: Institution,
    ) -> anyhow::Result<String> {
        let key = (institution, role, agent.to_owned(), audience);
        self.tokens.get_or_sign(key, std::time::Instant::now(), || {
            Ok(self.signer.sign(
                agent,
                institution,
                role,
                &audience_of(audience),
                DEV_TOKEN_TTL_SECONDS,
            )?)
        })
    }

    /// A development token for a coordinator (or any agent) of `office`.
    pub fn token_for_office(
        &self,
        institution: Institution,
        role: Role,
        agent: &str,
        office: &str,
    ) -> anyhow::Result<String> {
        Ok(self.signer.sign_for_office(
            agent,
            institution,
            role,
            office,
            &audience_of(institution),
            DEV_TOKEN_TTL_SECONDS,
        )?)
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        for institution in INSTITUTIONS {
            self.stop(institution).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_for_its_key_until_its_time_is_up() {
        let kept = KeptTokens::new(std::time::Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        let key = |agent: &str| {
            (
                Institution::Social,
                Role::SocialWorker,
                agent.to_owned(),
                Institution::Social,
            )
        };
        let signed = std::cell::Cell::new(0);
        let sign = || {
            signed.set(signed.get() + 1);
            Ok(format!("token-{}", signed.get()))
        };
        let first = kept.get_or_sign(key("sw-1"), t0, sign).expect("signed");
        let again = std::time::Duration::from_secs(59);
        assert_eq!(
            kept.get_or_sign(key("sw-1"), t0 + again, sign)
                .expect("kept"),
            first
        );
        assert_eq!(signed.get(), 1, "a kept token is not signed again");
        assert_eq!(
            kept.get_or_sign(key("sw-2"), t0, sign).expect("signed"),
            "token-2"
        );
        let later = std::time::Duration::from_secs(60);
        assert_eq!(
            kept.get_or_sign(key("sw-1"), t0 + later, sign)
                .expect("renewed"),
            "token-3"
        );
        assert_eq!(
            kept.get_or_sign(key("sw-1"), t0 + later, sign)
                .expect("kept"),
            "token-3"
        );
    }
}
