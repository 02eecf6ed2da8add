//! The GDPR boundary between institutions, driven by the contract's
//! annotations: who may call what (deny by default), who the caller is (JWT
//! only), whether a consent covers the crossing, which fields may leave, and
//! the tamper-evident audit record of every decision.

pub mod audit;
pub mod budget;
pub mod contract;
pub mod crossing;
pub mod identity;
pub mod layer;
pub mod minimise;
pub mod need_to_know;
pub mod policy;
pub mod ports;

pub use audit::{AuditEntry, AuditRecord, Decision};
pub use crossing::{CrossingControl, PendingRecord, SendRefusal, Ticket, allowed_categories};
pub use identity::{Caller, IdentityError, KeyPair, Principals, Signer, TrustedIssuer, Verifier};
pub use layer::{Admission, BoundaryLayer, admission, caller};
pub use minimise::{Minimised, Minimiser};
pub use need_to_know::{CaseParties, CaseScope};
pub use policy::{CrossingRule, Denial, Flow, Policy, RpcRule};
pub use ports::{AuditSink, ConsentRegister};
