//! The demo model embedded in the binary: a small GPT-2 trained by us on the King James Bible
//! (public domain; `tests/fixtures/demo/train_demo.py`), in llama.cpp's GGUF layout, Q8_0.
//! `qgpt serve` and `qgpt generate` use it when no model is given, so a new user gets a working
//! service with no download.
//!
//! The file is part of the program's read-only data, aligned so that its tensors are aligned as
//! in a memory-mapped file: nothing is copied at run time.

use std::sync::Arc;
use std::time::Instant;

use crate::gguf::GgufFile;
use crate::model::{LoadedModel, ModelError};

/// Bytes with the alignment the GGUF tensor data needs (32; 64 for whole cache lines).
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

static DEMO: &Aligned<[u8]> = &Aligned(*include_bytes!("demo/kjv-q8_0.gguf"));

/// How the embedded model is named where a file path would be shown.
pub const NAME: &str = "kjv-q8_0.gguf (embedded demo model)";

/// The embedded GGUF file.
pub fn bytes() -> &'static [u8] {
    &DEMO.0
}

/// The embedded GGUF file, parsed (no copy).
pub fn file() -> Result<GgufFile, ModelError> {
    Ok(GgufFile::from_static(bytes())?)
}

/// The embedded model, validated and ready to run.
pub fn load() -> Result<LoadedModel, ModelError> {
    let start = Instant::now();
    LoadedModel::from_file(Arc::new(file()?), start)
}

/// The model at `path`, or the embedded one when there is none (logged, so that nobody serves it
/// by mistake without knowing).
pub fn load_or_demo(path: Option<&std::path::Path>) -> Result<LoadedModel, ModelError> {
    match path {
        Some(p) => LoadedModel::open(p),
        None => {
            tracing::info!(
                model = NAME,
                mib = format!("{:.1}", bytes().len() as f64 / (1 << 20) as f64),
                "no model given (--model / QGPT_MODEL): using the embedded demo model, a small \
                 GPT-2 trained on the King James Bible"
            );
            load()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_is_aligned_and_loads() {
        assert_eq!(bytes().as_ptr() as usize % 64, 0);
        let m = load().unwrap();
        assert!(m.model.config().n_vocab > 0);
        assert!(m.tokenizer.eos().is_some());
    }
}
