//! `qgpt convert` and `qgpt quantize` against llama.cpp's own tools, and what they refuse.
//!
//! References (tests/fixtures/convert/make_convert_ref.py, run by hand):
//! - `hf-small/` is the `small` fixture model as a Hugging Face checkpoint; llama.cpp's
//!   convert_hf_to_gguf.py turns it into exactly the committed models/small-f32.gguf.
//! - `convert/llama-cpp-small.json` holds every metadata key and every tensor's sha256 of
//!   convert_hf_to_gguf.py's output for --outtype f32, f16 and q8_0.
//! - models/small-{q8_0,q4_0,q4_1}.gguf were written by llama-quantize from models/small-f32.gguf.

mod common;

use std::path::{Path, PathBuf};

use common::{check_greedy, fixture, reference, tensor_map};
use indicatif::ProgressBar;
use qgpt::convert::{convert_hf, quantize_gguf, ConvertOptions, OutType, QuantizeOptions};
use qgpt::gguf::{Array, GgufFile, Value};
use qgpt::model::{KvType, LoadedModel};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("qgpt-convert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Files in the directory other than `keep`.
    fn others(&self, keep: &[&str]) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn convert(dir: &Path, out: &Path, outtype: OutType) -> Result<(), qgpt::convert::ConvertError> {
    let opts = ConvertOptions {
        outtype,
        name: None,
    };
    convert_hf(dir, out, &opts, &ProgressBar::hidden()).map(|_| ())
}

fn llama_cpp_ref() -> Json {
    let text = std::fs::read_to_string(fixture("convert/llama-cpp-small.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// gguf-py's type names for a value: ["UINT32"], ["ARRAY", "STRING"]...
fn type_names(v: &Value) -> Vec<String> {
    let name = |t: qgpt::gguf::ValueType| match t.name() {
        "float32" => "FLOAT32".to_owned(),
        "float64" => "FLOAT64".to_owned(),
        other => other.to_ascii_uppercase(),
    };
    match v {
        Value::Array(a) => vec!["ARRAY".to_owned(), name(a.element_type())],
        v => vec![name(v.value_type())],
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U32(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::U64(x) => Json::from(*x),
        Value::F32(x) => Json::from(*x as f64),
        Value::Bool(x) => Json::from(*x),
        Value::String(s) => Json::from(s.as_str()),
        Value::Array(Array::String(v)) => Json::from(v.clone()),
        Value::Array(Array::I32(v)) => Json::from(v.clone()),
        other => panic!("unexpected value {other:?}"),
    }
}

/// Keys llama.cpp derives from the directory name or a model card (tool-specific).
fn compared(key: &str) -> bool {
    !key.starts_with("general.")
        || matches!(
            key,
            "general.architecture"
                | "general.type"
                | "general.file_type"
                | "general.quantization_version"
        )
}

fn check_metadata(file: &GgufFile, want: &Json, label: &str) {
    let ours: Vec<(String, Vec<String>, Json)> = file
        .metadata()
        .iter()
        .filter(|(k, _)| compared(k))
        .map(|(k, v)| (k.clone(), type_names(v), value_json(v)))
        .collect();
    let theirs: Vec<(String, Vec<String>, Json)> = want
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| compared(m["key"].as_str().unwrap()))
        .map(|m| {
            let types = m["type"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned());
            (
                m["key"].as_str().unwrap().to_owned(),
                types.collect(),
                m["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{label}: metadata keys {:?}",
        ours.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "{label}: metadata key {}", t.0);
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_tensors(file: &GgufFile, want: &Json, label: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(file.tensors().len(), want.len(), "{label}: tensor count");
    for (t, w) in file.tensors().iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap(), "{label}: tensor order");
        assert_eq!(
            t.ty.name(),
            w["type"].as_str().unwrap(),
            "{label}: {} type",
            t.name
        );
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, shape, "{label}: {} shape", t.name);
        let data = file.view(t).data;
        assert_eq!(
            sha256(data),
            w["sha256"].as_str().unwrap(),
            "{label}: {} bytes",
            t.name
        );
    }
}

#[test]
fn convert_equals_llama_cpp_converter() {
    let refs = llama_cpp_ref();
    let dir = Scratch::new("llama");
    for (name, ot) in [
        ("f32", OutType::F32),
        ("f16", OutType::F16),
        ("q8_0", OutType::Q8_0),
    ] {
        let out = dir.join(&format!("{name}.gguf"));
        convert(&fixture("hf-small"), &out, ot).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let want = &refs["outtypes"][name];
        check_metadata(&file, &want["metadata"], name);
        check_tensors(&file, &want["tensors"], name);
        assert_eq!(file.alignment(), 32);
    }
}

#[test]
fn convert_to_4_bit_equals_converter_then_llama_quantize() {
    let dir = Scratch::new("q4");
    for (name, ot) in [("q4_0", OutType::Q4_0), ("q4_1", OutType::Q4_1)] {
        let out = dir.join(&format!("{name}.gguf"));
        convert(&fixture("hf-small"), &out, ot).unwrap();
        let theirs = tensor_map(&fixture(&format!("models/small-{name}.gguf")));
        let ours = tensor_map(&out);
        assert!(ours
            .iter()
            .any(|t| t.0 == "token_embd.weight" && t.1 == "Q6_K"));
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(&theirs) {
            assert!(o == t, "{name}: tensor {} ({} vs {})", o.0, o.1, t.1);
        }
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.get_u64("general.file_type").unwrap(),
            if name == "q4_0" { 2 } else { 3 }
        );
    }
}

#[test]
fn quantize_writes_the_same_bytes_as_llama_quantize() {
    let dir = Scratch::new("quantize");
    for (name, ot) in [
        ("q8_0", OutType::Q8_0),
        ("q4_0", OutType::Q4_0),
        ("q4_1", OutType::Q4_1),
    ] {
        let out = dir.join(&format!("{name}.gguf"));
        let opts = QuantizeOptions {
            out: ot,
            pure: false,
            allow_requantize: false,
        };
        quantize_gguf(
            &fixture("models/small-f32.gguf"),
            &out,
            opts,
            &ProgressBar::hidden(),
        )
        .unwrap();
        let ours = std::fs::read(&out).unwrap();
        let theirs = std::fs::read(fixture(&format!("models/small-{name}.gguf"))).unwrap();
        assert!(ours == theirs, "{name}: file differs from llama-quantize's");
    }
}

#[test]
fn quantize_pure_f16_input_and_requantization() {
    let dir = Scratch::new("pure");
    let q = |input: &str, out: &Path, ot, pure, allow| {
        let opts = QuantizeOptions {
            out: ot,
            pure,
            allow_requantize: allow,
        };
        quantize_gguf(&fixture(input), out, opts, &ProgressBar::hidden())
    };
    let out = dir.join("pure.gguf");
    q("models/small-f32.gguf", &out, OutType::Q4_0, true, false).unwrap();
    let types = tensor_map(&out);
    let ty = |n: &str| types.iter().find(|t| t.0 == n).unwrap().1.clone();
    assert_eq!(
        ty("token_embd.weight"),
        "Q4_0",
        "--pure keeps the embedding in the base type"
    );
    assert_eq!(ty("position_embd.weight"), "F32");

    // From F16 matrices: the same bytes as from F32 wherever F32 → F16 was exact, which it is not
    // in general; check types and that the result serves the reference prompts.
    let out16 = dir.join("from-f16.gguf");
    q("models/small-f16.gguf", &out16, OutType::Q8_0, false, false).unwrap();
    assert_eq!(
        tensor_map(&out16).iter().filter(|t| t.1 == "Q8_0").count(),
        9
    );

    // Already-quantized input is refused unless asked for, and nothing is written.
    let out4 = dir.join("requant.gguf");
    let err = q("models/small-q8_0.gguf", &out4, OutType::Q4_0, false, false).unwrap_err();
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    assert!(!out4.exists());
    q("models/small-q8_0.gguf", &out4, OutType::Q4_0, false, true).unwrap();
    assert_eq!(ty_of(&out4, "blk.0.ffn_up.weight"), "Q4_0");
    assert_eq!(
        dir.others(&["pure.gguf", "from-f16.gguf", "requant.gguf"]),
        Vec::<String>::new()
    );
}

fn ty_of(path: &Path, name: &str) -> String {
    tensor_map(path)
        .into_iter()
        .find(|t| t.0 == name)
        .unwrap()
        .1
}

#[test]
fn converted_files_generate_what_transformers_generates() {
    let dir = Scratch::new("roundtrip");
    // F32: the original model; Q8_0: the model with the weights the file holds.
    for (name, ot, stem, dequantized) in [
        ("f32", OutType::F32, "small-f32", false),
        ("q8_0", OutType::Q8_0, "small-q8_0", true),
    ] {
        let out = dir.join(&format!("{name}.gguf"));
        convert(&fixture("hf-small"), &out, ot).unwrap();
        let mut m = LoadedModel::open(&out).unwrap();
        m.model.set_exact_matmul(true);
        m.model.set_kv_type(KvType::F32);
        for c in &reference(stem).cases {
            assert_eq!(m.tokenizer.encode(&c.prompt).unwrap(), c.prompt_ids);
            let run = if dequantized {
                &c.dequantized
            } else {
                &c.original
            };
            check_greedy(
                &m,
                &format!("converted {name} {:?}", c.prompt),
                &c.prompt_ids,
                run,
                1e-3,
            );
        }
    }
}

/// Copies hf-small's small files into `dir`; the weights come from `tensors`.
fn checkpoint_with(dir: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], shards: usize) {
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(&format!("hf-small/{f}")), dir.join(f)).unwrap();
    }
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{shards:05}.safetensors", i + 1)
        };
        let views: Vec<(String, TensorView<'_>)> = chunk
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for (n, ..) in chunk {
            weight_map.insert(n.clone(), Json::from(file.clone()));
        }
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

/// hf-small's tensors (name, dtype, shape, bytes), F32.
fn small_tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture("hf-small/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn to_f16(t: &(String, Dtype, Vec<usize>, Vec<u8>)) -> (String, Dtype, Vec<usize>, Vec<u8>) {
    let data =
        t.3.chunks_exact(4)
            .flat_map(|b| {
                half::f16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes()
            })
            .collect();
    (t.0.clone(), Dtype::F16, t.2.clone(), data)
}

#[test]
fn sharded_f16_checkpoint_converts_like_the_f32_one() {
    // F32 → F16 rounding happens once either way, so an F16 checkpoint in three shards must give
    // exactly llama.cpp's --outtype f16 tensors of the F32 checkpoint.
    let dir = Scratch::new("sharded");
    let tensors: Vec<_> = small_tensors().iter().map(to_f16).collect();
    checkpoint_with(&dir.0, &tensors, 3);
    assert!(dir.join("model-00003-of-00003.safetensors").exists());
    let out = dir.join("out.gguf");
    convert(&dir.0, &out, OutType::F16).unwrap();
    let refs = llama_cpp_ref();
    // F32 tensors (norms, biases, position embedding) come from F16 values here, so compare the
    // F16 matrices only.
    let file = GgufFile::open(&out).unwrap();
    let want = refs["outtypes"]["f16"]["tensors"].as_array().unwrap();
    let mut n = 0;
    for w in want.iter().filter(|w| w["type"] == "F16") {
        let t = file.tensor(w["name"].as_str().unwrap()).unwrap();
        assert_eq!(
            sha256(t.data),
            w["sha256"].as_str().unwrap(),
            "{}",
            t.info.name
        );
        n += 1;
    }
    assert_eq!(n, 9);
}

#[test]
fn bf16_weights_widen_exactly() {
    let dir = Scratch::new("bf16");
    let tensors: Vec<_> = small_tensors()
        .iter()
        .map(|(n, _, s, b)| {
            let data = b.chunks_exact(4).flat_map(|x| [x[2], x[3]]).collect();
            (n.clone(), Dtype::BF16, s.clone(), data)
        })
        .collect();
    checkpoint_with(&dir.0, &tensors, 1);
    let out = dir.join("out.gguf");
    convert(&dir.0, &out, OutType::F32).unwrap();
    let file = GgufFile::open(&out).unwrap();
    let got = file.tensor("output_norm.weight").unwrap().data;
    let src = &tensors
        .iter()
        .find(|t| t.0 == "transformer.ln_f.weight")
        .unwrap()
        .3;
    let want: Vec<u8> = src
        .chunks_exact(2)
        .flat_map(|b| {
            f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).to_le_bytes()
        })
        .collect();
    assert_eq!(got, &want[..]);
}

#[test]
fn vocab_json_and_merges_txt_give_llama_cpps_tokenizer_metadata() {
    let dir = Scratch::new("slow");
    for f in ["config.json", "tokenizer_config.json", "model.safetensors"] {
        std::fs::copy(fixture(&format!("hf-small/{f}")), dir.join(f)).unwrap();
    }
    let tj: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture("hf-small/tokenizer.json")).unwrap())
            .unwrap();
    let mut vocab = tj["model"]["vocab"].as_object().unwrap().clone();
    for t in tj["added_tokens"].as_array().unwrap() {
        vocab.insert(t["content"].as_str().unwrap().to_owned(), t["id"].clone());
    }
    std::fs::write(dir.join("vocab.json"), Json::Object(vocab).to_string()).unwrap();
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
        .collect();
    std::fs::write(
        dir.join("merges.txt"),
        format!("#version: 0.2\n{}\n", merges.join("\n")),
    )
    .unwrap();
    let out = dir.join("out.gguf");
    convert(&dir.0, &out, OutType::F32).unwrap();
    let file = GgufFile::open(&out).unwrap();
    check_metadata(
        &file,
        &llama_cpp_ref()["slow_tokenizer_f32_metadata"],
        "vocab.json",
    );
}

