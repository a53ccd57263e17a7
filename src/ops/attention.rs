//! Causal multi-head attention over a KV cache, on the attention kernels
//! (`crate::kernels::attend`): blocks of keys with an online softmax, so memory does not grow
//! with the square of the context.

use rayon::prelude::*;

use crate::kernels::attend::{Attend, AttendFn, KvElem, KEYS, MAX_HEAD_DIM, QUERIES};
use crate::kernels::Kernels;
use crate::model::{KvCache, KvHead};

/// Heads whose first block of keys and values decode asks for ahead of the one it computes
/// (measured on GPT-2 124M, 16 sequences, 2 threads: 2 ahead gave 2–6 % over 1; 3 and 4 no more).
const AHEAD: usize = 2;

/// Attention for `t` new tokens whose keys and values are already in `cache` (layer `layer`).
///
/// `q`: t rows with stride `q_stride`, the query in the first `n_head · head_dim` values of each
/// row (so the fused QKV buffer can be passed as is); `out`: t × (n_head · head_dim). The cache
/// holds `n_head_kv` heads; query head h reads key/value head h / (n_head / n_head_kv)
/// (grouped-query attention; n_head_kv = n_head is plain multi-head attention). New token i
/// sits at position `pos0 + i` and attends to positions `0..=pos0 + i`. Work is split over
/// groups of four tokens (each task covering every head), or over heads when there are at most
/// four tokens (decode) and `split_heads` is set (a caller that already runs several sequences
/// in parallel passes false: nested tasks for a few microseconds of work cost more than they
/// save).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    k: &Kernels,
    q: &[f32],
    q_stride: usize,
    cache: &KvCache,
    layer: usize,
    pos0: usize,
    (n_head, n_head_kv): (usize, usize),
    head_dim: usize,
    out: &mut [f32],
    split_heads: bool,
) {
    assert!(n_head_kv > 0 && n_head % n_head_kv == 0, "head groups");
    let group = n_head / n_head_kv;
    let n_embd = n_head * head_dim;
    let t = out.len() / n_embd;
    assert!(
        head_dim <= MAX_HEAD_DIM,
        "head width {head_dim} > {MAX_HEAD_DIM}"
    );
    assert!(q.len() >= (t.max(1) - 1) * q_stride + n_embd, "query rows");
    let scale = 1.0 / (head_dim as f32).sqrt();
    let cap = cache.capacity();
    // Queries i0..i0 + n of head h into `o` (rows of stride `o_stride`).
    let run = |h: usize, i0: usize, n: usize, o: &mut [f32], o_stride: usize| {
        let pos: [usize; QUERIES] = std::array::from_fn(|i| pos0 + i0 + i);
        fn call<E: KvElem>(f: AttendFn<E>, kt: &[E], v: &[E], a: Attend<'_, ()>) {
            f(Attend {
                q: a.q,
                q_stride: a.q_stride,
                pos: a.pos,
                kt,
                v,
                cap: a.cap,
                head_dim: a.head_dim,
                scale: a.scale,
                out: a.out,
                out_stride: a.out_stride,
            })
        }
        let args = Attend {
            q: &q[i0 * q_stride + h * head_dim..],
            q_stride,
            pos: &pos[..n],
            kt: &[],
            v: &[],
            cap,
            head_dim,
            scale,
            out: o,
            out_stride: o_stride,
        };
        match cache.head(layer, h / group) {
            KvHead::F16 { kt, v } => call(k.attend_f16, kt, v, args),
            KvHead::F32 { kt, v } => call(k.attend_f32, kt, v, args),
        }
    };
    if t <= QUERIES && !split_heads {
        // Each head's first block of keys and values is asked for while the heads before it run
        // (the kernels ask for later blocks themselves).
        let first = (pos0 + t).min(KEYS);
        for h in 0..AHEAD.min(n_head) {
            cache.prefetch(layer, h / group, first);
        }
        for h in 0..n_head {
            if h + AHEAD < n_head && (h + AHEAD).is_multiple_of(group) {
                cache.prefetch(layer, (h + AHEAD) / group, first);
            }
            run(h, 0, t, &mut out[h * head_dim..], n_embd);
        }
        return;
    }
    if t <= QUERIES {
        // Decode: one task per head, each writing its own columns of a small buffer.
        let parts: Vec<Vec<f32>> = (0..n_head)
            .into_par_iter()
            .map(|h| {
                let mut o = vec![0.0f32; t * head_dim];
                run(h, 0, t, &mut o, head_dim);
                o
            })
            .collect();
        for (h, part) in parts.iter().enumerate() {
            for (i, row) in part.chunks_exact(head_dim).enumerate() {
                out[i * n_embd + h * head_dim..][..head_dim].copy_from_slice(row);
            }
        }
        return;
    }
    // Prefill: groups of four tokens, every head.
    out.par_chunks_mut(QUERIES * n_embd)
        .enumerate()
        .for_each(|(g, o)| {
            let n = o.len() / n_embd;
            for h in 0..n_head {
                run(h, g * QUERIES, n, &mut o[h * head_dim..], n_embd);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use crate::model::KvType;
    use crate::sampling::Rng;

    /// Plain softmax attention in f64 over the same (rounded) cache contents.
    fn reference(
        q: &[f32],
        keys: &[Vec<f32>],
        vals: &[Vec<f32>],
        pos0: usize,
        (nh, nkv): (usize, usize),
        hd: usize,
    ) -> Vec<f32> {
        let c = nh * hd;
        let g = nh / nkv;
        let t = q.len() / c;
        let mut out = vec![0.0f32; t * c];
        for i in 0..t {
            for h in 0..nh {
                let qh = &q[i * c + h * hd..][..hd];
                let n = pos0 + i + 1;
                let scores: Vec<f64> = (0..n)
                    .map(|p| {
                        let kh = &keys[p][h / g * hd..][..hd];
                        qh.iter()
                            .zip(kh)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let v: f64 = (0..n).map(|p| w[p] * vals[p][h / g * hd + d] as f64).sum();
                    out[i * c + h * hd + d] = (v / z) as f32;
                }
            }
        }
        out
    }

    /// Every ISA and cache type against the f64 reference: prefill of 70 tokens (blocks of 64
    /// keys, a short last group of queries) after 5 cached positions, then a decode step; heads
    /// of width 16 (the generic loops) and 64 (the levels' own block kernels, and a cache whose
    /// last block is short).
    #[test]
    fn matches_plain_softmax_attention() {
        check(3, 3, 16, 80);
        check(2, 2, 64, 150);
    }

    /// Grouped-query attention: 6 and 9 query heads over 2 and 3 key/value heads.
    #[test]
    fn grouped_query_heads_share_their_keys_and_values() {
        check(6, 2, 16, 80);
        check(9, 3, 64, 80);
    }

    fn check(nh: usize, nkv: usize, hd: usize, cap: usize) {
        let c = nh * hd;
        let ckv = nkv * hd;
        let mut rng = Rng::new(3);
        let mut r =
            |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| (rng.next_f32() - 0.5) * a).collect() };
        let keys: Vec<Vec<f32>> = (0..cap).map(|_| r(ckv, 4.0)).collect();
        let vals: Vec<Vec<f32>> = (0..cap).map(|_| r(ckv, 2.0)).collect();
        let q = r(cap.max(76) * c, 4.0);
        for ty in [KvType::F32, KvType::F16] {
            let mut cache = KvCache::new(1, nkv, hd, cap, ty);
            let round = |x: &Vec<f32>| -> Vec<f32> {
                match ty {
                    KvType::F32 => x.clone(),
                    KvType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                }
            };
            let (kr, vr): (Vec<_>, Vec<_>) = (
                keys.iter().map(round).collect(),
                vals.iter().map(round).collect(),
            );
            for p in 0..cap {
                cache.write(0, p, &keys[p], &vals[p]);
            }
            for isa in Isa::ALL {
                let Some(k) = Kernels::for_isa(isa) else {
                    continue;
                };
                for (pos0, t) in [(5, 70), (75, 1), (0, 3), (cap - 6, 6)] {
                    let qs = &q[..t * c];
                    let mut out = vec![0.0; t * c];
                    let split = t % 2 == 1;
                    let heads = (nh, nkv);
                    causal_attention(&k, qs, c, &cache, 0, pos0, heads, hd, &mut out, split);
                    let want = reference(qs, &kr, &vr, pos0, heads, hd);
                    for (j, (g, w)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 2e-5 * (1.0 + w.abs()),
                            "{isa} {ty:?} hd={hd} pos0={pos0} t={t} [{j}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
