//! The GDPR boundary between institutions, driven by the contract's
//! annotations: who may call what (deny by default), who the caller is (JWT
//! only), whether a consent covers the crossing, which fields may leave, and
//! the tamper-evident audit record of every decision.

pub mod audit;
pub mod contract;
pub mod identity;
pub mod layer;
pub mod minimise;
pub mod policy;

pub use audit::{AuditEntry, AuditRecord, Decision};
pub use identity::{Caller, IdentityError, KeyPair, Signer, TrustedIssuer, Verifier};
pub use layer::{AuditAppend, BoundaryLayer};
pub use minimise::{Minimised, Minimiser};
pub use policy::{CrossingRule, Denial, Flow, Policy, RpcRule};
