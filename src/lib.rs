//! qgpt: GPT-family text generation from GGUF files.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod demo;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod perplexity;
pub mod quant;
pub mod sampling;
pub mod server;
pub mod session;
pub mod stop;
pub mod tokenizer;
