//! The tokenizer of a checkpoint as `tokenizer.*` GGUF metadata, the way llama.cpp's converter
//! writes a GPT-2 byte-level BPE: every id up to `vocab_size` (gaps as `[PADn]`, unused), token
//! types (added special tokens are control tokens), merges, special token ids and add-BOS/EOS
//! flags, and the chat template when there is one.
//!
//! Sources: `tokenizer.json` (the fast tokenizer), or `vocab.json` + `merges.txt` (+
//! `added_tokens.json`); `tokenizer_config.json` and `config.json` for special tokens.
//! Pre-tokenization is recognised from tokenizer.json's structure (GPT-2's byte-level regex),
//! not from a hash of token ids as llama.cpp does, so a retrained GPT-2-style vocabulary works.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value as Json};

use super::hf::read_json;
use super::ConvertError;
use crate::gguf::{Array, Value};

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Special token kinds, in llama.cpp's order, with their GGUF keys.
const SPECIAL: [(&str, &str); 6] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

fn tok_err(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(format!("{}: {}", path.display(), reason.into()))
}

/// Tokens that llama.cpp's converter treats as control tokens by their look.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// An added token: (content, special).
type Added = Vec<(String, u32, bool)>;

struct Source {
    /// id → token text (model vocabulary and added tokens).
    vocab: HashMap<u32, String>,
    added: Added,
    merges: Vec<String>,
    /// tokenizer.json, when the checkpoint has one.
    json: Option<Map<String, Json>>,
}

fn check_pre_tokenizer(path: &Path, json: &Map<String, Json>) -> Result<(), ConvertError> {
    let model = json.get("model").and_then(Json::as_object);
    let kind = model.and_then(|m| m.get("type")).and_then(Json::as_str);
    // The original GPT-2 uploads' tokenizer.json has no model type; its vocab and merges say BPE.
    let untyped_bpe = kind.is_none()
        && model.is_some_and(|m| {
            m.get("vocab").is_some_and(Json::is_object) && m.contains_key("merges")
        });
    if kind != Some("BPE") && !untyped_bpe {
        return Err(tok_err(
            path,
            format!("model type {kind:?}: qgpt converts byte-level BPE"),
        ));
    }
    if !json.get("normalizer").is_none_or(Json::is_null) {
        return Err(tok_err(
            path,
            "has a normalizer, which GPT-2's byte-level BPE does not (qgpt would tokenize differently)",
        ));
    }
    let mut pre = json.get("pre_tokenizer").cloned().unwrap_or(Json::Null);
    if pre.get("type").and_then(Json::as_str) == Some("Sequence") {
        if let Some([only]) = pre
            .get("pretokenizers")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
        {
            pre = only.clone();
        }
    }
    let is_gpt2 = pre.get("type").and_then(Json::as_str) == Some("ByteLevel")
        && pre.get("use_regex").and_then(Json::as_bool) != Some(false)
        && pre.get("add_prefix_space").and_then(Json::as_bool) != Some(true);
    if !is_gpt2 {
        return Err(tok_err(
            path,
            format!(
                "pre-tokenizer {pre}: qgpt supports GPT-2's (ByteLevel with its regex, no prefix space)"
            ),
        ));
    }
    Ok(())
}

fn merges_from_json(path: &Path, merges: &Json) -> Result<Vec<String>, ConvertError> {
    let list = merges
        .as_array()
        .ok_or_else(|| tok_err(path, "model.merges is not a list"))?;
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) => match pair.as_slice() {
                // The pair format allows spaces inside a part; llama.cpp writes them as U+0120.
                [Json::String(a), Json::String(b)] => {
                    let enc = |s: &str| s.replace(' ', "\u{120}");
                    Ok(format!("{} {}", enc(a), enc(b)))
                }
                _ => Err(tok_err(path, format!("merge {m} is not a pair of strings"))),
            },
            _ => Err(tok_err(
                path,
                format!("merge {m} is neither a string nor a pair"),
            )),
        })
        .collect()
}

