//! Three services wired together on one machine: development keys, one
//! configuration per service, each with its own database.

use std::collections::BTreeSet;
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

/// The three services, running.
#[derive(Debug)]
pub struct Stack {
    pub options: StackOptions,
    pub addresses: [SocketAddr; 3],
    pub clock: Arc<dyn Clock>,
    handles: [Option<ServiceHandle>; 3],
    signer: Signer,
}

async fn start_one(config: ServiceConfig, clock: Arc<dyn Clock>) -> anyhow::Result<ServiceHandle> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    match config.institution {
        Institution::Emploi => passerelle_emploi::start(config, listener, clock).await,
        Institution::Social => passerelle_social::start(config, listener, clock).await,
        Institution::Pilotage => passerelle_pilotage::start(config, listener, clock).await,
    }
}

impl Stack {
    pub async fn start(options: StackOptions, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.data_dir)?;
        for name in ["dev-issuer", "emploi", "social", "pilotage"] {
            ensure_key(&options.data_dir, name)?;
        }
        if options.tls {
            ensure_dev_certificates(&options.data_dir)?;
        }
        let addresses = match options.addresses {
            Some(fixed) => fixed,
            None => {
                // Reserve three ports now so each service knows where the others are.
                let mut found = [SocketAddr::from(([127, 0, 0, 1], 0)); 3];
                for slot in &mut found {
                    *slot = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
                }
                found
            }
        };
        let mut stack = Stack {
            signer: dev_signer(&options.data_dir)?,
            options,
            addresses,
            clock,
            handles: [None, None, None],
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
        let handle = self.handles[Self::index(institution)].as_ref()?;
        Some(format!(
            "http://{}",
            handle.health_addr.unwrap_or(handle.addr)
        ))
    }

    /// Stops one service (its database stays).
    pub async fn stop(&mut self, institution: Institution) -> anyhow::Result<()> {
        if let Some(handle) = self.handles[Self::index(institution)].take() {
            handle.shutdown().await?;
        }
        Ok(())
    }

    /// Starts (or starts again) one service on its address.
    pub async fn restart(&mut self, institution: Institution) -> anyhow::Result<()> {
        self.stop(institution).await?;
        let handle = start_one(self.config(institution), self.clock.clone()).await?;
        self.handles[Self::index(institution)] = Some(handle);
        self.wait_ready().await
    }

    /// A development token for an agent.
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

    pub fn token(
        &self,
        institution: Institution,
        role: Role,
        agent: &str,
        audience: Institution,
    ) -> anyhow::Result<String> {
        Ok(self.signer.sign(
            agent,
            institution,
            role,
            &audience_of(audience),
            DEV_TOKEN_TTL_SECONDS,
        )?)
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

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for institution in INSTITUTIONS {
            self.stop(institution).await?;
        }
        Ok(())
    }
}
