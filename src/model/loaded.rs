//! A model file opened for serving: the map, the model and its tokenizer, checked together.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Model, ModelError};
use crate::chat::{ChatError, ChatMessage, ChatTemplate};
use crate::gguf::{GgufFile, Value};
use crate::tokenizer::Tokenizer;

/// Everything needed to generate from one GGUF file.
pub struct LoadedModel {
    /// The forward pass.
    pub model: Model,
    /// The tokenizer from the same file.
    pub tokenizer: Tokenizer,
    /// The chat template (`tokenizer.chat_template`), or why there is none to use.
    pub chat: Result<ChatTemplate, ChatError>,
    /// Wall time spent opening and validating.
    pub load_time: Duration,
}

impl LoadedModel {
    /// Maps and validates the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let start = Instant::now();
        let file = GgufFile::open(path)?;
        Self::from_file(Arc::new(file), start)
    }

    /// Validates an already parsed file.
    pub fn from_file(file: Arc<GgufFile>, start: Instant) -> Result<Self, ModelError> {
        let model = Model::new(file.clone())?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.vocab_size() != model.config().n_vocab {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows",
                tokenizer.vocab_size(),
                model.config().n_vocab
            )));
        }
        let chat = chat_template(&file, &tokenizer);
        if let Err(e @ ChatError::Compile(_)) = &chat {
            tracing::warn!("{e}; chat requests will be refused, prompts still work");
        }
        Ok(Self {
            model,
            tokenizer,
            chat,
            load_time: start.elapsed(),
        })
    }
}

impl LoadedModel {
    /// Token ids of a text prompt: BOS first when the vocabulary asks for one, control tokens
    /// written in the text as their ids.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let t = &self.tokenizer;
        let mut ids = Vec::new();
        if t.add_bos() {
            ids.extend(t.bos());
        }
        ids.extend(t.encode(text)?);
        // A template or a caller that wrote the BOS text itself does not get a second one.
        if t.add_bos() && ids.len() >= 2 && ids[1] == ids[0] {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// Token ids of a conversation: rendered with the chat template, the assistant's turn
    /// opened, then encoded as [`LoadedModel::encode_prompt`] does.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ChatError> {
        let chat = self.chat.as_ref().map_err(Clone::clone)?;
        let text = chat.render(messages, true)?;
        self.encode_prompt(&text)
            .map_err(|e| ChatError::Encode(e.to_string()))
    }
}

/// Compiles the file's chat template with the texts of its BOS and EOS tokens.
fn chat_template(file: &GgufFile, tok: &Tokenizer) -> Result<ChatTemplate, ChatError> {
    let source = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .ok_or(ChatError::NoTemplate)?;
    let text = |id: Option<u32>| {
        id.and_then(|id| tok.token_bytes(id))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    ChatTemplate::new(source, &text(tok.bos()), &text(tok.eos()))
}
