//! The LLaMA architecture on a tiny synthetic model (tests/fuzz/seeds.rs makes it with qgpt's
//! GGUF writer): it loads and generates, and what qgpt cannot run the way the file means is
//! refused at load with the key and the reason.

#[path = "fuzz/seeds.rs"]
#[allow(dead_code)]
mod seeds;

use std::sync::Arc;
use std::time::Instant;

use qgpt::gguf::{GgufFile, Value};
use qgpt::model::{Arch, LoadedModel, Logits, Scratch};
use qgpt::quant::GgmlType;

fn load(bytes: Vec<u8>) -> Result<LoadedModel, String> {
    let file = GgufFile::from_bytes(bytes).map_err(|e| e.to_string())?;
    LoadedModel::from_file(Arc::new(file), Instant::now()).map_err(|e| e.to_string())
}

#[test]
fn a_tiny_llama_loads_and_runs() {
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16] {
        let m = load(seeds::tiny_llama_gguf(ty, &[])).unwrap();
        let c = m.model.config();
        assert_eq!(
            (c.arch, c.n_head, c.n_head_kv, c.head_dim()),
            (Arch::Llama, 4, 2, 16)
        );
        assert!(!m.model.weights().tied_output);
        let mut cache = m.model.new_cache(16);
        let mut s = Scratch::new(c, 4);
        let mut logits = vec![0.0; c.n_vocab * 6];
        m.model
            .forward(
                &mut cache,
                &[1, 2, 3, 4, 5, 6],
                &mut s,
                Logits::All,
                &mut logits,
            )
            .unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
        assert_eq!(cache.len(), 6);
    }
}

#[test]
fn unsupported_settings_are_refused_at_load() {
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            vec![("llama.rope.scaling.type", Value::String("yarn".into()))],
            "'yarn' rope scaling is not supported",
        ),
        (
            vec![("llama.expert_count", Value::U32(8))],
            "mixture-of-experts",
        ),
        (
            vec![("llama.attention.head_count_kv", Value::U32(3))],
            "3 key/value heads do not divide 4 query heads",
        ),
        (
            vec![("llama.rope.dimension_count", Value::U32(15))],
            "llama.rope.dimension_count",
        ),
        (
            vec![("llama.attention.key_length", Value::U32(32))],
            "llama.attention.key_length",
        ),
        (
            vec![("tokenizer.ggml.pre", Value::String("qwen2".into()))],
            "tokenizer.ggml.pre is 'qwen2'",
        ),
        (
            vec![("general.architecture", Value::String("mamba".into()))],
            "mamba",
        ),
        (
            vec![
                ("llama.embedding_length", Value::U32(512)),
                ("llama.attention.head_count", Value::U32(1)),
            ],
            "heads of 512 values (512 / 1): the attention kernels take at most 256",
        ),
    ];
    for (extra, want) in cases {
        let e = load(seeds::tiny_llama_gguf(GgmlType::Q8_0, &extra))
            .err()
            .unwrap_or_else(|| panic!("{want}: loaded"));
        assert!(e.contains(want), "{want}: {e}");
    }
    // Linear scaling is understood: positions are divided by the factor.
    let extra = [("llama.rope.scaling.factor", Value::F32(4.0))];
    let m = load(seeds::tiny_llama_gguf(GgmlType::Q8_0, &extra)).unwrap();
    assert_eq!(m.model.config().rope.unwrap().pos_scale, 0.25);
}

#[test]
fn llama3_vocabularies_take_whole_tokens_and_start_with_bos() {
    // The tiny vocabulary has "hello" as a token that no merge reaches, and no add_bos key.
    let smollm = load(seeds::tiny_llama_gguf(GgmlType::Q8_0, &[])).unwrap();
    let ids = smollm.encode_prompt("hello").unwrap();
    assert_eq!(ids.len(), 4, "merged from bytes, no BOS: {ids:?}");
    let pre = [("tokenizer.ggml.pre", Value::String("llama-bpe".into()))];
    let llama3 = load(seeds::tiny_llama_gguf(GgmlType::Q8_0, &pre)).unwrap();
    let (bos, hello) = (260, 259);
    assert_eq!(llama3.encode_prompt("hello").unwrap(), [bos, hello]);
    // A BOS written in the text is not doubled.
    assert_eq!(
        llama3.encode_prompt("<|endoftext|>hello").unwrap(),
        [bos, hello]
    );
}

