//! Seed inputs of the fuzz targets: small valid inputs from which libFuzzer's mutations reach
//! deep into each parser.

use qgpt::gguf::{layout, Array, GgufWriter, TensorEntry, Value};
use qgpt::quant::{quantize_row, GgmlType};
use qgpt::server::pb;

/// GPT-2's byte-to-character alphabet: printable bytes stand for themselves, the others are
/// shifted past U+0100, in order.
fn byte_symbols() -> Vec<String> {
    let mut shifted = 0;
    (0u32..256)
        .map(|b| {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            let c = if printable {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            char::from_u32(c).expect("valid char").to_string()
        })
        .collect()
}

/// A deterministic pseudo-random value in [-1, 1).
fn noise(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// The tokenizer keys of the tiny models: GPT-2's 256 byte symbols, three merges, a token no
/// merge reaches and a control token (BOS = EOS), with the pre-tokenizer `pre`.
fn tiny_vocab(pre: &str) -> (u64, Vec<(String, Value)>) {
    let mut tokens = byte_symbols();
    let merges = ["Ġ t", "h e", "Ġt he"];
    // "hello" is a token no merge reaches: Llama 3 vocabularies take it whole (ignore_merges).
    tokens.extend(["Ġt", "he", "Ġthe", "hello", "<|endoftext|>"].map(str::to_owned));
    let n_vocab = tokens.len() as u64;
    let mut types = vec![1i32; tokens.len()];
    *types.last_mut().expect("tokens") = 3;
    let meta = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(merges.map(str::to_owned).to_vec())),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(n_vocab as u32 - 1),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(n_vocab as u32 - 1),
        ),
    ];
    (n_vocab, meta)
}

/// A one-layer GPT-2 (width `n_embd`, context 8, 261 tokens) with matrices of type `ty`, in
/// llama.cpp's layout.
pub fn tiny_gguf(n_embd: u64, ty: GgmlType) -> Vec<u8> {
    let (n_vocab, vocab) = tiny_vocab("gpt-2");
    let (n_ctx, n_ff) = (8u64, 4 * n_embd);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("gpt2".into())),
        ("gpt2.block_count".into(), Value::U32(1)),
        ("gpt2.context_length".into(), Value::U32(n_ctx as u32)),
        ("gpt2.embedding_length".into(), Value::U32(n_embd as u32)),
        ("gpt2.feed_forward_length".into(), Value::U32(n_ff as u32)),
        ("gpt2.attention.head_count".into(), Value::U32(2)),
        ("gpt2.attention.layer_norm_epsilon".into(), Value::F32(1e-5)),
    ];
    meta.extend(vocab);
    let e = n_embd;
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![e, n_vocab]),
        ("position_embd.weight".into(), vec![e, n_ctx]),
        ("output_norm.weight".into(), vec![e]),
        ("output_norm.bias".into(), vec![e]),
    ];
    for (name, dims) in [
        ("attn_norm.weight", vec![e]),
        ("attn_norm.bias", vec![e]),
        ("attn_qkv.weight", vec![e, 3 * e]),
        ("attn_qkv.bias", vec![3 * e]),
        ("attn_output.weight", vec![e, e]),
        ("attn_output.bias", vec![e]),
        ("ffn_norm.weight", vec![e]),
        ("ffn_norm.bias", vec![e]),
        ("ffn_up.weight", vec![e, n_ff]),
        ("ffn_up.bias", vec![n_ff]),
        ("ffn_down.weight", vec![n_ff, e]),
        ("ffn_down.bias", vec![e]),
    ] {
        shapes.push((format!("blk.0.{name}"), dims));
    }
    write_model(&meta, shapes, ty)
}

/// A one-layer LLaMA (width 64, 4 query heads and 2 key/value heads of 16, context 16, 261
/// tokens, SmolLM's pre-tokenizer, untied head) with matrices of type `ty`; `extra` metadata
/// is added or replaces a key.
pub fn tiny_llama_gguf(ty: GgmlType, extra: &[(&str, Value)]) -> Vec<u8> {
    let (n_vocab, vocab) = tiny_vocab("smollm");
    let (e, kv, n_ff) = (64u64, 32u64, 128u64);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(1)),
        ("llama.context_length".into(), Value::U32(16)),
        ("llama.embedding_length".into(), Value::U32(e as u32)),
        ("llama.feed_forward_length".into(), Value::U32(n_ff as u32)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U32(2)),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("llama.rope.dimension_count".into(), Value::U32(16)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
    ];
    meta.extend(vocab);
    for (k, v) in extra {
        meta.retain(|(key, _)| key != k);
        meta.push(((*k).to_owned(), v.clone()));
    }
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![e, n_vocab]),
        ("output_norm.weight".into(), vec![e]),
        ("output.weight".into(), vec![e, n_vocab]),
    ];
    for (name, dims) in [
        ("attn_norm.weight", vec![e]),
        ("attn_q.weight", vec![e, e]),
        ("attn_k.weight", vec![e, kv]),
        ("attn_v.weight", vec![e, kv]),
        ("attn_output.weight", vec![e, e]),
        ("ffn_norm.weight", vec![e]),
        ("ffn_gate.weight", vec![e, n_ff]),
        ("ffn_up.weight", vec![e, n_ff]),
        ("ffn_down.weight", vec![n_ff, e]),
    ] {
        shapes.push((format!("blk.0.{name}"), dims));
    }
    write_model(&meta, shapes, ty)
}

