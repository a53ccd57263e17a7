//! Errors from turning a GGUF file into a runnable model.

use crate::gguf::GgufError;
use crate::quant::GgmlType;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("general.architecture is '{found}': qgpt serves 'gpt2' and 'llama'")]
    UnsupportedArchitecture { found: String },
    #[error("metadata key '{key}': {reason}")]
    Hyperparameter { key: String, reason: String },
    #[error("tensor '{name}' is missing")]
    MissingTensor { name: String },
    #[error("tensor '{name}': expected shape {expected}, found {found}")]
    Shape {
        name: String,
        expected: String,
        found: String,
    },
    #[error("tensor '{name}': type {ty} is not supported (qgpt computes with F32, F16, Q8_0, Q4_0, Q4_1, Q6_K)")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("tensor '{name}': type {ty} is not allowed here, expected {expected}")]
    WrongType {
        name: String,
        ty: GgmlType,
        expected: &'static str,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
