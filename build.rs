//! Build script: compiles the gRPC API (`proto/qgpt/v1/*.proto`) in pure Rust (protox, no system
//! protoc) into tonic/prost code and a descriptor set for server reflection, and records the git
//! commit for `qgpt --version` and the build-info metric.

use std::path::PathBuf;
use std::process::Command;

use prost::Message;

/// The API's files, relative to `proto/`.
const PROTOS: &[&str] = &["qgpt/v1/generation.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS
        .iter()
        .map(|p| PathBuf::from("proto").join(p))
        .collect();
    let fds = protox::compile(&files, ["proto"])?;
    std::fs::write(out.join("qgpt_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    // A build without the repository (a container build's context) may pass the commit in.
    println!("cargo:rerun-if-env-changed=QGPT_GIT_SHA");
    let given = std::env::var("QGPT_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let sha = given.map(|s| s.trim().to_owned()).unwrap_or_else(git_sha);
    println!("cargo:rustc-env=QGPT_GIT_SHA={sha}");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

/// The repository's HEAD commit (12 hex digits), or "unknown" outside a git checkout.
fn git_sha() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
