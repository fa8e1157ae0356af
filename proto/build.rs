//! Compiles Keel's own protos with protox (pure Rust, no protoc needed) and generates tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["keel/raft/v1/transport.proto", "keel/debug/v1/kv.proto"];
    for file in files {
        println!("cargo:rerun-if-changed=protos/{file}");
    }
    let descriptors = protox::compile(files, ["protos"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
