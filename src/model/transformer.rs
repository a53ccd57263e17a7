//! A loaded model and its activation buffers; the forward pass itself is in `batch.rs`.

use std::sync::Arc;

use super::{KvCache, KvMemory, KvType, ModelConfig, ModelError, Weights};
use crate::gguf::GgufFile;
use crate::kernels::{self, Kernels};
use crate::ops;

/// Why a forward step was refused. Nothing is computed when it is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("no tokens to process")]
    Empty,
    #[error("token id {id} is out of range: the vocabulary has {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("context full: {have} positions used + {new} new > {limit}")]
    ContextFull {
        have: usize,
        new: usize,
        limit: usize,
    },
}

/// Which positions of a step need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new token (generation).
    Last,
    /// Every new token (scoring, perplexity).
    All,
    /// None (a prompt chunk that is not the last: only its keys and values matter).
    None,
}

/// A loaded model (GPT-2 or LLaMA): the mapped file, its hyperparameters and typed weights.
pub struct Model {
    file: Arc<GgufFile>,
    config: ModelConfig,
    weights: Weights,
    kernels: Kernels,
    exact: bool,
    kv_type: KvType,
}

/// Activation buffers for steps of up to `max_tokens` new tokens, allocated once.
pub struct Scratch {
    max_tokens: usize,
    pub(super) x: Vec<f32>,
    pub(super) h: Vec<f32>,
    pub(super) qkv: Vec<f32>,
    pub(super) att: Vec<f32>,
    pub(super) proj: Vec<f32>,
    pub(super) ff: Vec<f32>,
    /// SwiGLU's second MLP projection (LLaMA; empty for GPT-2).
    pub(super) up: Vec<f32>,
    /// Logits of the sequences that need only their last position, stacked.
    pub(super) logits: Vec<f32>,
    pub(super) mm: ops::MatmulScratch,
}

impl Scratch {
    /// Buffers for `cfg`, steps of at most `max_tokens` tokens.
    pub fn new(cfg: &ModelConfig, max_tokens: usize) -> Self {
        let (t, c, f) = (max_tokens.max(1), cfg.n_embd, cfg.n_ff);
        let gated = cfg.arch == super::Arch::Llama;
        Self {
            max_tokens: t,
            x: vec![0.0; t * c],
            h: vec![0.0; t * c],
            qkv: vec![0.0; t * (c + 2 * cfg.kv_dim())],
            att: vec![0.0; t * c],
            proj: vec![0.0; t * c],
            ff: vec![0.0; t * f],
            up: vec![0.0; if gated { t * f } else { 0 }],
            logits: Vec::new(),
            mm: ops::MatmulScratch::default(),
        }
    }

    /// Most tokens one step may carry.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

impl Model {
    /// Validates `file` as a model of a supported architecture.
    pub fn new(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        Ok(Self {
            file,
            config,
            weights,
            kernels: *kernels::get(),
            exact: false,
            kv_type: KvType::default(),
        })
    }

    /// Uses `kernels` instead of the process-wide choice (tests compare ISAs this way).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Multiplies quantized weights in f32 (dequantized rows) instead of quantizing activations:
    /// slower, free of activation-quantization error. For checking against float references.
    pub fn set_exact_matmul(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// The element type of the caches [`Model::new_cache`] makes (F16 unless set).
    pub fn set_kv_type(&mut self, ty: KvType) {
        self.kv_type = ty;
    }

    /// The element type of the caches [`Model::new_cache`] makes.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Whether matmuls dequantize weight rows to f32 (see [`Model::set_exact_matmul`]).
    pub fn exact_matmul(&self) -> bool {
        self.exact
    }

    /// The kernels this model computes with.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Typed weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The GGUF file the model reads from.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// A KV cache of the model's [`KvType`] for `capacity` positions (capped at the trained
    /// context).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.new_cache_typed(capacity, self.kv_type)
    }

    /// A KV cache of `ty` elements for `capacity` positions (capped at the trained context).
    pub fn new_cache_typed(&self, capacity: usize, ty: KvType) -> KvCache {
        self.new_cache_in(capacity, ty, None)
    }

    /// Keys (and as many values) a cache for `capacity` positions holds.
    pub fn cache_elements(&self, capacity: usize) -> usize {
        let cfg = &self.config;
        KvCache::elements_for(
            cfg.n_layer,
            cfg.n_head_kv,
            cfg.head_dim(),
            capacity.min(cfg.n_ctx),
        )
    }

    /// [`Model::new_cache_typed`] on the memory of a finished cache when it fits.
    pub fn new_cache_in(&self, capacity: usize, ty: KvType, memory: Option<KvMemory>) -> KvCache {
        let cfg = &self.config;
        KvCache::with_memory(
            cfg.n_layer,
            cfg.n_head_kv,
            cfg.head_dim(),
            capacity.min(cfg.n_ctx),
            ty,
            memory,
        )
    }

    /// Runs `tokens` through the model after the positions already in `cache`, appends their keys
    /// and values, and writes logits: V values for `Logits::Last`, T × V for `Logits::All`.
    /// Steps longer than `scratch.max_tokens()` are processed in chunks. One sequence of
    /// [`Model::forward_batch`].
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        scratch: &mut Scratch,
        which: Logits,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        let mut steps = [super::SeqStep {
            cache,
            tokens,
            which,
            logits,
        }];
        self.forward_batch(&mut steps, scratch)
    }
}
