//! The tokenizer, built from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE as GPT-2 uses it,
//! encoded with Hugging Face `tokenizers`, decoded by qgpt byte-exactly and UTF-8 safely.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::gguf::{Array, GgufFile, Value};
use crate::model::ModelError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A byte-level BPE tokenizer with GPT-2's pre-tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each id decodes to.
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
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
        // llama.cpp treats a missing or "default" pre-tokenizer as GPT-2's regex too.
        if !matches!(pre.as_str(), "gpt-2" | "default") {
            return Err(err(format!(
                "tokenizer.ggml.pre is '{pre}': qgpt supports 'gpt-2'"
            )));
        }
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
        let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
            None => false,
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
            .build()
            .map_err(|e| err(format!("invalid BPE vocabulary or merges: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
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
        Ok(Self {
            inner,
            bytes,
            special,
            bos,
            add_bos,
            eos,
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
