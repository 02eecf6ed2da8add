//! Identity comes only from a verified JWT (RFC 7519, checked as RFC 8725
//! asks): the issuer's key is fixed in configuration (never taken from the
//! token), the algorithm is on an allow list and must be the issuer's, `iss`,
//! `aud`, `exp` and `nbf` are checked, `iat` may not lie in the future, and a
//! token may not live longer than its issuer's maximum. Each issuer vouches
//! only for the principals configured for it: agents of some institutions, or
//! one institution's service, never both.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use passerelle_domain::{Institution, Role};
use serde::{Deserialize, Serialize};

/// Asymmetric algorithms only: a shared secret would let any verifier mint tokens.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// Who is calling, as established by the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The agent's (or service's) stable identifier: the token's `sub`.
    pub agent: String,
    pub institution: Institution,
    pub role: Role,
    pub issuer: String,
    /// The body the agent works for when it is not the institution itself:
    /// an association approved by the Département acting under its delegation.
    pub organisation: Option<String>,
    /// The office (agency, CDAS, MDS) a coordinator acts for; a coordinator
    /// reaches only that office's cases.
    pub office: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// Not before (RFC 7519 §4.1.5); checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub institution: String,
    pub role: String,
    /// Set for an agent of a delegated body (see [`Caller::organisation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Set for an agent attached to one office (see [`Caller::office`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown issuer")]
    UnknownIssuer,
    /// A sentence for the caller, naming the claim at fault; never a
    /// library's own wording.
    #[error("{0}")]
    Invalid(String),
    #[error("issuer may not speak for this institution")]
    InstitutionNotAllowedForIssuer,
    #[error("this issuer vouches for {0}, not for this principal")]
    PrincipalNotAllowedForIssuer(Principals),
    #[error("the token was issued in the future (claim iat)")]
    IssuedInTheFuture,
    #[error(
        "the token lives longer than its issuer allows ({0} seconds at most, claims iat to exp)"
    )]
    LifetimeTooLong(u64),
    #[error("unknown institution or role claim")]
    UnknownClaim,
}

/// Which principals an issuer may vouch for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Principals {
    /// People: agents of the issuer's institutions (an identity provider).
    #[default]
    Agents,
    /// One institution's Passerelle service, calling on its own behalf.
    Service,
}

impl Principals {
    /// The longest token lifetime accepted when the issuer's is not set:
    /// a working day for agents, a few minutes for a service (it mints a
    /// fresh token for each call).
    pub fn default_max_lifetime_seconds(self) -> u64 {
        match self {
            Principals::Agents => 12 * 3600,
            Principals::Service => 15 * 60,
        }
    }
}

impl std::fmt::Display for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Principals::Agents => "agents",
            Principals::Service => "a service",
        })
    }
}

/// The caller's sentence for a token jsonwebtoken refused.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> IdentityError {
    use jsonwebtoken::errors::ErrorKind as K;
    let text = match kind {
        K::ExpiredSignature => "the token has expired (claim exp)".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (claim nbf)".to_owned(),
        K::InvalidAudience => "the token is not for this service (claim aud)".to_owned(),
        K::InvalidIssuer => "the token's issuer is not the expected one (claim iss)".to_owned(),
        K::InvalidSignature => "the token's signature does not verify".to_owned(),
        K::MissingRequiredClaim(claim) => format!("the token lacks the claim {claim}"),
        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
            return IdentityError::AlgorithmNotAllowed;
        }
        // Claims that do not read as the contract's (a number as text, a
        // missing iat): say so without quoting the decoder.
        K::Json(_) | K::Utf8(_) | K::Base64(_) | K::InvalidToken => {
            return IdentityError::Malformed;
        }
        _ => "the token is not valid".to_owned(),
    };
    IdentityError::Invalid(text)
}

/// An issuer this service trusts, with its key from configuration.
#[derive(Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    pub institutions: BTreeSet<Institution>,
    pub principals: Principals,
    /// Longest accepted `exp - iat`.
    pub max_lifetime_seconds: u64,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .field("institutions", &self.institutions)
            .field("principals", &self.principals)
            .field("max_lifetime_seconds", &self.max_lifetime_seconds)
            .finish_non_exhaustive()
    }
}

