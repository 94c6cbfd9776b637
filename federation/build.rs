//! Generates the federation API's gRPC code from `proto/federation.proto` with the protoc that
//! ships in the `protoc-bin-vendored` package (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.btree_map(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[std::path::PathBuf::from("proto/federation.proto")],
        &[std::path::PathBuf::from("proto")],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
