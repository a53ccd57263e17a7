//! The tokenizer built from GGUF metadata against Hugging Face GPT2TokenizerFast (ids computed by
//! tests/fixtures/make_fixtures.py from the real GPT-2 encoder.json/vocab.bpe), and UTF-8 safe
//! streaming decode.

mod common;

use common::fixture;
use proptest::prelude::*;
use qgpt::model::LoadedModel;
use qgpt::tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct Entry {
    text: String,
    ids: Vec<u32>,
}

fn corpus(name: &str) -> Vec<Entry> {
    let text = std::fs::read_to_string(fixture(&format!("tokenizer/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn gpt2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| LoadedModel::open(&fixture("models/gpt2vocab-q8_0.gguf")).unwrap())
}

fn check_corpus(tok: &Tokenizer, entries: &[Entry]) {
    let mut failures = Vec::new();
    for e in entries {
        let ids = tok.encode(&e.text).unwrap();
        if ids != e.ids {
            failures.push(format!("{:?}: qgpt {:?} vs HF {:?}", e.text, ids, e.ids));
        }
        // Byte-level BPE is lossless, so decoding gives the text back.
        assert_eq!(tok.decode(&e.ids), e.text, "decode of {:?}", e.text);
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

#[test]
fn gpt2_ids_equal_hugging_face_on_the_corpus() {
    let entries = corpus("gpt2_corpus.json");
    assert!(entries.len() >= 200);
    check_corpus(&gpt2().tokenizer, &entries);
}

#[test]
fn small_model_ids_equal_hugging_face() {
    let m = LoadedModel::open(&fixture("models/small-f32.gguf")).unwrap();
    check_corpus(&m.tokenizer, &corpus("small_corpus.json"));
}

#[test]
fn endoftext_in_text_is_the_control_token() {
    let t = &gpt2().tokenizer;
    let ids = t.encode("a<|endoftext|>b").unwrap();
    assert!(ids.contains(&50256), "{ids:?}");
    assert!(t.is_special(50256));
    assert_eq!(t.eos(), Some(50256));
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut d = StreamDecoder::default();
    let mut pieces: Vec<String> = ids.iter().map(|&id| d.push(tok, id)).collect();
    pieces.push(d.finish());
    pieces
}

#[test]
fn streaming_never_splits_a_character() {
    let t = &gpt2().tokenizer;
    // Each of these characters is several tokens in GPT-2's vocabulary.
    for text in [
        "🦙🦙 llamas",
        "日本語のテキスト",
        "e\u{301}\u{302}",
        "👩‍👩‍👧‍👦 family",
    ] {
        let ids = t.encode(text).unwrap();
        let pieces = stream(t, &ids);
        assert!(
            pieces.iter().all(|p| !p.contains('\u{FFFD}')),
            "{text:?}: {pieces:?}"
        );
        assert_eq!(pieces.concat(), text);
    }
}

#[test]
fn a_cut_character_ends_as_one_replacement() {
    let t = &gpt2().tokenizer;
    let ids = t.encode("🦙").unwrap();
    assert!(
        ids.len() > 1,
        "the llama emoji spans several tokens: {ids:?}"
    );
    let pieces = stream(t, &ids[..ids.len() - 1]);
    assert_eq!(pieces.concat(), "\u{FFFD}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any id sequence: streaming equals whole decoding, and valid text round-trips.
    #[test]
    fn streaming_equals_batch_decode(ids in proptest::collection::vec(0u32..50257, 0..40)) {
        let t = &gpt2().tokenizer;
        prop_assert_eq!(stream(t, &ids).concat(), t.decode(&ids));
    }

    #[test]
    fn any_text_round_trips(text in "\\PC{0,40}") {
        let t = &gpt2().tokenizer;
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(t.decode(&ids), text);
    }
}
