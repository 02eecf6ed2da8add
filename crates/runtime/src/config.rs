//! One typed configuration per service process: defaults, then an optional
//! TOML file, then `PASSERELLE_*` environment variables. Secrets (database
//! passwords, private keys) are never printed: `Debug` redacts them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use passerelle_boundary::{Principals, Signer, TrustedIssuer, Verifier};
use passerelle_domain::Institution;
use passerelle_domain::agreement::Agreement;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration key `{key}`: {reason}")]
    Key { key: String, reason: String },
}

fn key_error(key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// A database URL; may hold a password, so it is never printed whole.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split(':').next().unwrap_or("");
        write!(f, "{scheme}:<redacted>")
    }
}

/// A token issuer this service trusts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    /// Ed25519 public key (SPKI PEM) of the issuer.
    pub public_key_file: PathBuf,
    /// Institutions the issuer may speak for.
    pub institutions: BTreeSet<Institution>,
    /// Whom it vouches for: `agents` (an identity provider; the default) or
    /// `service` (one institution's Passerelle service, and nothing else).
    #[serde(default)]
    pub principals: Principals,
    /// Longest token lifetime accepted (`exp - iat`); by default 12 hours
    /// for agents, 15 minutes for a service.
    #[serde(default)]
    pub max_token_lifetime_seconds: Option<u64>,
}

/// The key this service signs its own outgoing calls with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceIdentityConfig {
    pub issuer: String,
    /// Ed25519 private key (PKCS#8 PEM), mounted as a file in production.
    pub private_key_file: PathBuf,
}

/// Where the other services are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub emploi: Option<String>,
    pub social: Option<String>,
}

/// TLS for every connection, mutual between services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This service's certificate chain (PEM). Its subject alternative names
    /// say which institution it speaks for: a URI ending in
    /// `/passerelle/<institution>`, or a DNS name `passerelle-<institution>…`.
    pub cert_file: PathBuf,
    /// Its private key (PEM), mounted from a secret.
    pub key_file: PathBuf,
    /// The CA that signs Passerelle services' certificates: servers this
    /// service calls, and clients that present a certificate, are checked
    /// against it.
    pub ca_file: PathBuf,
    /// Refuse every connection without a client certificate. When false,
    /// agents' clients may come without one; service-to-service calls never.
    pub require_client_certificate: bool,
    /// A plaintext listener serving only gRPC health, for kubelet probes
    /// (they speak neither TLS nor tokens).
    pub health_listen: Option<SocketAddr>,
}

/// TLS material read from the configured files.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub identity: tonic::transport::Identity,
    pub ca: tonic::transport::Certificate,
    pub require_client_certificate: bool,
}

impl TlsConfig {
    pub fn load(&self) -> Result<TlsMaterial, ConfigError> {
        let read = |key: &str, path: &Path| std::fs::read(path).map_err(|e| key_error(key, e));
        Ok(TlsMaterial {
            identity: tonic::transport::Identity::from_pem(
                read("tls.cert_file", &self.cert_file)?,
                read("tls.key_file", &self.key_file)?,
            ),
            ca: tonic::transport::Certificate::from_pem(read("tls.ca_file", &self.ca_file)?),
            require_client_certificate: self.require_client_certificate,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// How often the relay looks for work when nothing wakes it.
    pub poll_interval_ms: u64,
    /// Backoff after a failed delivery starts here and doubles up to the max.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How long one delivery may take.
    pub request_timeout_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            poll_interval_ms: 1_000,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            request_timeout_ms: 5_000,
        }
    }
}

/// What one client may ask of a service at once: bounds on the HTTP/2
/// connection and on each call, so a hostile or careless client cannot hold
/// the service's memory or tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// How long a call may take before it is answered DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// Total size of a call's headers (metadata), in bytes.
    pub max_header_list_bytes: u32,
    /// Largest request message, in bytes (the aggregates' answers may be larger).
    pub max_request_bytes: usize,
    /// Refused calls (no or bad token, not allowed) audited one by one per
    /// client address and window; past that they are shed and counted in one
    /// audit record per window.
    pub refused_calls_per_peer: u64,
    pub refusal_window_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent_streams: 128,
            request_timeout_ms: 30_000,
            max_header_list_bytes: 16 * 1024,
            max_request_bytes: 4 << 20,
            refused_calls_per_peer: passerelle_boundary::layer::DEFAULT_REFUSALS_PER_WINDOW,
            refusal_window_ms: passerelle_boundary::layer::DEFAULT_REFUSAL_WINDOW_MS,
        }
    }
}