/// Runs a conversion that must fail; checks the message, that an existing output is untouched and
/// that no temporary file is left.
fn refused(dir: &Scratch, expect: &str) {
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"previous contents").unwrap();
    let err = convert(&dir.0, &out, OutType::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(expect),
        "error {err:?} should mention {expect:?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous contents");
    let stray: Vec<_> = dir
        .others(&[])
        .into_iter()
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Json>)) {
    let path = dir.join("config.json");
    let mut c: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(c.as_object_mut().unwrap());
    std::fs::write(&path, c.to_string()).unwrap();
}

#[test]
fn bad_checkpoints_are_refused_without_output() {
    let all = small_tensors();
    let without = |name: &str| {
        all.iter()
            .filter(|t| t.0 != name)
            .cloned()
            .collect::<Vec<_>>()
    };

    let dir = Scratch::new("missing");
    checkpoint_with(&dir.0, &without("transformer.h.1.mlp.c_fc.bias"), 1);
    refused(&dir, "missing tensors: blk.1.ffn_up.bias");

    let dir = Scratch::new("layers");
    checkpoint_with(&dir.0, &all, 1);
    edit_config(&dir.0, |c| {
        c.insert("n_layer".into(), Json::from(4_000_000_000u64));
    });
    refused(
        &dir,
        "n_layer 4000000000 but the checkpoint holds only 28 tensors",
    );

    let dir = Scratch::new("arch");
    checkpoint_with(&dir.0, &all, 1);
    edit_config(&dir.0, |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
    });
    refused(&dir, "LlamaForCausalLM");

    let dir = Scratch::new("shape");
    checkpoint_with(&dir.0, &all, 1);
    edit_config(&dir.0, |c| {
        c.insert("n_positions".into(), Json::from(256));
        c.insert("n_ctx".into(), Json::from(256));
    });
    refused(
        &dir,
        "transformer.wpe.weight has shape [128, 256], expected [256, 256]",
    );

    let dir = Scratch::new("dtype");
    let mut odd = all.clone();
    odd.iter_mut()
        .find(|t| t.0 == "transformer.ln_f.bias")
        .unwrap()
        .1 = Dtype::I32;
    checkpoint_with(&dir.0, &odd, 1);
    refused(&dir, "dtype I32");

    let dir = Scratch::new("extra");
    let mut extra = all.clone();
    extra.push((
        "transformer.h.2.ln_1.weight".into(),
        Dtype::F32,
        vec![256],
        vec![0; 1024],
    ));
    checkpoint_with(&dir.0, &extra, 1);
    refused(&dir, "transformer.h.2.ln_1.weight");

    let dir = Scratch::new("nan");
    let mut nan = all.clone();
    let t = nan
        .iter_mut()
        .find(|t| t.0 == "transformer.h.0.mlp.c_fc.weight")
        .unwrap();
    t.3[400..404].copy_from_slice(&f32::NAN.to_le_bytes());
    checkpoint_with(&dir.0, &nan, 1);
    refused(&dir, "blk.0.ffn_up.weight");

    let dir = Scratch::new("truncated");
    checkpoint_with(&dir.0, &all, 1);
    let st = dir.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    refused(&dir, "invalid safetensors file");

    let dir = Scratch::new("pickle");
    checkpoint_with(&dir.0, &all, 1);
    std::fs::rename(dir.join("model.safetensors"), dir.join("pytorch_model.bin")).unwrap();
    refused(&dir, "pytorch_model.bin");

    let dir = Scratch::new("notok");
    checkpoint_with(&dir.0, &all, 1);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    refused(&dir, "no tokenizer.json");

    let dir = Scratch::new("shards");
    checkpoint_with(&dir.0, &all, 2);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    refused(&dir, "model-00002-of-00002.safetensors");
}

