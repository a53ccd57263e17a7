//! GGUF: llama.cpp's model file format. Parsing treats the file as untrusted: every count, length
//! and offset is bounded by the file before it is used, and failures name what is wrong.

mod cursor;
mod error;
mod file;
mod ftype;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use file::{GgufFile, DEFAULT_ALIGNMENT};
pub use ftype::{file_type_name, file_type_short_name};
pub use tensor::{format_shape, TensorInfo, TensorView, MAX_DIMS};
pub use value::{Array, Value, ValueType};
pub use writer::{layout, GgufWriter, Layout, TensorEntry};
