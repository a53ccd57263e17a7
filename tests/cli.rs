//! The `qgpt` binary: inspect, tokenize and generate on llama.cpp-made fixtures.

mod common;

use std::process::{Command, Output};

use common::{fixture, json_stdout, reference, tensor_map};
use serde_json::Value;

fn qgpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = qgpt(args);
    assert!(
        out.status.success(),
        "qgpt {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn to_refs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn path_small() -> String {
    path("small-q8_0")
}

fn path(stem: &str) -> String {
    fixture(&format!("models/{stem}.gguf"))
        .display()
        .to_string()
}

#[test]
fn inspect_shows_hyperparameters_tokenizer_and_tensors() {
    let s = ok_stdout(&["inspect", &path("small-q4_0")]);
    assert!(s.contains("architecture: gpt2"), "{s}");
    assert!(s.contains("file type: MOSTLY_Q4_0 (2)"), "{s}");
    assert!(
        s.contains("n_vocab=512 n_ctx=128 n_embd=256 n_ff=1024 n_head=4 n_head_kv=4 n_layer=2"),
        "{s}"
    );
    assert!(s.contains("output head: tied to token_embd.weight"), "{s}");
    let row = s
        .lines()
        .find(|l| l.trim_start().starts_with("token_embd.weight"))
        .unwrap();
    // 512 rows of 256 values in Q6_K: 512 · 210 bytes.
    assert!(
        row.contains("Q6_K") && row.contains("[256, 512]") && row.contains("107520"),
        "{row}"
    );
    assert!(s.contains("Q4_0 ×8"), "{s}");
    assert!(s.contains("model check: ok"), "{s}");
}

#[test]
fn tokenize_prints_hugging_face_ids() {
    let r = reference("gpt2vocab-q8_0");
    for c in &r.cases {
        let s = ok_stdout(&["tokenize", "-m", &path("gpt2vocab-q8_0"), &c.prompt]);
        let ids: Vec<u32> = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(ids, c.prompt_ids, "{:?}", c.prompt);
        assert_eq!(s.lines().count(), 1);
    }
}

