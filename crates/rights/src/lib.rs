//! The person's rights and the data protection officer's tools. Everything
//! here is read from the contract's annotations (categories, purposes, legal
//! bases, recipients) and from the audit log, so that no new field or
//! crossing can escape the access report or the register.

pub mod access;
pub mod audit;
pub mod catalogue;
pub mod register;
pub mod render;

pub use catalogue::Catalogue;
pub use register::Register;
pub use render::Document;
