//! The tokenizer, built from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE as GPT-2, SmolLM
//! and Llama 3 use it, encoded with Hugging Face `tokenizers`, decoded by qgpt byte-exactly and
//! UTF-8 safely.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf::{Array, GgufFile, Value};
use crate::model::ModelError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Llama 3's pre-tokenizer regex, as its tokenizer.json writes it (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Control tokens that end a turn in chat templates, as llama.cpp recognises them by text when
/// the file names no end-of-turn id.
const END_OF_TURN_TEXTS: [&str; 7] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

/// Whether `pre` names Llama 3's pre-tokenizer, whose vocabularies also skip BPE merges for a
/// piece that is a token already, and start sequences with BOS unless the file says otherwise.
fn is_llama3(pre: &str) -> bool {
    matches!(pre, "llama-bpe" | "llama3" | "llama-v3")
}

/// The pre-tokenizers qgpt knows, by their `tokenizer.ggml.pre` names. Any other name is refused
/// at load: splitting text differently than the model was trained gives valid-looking but wrong
/// ids.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, ModelError> {
    // GPT-2's regex inside ByteLevel, then bytes mapped to printable characters.
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        // llama.cpp treats a missing or "default" pre-tokenizer as GPT-2's regex too.
        "gpt-2" | "default" => byte_level.into(),
        // Every digit apart, then GPT-2's regex (SmolLM's tokenizer.json: Digits + ByteLevel).
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        p if is_llama3(p) => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("the llama-bpe regex: {e}")))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        other => {
            return Err(err(format!(
                "tokenizer.ggml.pre is '{other}': qgpt knows 'gpt-2' (or 'default'), 'smollm' and \
                 'llama-bpe' (or 'llama3', 'llama-v3')"
            )))
        }
    })
}

/// A byte-level BPE tokenizer with its model's pre-tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each id decodes to.
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
    eot: Option<u32>,
    end_of_generation: Vec<u32>,
    pre: String,
    n_merges: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn err(msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(msg.into())
}

