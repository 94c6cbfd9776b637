//! Generates the CA service's gRPC code from `proto/ca.proto` with the protoc that ships in the
//! `protoc-bin-vendored` package (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[std::path::PathBuf::from("proto/ca.proto")],
        &[std::path::PathBuf::from("proto")],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
