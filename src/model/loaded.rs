//! A model file opened for serving: the map, the model and its tokenizer, checked together.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Gpt2, ModelError};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// Everything needed to generate from one GGUF file.
pub struct LoadedModel {
    /// The forward pass.
    pub model: Gpt2,
    /// The tokenizer from the same file.
    pub tokenizer: Tokenizer,
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
        let model = Gpt2::new(file.clone())?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.vocab_size() != model.config().n_vocab {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows",
                tokenizer.vocab_size(),
                model.config().n_vocab
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            load_time: start.elapsed(),
        })
    }
}