impl TrustedIssuer {
    /// An Ed25519 issuer vouching for `principals` of `institutions`, with
    /// the default maximum lifetime for them.
    pub fn ed25519(
        issuer: impl Into<String>,
        public_key_pem: &str,
        institutions: BTreeSet<Institution>,
        principals: Principals,
    ) -> Result<Self, IdentityError> {
        Ok(TrustedIssuer {
            issuer: issuer.into(),
            algorithm: Algorithm::EdDSA,
            key: DecodingKey::from_ed_pem(public_key_pem.as_bytes())
                .map_err(|_| IdentityError::Invalid("not an Ed25519 public key".into()))?,
            institutions,
            principals,
            max_lifetime_seconds: principals.default_max_lifetime_seconds(),
        })
    }

    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime_seconds = seconds;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Verifier {
    audience: String,
    issuers: HashMap<String, TrustedIssuer>,
    leeway_seconds: u64,
    verified: Arc<VerifiedTokens>,
}

/// Tokens already verified, keyed by their whole text (signature included),
/// with the caller they named and their time bounds: a signature is checked
/// once per token, and its time bounds again on every use, so a cached token
/// expires exactly when an uncached one would. Only accepted tokens are kept.
#[derive(Debug, Default)]
struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Verified>>,
}

#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
    nbf: Option<u64>,
    iat: u64,
}

/// Tokens kept at most; past that the cache starts afresh (a bounded memory
/// whatever callers send: only verified tokens get in).
const VERIFIED_TOKENS_MAX: usize = 8_192;

impl Verified {
    /// The time checks of a fresh verification, at `now`.
    fn in_time(&self, now: u64, leeway: u64) -> Result<(), IdentityError> {
        if self.exp < now.saturating_sub(leeway) {
            return Err(refusal(&jsonwebtoken::errors::ErrorKind::ExpiredSignature));
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(refusal(&jsonwebtoken::errors::ErrorKind::ImmatureSignature));
        }
        if self.iat > now.saturating_add(leeway) {
            return Err(IdentityError::IssuedInTheFuture);
        }
        Ok(())
    }
}

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<Verified> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn keep(&self, token: &str, verified: Verified) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= VERIFIED_TOKENS_MAX {
            entries.clear();
        }
        entries.insert(token.into(), verified);
    }
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl Verifier {
    pub fn new(
        audience: impl Into<String>,
        issuers: impl IntoIterator<Item = TrustedIssuer>,
        leeway_seconds: u64,
    ) -> Self {
        Verifier {
            audience: audience.into(),
            issuers: issuers.into_iter().map(|i| (i.issuer.clone(), i)).collect(),
            leeway_seconds,
            verified: Arc::default(),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn verify(&self, token: &str) -> Result<Caller, IdentityError> {
        self.verify_at(token, unix_now())
    }

    /// [`Self::verify`] at `now` (seconds since the epoch) for a token seen
    /// before; a new token's signature and claims are checked in full.
    fn verify_at(&self, token: &str, now: u64) -> Result<Caller, IdentityError> {
        if let Some(seen) = self.verified.get(token) {
            seen.in_time(now, self.leeway_seconds)?;
            return Ok(seen.caller);
        }
        let verified = self.verify_fresh(token)?;
        verified.in_time(now, self.leeway_seconds)?;
        self.verified.keep(token, verified.clone());
        Ok(verified.caller)
    }

    fn verify_fresh(&self, token: &str) -> Result<Verified, IdentityError> {
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no such variant.
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(IdentityError::AlgorithmNotAllowed);
        }
        // The issuer is read unverified only to pick the configured key.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<IssuerOnly>(token)
            .map_err(|_| IdentityError::Malformed)?;
        let iss = unverified.claims.iss.ok_or(IdentityError::Malformed)?;
        let issuer = self.issuers.get(&iss).ok_or(IdentityError::UnknownIssuer)?;
        if header.alg != issuer.algorithm {
            return Err(IdentityError::AlgorithmNotAllowed);
        }
        let mut validation = Validation::new(issuer.algorithm);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &issuer.key, &validation)
            .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        if claims.iat > unix_now().saturating_add(self.leeway_seconds) {
            return Err(IdentityError::IssuedInTheFuture);
        }
        if claims.exp.saturating_sub(claims.iat) > issuer.max_lifetime_seconds {
            return Err(IdentityError::LifetimeTooLong(issuer.max_lifetime_seconds));
        }
        let institution =
            Institution::from_code(&claims.institution).ok_or(IdentityError::UnknownClaim)?;
        let role = Role::from_code(&claims.role).ok_or(IdentityError::UnknownClaim)?;
        if !issuer.institutions.contains(&institution) {
            return Err(IdentityError::InstitutionNotAllowedForIssuer);
        }
        // An identity provider never speaks for a service, nor a service's
        // key for a person.
        let principal = match role {
            Role::Service => Principals::Service,
            _ => Principals::Agents,
        };
        if principal != issuer.principals {
            return Err(IdentityError::PrincipalNotAllowedForIssuer(
                issuer.principals,
            ));
        }
        Ok(Verified {
            caller: Caller {
                agent: claims.sub,
                institution,
                role,
                issuer: claims.iss,
                organisation: claims.org.filter(|o| !o.is_empty()),
                office: claims.office.filter(|o| !o.is_empty()),
            },
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
        })
    }
}

