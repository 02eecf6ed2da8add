//! Compiles `proto/` in pure Rust (protox: no `protoc` on the machine), keeps
//! the encoded descriptor set for reflection and for the boundary code, and
//! generates the tonic clients and servers from that same set.

use std::{env, fs, path::PathBuf};

const FILES: &[&str] = &[
    "passerelle/v1/boundary.proto",
    "passerelle/v1/casework.proto",
    "passerelle/v1/casework_requests.proto",
    "passerelle/v1/emploi.proto",
    "passerelle/v1/social.proto",
    "passerelle/v1/pilotage.proto",
    "passerelle/v1/directory.proto",
    "passerelle/v1/rights.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself: going through prost_types would drop the
    // custom options (category, subject, policy) the boundary depends on.
    fs::write(
        out_dir.join("passerelle_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();

    // Type names let the boundary find each message's descriptor (prost::Name).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
