//! What every Passerelle service process shares: typed configuration, the
//! serving loop (boundary layer, health, reflection, shutdown), and for the
//! two institutions the casework application layer, the per-crossing gate
//! and the outbox relay.

pub mod api;
pub mod app;
pub mod binary;
pub mod casework;
pub mod config;
pub mod directory;
pub mod error;
pub mod gate;
pub mod partner;
pub mod relay;
pub mod server;
pub mod title2;

pub use app::InstitutionApp;
pub use config::ServiceConfig;
pub use server::{Ready, ServiceHandle};

// For `casework_service!` expansions in the service crates.
#[doc(hidden)]
pub use passerelle_contract::v1;
#[doc(hidden)]
pub use pastey;
