//! The batched forward pass: one call advances several sequences, each with its own KV cache and
//! position, some in prefill (many tokens) and some in decode (one token). Their tokens are
//! stacked into one activation matrix, so every weight matrix is read once per round for the
//! whole batch; attention runs per sequence (in parallel) over its own cache. This is what a
//! continuous-batching scheduler drives.

use rayon::prelude::*;

use super::transformer::{ForwardError, Logits, Model, Scratch};
use super::{KvCache, Linear, Norm, Qkv};
use crate::ops;

/// One sequence's share of a batched step.
pub struct SeqStep<'a> {
    /// The sequence's cache: the new tokens go after the positions it holds.
    pub cache: &'a mut KvCache,
    /// New tokens (at least one).
    pub tokens: &'a [u32],
    /// Which positions need logits.
    pub which: Logits,
    /// V values for `Logits::Last`, `tokens.len()` × V for `Logits::All`, empty for
    /// `Logits::None`.
    pub logits: &'a mut [f32],
}

/// A run of one sequence's tokens inside a round: rows `row..row + n` of the stacked
/// activations are its tokens `off..off + n`, at positions `pos0..pos0 + n`.
#[derive(Debug, Clone, Copy)]
struct Part {
    seq: usize,
    off: usize,
    n: usize,
    row: usize,
    pos0: usize,
}

