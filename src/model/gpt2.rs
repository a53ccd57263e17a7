//! The GPT-2 forward pass: a flat list of named ops with their shapes (T = new tokens,
//! C = n_embd, F = n_ff, V = n_vocab).

use std::sync::Arc;

use super::{Gpt2Config, Gpt2Weights, KvCache, KvType, ModelError};
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
}

/// A loaded GPT-2 model: the mapped file, its hyperparameters and typed weights.
pub struct Gpt2 {
    file: Arc<GgufFile>,
    config: Gpt2Config,
    weights: Gpt2Weights,
    kernels: Kernels,
    exact: bool,
    kv_type: KvType,
}

/// Activation buffers for steps of up to `max_tokens` new tokens, allocated once.
pub struct Scratch {
    max_tokens: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    mm: ops::MatmulScratch,
}

impl Scratch {
    /// Buffers for `cfg`, steps of at most `max_tokens` tokens.
    pub fn new(cfg: &Gpt2Config, max_tokens: usize) -> Self {
        let (t, c, f) = (max_tokens.max(1), cfg.n_embd, cfg.n_ff);
        Self {
            max_tokens: t,
            x: vec![0.0; t * c],
            h: vec![0.0; t * c],
            qkv: vec![0.0; t * 3 * c],
            att: vec![0.0; t * c],
            proj: vec![0.0; t * c],
            ff: vec![0.0; t * f],
            mm: ops::MatmulScratch::default(),
        }
    }

    /// Most tokens one step may carry.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

impl Gpt2 {
    /// Validates `file` as a GPT-2 model.
    pub fn new(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let config = Gpt2Config::from_gguf(&file)?;
        let weights = Gpt2Weights::load(&file, &config)?;
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

    /// The element type of the caches [`Gpt2::new_cache`] makes (F16 unless set).
    pub fn set_kv_type(&mut self, ty: KvType) {
        self.kv_type = ty;
    }

    /// The element type of the caches [`Gpt2::new_cache`] makes.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// The kernels this model computes with.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Hyperparameters.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Typed weights.
    pub fn weights(&self) -> &Gpt2Weights {
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
        let cfg = &self.config;
        KvCache::new(
            cfg.n_layer,
            cfg.n_head,
            cfg.head_dim(),
            capacity.min(cfg.n_ctx),
            ty,
        )
    }

    /// Runs `tokens` through the model after the positions already in `cache`, appends their keys
    /// and values, and writes logits: V values for `Logits::Last`, T × V for `Logits::All`.
    /// Steps longer than `scratch.max_tokens()` are processed in chunks.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        scratch: &mut Scratch,
        which: Logits,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(ForwardError::Empty);
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= cfg.n_vocab) {
            return Err(ForwardError::TokenOutOfRange {
                id,
                n_vocab: cfg.n_vocab,
            });
        }
        let limit = cache.capacity();
        if cache.len() + tokens.len() > limit {
            return Err(ForwardError::ContextFull {
                have: cache.len(),
                new: tokens.len(),
                limit,
            });
        }
        let v = cfg.n_vocab;
        let want = match which {
            Logits::Last => v,
            Logits::All => tokens.len() * v,
        };
        assert_eq!(logits.len(), want, "logits buffer size");
        // The whole step runs on a rayon worker: each matmul's parallel section then starts
        // without waking the pool from outside (measured: that wake-up cost small matmuls half
        // their speed).
        rayon::scope(|_| {
            let chunks = tokens.chunks(scratch.max_tokens);
            let n_chunks = chunks.len();
            for (i, chunk) in chunks.enumerate() {
                let out = match which {
                    Logits::All => {
                        let start = i * scratch.max_tokens * v;
                        Some(&mut logits[start..start + chunk.len() * v])
                    }
                    Logits::Last if i + 1 == n_chunks => Some(&mut logits[..]),
                    Logits::Last => None,
                };
                self.forward_chunk(cache, chunk, scratch, which, out);
            }
        });
        Ok(())
    }

    fn forward_chunk(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        s: &mut Scratch,
        which: Logits,
        logits: Option<&mut [f32]>,
    ) {
        let cfg = &self.config;
        let w = &self.weights;
        let k = &self.kernels;
        let file = self.file.bytes();
        let mm = ops::MatmulCtx {
            kernels: k,
            exact: self.exact,
            file,
        };
        let (t, c, f) = (tokens.len(), cfg.n_embd, cfg.n_ff);
        let pos0 = cache.len();
        let x = &mut s.x[..t * c];
        let h = &mut s.h[..t * c];
        let qkv = &mut s.qkv[..t * 3 * c];
        let att = &mut s.att[..t * c];
        let proj = &mut s.proj[..t * c];
        let ff = &mut s.ff[..t * f];

        // x = token_embd[tokens] + position_embd[pos0..pos0+t]       (T, C)
        let rows = x.chunks_exact_mut(c).zip(h.chunks_exact_mut(c));
        for (i, (&tok, (xr, hr))) in tokens.iter().zip(rows).enumerate() {
            w.token_embd.dequantize_row(file, tok as usize, xr);
            w.position_embd.dequantize_row(file, pos0 + i, hr);
            ops::add_assign(xr, hr);
        }

        for (l, b) in w.blocks.iter().enumerate() {
            // h = LN(x)                                                (T, C)
            ops::layer_norm(x, &b.attn_norm.w, &b.attn_norm.b, cfg.eps, h);
            // qkv = h · Wqkv + b                                       (T, 3C)
            ops::linear(&mm, &b.attn_qkv.w, Some(&b.attn_qkv.b), h, qkv, &mut s.mm);
            // append k, v to the cache                                 (pos0..pos0+T, C)
            for (i, row) in qkv.chunks_exact(3 * c).enumerate() {
                cache.write(l, pos0 + i, &row[c..2 * c], &row[2 * c..]);
            }
            // att = softmax(q·Kᵀ/√d, causal) · V per head              (T, C)
            let (nh, hd) = (cfg.n_head, cfg.head_dim());
            ops::causal_attention(k, qkv, 3 * c, cache, l, pos0, nh, hd, att);
            // x += att · Wo + b                                        (T, C)
            ops::linear(
                &mm,
                &b.attn_output.w,
                Some(&b.attn_output.b),
                att,
                proj,
                &mut s.mm,
            );
            ops::add_assign(x, proj);
            // h = LN(x)                                                (T, C)
            ops::layer_norm(x, &b.ffn_norm.w, &b.ffn_norm.b, cfg.eps, h);
            // ff = gelu(h · Wup + b)                                   (T, F)
            ops::linear(&mm, &b.ffn_up.w, Some(&b.ffn_up.b), h, ff, &mut s.mm);
            ops::gelu(k, ff);
            // x += ff · Wdown + b                                      (T, C)
            ops::linear(&mm, &b.ffn_down.w, Some(&b.ffn_down.b), ff, proj, &mut s.mm);
            ops::add_assign(x, proj);
        }
        cache.set_len(pos0 + t);

        let Some(logits) = logits else { return };
        // Only the rows that need logits go through the final norm and the head.
        let rows = match which {
            Logits::All => &x[..],
            Logits::Last => &x[(t - 1) * c..],
        };
        let n = rows.len() / c;
        // h = LN_f(x)                                                  (n, C)
        ops::layer_norm(
            rows,
            &w.output_norm.w,
            &w.output_norm.b,
            cfg.eps,
            &mut h[..n * c],
        );
        // logits = h · Wout                                            (n, V)
        ops::linear(&mm, &w.output, None, &h[..n * c], logits, &mut s.mm);
    }
}