/// A GGUF file of `meta` and tensors of `shapes`: matrices (other than position embeddings) of
/// type `ty` with small pseudo-random values, norms of ones, other vectors small.
fn write_model(meta: &[(String, Value)], shapes: Vec<(String, Vec<u64>)>, ty: GgmlType) -> Vec<u8> {
    let entries: Vec<TensorEntry> = shapes
        .into_iter()
        .map(|(name, dims)| {
            let matrix = dims.len() == 2 && name != "position_embd.weight";
            TensorEntry {
                name,
                dims,
                ty: if matrix { ty } else { GgmlType::F32 },
            }
        })
        .collect();
    let lay = layout(meta, &entries, 32).expect("tiny layout");
    let mut w = GgufWriter::begin(Vec::new(), lay).expect("header");
    let mut state = 0x5eed;
    for t in &entries {
        let n: u64 = t.dims.iter().product();
        let norm = t.name.ends_with("norm.weight");
        let vals: Vec<f32> = (0..n)
            .map(|_| if norm { 1.0 } else { 0.1 * noise(&mut state) })
            .collect();
        let mut bytes = vec![0u8; t.n_bytes().expect("whole blocks") as usize];
        let (rl, rb) = (
            t.dims[0] as usize,
            bytes.len() / (n as usize / t.dims[0] as usize),
        );
        for (src, dst) in vals.chunks(rl).zip(bytes.chunks_mut(rb)) {
            quantize_row(t.ty, src, dst).expect("quantizable");
        }
        w.write(&bytes).expect("data");
        w.end_tensor().expect("tensor");
    }
    w.finish().expect("complete")
}

fn request(f: impl FnOnce(&mut pb::GenerateRequest)) -> Vec<u8> {
    let mut r = pb::GenerateRequest::default();
    f(&mut r);
    prost::Message::encode_to_vec(&r)
}

/// The seeds of `target`, or None for an unknown target.
pub fn seeds(target: &str) -> Option<Vec<Vec<u8>>> {
    use pb::generate_request::Input;
    Some(match target {
        "gguf_load" => [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::F16,
        ]
        .into_iter()
        .map(|ty| tiny_gguf(32, ty))
        .chain([GgmlType::Q4_1, GgmlType::Q8_0].map(|ty| tiny_llama_gguf(ty, &[])))
        .collect(),
        "tokenizer" => {
            let texts = [
                "Hello world",
                "The quick brown fox jumps over the lazy dog.",
                "  leading spaces\n\n\ttabs and 123 numbers, it's",
                "日本語 🦙 émoji\u{200d}zwj",
                "a<|endoftext|>b",
                "def main():\n    return 0\n",
            ];
            let mut v: Vec<Vec<u8>> = texts
                .iter()
                .map(|t| [&[0u8][..], t.as_bytes()].concat())
                .collect();
            v.push(vec![1, 0, 64, 0, 65, 196, 96, 0xC4, 0x1F]);
            v.push(vec![3, 0xFF, 0xFF, 0x12, 0x34]);
            v
        }
        "request" => vec![
            request(|r| r.input = Some(Input::Prompt("Hello".into()))),
            request(|r| {
                r.input = Some(Input::PromptTokenIds(pb::TokenIds { ids: vec![1, 2, 3] }));
                r.max_new_tokens = 16;
                r.stop = vec!["\n".into(), "END".into()];
                r.stop_token_ids = vec![511];
                r.logprobs = 3;
                r.echo = true;
            }),
            request(|r| {
                r.input = Some(Input::Prompt("x".into()));
                r.sampling = Some(pb::SamplingParams {
                    temperature: Some(0.7),
                    top_k: Some(40),
                    top_p: Some(0.9),
                    seed: Some(7),
                    ..Default::default()
                });
            }),
        ],
        "stop" => vec![
            b"\x01END\x01Hello \x01wor\x01ld END here".to_vec(),
            b"\x02ab\x01b\x01xa\x01b".to_vec(),
            b"\x00no stops\x01at all".to_vec(),
            "\x03\u{e9}\x01aab\x01\x01\u{e9}\u{e9}\x01aaa\x01b"
                .as_bytes()
                .to_vec(),
        ],
        _ => return None,
    })
}
