//! The model: hyperparameters (GPT-2 and LLaMA), typed weights, KV cache and the forward pass.

mod batch;
mod config;
mod error;
mod kv_buf;
mod kv_cache;
mod loaded;
mod transformer;
mod weights;

pub use batch::SeqStep;
pub use config::{Arch, ModelConfig, Rope};
pub use error::ModelError;
pub use kv_cache::{KvCache, KvHead, KvMemory, KvType};
pub use loaded::LoadedModel;
pub use transformer::{ForwardError, Logits, Model, Scratch};
pub use weights::{Block, Linear, Matrix, Norm, Qkv, Weights};