/// What only the two institutions' services read: the outbox relay, the
/// agreement's deadlines, the resource directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaseworkConfig {
    pub outbox: OutboxConfig,
    /// Serve the resource directory here; by default the Département's
    /// service does.
    pub host_directory: Option<bool>,
    /// How often pending referrals are expired and ended support periods
    /// closed (the agreement's deadlines), in milliseconds.
    pub housekeeping_interval_ms: u64,
    /// How often this service's audit chain head is sent to the partner
    /// (when something was recorded since), in milliseconds.
    pub audit_anchor_interval_ms: u64,
}

impl Default for CaseworkConfig {
    fn default() -> Self {
        CaseworkConfig {
            outbox: OutboxConfig::default(),
            host_directory: None,
            housekeeping_interval_ms: 60_000,
            audit_anchor_interval_ms: 60_000,
        }
    }
}

/// What only the steering service reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// Published cells hold at least this many persons; 11 by default.
    pub min_cell_size: u64,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        SteeringConfig { min_cell_size: 11 }
    }
}

/// One service's settings: what every service reads at the top level, then
/// a section per kind of service (`[casework]`, `[steering]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub institution: Institution,
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    /// A file holding the database URL (a mounted secret); wins over `database_url`.
    pub database_url_file: Option<PathBuf>,
    pub database_max_connections: u32,
    /// The `aud` this service's tokens must carry.
    pub audience: String,
    pub token_leeway_seconds: u64,
    pub trusted_issuers: Vec<IssuerConfig>,
    pub service_identity: Option<ServiceIdentityConfig>,
    pub endpoints: Endpoints,
    /// TLS, mutual between services; off when absent (development only).
    pub tls: Option<TlsConfig>,
    /// Express renewals of the agreement signed so far (the steering
    /// service's calendar counts from them).
    pub agreement_renewals: u32,
    /// The agreement this service runs under: a shipped one by id…
    pub agreement: String,
    /// …or a file of the same form, which wins.
    pub agreement_file: Option<PathBuf>,
    pub limits: LimitsConfig,
    pub casework: CaseworkConfig,
    pub steering: SteeringConfig,
    /// Replays and fault tests only: read the time from this file (written
    /// by the driver of a simulated year) instead of the system clock.
    pub simulated_clock_file: Option<PathBuf>,
}

/// The audience a service's tokens carry.
pub fn audience_of(institution: Institution) -> String {
    format!("passerelle-{}", institution.code())
}

impl ServiceConfig {
    pub fn defaults(institution: Institution) -> Self {
        let port = match institution {
            Institution::Emploi => 50051,
            Institution::Social => 50052,
            Institution::Pilotage => 50053,
        };
        ServiceConfig {
            institution,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            database_url: DatabaseUrl(format!(
                "sqlite://.passerelle/{}.sqlite",
                institution.code()
            )),
            database_url_file: None,
            database_max_connections: 8,
            audience: audience_of(institution),
            token_leeway_seconds: 30,
            trusted_issuers: vec![],
            service_identity: None,
            endpoints: Endpoints::default(),
            tls: None,
            agreement_renewals: 0,
            agreement: "ille-et-vilaine-2023".to_owned(),
            agreement_file: None,
            limits: LimitsConfig::default(),
            casework: CaseworkConfig::default(),
            steering: SteeringConfig::default(),
            simulated_clock_file: None,
        }
    }