fn from_tokenizer_json(path: &Path) -> Result<Source, ConvertError> {
    let json = match read_json(path)? {
        Json::Object(m) => m,
        _ => return Err(tok_err(path, "not a JSON object")),
    };
    check_pre_tokenizer(path, &json)?;
    let model = &json["model"];
    let mut vocab = HashMap::new();
    let entries = model["vocab"]
        .as_object()
        .ok_or_else(|| tok_err(path, "model.vocab is not an object"))?;
    for (tok, id) in entries {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| tok_err(path, format!("token {tok:?} has id {id}")))?;
        vocab.insert(id, tok.clone());
    }
    let mut added = Vec::new();
    for t in json
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(tok_err(
                path,
                format!("added token {t} lacks an id or content"),
            ));
        };
        let id = u32::try_from(id).map_err(|_| tok_err(path, format!("added token id {id}")))?;
        vocab.insert(id, content.to_owned());
        added.push((
            content.to_owned(),
            id,
            t["special"].as_bool().unwrap_or(false),
        ));
    }
    let merges = match model.get("merges") {
        Some(m) if !m.is_null() => merges_from_json(path, m)?,
        _ => Vec::new(),
    };
    Ok(Source {
        vocab,
        added,
        merges,
        json: Some(json),
    })
}

fn merges_txt(path: &Path) -> Result<Vec<String>, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
        lines.next();
    }
    let mut merges = Vec::new();
    for (n, line) in lines.enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            [] => {}
            [a, b] => merges.push(format!("{a} {b}")),
            // As llama.cpp's converter does: a malformed entry is skipped, with a warning.
            _ => tracing::warn!(
                "{}: line {}: {line:?} is not a merge; skipped",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(merges)
}

/// The token text of a `*_token` entry of tokenizer_config.json (a string or `{"content": ...}`).
fn config_token(tc: &Map<String, Json>, kind: &str) -> Option<String> {
    match tc.get(&format!("{kind}_token"))? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn from_vocab_json(dir: &Path, tc: &Map<String, Json>) -> Result<Source, ConvertError> {
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    if !merges_path.is_file() {
        return Err(tok_err(dir, "vocab.json without merges.txt"));
    }
    let entries = match read_json(&vocab_path)? {
        Json::Object(m) => m,
        _ => return Err(tok_err(&vocab_path, "not a JSON object")),
    };
    let mut vocab = HashMap::new();
    let mut by_text = HashMap::new();
    for (tok, id) in &entries {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| tok_err(&vocab_path, format!("token {tok:?} has id {id}")))?;
        vocab.insert(id, tok.clone());
        by_text.insert(tok.clone(), id);
    }
    let mut added: Added = Vec::new();
    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        if let Json::Object(m) = read_json(&added_path)? {
            for (tok, id) in m {
                let id = id
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| tok_err(&added_path, format!("token {tok:?} has id {id}")))?;
                vocab.insert(id, tok.clone());
                by_text.insert(tok.clone(), id);
                added.push((tok, id, false));
            }
        }
    }
    // tokenizer_config.json's added_tokens_decoder (id → {content, special}).
    if let Some(dec) = tc.get("added_tokens_decoder").and_then(Json::as_object) {
        for (id, t) in dec {
            let (Ok(id), Some(content)) =
                (id.parse::<u32>(), t.get("content").and_then(Json::as_str))
            else {
                continue;
            };
            let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
            vocab.insert(id, content.to_owned());
            by_text.insert(content.to_owned(), id);
            match added.iter_mut().find(|a| a.0 == content) {
                Some(a) => a.2 |= special,
                None => added.push((content.to_owned(), id, special)),
            }
        }
    }
    // The special tokens of tokenizer_config.json and special_tokens_map.json, defaulting to
    // <|endoftext|> for unk/bos/eos as transformers' GPT2Tokenizer does.
    let map_path = dir.join("special_tokens_map.json");
    let map = match map_path
        .is_file()
        .then(|| read_json(&map_path))
        .transpose()?
    {
        Some(Json::Object(m)) => m,
        _ => Map::new(),
    };
    for kind in ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] {
        let key = format!("{kind}_token");
        let text = config_token(tc, kind)
            .or_else(|| config_token(&map, kind))
            .or_else(|| {
                let default = matches!(kind, "bos" | "eos" | "unk")
                    && !tc.contains_key(&key)
                    && !map.contains_key(&key);
                default.then(|| "<|endoftext|>".to_owned())
            });
        if let Some(text) = text {
            if let Some(&id) = by_text.get(&text) {
                match added.iter_mut().find(|a| a.0 == text) {
                    Some(a) => a.2 = true,
                    None => added.push((text, id, true)),
                }
            }
        }
    }
    Ok(Source {
        vocab,
        added,
        merges: merges_txt(&merges_path)?,
        json: None,
    })
}

