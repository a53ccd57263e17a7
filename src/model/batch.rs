//! The batched forward pass: one call advances several sequences, each with its own KV cache and
//! position, some in prefill (many tokens) and some in decode (one token). Their tokens are
//! stacked into one activation matrix, so every weight matrix is read once per round for the
//! whole batch; attention runs per sequence (in parallel) over its own cache. This is what a
//! continuous-batching scheduler drives.

use rayon::prelude::*;

use super::gpt2::{ForwardError, Gpt2, Logits, Scratch};
use super::KvCache;
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

impl Gpt2 {
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
        let (c, f) = (cfg.n_embd, cfg.n_ff);
        let (nh, hd) = (cfg.n_head, cfg.head_dim());
        let x = &mut s.x[..t * c];
        let h = &mut s.h[..t * c];
        let qkv = &mut s.qkv[..t * 3 * c];
        let att = &mut s.att[..t * c];
        let proj = &mut s.proj[..t * c];
        let ff = &mut s.ff[..t * f];

        // x = token_embd[tokens] + position_embd[positions]            (T, C)
        for p in parts {
            let tokens = &steps[p.seq].tokens[p.off..p.off + p.n];
            let rows = x[p.row * c..(p.row + p.n) * c].chunks_exact_mut(c);
            let tmp = h[p.row * c..(p.row + p.n) * c].chunks_exact_mut(c);
            for (i, (&tok, (xr, hr))) in tokens.iter().zip(rows.zip(tmp)).enumerate() {
                w.token_embd.dequantize_row(file, tok as usize, xr);
                w.position_embd.dequantize_row(file, p.pos0 + i, hr);
                ops::add_assign(xr, hr);
            }
        }

        for (l, b) in w.blocks.iter().enumerate() {
            // h = LN(x)                                                (T, C)
            ops::layer_norm(x, &b.attn_norm.w, &b.attn_norm.b, cfg.eps, h);
            // qkv = h · Wqkv + b                                       (T, 3C)
            ops::linear(&mm, &b.attn_qkv.w, Some(&b.attn_qkv.b), h, qkv, &mut s.mm);
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
                    let rows = &qkv_ref[p.row * 3 * c..][..p.n * 3 * c];
                    for (i, r) in rows.chunks_exact(3 * c).enumerate() {
                        cache.write(l, p.pos0 + i, &r[c..2 * c], &r[2 * c..]);
                    }
                    let q = &qkv_ref[p.row * 3 * c..];
                    ops::causal_attention(k, q, 3 * c, cache, l, p.pos0, nh, hd, out, alone);
                });
            // x += att · Wo + b                                        (T, C)
            let (wo, bo) = (&b.attn_output.w, Some(&b.attn_output.b[..]));
            ops::linear(&mm, wo, bo, att, proj, &mut s.mm);
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
        for p in parts {
            steps[p.seq].cache.set_len(p.pos0 + p.n);
        }

        // Logits: every row of `All` parts, the last row of `Last` sequences that end here. The
        // rows of `Last` sequences go through the head together (one pass over its weights).
        let v = cfg.n_vocab;
        let norm = |rows: &[f32], out: &mut [f32]| {
            ops::layer_norm(rows, &w.output_norm.w, &w.output_norm.b, cfg.eps, out);
        };
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