/// GPT-2's reversible map from bytes to printable characters, inverted: char → byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let c = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        map.insert(char::from_u32(c).expect("below 0x200"), b as u8);
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer described by `file`'s `tokenizer.ggml.*` keys.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model is '{model}': qgpt supports 'gpt2' (byte-level BPE)"
            )));
        }
        let pre = match file.get("tokenizer.ggml.pre") {
            None => "default".to_owned(),
            Some(v) => v
                .as_str()
                .ok_or_else(|| err("tokenizer.ggml.pre is not a string"))?
                .to_owned(),
        };
        let pre_tokenizer = pre_tokenizer(&pre)?;
        let Array::String(tokens) = file.get_array("tokenizer.ggml.tokens")? else {
            return Err(err("tokenizer.ggml.tokens is not an array of strings"));
        };
        let Array::String(merge_lines) = file.get_array("tokenizer.ggml.merges")? else {
            return Err(err("tokenizer.ggml.merges is not an array of strings"));
        };
        let types: Vec<i32> = match file.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => match v.as_array() {
                Some(Array::I32(t)) if t.len() == tokens.len() => t.clone(),
                _ => {
                    return Err(err(format!(
                        "tokenizer.ggml.token_type must be an int32 array of {} entries",
                        tokens.len()
                    )))
                }
            },
        };
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(err(format!("{} tokens in the vocabulary", tokens.len())));
        }
        let id_key = |key: &str| -> Result<Option<u32>, ModelError> {
            match file.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < tokens.len() => Ok(Some(id as u32)),
                    _ => Err(err(format!(
                        "{key} is {v}, not a token id below {}",
                        tokens.len()
                    ))),
                },
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        // End-of-turn and end-of-message ids only add stop tokens: a bad one is ignored, as
        // llama.cpp does, rather than refusing the model.
        let optional_id = |key: &str| match id_key(key) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("{e}; ignored");
                None
            }
        };
        let eot = optional_id("tokenizer.ggml.eot_token_id");
        let eom = optional_id("tokenizer.ggml.eom_token_id");
        let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
            // llama.cpp's defaults: Llama 3 vocabularies start with BOS, GPT-2's do not.
            None => is_llama3(&pre),
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(err(format!(
                    "tokenizer.ggml.add_bos_token is {v}, not a bool"
                )))
            }
        };
        if add_bos && bos.is_none() {
            return Err(err(
                "tokenizer.ggml.add_bos_token is true but there is no bos_token_id".to_string(),
            ));
        }

        // A vocabulary may repeat a string; encoding can only produce its first id.
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            vocab.entry(t.clone()).or_insert(id as u32);
        }
        let mut merges = Vec::with_capacity(merge_lines.len());
        for (i, m) in merge_lines.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                err(format!(
                    "merge #{i} '{m}' is not two tokens separated by a space"
                ))
            })?;
            merges.push((a.to_owned(), b.to_owned()));
        }
        let n_merges = merges.len();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(is_llama3(&pre))
            .build()
            .map_err(|e| err(format!("invalid BPE vocabulary or merges: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let special: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let added = |kind: i32, as_special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, &t)| t == kind)
                .map(|(s, _)| AddedToken::from(s.clone(), as_special))
                .collect()
        };
        inner.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
        inner.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

        let to_byte = unicode_to_byte();
        let bytes = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                    return t.as_bytes().to_vec();
                }
                let mut out = Vec::with_capacity(t.len());
                for ch in t.chars() {
                    match to_byte.get(&ch) {
                        Some(&b) => out.push(b),
                        None => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            })
            .collect();
        // Generation ends at EOS, at the end-of-turn id, and at control tokens that end a turn.
        let mut end_of_generation: Vec<u32> = eos.into_iter().chain(eot).chain(eom).collect();
        for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            if ty == TOKEN_TYPE_CONTROL && END_OF_TURN_TEXTS.contains(&t.as_str()) {
                end_of_generation.push(id as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        Ok(Self {
            inner,
            bytes,
            special,
            bos,
            add_bos,
            eos,
            eot,
            end_of_generation,
            pre,
            n_merges,
        })
    }

    /// Token ids of `text`. Control tokens written in the text (`<|endoftext|>`) become their id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| err(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The bytes token `id` stands for (`None` if out of range).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    /// Decodes `ids` to text; invalid UTF-8 becomes U+FFFD, as in HF's decode.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut d = StreamDecoder::default();
        let mut s = String::new();
        for &id in ids {
            s.push_str(&d.push(self, id));
        }
        s.push_str(&d.finish());
        s
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// True for control tokens such as `<|endoftext|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Beginning-of-sequence id, if the file names one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether a sequence starts with the BOS token (`tokenizer.ggml.add_bos_token`; absent
    /// means no, as llama.cpp reads GPT-2 vocabularies).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// End-of-sequence id, if the file names one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn id (`tokenizer.ggml.eot_token_id`), if the file names one.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// The ids that end generation: EOS, the end-of-turn id, and control tokens whose text ends
    /// a chat turn (`<|im_end|>`, `<|eot_id|>`...), sorted.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// Whether `id` ends generation (see [`Tokenizer::end_of_generation`]).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// The pre-tokenizer name from the file.
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// Number of BPE merges.
    pub fn n_merges(&self) -> usize {
        self.n_merges
    }
}

/// Turns a stream of token ids into text without ever splitting a UTF-8 character: bytes of an
/// incomplete character wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds token `id` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        if let Some(b) = tok.token_bytes(id) {
            self.pending.extend_from_slice(b);
        }
        self.drain(false)
    }

    /// Returns what is left, with an unfinished character replaced by U+FFFD.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    fn drain(&mut self, all: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("validated prefix"));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None if all => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    /// The pieces `pre` cuts `text` into, in GPT-2's byte-to-character alphabet.
    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(text);
        pre_tokenizer(pre).unwrap().pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p.to_owned())
            .collect()
    }

    #[test]
    fn llama_bpe_splits_as_llama3s_regex() {
        // Expected: Python's `regex` module on Llama 3's pattern, then ' ' -> 'Ġ', '\n' -> 'Ċ',
        // '\r' -> 'č' (GPT-2's byte alphabet).
        let text = "Hello WORLD'S 1234567 isn't\n\n  x!!\r\n";
        let want = [
            "Hello", "ĠWORLD", "'S", "Ġ", "123", "456", "7", "Ġisn", "'t", "ĊĊ", "Ġ", "Ġx", "!!čĊ",
        ];
        assert_eq!(pieces("llama-bpe", text), want);
        assert_eq!(pieces("llama3", text), want);
    }

    #[test]
    fn smollm_isolates_every_digit() {
        assert_eq!(
            pieces("smollm", "pi 3.14, x2"),
            ["pi", "Ġ", "3", ".", "1", "4", ",", "Ġx", "2"]
        );
        // GPT-2 keeps runs of digits.
        assert_eq!(pieces("gpt-2", "pi 3.14"), ["pi", "Ġ3", ".", "14"]);
    }

    #[test]
    fn unknown_pre_tokenizers_are_refused() {
        let e = pre_tokenizer("qwen2").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("'qwen2'") && msg.contains("smollm"), "{msg}");
    }
}
