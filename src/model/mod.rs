//! GPT-2: hyperparameters, typed weights, KV cache and the forward pass.

mod batch;
mod config;
mod error;
mod gpt2;
mod kv_buf;
mod kv_cache;
mod loaded;
mod weights;

pub use batch::SeqStep;
pub use config::Gpt2Config;
pub use error::ModelError;
pub use gpt2::{ForwardError, Gpt2, Logits, Scratch};
pub use kv_cache::{KvCache, KvHead, KvMemory, KvType};
pub use loaded::LoadedModel;
pub use weights::{Block, Gpt2Weights, Linear, Matrix, Norm};
