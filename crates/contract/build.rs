//! Compiles `proto/` in pure Rust (protox: no `protoc` on the machine), keeps
//! the encoded descriptor set for reflection and for the boundary code, and
//! generates the tonic clients and servers from that same set.

use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "passerelle/v1/boundary.proto",
    "passerelle/v1/casework.proto",
    "passerelle/v1/emploi.proto",
    "passerelle/v1/social.proto",
    "passerelle/v1/pilotage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(FILES, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("passerelle_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
