//! The shared contract: generated gRPC code, the embedded descriptor set (for
//! reflection and for the boundary's annotation-driven policy), and the
//! conversions between proto messages and domain types.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

pub mod convert;
pub mod directory;

/// Generated from `proto/passerelle/v1`.
#[allow(
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant,
    clippy::derive_partial_eq_without_eq,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod v1 {
    tonic::include_proto!("passerelle.v1");
}

/// The contract's encoded `FileDescriptorSet`, as compiled by the build script.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/passerelle_descriptor.bin"));

/// The proto package every service lives in.
pub const PACKAGE: &str = "passerelle.v1";

/// The contract's descriptors, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        #[allow(clippy::expect_used)]
        DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the build script wrote a valid descriptor set")
    })
}

/// Full names of the services in the contract.
pub mod services {
    pub const EMPLOI: &str = "passerelle.v1.EmploiService";
    pub const SOCIAL: &str = "passerelle.v1.SocialService";
    pub const PILOTAGE: &str = "passerelle.v1.PilotageService";
    pub const DIRECTORY: &str = "passerelle.v1.DirectoryService";

    /// The service a casework side serves.
    pub fn of(side: passerelle_domain::Side) -> &'static str {
        match side {
            passerelle_domain::Side::Emploi => EMPLOI,
            passerelle_domain::Side::Social => SOCIAL,
        }
    }

    /// Wire path of `rpc` at `side`'s service.
    pub fn path(side: passerelle_domain::Side, rpc: &str) -> String {
        format!("/{}/{rpc}", of(side))
    }
}

/// Largest aggregates message (indicators, dashboard) a client accepts. The
/// counts grow with months × offices × keys, not with persons: a few years
/// of a large Département stay well under it, but above tonic's 4 MiB default.
pub const MAX_AGGREGATES_MESSAGE: usize = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_set_holds_the_three_services() {
        let pool = descriptor_pool();
        for name in [
            services::EMPLOI,
            services::SOCIAL,
            services::PILOTAGE,
            services::DIRECTORY,
        ] {
            assert!(pool.get_service_by_name(name).is_some(), "{name} missing");
        }
    }
}
