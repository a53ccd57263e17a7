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
