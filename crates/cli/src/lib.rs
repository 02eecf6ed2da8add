//! The `passerelle` command's library: a local stack of the three services
//! (used by `up`, `demo` and the end-to-end tests), the demo scenario, and
//! development tokens.

pub mod audit;
pub mod demo;
pub mod fault;
pub mod register;
pub mod replay;
pub mod report;
pub mod retry;
pub mod stack;
pub mod timeline;
