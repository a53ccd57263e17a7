//! Causal multi-head attention over a KV cache.

use std::cell::RefCell;

use rayon::prelude::*;

use super::softmax;
use crate::kernels::Kernels;

thread_local! {
    /// Attention scores of one (token, head) pair, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Attention for `t` new tokens whose keys and values are already in the cache.
///
/// `q`: t rows with stride `q_stride`, the query in the first n_embd values of each row (so the
/// fused QKV buffer can be passed as is); `k_cache`, `v_cache`: at least `pos0 + t` rows of
/// n_embd = `n_head · head_dim`; `out`: t × n_embd. The new token i sits at position `pos0 + i`
/// and attends to positions `0..=pos0 + i`.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    k: &Kernels,
    q: &[f32],
    q_stride: usize,
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    n_head: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let n_embd = n_head * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // One task per (token, head): out is laid out token-major, head-minor, head_dim wide.
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each(|(task, o)| {
            let (i, h) = (task / n_head, task % n_head);
            let n_ctx = pos0 + i + 1;
            let qh = &q[i * q_stride + h * head_dim..][..head_dim];
            SCORES.with(|s| {
                let mut s = s.borrow_mut();
                s.resize(n_ctx, 0.0);
                for (p, sc) in s.iter_mut().enumerate() {
                    *sc =
                        (k.dot_f32)(qh, &k_cache[p * n_embd + h * head_dim..][..head_dim]) * scale;
                }
                softmax(&mut s);
                o.fill(0.0);
                for (p, &w) in s.iter().enumerate() {
                    let vh = &v_cache[p * n_embd + h * head_dim..][..head_dim];
                    for (a, &v) in o.iter_mut().zip(vh) {
                        *a += w * v;
                    }
                }
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_position_returns_its_value() {
        // One token, two heads of width 2: with one position, softmax is 1 and out = v.
        let q = [1.0, 2.0, 3.0, 4.0];
        let k = [0.5, 0.5, 0.5, 0.5];
        let v = [7.0, 8.0, 9.0, 10.0];
        let mut out = [0.0; 4];
        causal_attention(&Kernels::scalar(), &q, 4, &k, &v, 0, 2, 2, &mut out);
        assert_eq!(out, v);
    }

    #[test]
    fn later_tokens_see_earlier_positions_only() {
        // Head width 1; keys equal so weights are uniform over the visible prefix.
        let q = [1.0, 1.0];
        let k = [1.0, 1.0, 1.0];
        let v = [3.0, 5.0, 100.0];
        let mut out = [0.0; 2];
        causal_attention(&Kernels::scalar(), &q, 1, &k, &v, 0, 1, 1, &mut out);
        assert_eq!(out[0], 3.0);
        assert!(
            (out[1] - 4.0).abs() < 1e-6,
            "position 2 (v = 100) must stay hidden"
        );
    }
}
