//! GPT-2 (`GPT2LMHeadModel`) checkpoints: hyperparameters from config.json and the mapping of
//! Hugging Face tensor names onto llama.cpp's gpt2 GGUF layout, with every shape checked.

use std::collections::BTreeSet;

use serde_json::{Map, Value as Json};

use super::hf::Checkpoint;
use super::ConvertError;

/// GPT-2 hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Params {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Rows of the position embedding.
    pub n_positions: usize,
    /// `gpt2.context_length`: config `n_ctx`, else `n_positions`.
    pub n_ctx: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub eps: f32,
}

fn unsupported(msg: String) -> ConvertError {
    ConvertError::Unsupported(msg)
}

fn uint(config: &Map<String, Json>, key: &str) -> Result<Option<usize>, ConvertError> {
    match config.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0 && n <= u32::MAX as u64)
            .map(|n| Some(n as usize))
            .ok_or_else(|| {
                ConvertError::Config(format!("{key} is {v}: expected a positive integer"))
            }),
    }
}

fn required(config: &Map<String, Json>, key: &str) -> Result<usize, ConvertError> {
    uint(config, key)?.ok_or_else(|| ConvertError::Config(format!("{key} is missing")))
}

fn flag(config: &Map<String, Json>, key: &str) -> bool {
    config.get(key).and_then(Json::as_bool).unwrap_or(false)
}

/// Reads and checks the hyperparameters; refuses other architectures and GPT-2 variants that
/// qgpt's forward pass would compute differently.
pub fn params(config: &Map<String, Json>) -> Result<Gpt2Params, ConvertError> {
    let archs: Vec<&str> = config
        .get("architectures")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let model_type = config.get("model_type").and_then(Json::as_str);
    let is_gpt2 = if archs.is_empty() {
        model_type == Some("gpt2")
    } else {
        archs.contains(&"GPT2LMHeadModel")
    };
    if !is_gpt2 {
        let what = if archs.is_empty() {
            format!("model_type {:?}", model_type.unwrap_or("(none)"))
        } else {
            format!("architecture {}", archs.join(", "))
        };
        return Err(unsupported(format!(
            "{what}: qgpt convert supports GPT2LMHeadModel (model_type \"gpt2\")"
        )));
    }
    let act = config
        .get("activation_function")
        .and_then(Json::as_str)
        .unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
        return Err(unsupported(format!(
            "activation_function {act:?}: llama.cpp's gpt2 graph (and qgpt's) computes the tanh \
             GELU (gelu_new)"
        )));
    }
    for key in ["scale_attn_by_inverse_layer_idx", "add_cross_attention"] {
        if flag(config, key) {
            return Err(unsupported(format!(
                "{key} = true is not part of llama.cpp's gpt2 graph"
            )));
        }
    }
    if config.get("scale_attn_weights").and_then(Json::as_bool) == Some(false) {
        return Err(unsupported(
            "scale_attn_weights = false is not part of llama.cpp's gpt2 graph".into(),
        ));
    }
    let n_embd = required(config, "n_embd")?;
    let n_head = required(config, "n_head")?;
    if !n_embd.is_multiple_of(n_head) {
        return Err(ConvertError::Config(format!(
            "n_embd {n_embd} is not a multiple of n_head {n_head}"
        )));
    }
    let n_positions = required(config, "n_positions")?;
    let n_ctx = uint(config, "n_ctx")?.unwrap_or(n_positions);
    if n_ctx != n_positions {
        // llama.cpp would write n_ctx as the context length beside an n_positions-row position
        // embedding, a file that neither it nor qgpt can use past the shorter of the two.
        return Err(ConvertError::Config(format!(
            "n_ctx {n_ctx} differs from n_positions {n_positions}"
        )));
    }
    let eps = match config.get("layer_norm_epsilon") {
        None => 1e-5,
        Some(v) => v
            .as_f64()
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| ConvertError::Config(format!("layer_norm_epsilon is {v}")))?
            as f32,
    };
    Ok(Gpt2Params {
        n_layer: required(config, "n_layer")?,
        n_embd,
        n_head,
        n_positions,
        n_ctx,
        n_ff: uint(config, "n_inner")?.unwrap_or(4 * n_embd),
        n_vocab: required(config, "vocab_size")?,
        eps,
    })
}

/// One checkpoint tensor placed in the GGUF file.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// GGUF name.
    pub name: String,
    /// Index into [`Checkpoint::tensors`].
    pub src: usize,
    /// ggml dims of the output (`dims[0]` contiguous).
    pub dims: Vec<u64>,
    /// HF Conv1D weights are stored `[in, out]`; GGUF wants rows of `in` values.
    pub transpose: bool,
}

