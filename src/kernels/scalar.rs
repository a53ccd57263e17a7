//! Scalar kernels: the portable fallback and the reference twin of every SIMD kernel.

use crate::quant::{
    act_quant, act_scale, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8Quad,
    BlockQ8_0, BlockQ8x4, BlockW16, W16Kind,
};

#[inline]
fn f16(bits: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(bits).to_f32()
}

/// Quantizes 32·n activations into n blocks (round half to even).
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8Act]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = act_scale(amax);
        let mut isum = 0;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = act_quant(v, id);
            isum += *q as i32;
        }
        b.d = d;
        b.isum = isum;
    }
}

/// Quantizes 256·n activations into n blocks with per-16 sums.
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(256)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = act_scale(amax);
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = act_quant(v, id);
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = d;
    }
}

fn idot32(w: &[i8; 32], a: &[i8; 32]) -> i32 {
    w.iter().zip(a).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Σ dequant(w) · dequant(a) for Q8_0 weights.
pub fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32 {
    let mut sum = 0.0;
    for (w, a) in w.iter().zip(a) {
        sum += f16(w.d) * a.d * idot32(&w.qs, &a.qs) as f32;
    }
    sum
}

/// Unpacks the 32 nibbles of a Q4 block: byte j holds value j (low) and value j + 16 (high).
fn nibbles(qs: &[u8; 16]) -> [i8; 32] {
    let mut n = [0i8; 32];
    for (j, &b) in qs.iter().enumerate() {
        n[j] = (b & 0x0F) as i8;
        n[j + 16] = (b >> 4) as i8;
    }
    n
}

/// Four Q8_0 rows at once (the reference twin: four single-row dots).
pub fn dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8Act]) -> [f32; 4] {
    w.map(|w| dot_q8_0(w, a))
}

/// Four Q4_0 rows at once (the reference twin: four single-row dots).
pub fn dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8Act]) -> [f32; 4] {
    w.map(|w| dot_q4_0(w, a))
}

/// A 4 × 4 tile of Q8_0 rows (the reference twin: sixteen single-row dots).
pub fn gemm4x4_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
    w.map(|w| a.map(|a| dot_q8_0(w, a)))
}

/// A 4 × 4 tile of Q4_0 rows (the reference twin: sixteen single-row dots).
pub fn gemm4x4_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
    w.map(|w| a.map(|a| dot_q4_0(w, a)))
}

/// Q4_0: value = (n − 8)·d, so Σ w·a = d·da·(Σ n·q − 8·Σ q).
pub fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32 {
    let mut sum = 0.0;
    for (w, a) in w.iter().zip(a) {
        let i = idot32(&nibbles(&w.qs), &a.qs) - 8 * a.isum;
        sum += f16(w.d) * a.d * i as f32;
    }
    sum
}

/// Q4_1: value = n·d + m, so Σ w·a = d·da·Σ n·q + m·da·Σ q.
pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32 {
    let mut sum = 0.0;
    for (w, a) in w.iter().zip(a) {
        let i = idot32(&nibbles(&w.qs), &a.qs);
        sum += f16(w.d) * a.d * i as f32 + f16(w.m) * a.d * a.isum as f32;
    }
    sum
}

/// The 32 quants of row c of an interleaved activation block.
fn column(p: &BlockQ8x4, c: usize) -> [i8; 32] {
    std::array::from_fn(|i| p.qs[16 * (i / 4) + 4 * c + i % 4])
}

/// The panel loop of the reference twins: `out[r][4g + c] = Σ_b block(w[r][b], a[g][b], c)`.
fn panel<W>(
    w: [&[W]; 4],
    a: &[&[BlockQ8x4]],
    out: &mut [[f32; 16]; 4],
    block: impl Fn(&W, &BlockQ8x4, usize) -> f32,
) {
    assert!(a.len() <= 4, "at most four activation groups per panel");
    for (r, w) in w.iter().enumerate() {
        for (g, a) in a.iter().enumerate() {
            for c in 0..4 {
                out[r][4 * g + c] = w.iter().zip(*a).map(|(w, a)| block(w, a, c)).sum();
            }
        }
    }
}

/// Q8_0 panel: the quants enter as q + 128, and the packed bias (−128·Σa) takes it back out.
pub fn panel_q8_0(w: [&[BlockQ8_0]; 4], a: &[&[BlockQ8x4]], out: &mut [[f32; 16]; 4]) {
    panel(w, a, out, |w, a, c| {
        let q = column(a, c);
        let i: i32 =
            w.qs.iter()
                .zip(q)
                .map(|(&x, y)| (x as i32 + 128) * y as i32)
                .sum();
        f16(w.d) * a.d[c] * (i + a.bias[c]) as f32
    })
}