/// The body and office an agent's token names, when it names them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affiliation<'a> {
    pub organisation: Option<&'a str>,
    pub office: Option<&'a str>,
}

/// Mints tokens: a service's own identity for its outgoing calls, or the
/// local development issuer of `passerelle token`.
#[derive(Clone)]
pub struct Signer {
    issuer: String,
    key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    pub fn ed25519(
        issuer: impl Into<String>,
        private_key_pem: &str,
    ) -> Result<Self, IdentityError> {
        Ok(Signer {
            issuer: issuer.into(),
            key: EncodingKey::from_ed_pem(private_key_pem.as_bytes())
                .map_err(|e| IdentityError::Invalid(e.to_string()))?,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(
        &self,
        agent: &str,
        institution: Institution,
        role: Role,
        audience: &str,
        ttl_seconds: u64,
    ) -> Result<String, IdentityError> {
        let none = Affiliation::default();
        self.sign_with(agent, institution, role, none, audience, ttl_seconds)
    }

    /// A token for an agent attached to `office` (a coordinator of that office).
    pub fn sign_for_office(
        &self,
        agent: &str,
        institution: Institution,
        role: Role,
        office: &str,
        audience: &str,
        ttl_seconds: u64,
    ) -> Result<String, IdentityError> {
        let office = Affiliation {
            office: Some(office),
            ..Affiliation::default()
        };
        self.sign_with(agent, institution, role, office, audience, ttl_seconds)
    }

    /// A token for an agent of a delegated body (an approved association).
    pub fn sign_for_organisation(
        &self,
        agent: &str,
        institution: Institution,
        role: Role,
        organisation: &str,
        audience: &str,
        ttl_seconds: u64,
    ) -> Result<String, IdentityError> {
        let organisation = Affiliation {
            organisation: Some(organisation),
            ..Affiliation::default()
        };
        self.sign_with(
            agent,
            institution,
            role,
            organisation,
            audience,
            ttl_seconds,
        )
    }

    /// A token for an agent with the body and office it names.
    pub fn sign_with(
        &self,
        agent: &str,
        institution: Institution,
        role: Role,
        affiliation: Affiliation<'_>,
        audience: &str,
        ttl_seconds: u64,
    ) -> Result<String, IdentityError> {
        let iat = unix_now();
        self.sign_claims(&Claims {
            iss: self.issuer.clone(),
            sub: agent.to_owned(),
            aud: audience.to_owned(),
            exp: iat + ttl_seconds,
            iat,
            nbf: None,
            institution: institution.code().to_owned(),
            role: role.code().to_owned(),
            org: affiliation.organisation.map(str::to_owned),
            office: affiliation.office.map(str::to_owned),
        })
    }

    pub fn sign_claims(&self, claims: &Claims) -> Result<String, IdentityError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|e| IdentityError::Invalid(e.to_string()))
    }
}

/// The DER of a PKCS#8 v1 Ed25519 private key up to its 32-byte seed:
/// version 0, algorithm id-Ed25519 (1.3.101.112), the seed as an OCTET STRING.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 key pair in PEM (PKCS#8 v1 private, SPKI public).
#[derive(Clone)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        // PKCS#8 v1 (RFC 8410 §7), without the public key a v2 document
        // appends: the form OpenSSL writes and every common library reads
        // (Python's `cryptography` refuses v2 with "extra data").
        let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let private_pem = ed25519_dalek::pkcs8::spki::der::pem::encode_string(
            "PRIVATE KEY",
            LineEnding::LF,
            &der,
        )
        .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        Ok(KeyPair {
            private_pem: private_pem.to_string(),
            public_pem,
        })
    }
}

