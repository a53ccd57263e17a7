//! Errors from reading a GGUF file. Each one names the key, tensor or field and what was expected.

use std::path::PathBuf;

use super::ValueType;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("big-endian GGUF file (version {found} byte-swapped): qgpt reads little-endian files")]
    BigEndian { found: u32 },
    #[error("unsupported GGUF version {found}: qgpt reads versions 2 and 3")]
    UnsupportedVersion { found: u32 },
    #[error("file truncated reading {what}: need {need} bytes at offset {offset}, {have} left")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: String },
    #[error("metadata key '{key}': unknown value type {tag}")]
    UnknownValueType { key: String, tag: u32 },
    #[error("metadata key '{key}': bool byte is {byte}, expected 0 or 1")]
    InvalidBool { key: String, byte: u8 },
    #[error("metadata key '{key}': array of {count} elements cannot fit in the {max} the rest of the file could hold")]
    ArrayTooLong { key: String, count: u64, max: u64 },
    #[error("metadata key '{key}': arrays nested deeper than {max} levels")]
    ArrayTooDeep { key: String, max: usize },
    #[error("{what}: count {count} exceeds what the file can hold (at most {max})")]
    CountTooLarge { what: String, count: u64, max: u64 },
    #[error("metadata key '{key}' appears twice")]
    DuplicateKey { key: String },
    #[error("tensor '{name}' appears twice")]
    DuplicateTensor { name: String },
    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("metadata key '{key}': expected {expected}, found {found}")]
    WrongKeyType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },
    #[error("metadata key '{key}': {reason}")]
    BadValue { key: String, reason: String },
    #[error("general.alignment is {found}: expected a power of two")]
    BadAlignment { found: u64 },
    #[error("tensor '{name}': unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor '{name}': data [{start}, {end}) lies outside the file ({file_len} bytes)")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
}