/// Special token ids and add-token flags, by kind (`bos`, `eos`...), in the order to write them.
type Specials = (Vec<(&'static str, u32)>, Vec<(&'static str, bool)>);

/// Special ids and add-BOS/EOS flags, following gguf-py's SpecialVocab for the cases GPT-2
/// checkpoints have: the post-processor, tokenizer_config.json, then config.json.
fn specials(
    src: &Source,
    tc: Option<&Map<String, Json>>,
    config: &Map<String, Json>,
    n_vocab: usize,
) -> Specials {
    let mut ids: Vec<(&'static str, u32)> = Vec::new();
    let mut add: Vec<(&'static str, bool)> = Vec::new();
    let set_id = |ids: &mut Vec<(&'static str, u32)>, kind: &'static str, id: u32| {
        if ids.iter().any(|e| e.0 == kind) {
            return;
        }
        if (id as usize) < n_vocab {
            ids.push((kind, id));
        } else {
            // llama.cpp writes it; qgpt's loader refuses a BOS/EOS id outside the vocabulary.
            tracing::warn!("{kind} token id {id} is outside vocab_size {n_vocab}; left out");
        }
    };
    if let Some(json) = &src.json {
        let post = json.get("post_processor").cloned().unwrap_or(Json::Null);
        let procs = match post.get("processors").and_then(Json::as_array) {
            Some(list) => list.clone(),
            None => vec![post],
        };
        let bos_text = tc.and_then(|tc| config_token(tc, "bos"));
        let eos_text = tc.and_then(|tc| config_token(tc, "eos"));
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    for kind in ["bos", "eos"] {
                        if !add.iter().any(|e| e.0 == kind) {
                            add.push((kind, false));
                        }
                    }
                }
                Some("TemplateProcessing") => {
                    let single = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let special = |item: Option<&Json>| {
                        item.and_then(|i| i.get("SpecialToken"))
                            .and_then(|s| s.get("id"))
                            .and_then(Json::as_str)
                            .map(str::to_owned)
                    };
                    if single.len() > 1 {
                        // gguf-py's reading of simple templates: a leading special token is BOS
                        // (added if it is the configured BOS), a trailing one EOS.
                        let set = |add: &mut Vec<(&'static str, bool)>, kind, value| {
                            add.retain(|e: &(&str, bool)| e.0 != kind);
                            add.push((kind, value));
                        };
                        if let Some(first) = special(single.first()) {
                            set(
                                &mut add,
                                "bos",
                                bos_text.as_ref().is_none_or(|b| *b == first),
                            );
                        }
                        if let Some(last) = special(single.last()) {
                            set(
                                &mut add,
                                "eos",
                                eos_text.as_ref().is_none_or(|e| *e == last),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(tc) = tc {
            for (kind, _) in SPECIAL {
                if let Some(text) = config_token(tc, kind) {
                    if let Some(a) = src.added.iter().find(|a| a.0 == text) {
                        set_id(&mut ids, kind, a.1);
                    }
                }
            }
        }
    }
    for (kind, _) in SPECIAL {
        if let Some(id) = config
            .get(&format!("{kind}_token_id"))
            .and_then(Json::as_u64)
        {
            if let Ok(id) = u32::try_from(id) {
                set_id(&mut ids, kind, id);
            }
        }
    }
    if let Some(tc) = tc {
        for kind in ["bos", "eos", "sep"] {
            if let Some(b) = tc.get(&format!("add_{kind}_token")).and_then(Json::as_bool) {
                if !add.iter().any(|e| e.0 == kind) {
                    add.push((kind, b));
                }
            }
        }
    }
    (ids, add)
}

fn chat_template(
    dir: &Path,
    tc: Option<&Map<String, Json>>,
) -> Result<Option<String>, ConvertError> {
    if let Some(t) = tc.and_then(|tc| tc.get("chat_template")) {
        return match t {
            Json::String(s) => Ok(Some(s.clone())),
            Json::Array(list) => Ok(list
                .iter()
                .find(|c| c.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|c| c.get("template")?.as_str().map(str::to_owned))),
            _ => Ok(None),
        };
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return Ok(Some(
            std::fs::read_to_string(&jinja).map_err(|e| ConvertError::io(&jinja, e))?,
        ));
    }
    Ok(None)
}

/// The `tokenizer.*` metadata for the checkpoint in `dir`, `n_vocab` ids long.
pub fn tokenizer_metadata(
    dir: &Path,
    config: &Map<String, Json>,
    n_vocab: usize,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.is_file() {
        match read_json(&tc_path)? {
            Json::Object(m) => Some(m),
            _ => return Err(tok_err(&tc_path, "not a JSON object")),
        }
    } else {
        None
    };
    let tj = dir.join("tokenizer.json");
    let src = if tj.is_file() {
        from_tokenizer_json(&tj)?
    } else if dir.join("vocab.json").is_file() {
        from_vocab_json(dir, tc.as_ref().unwrap_or(&Map::new()))?
    } else {
        return Err(tok_err(
            dir,
            "no tokenizer.json, and no vocab.json + merges.txt",
        ));
    };
    if let Some(max) = src.vocab.keys().max() {
        if *max as usize >= n_vocab {
            return Err(tok_err(
                dir,
                format!("token id {max} is outside the model's vocab_size {n_vocab}"),
            ));
        }
    }
    if src.merges.is_empty() {
        return Err(tok_err(dir, "no BPE merges"));
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for i in 0..n_vocab as u32 {
        match src.vocab.get(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
            Some(tok) => match src.added.iter().find(|a| &a.0 == tok) {
                Some(&(_, _, special)) if special || looks_special(tok) => {
                    tokens.push(tok.clone());
                    types.push(CONTROL);
                }
                Some(_) => {
                    tokens.push(tok.replace('\u{2581}', " "));
                    types.push(USER_DEFINED);
                }
                None => {
                    tokens.push(tok.clone());
                    types.push(NORMAL);
                }
            },
        }
    }
    let (ids, add) = specials(&src, tc.as_ref(), config, n_vocab);
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_owned(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_owned(),
            Value::String("gpt-2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_owned(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".to_owned(),
            Value::Array(Array::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".to_owned(),
            Value::Array(Array::String(src.merges)),
        ),
    ];
    for (kind, id) in ids {
        let key = SPECIAL.iter().find(|s| s.0 == kind).expect("known kind").1;
        meta.push((key.to_owned(), Value::U32(id)));
    }
    for (kind, b) in add {
        meta.push((format!("tokenizer.ggml.add_{kind}_token"), Value::Bool(b)));
    }
    if let Some(t) = chat_template(dir, tc.as_ref())? {
        meta.push(("tokenizer.chat_template".to_owned(), Value::String(t)));
    }
    Ok(meta)
}