/// The institution a service certificate speaks for, read from its subject
/// alternative names: a URI ending in `/passerelle/<institution>` (a SPIFFE
/// ID such as `spiffe://example.org/passerelle/emploi`) or a DNS name whose
/// first label is `passerelle-<institution>`. `None` when it names none, or
/// more than one.
pub fn institution_from_certificate(der: &[u8]) -> Option<Institution> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    let mut found = BTreeSet::new();
    for name in &names.value.general_names {
        let institution = match name {
            GeneralName::URI(uri) => uri
                .rsplit_once("/passerelle/")
                .and_then(|(_, code)| Institution::from_code(code)),
            GeneralName::DNSName(dns) => dns
                .split('.')
                .next()
                .and_then(|label| label.strip_prefix("passerelle-"))
                .and_then(Institution::from_code),
            _ => None,
        };
        found.extend(institution);
    }
    match (found.len(), found.into_iter().next()) {
        (1, institution) => institution,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_and_still_sign() {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let keys = KeyPair::generate().expect("keys");
        let (label, der) =
            ed25519_dalek::pkcs8::spki::der::pem::decode_vec(keys.private_pem.as_bytes())
                .expect("PEM");
        assert_eq!(label, "PRIVATE KEY");
        // v1: version 0 and no public key appended (48 bytes in all).
        assert_eq!(der.len(), 48);
        assert_eq!(der[4], 0, "version 0");
        let signing =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&keys.private_pem).expect("reads back");
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public");
        assert_eq!(public, keys.public_pem);
        let signer = Signer::ed25519("iss", &keys.private_pem).expect("signer");
        let token = signer
            .sign("a", Institution::Social, Role::SocialWorker, "aud", 60)
            .expect("token");
        assert_eq!(token.split('.').count(), 3);
    }

    fn certificate(names: &[&str], uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().expect("uri")));
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn the_institution_comes_from_the_certificate_names() {
        let spiffe = certificate(
            &["localhost"],
            &["spiffe://passerelle.example/passerelle/emploi"],
        );
        assert_eq!(
            institution_from_certificate(&spiffe),
            Some(Institution::Emploi)
        );
        let dns = certificate(&["passerelle-social.passerelle-social.svc"], &[]);
        assert_eq!(
            institution_from_certificate(&dns),
            Some(Institution::Social)
        );
        assert_eq!(
            institution_from_certificate(&certificate(&["example.org"], &[])),
            None
        );
        let two = certificate(
            &["passerelle-social.svc"],
            &["spiffe://x/passerelle/emploi"],
        );
        assert_eq!(
            institution_from_certificate(&two),
            None,
            "a certificate naming two institutions speaks for none"
        );
        assert_eq!(institution_from_certificate(b"not a certificate"), None);
    }

    /// A social worker's token for the employment service, valid a minute.
    fn social_worker_token(signer: &Signer) -> String {
        signer
            .sign(
                "sw-1",
                Institution::Social,
                Role::SocialWorker,
                "passerelle-emploi",
                60,
            )
            .expect("token")
    }

    fn setup() -> (Signer, Verifier) {
        let keys = KeyPair::generate().expect("keys");
        let signer = Signer::ed25519("https://idp.test", &keys.private_pem).expect("signer");
        let trusted = TrustedIssuer::ed25519(
            "https://idp.test",
            &keys.public_pem,
            [Institution::Social].into(),
            Principals::Agents,
        )
        .expect("issuer");
        (signer, Verifier::new("passerelle-emploi", [trusted], 0))
    }

    #[test]
    fn a_valid_token_gives_the_caller() {
        let (signer, verifier) = setup();
        let token = social_worker_token(&signer);
        let caller = verifier.verify(&token).expect("valid");
        assert_eq!(caller.agent, "sw-1");
        assert_eq!(caller.institution, Institution::Social);
        assert_eq!(caller.role, Role::SocialWorker);
    }

    #[test]
    fn a_token_seen_before_expires_exactly_when_a_new_one_would() {
        let (signer, verifier) = setup();
        let token = social_worker_token(&signer);
        let now = unix_now();
        let caller = verifier.verify_at(&token, now).expect("valid");
        let exp = verifier.verified.get(&token).expect("kept").exp;
        // From the cache: the same caller while in time, refused one second past exp.
        assert_eq!(verifier.verify_at(&token, exp), Ok(caller));
        assert_eq!(
            verifier.verify_at(&token, exp + 1),
            Err(IdentityError::Invalid(
                "the token has expired (claim exp)".into()
            ))
        );
        // And before its iat, as a token from the future.
        assert_eq!(
            verifier.verify_at(&token, now - 3_600),
            Err(IdentityError::IssuedInTheFuture)
        );
        // A different signature on the same claims is not the token seen.
        let (header_and_claims, _) = token.rsplit_once('.').expect("signed");
        let tampered = format!("{header_and_claims}.AAAA");
        assert!(verifier.verify(&tampered).is_err());
        assert!(verifier.verified.get(&tampered).is_none());
    }

    #[test]
    fn wrong_audience_expired_and_foreign_institution_are_refused() {
        let (signer, verifier) = setup();
        let other_aud = signer
            .sign(
                "sw",
                Institution::Social,
                Role::SocialWorker,
                "passerelle-social",
                60,
            )
            .expect("token");
        assert!(matches!(
            verifier.verify(&other_aud),
            Err(IdentityError::Invalid(_))
        ));
        // A refused token is never kept: refused again, from scratch.
        assert!(verifier.verified.get(&other_aud).is_none());
        assert!(verifier.verify(&other_aud).is_err());

        let now = unix_now();
        let expired = signer
            .sign_claims(&Claims {
                iss: "https://idp.test".into(),
                sub: "sw".into(),
                aud: "passerelle-emploi".into(),
                exp: now - 120,
                iat: now - 180,
                nbf: None,
                institution: "social".into(),
                role: "social_worker".into(),
                org: None,
                office: None,
            })
            .expect("token");
        assert!(matches!(
            verifier.verify(&expired),
            Err(IdentityError::Invalid(_))
        ));

        let emploi = signer
            .sign(
                "c",
                Institution::Emploi,
                Role::Counsellor,
                "passerelle-emploi",
                60,
            )
            .expect("token");
        assert_eq!(
            verifier.verify(&emploi),
            Err(IdentityError::InstitutionNotAllowedForIssuer)
        );
    }

    #[test]
    fn alg_none_and_other_keys_are_refused() {
        let (_, verifier) = setup();
        // {"alg":"none","typ":"JWT"} . {"iss":"https://idp.test",...} . (no signature)
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let payload = "eyJpc3MiOiJodHRwczovL2lkcC50ZXN0Iiwic3ViIjoieCIsImF1ZCI6InBhc3NlcmVsbGUtZW1wbG9pIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjEsImluc3RpdHV0aW9uIjoic29jaWFsIiwicm9sZSI6InNlcnZpY2UifQ";
        assert_eq!(
            verifier.verify(&format!("{header}.{payload}.")),
            Err(IdentityError::Malformed)
        );

        let stranger = KeyPair::generate().expect("keys");
        let forged = Signer::ed25519("https://idp.test", &stranger.private_pem)
            .expect("signer")
            .sign(
                "x",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                60,
            )
            .expect("token");
        assert!(matches!(
            verifier.verify(&forged),
            Err(IdentityError::Invalid(_))
        ));

        let unknown = Signer::ed25519("https://elsewhere", &stranger.private_pem)
            .expect("signer")
            .sign(
                "x",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                60,
            )
            .expect("token");
        assert_eq!(verifier.verify(&unknown), Err(IdentityError::UnknownIssuer));
    }

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "https://idp.test".into(),
            sub: "sw".into(),
            aud: "passerelle-emploi".into(),
            exp: now + 60,
            iat: now,
            nbf: None,
            institution: "social".into(),
            role: "social_worker".into(),
            org: None,
            office: None,
        }
    }

    #[test]
    fn registered_claims_are_checked_as_rfc_8725_asks() {
        let (signer, verifier) = setup();
        let now = unix_now();
        let verify = |c: &Claims| verifier.verify(&signer.sign_claims(c).expect("token"));
        assert!(verify(&claims(now)).is_ok());
        let not_yet = Claims {
            nbf: Some(now + 3600),
            ..claims(now)
        };
        assert_eq!(
            verify(&not_yet),
            Err(IdentityError::Invalid(
                "the token is not valid yet (claim nbf)".into()
            ))
        );
        let from_the_future = Claims {
            iat: now + 10 * 365 * 86_400,
            exp: now + 10 * 365 * 86_400 + 60,
            ..claims(now)
        };
        assert_eq!(
            verify(&from_the_future),
            Err(IdentityError::IssuedInTheFuture)
        );
        let a_century = Claims {
            exp: now + 100 * 365 * 86_400,
            ..claims(now)
        };
        assert_eq!(
            verify(&a_century),
            Err(IdentityError::LifetimeTooLong(12 * 3600))
        );
        let expired = Claims {
            iat: now - 600,
            exp: now - 300,
            ..claims(now)
        };
        let refused = verify(&expired).unwrap_err().to_string();
        // A sentence naming the claim, not the library's debug output.
        assert_eq!(refused, "the token has expired (claim exp)");
    }

    #[test]
    fn an_agents_issuer_never_speaks_for_a_service_nor_a_services_key_for_an_agent() {
        let (signer, verifier) = setup();
        let service = signer
            .sign(
                "svc",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                60,
            )
            .expect("token");
        assert_eq!(
            verifier.verify(&service),
            Err(IdentityError::PrincipalNotAllowedForIssuer(
                Principals::Agents
            ))
        );
        let keys = KeyPair::generate().expect("keys");
        let own = Signer::ed25519("passerelle-social-service", &keys.private_pem).expect("signer");
        let trusted = TrustedIssuer::ed25519(
            "passerelle-social-service",
            &keys.public_pem,
            [Institution::Social].into(),
            Principals::Service,
        )
        .expect("issuer");
        let verifier = Verifier::new("passerelle-emploi", [trusted], 0);
        let as_service = own
            .sign(
                "service:social",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                300,
            )
            .expect("token");
        assert!(verifier.verify(&as_service).is_ok());
        let as_agent = own
            .sign(
                "sw",
                Institution::Social,
                Role::SocialWorker,
                "passerelle-emploi",
                300,
            )
            .expect("token");
        assert_eq!(
            verifier.verify(&as_agent),
            Err(IdentityError::PrincipalNotAllowedForIssuer(
                Principals::Service
            ))
        );
        let long_lived = own
            .sign(
                "service:social",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                3600,
            )
            .expect("token");
        assert_eq!(
            verifier.verify(&long_lived),
            Err(IdentityError::LifetimeTooLong(900))
        );
    }
}