#[test]
fn tokenize_reads_a_file() {
    let file = std::env::temp_dir().join(format!("qgpt-tokenize-{}.txt", std::process::id()));
    std::fs::write(&file, "Hello world").unwrap();
    let s = ok_stdout(&[
        "tokenize",
        "-m",
        &path("gpt2vocab-q8_0"),
        "--file",
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).ok();
    assert_eq!(s.trim(), "[15496,995]");
}

#[test]
fn generate_json_is_greedy_and_complete() {
    let r = reference("small-q8_0");
    let c = &r.cases[0];
    let n = 8;
    let s = ok_stdout(&[
        "generate",
        "-m",
        &path("small-q8_0"),
        "-p",
        &c.prompt,
        "-n",
        &n.to_string(),
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
        "-t",
        "2",
    ]);
    let v: Value = serde_json::from_str(s.trim()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
    let prompt_ids: Vec<u32> = serde_json::from_value(v["prompt_ids"].clone()).unwrap();
    assert_eq!(prompt_ids, c.prompt_ids);
    let firm = c
        .dequantized
        .margins
        .iter()
        .take(n)
        .take_while(|&&m| m > 2e-3)
        .count();
    assert_eq!(&ids[..firm], &c.dequantized.ids[..firm]);
    assert_eq!(v["prompt_tokens"], c.prompt_ids.len());
    assert_eq!(v["generated_tokens"], n);
    assert!(v["text"].is_string());
    assert!(v["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["finish_reason"], "length");
}

#[test]
fn generate_streams_the_text_of_its_ids() {
    let args = |json: bool| {
        let mut a = vec![
            "generate".to_string(),
            "-m".into(),
            path("gpt2vocab-q8_0"),
            "--prompt-ids".into(),
            "464 2068 7586".into(),
            "-n".into(),
            "12".into(),
            "--seed".into(),
            "42".into(),
            "--ignore-eos".into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let streamed = ok_stdout(&to_refs(&args(false)));
    let v: Value = serde_json::from_str(ok_stdout(&to_refs(&args(true))).trim()).unwrap();
    // Same seed, same sampling: the streamed text is the JSON text plus a final newline.
    assert_eq!(streamed, format!("{}\n", v["text"].as_str().unwrap()));
    assert_eq!(v["seed"], 42);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let never = std::env::temp_dir()
        .join(format!("qgpt-never-{}.gguf", std::process::id()))
        .display()
        .to_string();
    let never = never.as_str();
    let cases: &[&[&str]] = &[
        &["generate", "-m", "/nonexistent.gguf", "-p", "x"],
        &[
            "generate",
            "-m",
            &path("small-q8_0"),
            "-p",
            "x",
            "--temperature",
            "-1",
        ],
        &[
            "generate",
            "-m",
            &path("small-q8_0"),
            "-p",
            "x",
            "--top-p",
            "0",
        ],
        &[
            "generate",
            "-m",
            &path("small-q8_0"),
            "--prompt-ids",
            "1 two 3",
        ],
        &[
            "generate",
            "-m",
            &path("small-q8_0"),
            "--prompt-ids",
            "1 99999",
        ],
        &["generate", "-m", &path("small-q8_0"), "-p", ""],
        &[
            "tokenize",
            "-m",
            &path("small-q8_0"),
            "--file",
            "/nonexistent.txt",
        ],
        &["convert", "/nonexistent-dir", "-o", never],
        &[
            "convert",
            &fixture("models").display().to_string(),
            "-o",
            never,
        ],
        &["quantize", &path("small-q8_0"), never, "Q4_0"],
        &["quantize", &path("small-f32"), &path("small-f32"), "Q8_0"],
        &["quantize", "/nonexistent.gguf", never, "Q8_0"],
    ];
    for args in cases {
        let out = qgpt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(never).exists());
}

#[test]
fn convert_then_quantize_then_generate() {
    let dir = std::env::temp_dir().join(format!("qgpt-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f32 = dir.join("small-f32.gguf").display().to_string();
    let q4 = dir.join("small-q4_0.gguf").display().to_string();
    let hf = fixture("hf-small").display().to_string();
    let out = qgpt(&["convert", &hf, "-o", &f32, "--outtype", "f32", "-t", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("28 tensors: F32 ×28") && err.contains("1.7M parameters"),
        "{err}"
    );
    let out = qgpt(&["quantize", &f32, &q4, "q4_0", "-t", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Q6_K ×1") && err.contains("Q4_0 ×8"), "{err}");
    // The tensors equal llama.cpp's convert + llama-quantize (general.name and the keys
    // llama.cpp derives from directory names differ).
    assert!(
        tensor_map(std::path::Path::new(&q4)) == tensor_map(&fixture("models/small-q4_0.gguf")),
        "convert + quantize differs from llama.cpp's convert + llama-quantize"
    );
    let s = ok_stdout(&[
        "generate",
        "-m",
        &q4,
        "-p",
        "Licensed",
        "-n",
        "4",
        "--temperature",
        "0",
        "--json",
    ]);
    let v: Value = serde_json::from_str(s.trim()).unwrap();
    assert_eq!(v["generated_tokens"], 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad metric settings are refused with exit code 2 naming the flag; `--log-format json` makes
/// every log line a JSON object.
#[test]
fn serve_refuses_bad_metric_settings_and_logs_json_on_request() {
    let model = path("small-q8_0");
    for bad in [
        "qgpt_nope_seconds=1,2",
        "qgpt_step_duration_seconds=2,1",
        "qgpt_step_duration_seconds",
    ] {
        let out = qgpt(&["serve", "-m", &model, "--metrics-buckets", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--metrics-buckets"), "{bad}: {err}");
    }
    let out = qgpt(&[
        "serve",
        "-m",
        &model,
        "--port",
        "50999",
        "--metrics-port",
        "50999",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics-port 50999 is also the gRPC port"),
        "{err}"
    );
    // JSON logs: every line on stderr but the final error is one JSON object with a level and
    // a message (a server refused at startup still logs its first lines).
    let out = Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args(["serve", "-m", &model, "--host", "127.0.0.1", "--port", "0"])
        .args([
            "--metrics-port",
            "0",
            "--max-running",
            "0",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let logs: Vec<Value> = err
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!logs.is_empty(), "{err}");
    for l in &logs {
        assert_eq!(l["level"], "INFO", "{l}");
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    assert!(
        logs.iter().any(|l| l["fields"]["threads"].is_u64()),
        "the pool size is logged as a number: {err}"
    );
}

/// Engine limits that cannot work are refused at startup with exit code 2 and an error that
/// names the flag.
#[test]
fn serve_refuses_impossible_engine_limits() {
    let model = path("small-q8_0");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-prefill-while-decoding", "0"],
            "--max-prefill-while-decoding",
        ),
        (
            &["--max-batch-tokens", "4", "--max-running", "8"],
            "--max-batch-tokens (4)",
        ),
        (&["--max-running", "0"], "--max-running"),
        (&["--stream-buffer", "0"], "--stream-buffer"),
    ];
    for (flags, names) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qgpt"))
            .args(["serve", "-m", &model, "--host", "127.0.0.1", "--port", "0"])
            .args(["--metrics-port", "0"])
            .args(*flags)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that accepted the limits would serve until killed.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > end {
                child.kill().unwrap();
                panic!("{flags:?}: the server started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        assert!(line.contains(names), "{flags:?}: {err}");
    }
}

#[test]
fn bench_kernels_reports_every_shape_as_json() {
    let s = ok_stdout(&[
        "bench",
        "--kernels",
        "--types",
        "q4_0",
        "--no-512",
        "--reps",
        "1",
        "--llc-mib",
        "1",
        "--json",
        "-t",
        "2",
    ]);
    let lines: Vec<Value> = s
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["test"], "read_bandwidth");
    assert!(lines[0]["gb_s"].as_f64().unwrap() > 0.0);
    // The int8 peak: measured where the level has a loop for it (AVX-512), null elsewhere.
    assert_eq!(lines[1]["test"], "int8_peak");
    let peak = &lines[1]["gop_s"];
    assert!(peak.is_null() || peak.as_f64().unwrap() > 0.0, "{peak}");
    // One line per GPT-2 124M shape.
    assert_eq!(lines.len(), 2 + 5, "{s}");
    for r in &lines[2..] {
        assert_eq!(r["ty"], "Q4_0");
        assert!(r["batch1_gb_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["batch8_gop_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn bench_model_writes_llama_bench_jsonl_and_table() {
    let model = path("small-q8_0");
    let s = ok_stdout(&[
        "bench", "-m", &model, "-p", "16", "-n", "4", "-r", "2", "--json",
    ]);
    let lines: Vec<Value> = s
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{s}");
    for (r, (p, g)) in lines.iter().zip([(16, 0), (0, 4)]) {
        assert_eq!(r["n_prompt"], p, "{r}");
        assert_eq!(r["n_gen"], g, "{r}");
        assert_eq!(r["model_filename"], model.as_str());
        assert_eq!(r["model_type"], "gpt2 0.0B Q8_0", "{r}");
        assert!(r["model_size"].as_u64().unwrap() > 0);
        assert!(r["model_n_params"].as_u64().unwrap() > 0);
        assert!(r["n_threads"].as_u64().unwrap() >= 1);
        let samples = r["samples_ts"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{r}");
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2, "{r}");
        let mean = samples.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 2.0;
        assert!(
            (r["avg_ts"].as_f64().unwrap() - mean).abs() < 1e-6 * mean,
            "{r}"
        );
        assert!(r["avg_ns"].as_u64().unwrap() > 0 && r["stddev_ts"].as_f64().is_some());
        if cfg!(target_os = "linux") {
            assert_eq!(
                r["huge_page_bytes"], 0,
                "a small model has no 2 MiB page: {r}"
            );
        }
    }
    let s = ok_stdout(&["bench", "-m", &model, "-p", "8", "-n", "0", "-r", "1"]);
    assert!(
        s.starts_with("| model | size | params | isa | threads | test | t/s |"),
        "{s}"
    );
    assert!(s.lines().nth(2).unwrap().contains("| pp8 |"), "{s}");
    let table = s.lines().take_while(|l| l.starts_with('|')).count();
    assert_eq!(table, 3, "-n 0 skips generation: {s}");
    // Then how the weights are mapped (a small model: no 2 MiB page).
    if cfg!(target_os = "linux") {
        let last = s.lines().last().unwrap();
        assert!(
            last.starts_with("weights: 2 MiB mapped, 0 MiB of it on 2 MiB pages"),
            "{s}"
        );
    }
    // The model has 128 positions.
    let out = qgpt(&["bench", "-m", &model, "-p", "200", "-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pp200 needs 200 positions"));
}

#[test]
fn an_unknown_isa_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .env("QGPT_ISA", "sse9")
        .args(["generate", "-m", &path("small-q8_0"), "-p", "x", "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("QGPT_ISA"));
}

#[test]
fn forced_scalar_isa_generates_the_same_greedy_text() {
    let run = |isa: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_qgpt"))
            .env("QGPT_ISA", isa)
            .args([
                "generate",
                "-m",
                &path("small-f32"),
                "-p",
                "Licensed under",
                "-n",
                "8",
                "--temperature",
                "0",
                "--ignore-eos",
                "--json",
            ])
            .output()
            .unwrap();
        json_stdout(&out)["ids"].clone()
    };
    // F32 weights use float kernels: every level must pick the same greedy tokens.
    assert_eq!(run("scalar"), run(""));
}

/// An empty stop string beside real ones is ignored, and the stop that ends generation is the
/// one named (the matcher's indices refer to the list as given).
#[test]
fn an_empty_stop_string_is_ignored() {
    let model = path_small();
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "generate",
            "-m",
            &model,
            "-p",
            "Licensed under",
            "-n",
            "12",
            "--temperature",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(ok_stdout(&args).trim()).unwrap()
    };
    let free = run(&[]);
    let text = free["text"].as_str().unwrap().to_owned();
    // A stop string from the middle of the free-running text.
    let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop: String = text[cut..].chars().take(2).collect();
    let stopped = run(&["--stop", "", "--stop", "zzzz-never", "--stop", &stop]);
    assert_eq!(stopped["finish_reason"], "stop_sequence", "{stopped}");
    assert_eq!(
        stopped["text"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
}