/// GGUF name, expected PyTorch shape, and whether it is a Conv1D weight, for an HF name.
fn target(p: &Gpt2Params, hf: &str) -> Option<(String, Vec<usize>, bool)> {
    let (e, ff, v) = (p.n_embd, p.n_ff, p.n_vocab);
    let top = match hf {
        "wte.weight" => Some(("token_embd.weight", vec![v, e])),
        "wpe.weight" => Some(("position_embd.weight", vec![p.n_positions, e])),
        "ln_f.weight" => Some(("output_norm.weight", vec![e])),
        "ln_f.bias" => Some(("output_norm.bias", vec![e])),
        "lm_head.weight" => Some(("output.weight", vec![v, e])),
        _ => None,
    };
    if let Some((name, shape)) = top {
        return Some((name.to_owned(), shape, false));
    }
    let rest = hf.strip_prefix("h.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok().filter(|&l| l < p.n_layer)?;
    let (gguf, shape, conv) = match rest {
        "ln_1.weight" => ("attn_norm.weight", vec![e], false),
        "ln_1.bias" => ("attn_norm.bias", vec![e], false),
        "attn.c_attn.weight" => ("attn_qkv.weight", vec![e, 3 * e], true),
        "attn.c_attn.bias" => ("attn_qkv.bias", vec![3 * e], false),
        "attn.c_proj.weight" => ("attn_output.weight", vec![e, e], true),
        "attn.c_proj.bias" => ("attn_output.bias", vec![e], false),
        "ln_2.weight" => ("ffn_norm.weight", vec![e], false),
        "ln_2.bias" => ("ffn_norm.bias", vec![e], false),
        "mlp.c_fc.weight" => ("ffn_up.weight", vec![e, ff], true),
        "mlp.c_fc.bias" => ("ffn_up.bias", vec![ff], false),
        "mlp.c_proj.weight" => ("ffn_down.weight", vec![ff, e], true),
        "mlp.c_proj.bias" => ("ffn_down.bias", vec![e], false),
        _ => return None,
    };
    Some((format!("blk.{layer}.{gguf}"), shape, conv))
}

/// Maps every checkpoint tensor (in checkpoint order) and checks that the model is complete.
pub fn map_tensors(ck: &Checkpoint, p: &Gpt2Params) -> Result<Vec<Mapped>, ConvertError> {
    // A layer has 12 tensors: a config promising more layers than the checkpoint has tensors is
    // refused before anything is sized by its n_layer (the list of missing names below stays
    // within 12 × the tensor count).
    if p.n_layer > ck.tensors.len() {
        return Err(ConvertError::Config(format!(
            "n_layer {} but the checkpoint holds only {} tensors",
            p.n_layer,
            ck.tensors.len()
        )));
    }
    let mut out = Vec::new();
    for (i, t) in ck.tensors.iter().enumerate() {
        let hf = t.name.strip_prefix("transformer.").unwrap_or(&t.name);
        // Attention-mask buffers that old checkpoints saved; they are not weights.
        if hf.ends_with(".attn.bias") || hf.ends_with(".attn.masked_bias") {
            continue;
        }
        let (name, shape, conv) = target(p, hf).ok_or_else(|| {
            ConvertError::UnknownTensor(format!(
                "{} (in {}) is not part of a GPT-2 model with {} layers",
                t.name,
                ck.part_path(t).display(),
                p.n_layer
            ))
        })?;
        ck.source_type(t)?;
        if t.shape != shape {
            return Err(ConvertError::Shape {
                name: t.name.clone(),
                expected: shape,
                found: t.shape.clone(),
            });
        }
        if out.iter().any(|m: &Mapped| m.name == name) {
            return Err(ConvertError::UnknownTensor(format!(
                "{} maps to {name}, which another tensor already filled",
                t.name
            )));
        }
        // ggml dims are PyTorch's reversed; a transposed [in, out] becomes [in, out] in ggml
        // order (rows of `in` values).
        let dims: Vec<u64> = if conv {
            shape.iter().map(|&d| d as u64).collect()
        } else {
            shape.iter().rev().map(|&d| d as u64).collect()
        };
        out.push(Mapped {
            name,
            src: i,
            dims,
            transpose: conv,
        });
    }
    let have: BTreeSet<&str> = out.iter().map(|m| m.name.as_str()).collect();
    let mut want = vec![
        "token_embd.weight".to_owned(),
        "position_embd.weight".to_owned(),
        "output_norm.weight".to_owned(),
        "output_norm.bias".to_owned(),
    ];
    for l in 0..p.n_layer {
        for t in [
            "attn_norm.weight",
            "attn_norm.bias",
            "attn_qkv.weight",
            "attn_qkv.bias",
            "attn_output.weight",
            "attn_output.bias",
            "ffn_norm.weight",
            "ffn_norm.bias",
            "ffn_up.weight",
            "ffn_up.bias",
            "ffn_down.weight",
            "ffn_down.bias",
        ] {
            want.push(format!("blk.{l}.{t}"));
        }
    }
    let missing: Vec<String> = want
        .into_iter()
        .filter(|w| !have.contains(w.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(ConvertError::MissingTensors(missing));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Map<String, Json> {
        let text = format!(
            r#"{{"architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_head": 4, "n_layer": 2,
                "n_positions": 128, "vocab_size": 100 {extra}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn reads_gpt2_params() {
        let p = params(&config("")).unwrap();
        assert_eq!((p.n_ff, p.n_ctx, p.eps), (256, 128, 1e-5));
        let p = params(&config(r#", "n_inner": 100, "n_ctx": 128"#)).unwrap();
        assert_eq!((p.n_ff, p.n_ctx), (100, 128));
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let e = params(&config(r#", "architectures": ["LlamaForCausalLM"]"#)).unwrap_err();
        assert!(e.to_string().contains("LlamaForCausalLM"), "{e}");
        let e = params(&config(r#", "activation_function": "relu""#)).unwrap_err();
        assert!(e.to_string().contains("relu"), "{e}");
        let e = params(&config(r#", "n_head": 5"#)).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = params(&config(r#", "n_layer": -1"#)).unwrap_err();
        assert!(e.to_string().contains("n_layer"), "{e}");
        let e = params(&config(r#", "n_ctx": 64"#)).unwrap_err();
        assert!(e.to_string().contains("differs from n_positions"), "{e}");
        let e = params(&config(r#", "scale_attn_by_inverse_layer_idx": true"#)).unwrap_err();
        assert!(e.to_string().contains("scale_attn"), "{e}");
    }
}