impl Model {
    /// Advances every sequence of `steps` by its tokens: appends their keys and values to each
    /// cache and writes the logits asked for. Rounds carry at most `scratch.max_tokens()` tokens
    /// (a long prompt is split over several). Nothing is computed if any step is invalid.
    ///
    /// Panics if a logits buffer has the wrong size (a caller bug, not bad input).
    pub fn forward_batch(
        &self,
        steps: &mut [SeqStep<'_>],
        scratch: &mut Scratch,
    ) -> Result<(), ForwardError> {
        let cfg = self.config();
        for st in steps.iter() {
            if st.tokens.is_empty() {
                return Err(ForwardError::Empty);
            }
            if let Some(&id) = st.tokens.iter().find(|&&id| id as usize >= cfg.n_vocab) {
                return Err(ForwardError::TokenOutOfRange {
                    id,
                    n_vocab: cfg.n_vocab,
                });
            }
            let limit = st.cache.capacity();
            if st.cache.len() + st.tokens.len() > limit {
                return Err(ForwardError::ContextFull {
                    have: st.cache.len(),
                    new: st.tokens.len(),
                    limit,
                });
            }
            let want = match st.which {
                Logits::Last => cfg.n_vocab,
                Logits::All => st.tokens.len() * cfg.n_vocab,
                Logits::None => 0,
            };
            assert_eq!(st.logits.len(), want, "logits buffer size");
        }
        // The whole step runs on a rayon worker: each parallel section then starts without
        // waking the pool from outside (measured: that wake-up cost small matmuls half their
        // speed).
        rayon::scope(|_| {
            let mut done = vec![0usize; steps.len()];
            loop {
                let mut parts = Vec::new();
                let mut row = 0;
                for (seq, st) in steps.iter().enumerate() {
                    let n = (st.tokens.len() - done[seq]).min(scratch.max_tokens() - row);
                    if n > 0 {
                        let pos0 = st.cache.len();
                        let off = done[seq];
                        parts.push(Part {
                            seq,
                            off,
                            n,
                            row,
                            pos0,
                        });
                        row += n;
                    }
                }
                if parts.is_empty() {
                    break;
                }
                self.round(steps, &parts, scratch);
                for p in &parts {
                    done[p.seq] += p.n;
                }
            }
        });
        Ok(())
    }

    /// One round: the stacked tokens of `parts` through every layer, then the logits.
    fn round(&self, steps: &mut [SeqStep<'_>], parts: &[Part], s: &mut Scratch) {
        let cfg = self.config();
        let w = self.weights();
        let k = self.kernels();
        let file = self.file().bytes();
        let mm = ops::MatmulCtx {
            kernels: k,
            exact: self.exact_matmul(),
            file,
        };
        let t: usize = parts.iter().map(|p| p.n).sum();
        let (c, f, kvd) = (cfg.n_embd, cfg.n_ff, cfg.kv_dim());
        let (heads, hd) = ((cfg.n_head, cfg.n_head_kv), cfg.head_dim());
        let x = &mut s.x[..t * c];
        let h = &mut s.h[..t * c];
        let qkv = &mut s.qkv[..t * (c + 2 * kvd)];
        let att = &mut s.att[..t * c];
        let proj = &mut s.proj[..t * c];
        let ff = &mut s.ff[..t * f];
        let up = &mut s.up[..];

        // x = token_embd[tokens] (+ position_embd[positions] for GPT-2)      (T, C)
        for p in parts {
            let tokens = &steps[p.seq].tokens[p.off..p.off + p.n];
            let rows = x[p.row * c..(p.row + p.n) * c].chunks_exact_mut(c);
            let tmp = h[p.row * c..(p.row + p.n) * c].chunks_exact_mut(c);
            for (i, (&tok, (xr, hr))) in tokens.iter().zip(rows.zip(tmp)).enumerate() {
                w.token_embd.dequantize_row(file, tok as usize, xr);
                if let Some(pe) = &w.position_embd {
                    pe.dequantize_row(file, p.pos0 + i, hr);
                    ops::add_assign(xr, hr);
                }
            }
        }

        // Each sequence's rotary angles, the same in every layer (none for GPT-2).
        let rope: Vec<ops::RopeTable> = match &cfg.rope {
            Some(r) => parts
                .iter()
                .map(|p| ops::RopeTable::new(r, p.pos0, p.n))
                .collect(),
            None => Vec::new(),
        };

        for (l, b) in w.blocks.iter().enumerate() {
            // h = norm(x)                                              (T, C)
            norm(&b.attn_norm, cfg.eps, x, h);
            // q, k, v = h · Wq, h · Wk, h · Wv (+ b)    (T, C), (T, KV), (T, KV)
            // where each lives in `qkv`: (offset of row 0, stride).
            let layout = match &b.attn_qkv {
                Qkv::Fused(wqkv) => {
                    apply(&mm, wqkv, h, qkv, &mut s.mm);
                    [(0, 3 * c), (c, 3 * c), (2 * c, 3 * c)]
                }
                Qkv::Split { q, k: wk, v } => {
                    let (qb, rest) = qkv.split_at_mut(t * c);
                    let (kb, vb) = rest.split_at_mut(t * kvd);
                    apply(&mm, q, h, qb, &mut s.mm);
                    apply(&mm, wk, h, kb, &mut s.mm);
                    apply(&mm, v, h, vb, &mut s.mm);
                    // Rotary positions on q and k, per sequence.
                    for (p, table) in parts.iter().zip(&rope) {
                        table.apply(&mut qb[p.row * c..], c, cfg.n_head, hd);
                        table.apply(&mut kb[p.row * kvd..], kvd, cfg.n_head_kv, hd);
                    }
                    [(0, c), (t * c, kvd), (t * c + t * kvd, kvd)]
                }
            };
            let [(qo, qs), (ko, ks), (vo, vs)] = layout;
            // Per sequence, in parallel: its k, v into its cache, then
            // att = softmax(q·Kᵀ/√d, causal) · V over its heads                 (T, C)
            let mut outs = Vec::with_capacity(parts.len());
            let mut rest = &mut att[..];
            for p in parts {
                let (mine, tail) = rest.split_at_mut(p.n * c);
                outs.push(mine);
                rest = tail;
            }
            let mut caches: Vec<Option<&mut KvCache>> =
                steps.iter_mut().map(|st| Some(&mut *st.cache)).collect();
            let caches: Vec<&mut KvCache> = parts
                .iter()
                .map(|p| {
                    caches[p.seq]
                        .take()
                        .expect("one part per sequence in a round")
                })
                .collect();
            let qkv_ref = &*qkv;
            let alone = parts.len() == 1;
            parts
                .par_iter()
                .zip(outs)
                .zip(caches)
                .for_each(|((p, out), cache)| {
                    for i in 0..p.n {
                        let r = p.row + i;
                        let key = &qkv_ref[ko + r * ks..][..kvd];
                        let val = &qkv_ref[vo + r * vs..][..kvd];
                        cache.write(l, p.pos0 + i, key, val);
                    }
                    let q = &qkv_ref[qo + p.row * qs..];
                    ops::causal_attention(k, q, qs, cache, l, p.pos0, heads, hd, out, alone);
                });
            // x += att · Wo (+ b)                                      (T, C)
            apply(&mm, &b.attn_output, att, proj, &mut s.mm);
            ops::add_assign(x, proj);
            // h = norm(x)                                              (T, C)
            norm(&b.ffn_norm, cfg.eps, x, h);
            match &b.ffn_gate {
                // ff = gelu(h · Wup + b)                               (T, F)
                None => {
                    apply(&mm, &b.ffn_up, h, ff, &mut s.mm);
                    ops::gelu(k, ff);
                }
                // ff = silu(h · Wgate) · (h · Wup)                     (T, F)
                Some(gate) => {
                    let up = &mut up[..t * f];
                    apply(&mm, gate, h, ff, &mut s.mm);
                    apply(&mm, &b.ffn_up, h, up, &mut s.mm);
                    ops::silu_mul(ff, up);
                }
            }
            // x += ff · Wdown (+ b)                                    (T, C)
            apply(&mm, &b.ffn_down, ff, proj, &mut s.mm);
            ops::add_assign(x, proj);
        }
        for p in parts {
            steps[p.seq].cache.set_len(p.pos0 + p.n);
        }

        // Logits: every row of `All` parts, the last row of `Last` sequences that end here. The
        // rows of `Last` sequences go through the head together (one pass over its weights).
        let v = cfg.n_vocab;
        let norm = |rows: &[f32], out: &mut [f32]| norm(&w.output_norm, cfg.eps, rows, out);
        let mut last_rows = Vec::new();
        for p in parts {
            let st = &mut steps[p.seq];
            match st.which {
                Logits::All => {
                    let rows = &x[p.row * c..(p.row + p.n) * c];
                    norm(rows, &mut h[..p.n * c]);
                    let out = &mut st.logits[p.off * v..(p.off + p.n) * v];
                    ops::linear(&mm, &w.output, None, &h[..p.n * c], out, &mut s.mm);
                }
                Logits::Last if p.off + p.n == st.tokens.len() => last_rows.push(p),
                Logits::Last | Logits::None => {}
            }
        }
        if last_rows.is_empty() {
            return;
        }
        let n = last_rows.len();
        for (i, p) in last_rows.iter().enumerate() {
            let r = p.row + p.n - 1;
            norm(&x[r * c..(r + 1) * c], &mut h[i * c..(i + 1) * c]);
        }
        s.logits.resize(n * v, 0.0);
        ops::linear(&mm, &w.output, None, &h[..n * c], &mut s.logits, &mut s.mm);
        for (p, row) in last_rows.iter().zip(s.logits.chunks_exact(v)) {
            steps[p.seq].logits.copy_from_slice(row);
        }
    }
}

/// `out = x · W (+ b)` for a linear layer.
fn apply(
    mm: &ops::MatmulCtx<'_>,
    lin: &Linear,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut ops::MatmulScratch,
) {
    ops::linear(mm, &lin.w, lin.b.as_deref(), x, out, scratch);
}

/// LayerNorm when the norm has a shift, RMSNorm when it has none.
fn norm(n: &Norm, eps: f32, x: &[f32], out: &mut [f32]) {
    match &n.b {
        Some(b) => ops::layer_norm(x, &n.w, b, eps, out),
        None => ops::rms_norm(x, &n.w, eps, out),
    }
}
