//! The casework both institutions run on a shared case: consents, referral
//! and its decision, shared diagnosis, plans, missed appointments, deadlines
//! and what the partner sends. Each operation checks the agreement's rules
//! and writes the change, its outbox message and its idempotency record in
//! one transaction; the relay then carries the message across the boundary.
//! Each institution's own operations live in its service crate, on top of
//! this one.

pub mod api;
pub mod app;
pub mod casework;
pub mod crossings;
pub mod dpo;
pub mod relay;
pub mod rights;

pub use api::CaseworkRpcs;
pub use app::{InstitutionApp, serve_institution};
pub use casework::{CaseView, Casework};
pub use relay::Relay;
