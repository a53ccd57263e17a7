//! The bodies of qgpt's fuzz targets. Each takes arbitrary bytes and must return without
//! panicking; the tokenizer and stop-matcher targets also check their contracts. Shared by the
//! libFuzzer binaries (tests/fuzz/fuzz_targets/, run by tests/fuzz/run.sh) and by `cargo test`
//! (tests/fuzz_corpus.rs), which replays the seeds and every input a fuzzer ever crashed on.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use qgpt::gguf::GgufFile;
use qgpt::model::{LoadedModel, Logits, Scratch};
use qgpt::server::{decode_and_validate, Limits};
use qgpt::stop::StopMatcher;
use qgpt::tokenizer::{StreamDecoder, Tokenizer};

/// tests/fixtures, from the repository root or from tests/fuzz.
pub fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if dir.join("tests/fixtures").is_dir() {
        dir.join("tests/fixtures")
    } else {
        dir.join("../fixtures")
    }
}

/// GGUF parsing and model loading from bytes; a model that loads must tokenize and run a step.
pub fn gguf_load(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        assert_eq!(file.view(t).data.len() as u64, t.n_bytes);
    }
    let Ok(m) = LoadedModel::from_file(Arc::new(file), Instant::now()) else {
        return;
    };
    let ids = m.tokenizer.encode("Hello world").unwrap_or_default();
    let _ = m.tokenizer.decode(&ids);
    let cfg = m.model.config().clone();
    if cfg.n_ctx < 2 || cfg.n_vocab == 0 {
        return;
    }
    let mut cache = m.model.new_cache(2);
    let mut scratch = Scratch::new(&cfg, 2);
    let mut logits = vec![0f32; cfg.n_vocab];
    let first = ids
        .first()
        .copied()
        .unwrap_or(0)
        .min(cfg.n_vocab as u32 - 1);
    let _ = m.model.forward(
        &mut cache,
        &[first, 0],
        &mut scratch,
        Logits::Last,
        &mut logits,
    );
}

/// The real GPT-2 vocabulary (50,257 tokens, 50,000 merges), loaded once.
fn gpt2_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let f = GgufFile::open(&fixtures().join("models/gpt2vocab-q8_0.gguf")).expect("fixture");
        Tokenizer::from_gguf(&f).expect("fixture tokenizer")
    })
}

/// Encoding arbitrary text (first byte even) must round-trip through decoding; decoding
/// arbitrary ids (first byte odd), at once or streamed, must agree and never panic.
pub fn tokenizer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tok = gpt2_tokenizer();
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let ids = tok.encode(&text).expect("any text encodes");
        assert_eq!(tok.decode(&ids), text, "decode(encode(text)) != text");
    } else {
        let ids: Vec<u32> = rest
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .map(|x| {
                if mode & 2 == 0 {
                    x % 50_300
                } else {
                    x << 16 | x
                }
            })
            .collect();
        let whole = tok.decode(&ids);
        let mut stream = StreamDecoder::default();
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&stream.push(tok, id));
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, whole, "streamed decode differs from whole decode");
    }
}

/// A GenerateRequest body as the server receives it: decoding and validation against the
/// default limits never panic.
pub fn request(data: &[u8]) {
    let _ = decode_and_validate(data, &Limits::default(), 512, 128);
}

/// Stop strings: however the text is cut into pieces, generation stops at the first stop string
/// to be complete (the earliest end; at one end, the longer, then the first listed), and the
/// released text is everything before it.
pub fn stop(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\u{1}');
    let stops: Vec<String> = parts
        .by_ref()
        .take(usize::from(n % 4))
        .map(str::to_owned)
        .collect();
    let pieces: Vec<&str> = parts.collect();
    let mut m = StopMatcher::new(&stops);
    let mut out = String::new();
    let mut stopped = None;
    for p in &pieces {
        let r = m.push(p);
        out.push_str(&r.text);
        if r.stopped.is_some() {
            stopped = r.stopped;
            break;
        }
    }
    if stopped.is_none() {
        out.push_str(&m.finish());
    }
    let whole: String = pieces.concat();
    let first = stops
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .filter_map(|(i, s)| whole.find(s.as_str()).map(|at| (at + s.len(), at, i)))
        .min();
    match first {
        Some((_, at, i)) => {
            assert_eq!(out, whole[..at], "text before the first stop");
            assert_eq!(stopped, Some(i), "which stop string matched");
        }
        None => {
            assert_eq!(out, whole, "text without a stop");
            assert_eq!(stopped, None);
        }
    }
}
