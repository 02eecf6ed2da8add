//! How every Passerelle service process runs, whatever it serves: typed
//! configuration, the serving loop (boundary layer, health, reflection,
//! shutdown), signed channels to other services, idempotent writes, the
//! binaries' start-up, and the one mapping from application errors to gRPC
//! status codes.

pub mod binary;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod partner;
pub mod server;
pub mod simulated_clock;

/// The allocator of every process running a service (and of the tools and
/// tests linking them): glibc's took a sixth of a replay's CPU (malloc,
/// free, consolidating its arenas); mimalloc's thread-local pages take a
/// third of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::ServiceConfig;
pub use error::{AppError, within};
pub use idempotency::{Call, Local, local};
pub use server::{Ready, ServiceHandle, ServiceState};
