//! `qgpt perplexity` against llama-perplexity on the same files and text
//! (tests/fixtures/reference/perplexity.json, written by make_perplexity_ref.py).
//!
//! Tolerances are the targets of issue #4: 0.1 % for the F32 file, 0.5 % for the others. The
//! two tools differ by design in float details: llama.cpp stores activation scales (and Q4_1's
//! activation sums) as f16 and multiplies F16 weights with F16 activations, where qgpt keeps them
//! in f32. The random-weight fixtures amplify such differences: measured (both with F16 KV
//! caches, their default), the Q4_1 file differs by 0.34 %, the others by 0.015 % or less.

mod common;

use std::process::Command;

use common::{fixture, perplexity_json};
use serde_json::Value;

fn qgpt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args(args)
        .output()
        .unwrap()
}

fn reference() -> Value {
    let s = std::fs::read_to_string(fixture("reference/perplexity.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn matches_llama_perplexity_on_every_fixture() {
    let r = reference();
    let text = fixture(r["text"].as_str().unwrap());
    let n_ctx = r["n_ctx"].as_u64().unwrap().to_string();
    for (name, want) in r["models"].as_object().unwrap() {
        let model = fixture(&format!("models/{name}.gguf"));
        let got = perplexity_json(model.to_str().unwrap(), &text, &n_ctx, &[]);
        assert_eq!(got["chunks"], want["chunks"], "{name}");
        let (g, w) = (got["ppl"].as_f64().unwrap(), want["ppl"].as_f64().unwrap());
        let tol = if name.ends_with("f32") { 1e-3 } else { 5e-3 };
        assert!(
            (g / w - 1.0).abs() <= tol,
            "{name}: qgpt {g} vs llama-perplexity {w} (tolerance {tol})"
        );
        // The uncertainty is computed the same way, so it tracks the estimate.
        let (gs, ws) = (
            got["ppl_stderr"].as_f64().unwrap(),
            want["ppl_stderr"].as_f64().unwrap(),
        );
        assert!((gs / ws - 1.0).abs() <= 2.0 * tol, "{name}: ± {gs} vs {ws}");
    }
}

#[test]
fn prints_running_figures_then_the_estimate_last() {
    let text = fixture("text/apache-2.0.txt");
    let out = qgpt(&[
        "perplexity",
        "-m",
        fixture("models/small-q8_0.gguf").to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "128",
        "--chunks",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert!(
        lines[0].starts_with("[1]") && lines[0].contains(",[3]"),
        "{s}"
    );
    assert!(!lines[0].contains("[4]"), "--chunks 3 ran more: {s}");
    let last = lines.last().unwrap();
    let rest = last.strip_prefix("PPL = ").expect("last line");
    let (ppl, err) = rest.split_once(" +/- ").unwrap();
    assert!(
        ppl.parse::<f64>().unwrap() > 1.0 && err.parse::<f64>().unwrap() > 0.0,
        "{last}"
    );
}

#[test]
fn refuses_texts_shorter_than_two_chunks_and_bad_contexts() {
    let model = fixture("models/small-q8_0.gguf");
    let dir = std::env::temp_dir().join(format!("qgpt-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "Licensed under the Apache License.").unwrap();
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    let text = fixture("text/apache-2.0.txt");
    let cases: [(&std::path::Path, &str, &str); 4] = [
        (&short, "128", "at least 256"),
        (&text, "4096", "at most the model's 128"),
        (&text, "2", "at least 4"),
        (&latin1, "128", "not UTF-8"),
    ];
    for (file, ctx, msg) in cases {
        let out = qgpt(&[
            "perplexity",
            "-m",
            model.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "-c",
            ctx,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(msg), "-c {ctx}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
