//! Compiles Keel's own protos with protox (pure Rust, no protoc needed) and generates tonic code;
//! generates tonic server traits for Temporal's WorkflowService and OperatorService and the gRPC
//! health service from the descriptor set that `temporalio-protos` exports, reusing that crate's
//! message types; and lists the gRPC path of every method served (`grpc_methods.rs`).

use prost::Message;

/// Temporal service files whose services Keel serves.
const TEMPORAL_SERVICES: [&str; 3] = [
    "temporal/api/workflowservice/v1/service.proto",
    "temporal/api/operatorservice/v1/service.proto",
    "health/v1/health.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "keel/raft/v1/transport.proto",
        "keel/debug/v1/kv.proto",
        "keel/admin/v1/cluster.proto",
        "keel/shard/v1/forwarding.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed=protos/{file}");
    }
    let descriptors = protox::compile(files, ["protos"])?;
    let mut methods = grpc_method_paths(&descriptors);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;

    let path = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")?;
    println!("cargo:rerun-if-changed={path}");
    let mut temporal = prost_types_fds(&std::fs::read(&path)?)?;
    temporal
        .file
        .retain(|file| TEMPORAL_SERVICES.iter().any(|name| file.name() == *name));
    if temporal.file.len() != TEMPORAL_SERVICES.len() {
        return Err(format!("{path} lacks one of {TEMPORAL_SERVICES:?}").into());
    }
    methods.extend(grpc_method_paths(&temporal));
    write_grpc_methods(&methods)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .extern_path(".temporal", "::temporalio_protos::temporal")
        .extern_path(".grpc.health", "::temporalio_protos::grpc::health")
        .extern_path(".google", "::temporalio_protos::google")
        .compile_fds(temporal)?;
    Ok(())
}

/// `/package.Service/Method` of every method of every service in `descriptors`.
fn grpc_method_paths(descriptors: &prost_types::FileDescriptorSet) -> Vec<String> {
    let mut paths = Vec::new();
    for file in &descriptors.file {
        let prefix = match file.package() {
            "" => String::new(),
            package => format!("{package}."),
        };
        for service in &file.service {
            for method in &service.method {
                paths.push(format!("/{prefix}{}/{}", service.name(), method.name()));
            }
        }
    }
    paths
}

fn write_grpc_methods(paths: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::from("&[\n");
    for path in paths {
        text.push_str(&format!("    {path:?},\n"));
    }
    text.push_str("]\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("grpc_methods.rs"), text)?;
    Ok(())
}

fn prost_types_fds(bytes: &[u8]) -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    prost_types::FileDescriptorSet::decode(bytes)
}