#[test]
fn original_gpt2_layout_converts_like_llama_cpp() {
    // The original GPT-2 uploads: names without "transformer.", causal-mask buffers saved beside
    // the weights (U8, as some exports have them, and F32), and a tokenizer.json whose model has
    // no "type". llama.cpp drops the buffers; the result must be its F32 conversion.
    let dir = Scratch::new("openai");
    let mut tensors: Vec<_> = small_tensors()
        .into_iter()
        .map(|(n, d, sh, b)| (n.trim_start_matches("transformer.").to_owned(), d, sh, b))
        .collect();
    for l in 0..2 {
        tensors.push((
            format!("h.{l}.attn.bias"),
            Dtype::U8,
            vec![1, 1, 4, 4],
            vec![1; 16],
        ));
        tensors.push((
            format!("h.{l}.attn.masked_bias"),
            Dtype::F32,
            vec![],
            vec![0; 4],
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    checkpoint_with(&dir.0, &tensors, 1);
    let tj_path = dir.join("tokenizer.json");
    let mut tj: Json = serde_json::from_str(&std::fs::read_to_string(&tj_path).unwrap()).unwrap();
    tj["model"].as_object_mut().unwrap().remove("type");
    std::fs::write(&tj_path, tj.to_string()).unwrap();
    let out = dir.join("out.gguf");
    convert(&dir.0, &out, OutType::F32).unwrap();
    let file = GgufFile::open(&out).unwrap();
    let want = &llama_cpp_ref()["outtypes"]["f32"];
    check_metadata(&file, &want["metadata"], "original layout");
    check_tensors(&file, &want["tensors"], "original layout");
}

#[test]
fn an_untied_head_gets_q6_k_and_the_embedding_stays_q4() {
    // With lm_head.weight saved, llama.cpp writes output.weight; llama-quantize's Q4_0 recipe
    // then gives the head Q6_K and the embedding plain Q4_0.
    let dir = Scratch::new("untied");
    let mut tensors = small_tensors();
    let wte = tensors
        .iter()
        .find(|t| t.0 == "transformer.wte.weight")
        .unwrap()
        .clone();
    tensors.insert(0, ("lm_head.weight".into(), wte.1, wte.2, wte.3));
    checkpoint_with(&dir.0, &tensors, 1);
    edit_config(&dir.0, |c| {
        c.insert("tie_word_embeddings".into(), Json::from(false));
    });
    let out = dir.join("q4.gguf");
    convert(&dir.0, &out, OutType::Q4_0).unwrap();
    assert_eq!(ty_of(&out, "output.weight"), "Q6_K");
    assert_eq!(ty_of(&out, "token_embd.weight"), "Q4_0");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensors()[0].name,
        "output.weight",
        "llama.cpp's order: lm_head sorts first"
    );
}