/// The forward pass against a plain f64 implementation of LLaMA written from its definition:
/// RMSNorm, q/k/v, rotary positions on the first 8 of each head's 16 values (llama.cpp's
/// adjacent pairs), 4 query heads over 2 key/value heads, causal softmax attention, SwiGLU, an
/// untied head; F32 weights, exact matmul, F32 cache, a prompt split over rounds of 4.
#[test]
fn matches_a_plain_llama_forward_pass() {
    let extra = [("llama.rope.dimension_count", Value::U32(8))];
    let bytes = seeds::tiny_llama_gguf(GgmlType::F32, &extra);
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let t = |name: &str| -> Vec<f64> {
        let v = file.tensor(name).unwrap_or_else(|| panic!("{name}"));
        v.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect()
    };
    let (e, nh, nkv, hd, dims, eps, base) = (64, 4, 2, 16, 8, 1e-5f64, 10_000f64);
    let mm = |w: &[f64], x: &[f64]| -> Vec<f64> {
        w.chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
        x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_exact_mut(hd) {
            for i in 0..dims / 2 {
                let th = pos as f64 * base.powf(-2.0 * i as f64 / dims as f64);
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * th.cos() - b * th.sin();
                head[2 * i + 1] = a * th.sin() + b * th.cos();
            }
        }
    };
    let tokens = [5u32, 100, 258, 7, 42, 42, 3, 200, 9];
    let embd = t("token_embd.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&id| embd[id as usize * e..][..e].to_vec())
        .collect();
    let (mut keys, mut vals) = (Vec::new(), Vec::new());
    let l = |n: &str| t(&format!("blk.0.{n}.weight"));
    let (wq, wk, wv, wo) = (l("attn_q"), l("attn_k"), l("attn_v"), l("attn_output"));
    let (wg, wu, wd) = (l("ffn_gate"), l("ffn_up"), l("ffn_down"));
    let mut qs = Vec::new();
    for (pos, x) in xs.iter().enumerate() {
        let h = rms(x, &l("attn_norm"));
        let (mut q, mut k) = (mm(&wq, &h), mm(&wk, &h));
        rope(&mut q, pos);
        rope(&mut k, pos);
        qs.push(q);
        keys.push(k);
        vals.push(mm(&wv, &h));
    }
    for (i, x) in xs.iter_mut().enumerate() {
        let mut att = vec![0.0; e];
        for h in 0..nh {
            let g = h / (nh / nkv);
            let q = &qs[i][h * hd..][..hd];
            let s: Vec<f64> = (0..=i)
                .map(|j| {
                    let k = &keys[j][g * hd..][..hd];
                    q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
            let z: f64 = p.iter().sum();
            for d in 0..hd {
                att[h * hd + d] = (0..=i).map(|j| p[j] * vals[j][g * hd + d]).sum::<f64>() / z;
            }
        }
        for (a, b) in x.iter_mut().zip(mm(&wo, &att)) {
            *a += b;
        }
        let h = rms(x, &l("ffn_norm"));
        let act: Vec<f64> = mm(&wg, &h)
            .iter()
            .zip(mm(&wu, &h))
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        for (a, b) in x.iter_mut().zip(mm(&wd, &act)) {
            *a += b;
        }
    }
    let want: Vec<f64> = xs
        .iter()
        .flat_map(|x| mm(&t("output.weight"), &rms(x, &t("output_norm.weight"))))
        .collect();

    let mut m = load(bytes).unwrap();
    m.model.set_exact_matmul(true);
    m.model.set_kv_type(qgpt::model::KvType::F32);
    let c = m.model.config();
    assert_eq!(c.rope.unwrap().dims, 8);
    let mut cache = m.model.new_cache(16);
    let mut s = Scratch::new(c, 4);
    let mut got = vec![0.0; c.n_vocab * tokens.len()];
    m.model
        .forward(&mut cache, &tokens, &mut s, Logits::All, &mut got)
        .unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(
        worst < 1e-4 * scale.max(1.0),
        "max |Δ| {worst}, scale {scale}"
    );
    // Decoding the last token alone after the others gives the same logits.
    let mut cache = m.model.new_cache(16);
    let n = tokens.len();
    let mut last = vec![0.0; c.n_vocab];
    m.model
        .forward(
            &mut cache,
            &tokens[..n - 1],
            &mut s,
            Logits::Last,
            &mut last,
        )
        .unwrap();
    m.model
        .forward(
            &mut cache,
            &tokens[n - 1..],
            &mut s,
            Logits::Last,
            &mut last,
        )
        .unwrap();
    let tail = &want[(n - 1) * c.n_vocab..];
    let worst = last
        .iter()
        .zip(tail)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4 * scale.max(1.0), "decode: max |Δ| {worst}");
}