    /// Defaults, then the file if given, then `PASSERELLE_*` variables
    /// (nested keys with `__`, e.g. `PASSERELLE_CASEWORK__OUTBOX__MAX_BACKOFF_MS`).
    pub fn load(institution: Institution, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::defaults(institution)));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: ServiceConfig = figment
            // The test and CI switches share the prefix; they are not settings.
            .merge(Env::prefixed("PASSERELLE_").split("__").ignore(&[
                "config",
                "test_postgres",
                "require_postgres",
                "require_chromium",
            ]))
            .extract()
            .map_err(|e| match e.path.first() {
                Some(_) => key_error(&e.path.join("."), e.kind),
                None => ConfigError::Invalid(e.to_string()),
            })?;
        if config.institution != institution {
            return Err(key_error(
                "institution",
                format!("this binary serves {institution}"),
            ));
        }
        let mut config = config;
        if let Some(file) = &config.database_url_file {
            let url =
                std::fs::read_to_string(file).map_err(|e| key_error("database_url_file", e))?;
            config.database_url = DatabaseUrl(url.trim().to_owned());
        }
        config.validate()?;
        // Fail at start, naming the key, rather than at the first case.
        config.load_agreement()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_max_connections == 0 {
            return Err(key_error("database_max_connections", "must be at least 1"));
        }
        if self.steering.min_cell_size == 0 {
            return Err(key_error(
                "steering.min_cell_size",
                "must be at least 1 (1 disables statistical secrecy: tests only)",
            ));
        }
        let limits = &self.limits;
        for (key, zero) in [
            (
                "limits.max_concurrent_streams",
                limits.max_concurrent_streams == 0,
            ),
            ("limits.request_timeout_ms", limits.request_timeout_ms == 0),
            (
                "limits.max_header_list_bytes",
                limits.max_header_list_bytes < 1024,
            ),
            ("limits.max_request_bytes", limits.max_request_bytes < 1024),
            (
                "limits.refused_calls_per_peer",
                limits.refused_calls_per_peer == 0,
            ),
            ("limits.refusal_window_ms", limits.refusal_window_ms < 100),
        ] {
            if zero {
                return Err(key_error(key, "is too small to serve anyone"));
            }
        }
        let casework = &self.casework;
        if casework.housekeeping_interval_ms == 0 {
            return Err(key_error(
                "casework.housekeeping_interval_ms",
                "must be positive",
            ));
        }
        if casework.audit_anchor_interval_ms == 0 {
            return Err(key_error(
                "casework.audit_anchor_interval_ms",
                "must be positive",
            ));
        }
        if casework.outbox.initial_backoff_ms == 0
            || casework.outbox.max_backoff_ms < casework.outbox.initial_backoff_ms
        {
            return Err(key_error(
                "casework.outbox.max_backoff_ms",
                "must be at least casework.outbox.initial_backoff_ms, which must be positive",
            ));
        }
        for (i, issuer) in self.trusted_issuers.iter().enumerate() {
            if issuer.institutions.is_empty() {
                return Err(key_error(
                    &format!("trusted_issuers[{i}].institutions"),
                    "must name at least one institution",
                ));
            }
            if issuer.principals == Principals::Service && issuer.institutions.len() != 1 {
                return Err(key_error(
                    &format!("trusted_issuers[{i}].institutions"),
                    "a service's issuer speaks for exactly one institution",
                ));
            }
            if issuer.max_token_lifetime_seconds == Some(0) {
                return Err(key_error(
                    &format!("trusted_issuers[{i}].max_token_lifetime_seconds"),
                    "must be positive",
                ));
            }
        }
        Ok(())
    }

    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        let issuers = self
            .trusted_issuers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let key = format!("trusted_issuers[{i}].public_key_file");
                let pem =
                    std::fs::read_to_string(&c.public_key_file).map_err(|e| key_error(&key, e))?;
                let issuer = TrustedIssuer::ed25519(
                    c.issuer.clone(),
                    &pem,
                    c.institutions.clone(),
                    c.principals,
                )
                .map_err(|e| key_error(&key, e))?;
                Ok(match c.max_token_lifetime_seconds {
                    Some(seconds) => issuer.with_max_lifetime(seconds),
                    None => issuer,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier::new(
            self.audience.clone(),
            issuers,
            self.token_leeway_seconds,
        ))
    }

    pub fn signer(&self) -> Result<Option<Signer>, ConfigError> {
        self.service_identity
            .as_ref()
            .map(|identity| {
                let key = "service_identity.private_key_file";
                let pem = std::fs::read_to_string(&identity.private_key_file)
                    .map_err(|e| key_error(key, e))?;
                Signer::ed25519(identity.issuer.clone(), &pem).map_err(|e| key_error(key, e))
            })
            .transpose()
    }

    /// The agreement, from its file if one is given, else the shipped one.
    pub fn load_agreement(&self) -> Result<Agreement, ConfigError> {
        match &self.agreement_file {
            Some(file) => {
                let text =
                    std::fs::read_to_string(file).map_err(|e| key_error("agreement_file", e))?;
                Agreement::from_toml(&text).map_err(|e| key_error("agreement_file", e))
            }
            None => passerelle_domain::agreement::shipped(&self.agreement)
                .map_err(|e| key_error("agreement", e)),
        }
    }

    /// Whether this service hosts the resource directory.
    pub fn hosts_directory(&self) -> bool {
        self.casework
            .host_directory
            .unwrap_or(self.institution == Institution::Social)
    }

    pub fn endpoint(&self, institution: Institution) -> Option<&str> {
        match institution {
            Institution::Emploi => self.endpoints.emploi.as_deref(),
            Institution::Social => self.endpoints.social.as_deref(),
            Institution::Pilotage => None,
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.casework.outbox.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_redacted() {
        let url = DatabaseUrl("postgres://app:s3cret@db/passerelle".into());
        assert_eq!(format!("{url:?}"), "postgres:<redacted>");
        let config = ServiceConfig {
            database_url: url,
            ..ServiceConfig::defaults(Institution::Emploi)
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn file_values_override_defaults_and_bad_values_name_their_key() {
        let dir = std::env::temp_dir().join(format!("passerelle-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, "institution = \"social\"\nlisten = \"0.0.0.0:6000\"\n[casework.outbox]\nmax_backoff_ms = 5000\n").expect("write");
        let config = ServiceConfig::load(Institution::Social, Some(&good)).expect("loads");
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.casework.outbox.max_backoff_ms, 5000);
        assert_eq!(
            config.casework.outbox.initial_backoff_ms,
            OutboxConfig::default().initial_backoff_ms
        );

        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "institution = \"social\"\nlisten = \"not an address\"\n",
        )
        .expect("write");
        let err = ServiceConfig::load(Institution::Social, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");

        let secret = dir.join("database-url");
        std::fs::write(&secret, "postgres://app:s3cret@db:5432/passerelle\n").expect("write");
        let from_file = dir.join("from-file.toml");
        let text = format!(
            "institution = \"social\"\ndatabase_url_file = {:?}\n",
            secret.display().to_string()
        );
        std::fs::write(&from_file, text).expect("write");
        let config = ServiceConfig::load(Institution::Social, Some(&from_file)).expect("loads");
        assert_eq!(
            config.database_url.0,
            "postgres://app:s3cret@db:5432/passerelle"
        );
        assert!(!format!("{config:?}").contains("s3cret"));

        let typo = dir.join("typo.toml");
        std::fs::write(
            &typo,
            "institution = \"social\"\n[casework.outbox]\nmax_backof_ms = 10\n",
        )
        .expect("write");
        let err = ServiceConfig::load(Institution::Social, Some(&typo))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_backof_ms"), "{err}");

        let unknown = dir.join("unknown-agreement.toml");
        std::fs::write(
            &unknown,
            "institution = \"social\"\nagreement = \"gironde-2031\"\n",
        )
        .expect("write");
        let err = ServiceConfig::load(Institution::Social, Some(&unknown))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`agreement`") && err.contains("gironde-2031"),
            "{err}"
        );
        let broken = dir.join("broken-agreement.toml");
        let text = passerelle_domain::agreement::SHIPPED[1]
            .1
            .replace("portfolio_min = 65", "portfolio_min = 650");
        std::fs::write(&broken, text).expect("write");
        let with_file = dir.join("with-agreement-file.toml");
        std::fs::write(
            &with_file,
            format!(
                "institution = \"social\"\nagreement_file = {:?}\n",
                broken.display().to_string()
            ),
        )
        .expect("write");
        let err = ServiceConfig::load(Institution::Social, Some(&with_file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agreement_file") && err.contains("capacity.portfolio_min"),
            "{err}"
        );

        let wrong = dir.join("wrong.toml");
        std::fs::write(&wrong, "institution = \"emploi\"\n").expect("write");
        let err = ServiceConfig::load(Institution::Social, Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(err.contains("institution"), "{err}");
    }
}
