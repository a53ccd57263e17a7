//! Faults injected into `qgpt serve`: its model file truncated under it, SIGKILL and a restart,
//! a KV budget the machine cannot hold.
#![cfg(unix)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{fixture, serve_refusing_huge_kv, spawn_serve, spawn_serve_on, wait_serving};
use qgpt::server::pb::text_generation_client::TextGenerationClient;
use qgpt::server::pb::{self, generate_request::Input};

/// Waits for the "serving" log line; panics with the log if the server exits or takes 30 s.
async fn generate(port: u16, prompt: &str) -> Result<usize, tonic::Status> {
    let mut c = TextGenerationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let req = pb::GenerateRequest {
        input: Some(Input::Prompt(prompt.into())),
        max_new_tokens: 4,
        ignore_eos: true,
        ..Default::default()
    };
    Ok(c.generate(req).await?.into_inner().tokens.len())
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "qgpt serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qgpt-faults-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_truncated_under_the_server_ends_it_with_a_clear_message() {
    let dir = scratch("truncate");
    let model = dir.join("model.gguf");
    std::fs::copy(fixture("models/small-q8_0.gguf"), &model).unwrap();
    let m = model.display().to_string();
    let (mut child, port, rx) = spawn_serve(&["-m", &m], &[("RUST_LOG", "info")]);
    wait_serving(&mut child, &rx);
    assert_eq!(generate(port, "Hello").await.unwrap(), 4);
    // What an in-place copy of a new model over the served one does: the weights go away.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(
        generate(port, "Hello again").await.is_err(),
        "generated from a truncated file"
    );
    let status = wait_exit(&mut child);
    let log: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(135), "{status}: {log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("SIGBUS") && l.contains("read-only volumes")),
        "{log:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_serves_again_with_nothing_to_recover() {
    let m = fixture("models/small-q8_0.gguf").display().to_string();
    let (mut child, port, rx) = spawn_serve(&["-m", &m], &[("RUST_LOG", "info")]);
    wait_serving(&mut child, &rx);
    assert_eq!(generate(port, "Hello").await.unwrap(), 4);
    child.kill().unwrap(); // SIGKILL
    let status = wait_exit(&mut child);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // Same port at once: no state on disk, no lock, the listener is reusable.
    let (mut child, rx) = spawn_serve_on(port, &["-m", &m], &[("RUST_LOG", "info")]);
    wait_serving(&mut child, &rx);
    assert_eq!(generate(port, "Hello").await.unwrap(), 4);
    child.kill().unwrap();
    wait_exit(&mut child);
}

#[test]
fn a_kv_cache_bigger_than_memory_is_refused_at_startup() {
    let m = fixture("models/small-q8_0.gguf").display().to_string();
    // 100 million running requests of 128 positions at 4 KiB each (F32): 48,828 GiB of KV cache,
    // more than any machine has (else this server would start and the test would wait on it).
    let err = serve_refusing_huge_kv(&m);
    assert!(
        err.contains("the KV cache may grow to 48828.1 GiB"),
        "{err}"
    );
    assert!(
        err.contains("lower --kv-cache-tokens or --max-running"),
        "{err}"
    );
}