/// Q4_0 panel: nibbles n = q + 8 enter as they are; the packed bias is −8·Σa.
pub fn panel_q4_0(w: [&[BlockQ4_0]; 4], a: &[&[BlockQ8x4]], out: &mut [[f32; 16]; 4]) {
    panel(w, a, out, |w, a, c| {
        let i = idot32(&nibbles(&w.qs), &column(a, c)) + a.bias[c];
        f16(w.d) * a.d[c] * i as f32
    })
}

/// Q4_1 panel: d·da·Σ n·a + m·(da·Σa).
pub fn panel_q4_1(w: [&[BlockQ4_1]; 4], a: &[&[BlockQ8x4]], out: &mut [[f32; 16]; 4]) {
    panel(w, a, out, |w, a, c| {
        let i = idot32(&nibbles(&w.qs), &column(a, c)) + a.bias[c];
        f16(w.d) * a.d[c] * i as f32 + f16(w.m) * a.ds[c]
    })
}

/// Q4_0 row against quads of activation blocks (`w.len() == 4 · a.len()`, else panics): the
/// nibbles n = q + 8 enter as they are and the quads' lane biases (−2·Σa each) take the 8 out.
pub fn dot_q4_0_quad(w: &[BlockQ4_0], a: &[BlockQ8Quad]) -> f32 {
    assert_eq!(
        w.len(),
        4 * a.len(),
        "four weight blocks per activation quad"
    );
    let mut sum = 0.0;
    for (w, a) in w.chunks_exact(4).zip(a) {
        for (i, w) in w.iter().enumerate() {
            let q: [i8; 32] = std::array::from_fn(|j| {
                if j < 16 {
                    a.lo[16 * i + j]
                } else {
                    a.hi[16 * i + j - 16]
                }
            });
            let bias: i32 = a.bias[4 * i..][..4].iter().sum();
            sum += f16(w.d) * a.d[4 * i] * (idot32(&nibbles(&w.qs), &q) + bias) as f32;
        }
    }
    sum
}

/// 16 × 8 tile over regrouped weights: per block, d·da·(Σ u·a − offset·Σa) + m·da·Σa.
pub fn gemm16(kind: W16Kind, w: &[BlockW16], a: [&[BlockQ8Act]; 8], out: &mut [[f32; 16]; 8]) {
    for (o, a) in out.iter_mut().zip(a) {
        for (r, o) in o.iter_mut().enumerate() {
            *o = w
                .iter()
                .zip(a)
                .map(|(w, a)| {
                    let i: i32 = (0..32)
                        .map(|j| w.q[j / 4][4 * r + j % 4] as i32 * a.qs[j] as i32)
                        .sum();
                    let i = i - kind.offset() * a.isum;
                    w.d[r] * a.d * i as f32 + w.m[r] * a.d * a.isum as f32
                })
                .sum();
        }
    }
}

/// Sixteen consecutive Q8_0 rows against groups of eight activation rows, one dot each (see
/// [`super::Gemm16RowsFn`]).
pub fn gemm16_rows_q8_0(w: &[BlockQ8_0], nb: usize, a: &[BlockQ8Act], out: &mut [[[f32; 16]; 8]]) {
    assert_eq!(w.len(), 16 * nb, "sixteen rows of {nb} blocks");
    assert_eq!(
        a.len(),
        8 * out.len() * nb,
        "eight activation rows per group"
    );
    if nb == 0 {
        out.fill([[0.0; 16]; 8]);
        return;
    }
    for (o, a) in out.iter_mut().flatten().zip(a.chunks_exact(nb)) {
        for (o, w) in o.iter_mut().zip(w.chunks_exact(nb)) {
            *o = dot_q8_0(w, a);
        }
    }
}

/// Q6_K: value = d·sc[g]·(q − 32) per group g of 16.
pub fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0;
    for (w, a) in w.iter().zip(a) {
        let mut isum = 0i32;
        for g in 0..16 {
            let mut gs = 0i32;
            for k in 0..16 {
                let i = 16 * g + k;
                gs += (w.q(i) as i32 + 32) * a.qs[i] as i32;
            }
            isum += w.scales[g] as i32 * (gs - 32 * a.bsums[g] as i32);
        }
        sum += f16(w.d) * a.d * isum as f32;
    }
    sum
}

/// Σ w·x for F16 weights (little-endian bit pairs) and f32 activations.
pub fn dot_f16(w: &[[u8; 2]], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(&b, &v)| f16(b) * v).sum()
}

/// Σ w·x for F32 weights (little-endian bytes) and f32 activations.
pub fn dot_f32_bytes(w: &[[u8; 4]], x: &[f32]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(&b, &v)| f32::from_le_bytes(b) * v)
        .sum()
}

/// GELU, tanh form, with the standard library's `tanh` (the reference the fast forms are held
/// to).
pub fn gelu(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// Σ a·b over f32 slices (attention scores).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
