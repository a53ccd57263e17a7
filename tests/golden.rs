//! The forward pass against Hugging Face transformers (float32) on llama.cpp-converted files.
//!
//! Two references per file (tests/fixtures/make_fixtures.py):
//! - `dequantized`: transformers run on exactly the weights the file holds (gguf-py dequantize).
//!   This isolates our forward pass: log-probs must agree within `FORWARD_TOL`.
//! - `original`: the float32 model before conversion. Quantizing the weights alone moves the
//!   log-probs by up to `max_abs_logprob_diff_dequantized_vs_original` (measured by the script
//!   with transformers); our run may differ from the original by that much plus `FORWARD_TOL`.
//!
//! The forward pass runs twice per file: in exact mode (quantized weights dequantized to f32, as
//! transformers sees them), held to `FORWARD_TOL`; and in the default fast mode, where activations
//! are quantized to 8 bits per matmul (as llama.cpp does) and integer kernels run, held to
//! `ACT_QUANT_TOL` against the same reference.
//!
//! Greedy ids must match wherever the reference's top-1/top-2 margin exceeds twice the tolerance
//! (a near-tie may legitimately flip); the log-prob of the reference's own token is checked at
//! every step by teacher forcing.

mod common;

use common::{check_greedy, fixture, reference, Run};
use qgpt::kernels::{Isa, Kernels};
use qgpt::model::{KvType, LoadedModel, Logits, Scratch};
use qgpt::ops::log_softmax;
use qgpt::sampling::argmax;

/// Float32 arithmetic in a different order than PyTorch's; observed differences are ~1e-5.
const FORWARD_TOL: f64 = 1e-3;

/// The fast path keeps keys and values in F16 (11-bit significands: each value rounded by up to
/// 2⁻¹¹ relative). On the float fixtures that moves log-probs by at most 3.2·10⁻³ (measured,
/// small-f32 "Once upon a time"); 5·10⁻³ on top of the forward tolerance leaves room for
/// summation order across ISAs. Exact mode uses an F32 cache.
const KV_F16_TOL: f64 = 5e-3;

/// Quantizing each matmul's input to 8 bits (one scale per 32 values) perturbs it by up to
/// 0.5/127 of its block's largest magnitude. These random-weight fixtures amplify perturbations
/// (quantizing the weights alone to Q8_0 moves their log-probs by 0.14), and the fast path's
/// measured deviation from the exact reference is at most 0.20 (small-q4_0, "Once upon a time");
/// 0.25 leaves room for summation order across ISAs. Gross kernel errors (a wrong nibble order,
/// a lost scale) move log-probs by whole nats and still fail.
const ACT_QUANT_TOL: f64 = 0.25;

/// Teacher-forces `run.ids` after `prompt` and compares step by step.
fn check_run(m: &LoadedModel, label: &str, prompt: &[u32], run: &Run, tol: f64) {
    let n_vocab = m.model.config().n_vocab;
    let mut cache = m.model.new_cache(prompt.len() + run.ids.len());
    let mut scratch = Scratch::new(m.model.config(), 16);
    let mut logits = vec![0f32; n_vocab];
    let mut lp = vec![0f32; n_vocab];
    m.model
        .forward(&mut cache, prompt, &mut scratch, Logits::Last, &mut logits)
        .unwrap();
    let mut worst = 0f64;
    for (step, &want) in run.ids.iter().enumerate() {
        log_softmax(&logits, &mut lp);
        let diff = (lp[want as usize] as f64 - run.logprobs[step]).abs();
        worst = worst.max(diff);
        assert!(
            diff <= tol,
            "{label} step {step}: log p(token {want}) = {} vs reference {} (|Δ| {diff:.2e} > {tol:.2e})",
            lp[want as usize],
            run.logprobs[step]
        );
        if run.margins[step] > 2.0 * tol {
            assert_eq!(
                argmax(&logits),
                want,
                "{label} step {step}: greedy token differs (margin {})",
                run.margins[step]
            );
        }
        m.model
            .forward(&mut cache, &[want], &mut scratch, Logits::Last, &mut logits)
            .unwrap();
    }
    eprintln!("{label}: max |Δ log p| = {worst:.2e} (tolerance {tol:.2e})");
}

fn check_file(stem: &str, quantized: bool) {
    let r = reference(stem);
    let mut m = LoadedModel::open(&fixture(&r.gguf)).unwrap();
    assert_eq!(m.model.config().n_vocab, r.n_vocab);
    let quant_tol = r.max_abs_logprob_diff_dequantized_vs_original + FORWARD_TOL;

    // Fast mode (the default): integer kernels on 8-bit activations for quantized weights, on
    // every ISA this CPU has.
    let fast_tol = if quantized {
        ACT_QUANT_TOL
    } else {
        FORWARD_TOL + KV_F16_TOL
    };
    for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
        m.model.set_kernels(k);
        for c in &r.cases {
            let label = format!("{stem} {:?} fast ({}) vs dequantized", c.prompt, k.isa);
            check_run(&m, &label, &c.prompt_ids, &c.dequantized, fast_tol);
            check_greedy(&m, &label, &c.prompt_ids, &c.dequantized, fast_tol);
        }
    }

    // Exact mode: f32 weights rows, f32 activations, f32 keys and values.
    m.model.set_exact_matmul(true);
    m.model.set_kv_type(KvType::F32);
    for c in &r.cases {
        assert_eq!(
            m.tokenizer.encode(&c.prompt).unwrap(),
            c.prompt_ids,
            "{stem}: prompt ids of {:?}",
            c.prompt
        );
        let label = format!("{stem} {:?}", c.prompt);
        check_run(
            &m,
            &format!("{label} vs dequantized"),
            &c.prompt_ids,
            &c.dequantized,
            FORWARD_TOL,
        );
        check_greedy(
            &m,
            &format!("{label} vs dequantized"),
            &c.prompt_ids,
            &c.dequantized,
            FORWARD_TOL,
        );
        let tol = if quantized { quant_tol } else { FORWARD_TOL };
        check_run(
            &m,
            &format!("{label} vs original"),
            &c.prompt_ids,
            &c.original,
            tol,
        );
        check_greedy(
            &m,
            &format!("{label} vs original"),
            &c.prompt_ids,
            &c.original,
            tol,
        );
    }
}

#[test]
fn f32_matches_transformers() {
    check_file("small-f32", false);
}

#[test]
fn f16_matches_transformers() {
    check_file("small-f16", true);
}

#[test]
fn q8_0_matches_transformers() {
    check_file("small-q8_0", true);
}

#[test]
fn q4_0_with_q6_k_embedding_matches_transformers() {
    check_file("small-q4_0", true);
}

#[test]
fn q4_1_with_q6_k_embedding_matches_transformers() {
    check_file("small-q4_1", true);
}

#[test]
fn real_gpt2_vocabulary_model_matches_transformers() {
    check_file("gpt2vocab-q8_0", true);
}
