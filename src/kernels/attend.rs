//! Attention of up to four queries over one head's cached keys and values, in blocks of 64 keys
//! with an online softmax (running maximum and sum), so memory stays a few KiB whatever the
//! context length. Written as plain loops over fixed-size arrays that LLVM vectorizes: each ISA
//! level instantiates [`attend`] inside its own `#[target_feature]` function.
//!
//! Per block: the scores of every query against 64 keys are accumulated one dimension at a time
//! from the transposed keys (a row of 64 consecutive positions per dimension: no horizontal
//! sums); then each query's maximum, weights and sum are updated; then the weighted values are
//! added one position at a time (a row of `head_dim` values per position).

use half::f16;

use super::math::exp_approx;
use super::prefetch::{prefetch_range, Level};

/// Largest head width the kernels take (GPT-2 family models use 64).
pub const MAX_HEAD_DIM: usize = 256;
/// Queries per call.
pub const QUERIES: usize = 4;
/// Keys per block.
pub const KEYS: usize = 64;

/// How an ISA level converts f16 to f32 (x86 levels with F16C use `vcvtph2ps`), and whether it
/// has fused multiply-adds in hardware (elsewhere `mul_add` is a library call).
pub trait Widen {
    /// Use `mul_add` in the inner loops.
    const FMA: bool;
    /// Converts `src` into `dst` (equal lengths).
    fn f16(src: &[f16], dst: &mut [f32]);

    /// A level's own kernel for the scores of a block, heads of width 64:
    /// `s[i][j] = Σ_d q[i][d] · kt[d · cap + p0 + j]` for queries i < nq and j < n rounded up
    /// to a multiple of 16 (at most 64; later entries may be left as they were), where
    /// `p0 + 64 ≤ cap`. False when the level has none (the portable loops run instead).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores64<E: KvElem>(
        _kt: &[E],
        _cap: usize,
        _p0: usize,
        _n: usize,
        _q: [&[f32]; QUERIES],
        _nq: usize,
        _s: &mut [[f32; KEYS]; QUERIES],
    ) -> bool {
        false
    }

    /// A level's own kernel for the weighted values of a block, heads of width 64:
    /// `o[i][d] += Σ_{j<n} s[i][j] · v[(p0 + j) · 64 + d]` for queries i < nq. False when the
    /// level has none.
    #[inline(always)]
    fn pv64<E: KvElem>(
        _v: &[E],
        _p0: usize,
        _n: usize,
        _s: &[[f32; KEYS]; QUERIES],
        _nq: usize,
        _o: [&mut [f32]; QUERIES],
    ) -> bool {
        false
    }
}

/// The portable conversion: branch-free bit manipulation that vectorizes.
pub struct Portable;

impl Widen for Portable {
    const FMA: bool = false;
    #[inline(always)]
    fn f16(src: &[f16], dst: &mut [f32]) {
        for (d, &h) in dst.iter_mut().zip(src) {
            *d = f16_to_f32(h.to_bits());
        }
    }
}

/// The portable conversion on a level with hardware FMA (aarch64).
pub struct PortableFma;

impl Widen for PortableFma {
    const FMA: bool = true;
    #[inline(always)]
    fn f16(src: &[f16], dst: &mut [f32]) {
        Portable::f16(src, dst)
    }
}

/// `a·b + c`, fused where `X` says the hardware has it.
#[inline(always)]
fn madd<X: Widen>(a: f32, b: f32, c: f32) -> f32 {
    if X::FMA {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// A KV-cache element type.
pub trait KvElem: Copy + Sync {
    /// Converts `src` into `dst` (equal lengths) with `X`'s f16 conversion.
    fn widen<X: Widen>(src: &[Self], dst: &mut [f32]);
    /// The slice as f16, if that is the type.
    fn as_f16(s: &[Self]) -> Option<&[f16]>;
    /// The slice as f32, if that is the type.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
}

impl KvElem for f32 {
    #[inline(always)]
    fn widen<X: Widen>(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn as_f16(_: &[f32]) -> Option<&[f16]> {
        None
    }
    #[inline(always)]
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn widen<X: Widen>(src: &[f16], dst: &mut [f32]) {
        X::f16(src, dst)
    }
    #[inline(always)]
    fn as_f16(s: &[f16]) -> Option<&[f16]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
}

/// f16 bits to f32 in integer and float operations that vectorize (no table, no branch): the
/// f16 exponent and significand, shifted into f32 position, read as an f32 that is 2¹¹² too
/// small (subnormals included, since the product is exact); infinities and NaNs are selected
/// apart.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let magnitude = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    let special = f32::from_bits(0x7f80_0000 | ((h & 0x03ff) << 13));
    let v = if h & 0x7c00 == 0x7c00 {
        special
    } else {
        magnitude
    };
    f32::from_bits(v.to_bits() | ((h & 0x8000) << 16))
}

/// One call: queries `i` = 0..pos.len() (at most [`QUERIES`]) at positions `pos[i]`, each seeing
/// keys 0..=pos[i].
pub struct Attend<'a, E> {
    /// Query i is `q[i · q_stride..][..head_dim]`.
    pub q: &'a [f32],
    /// Distance between queries in `q`.
    pub q_stride: usize,
    /// Position of each query.
    pub pos: &'a [usize],
    /// Keys, transposed: dimension d of position p at `kt[d · cap + p]`.
    pub kt: &'a [E],
    /// Values: dimension d of position p at `v[p · head_dim + d]`.
    pub v: &'a [E],
    /// Positions the cache holds (the row length of `kt`).
    pub cap: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Score scale, 1/√head_dim.
    pub scale: f32,
    /// Output i is `out[i · out_stride..][..head_dim]`.
    pub out: &'a mut [f32],
    /// Distance between outputs in `out`.
    pub out_stride: usize,
}

/// A function computing one [`Attend`] call.
pub type AttendFn<E> = fn(Attend<'_, E>);

/// Softmax(q·Kᵀ·scale)·V for each query. Panics on more than [`QUERIES`] queries, a head wider
/// than [`MAX_HEAD_DIM`], or a position past the cache.
#[inline(always)]
pub(crate) fn attend<E: KvElem, X: Widen>(a: Attend<'_, E>) {
    // Common widths get loops of constant length, which LLVM unrolls into registers.
    // `B` sizes the stack buffers: zeroing 4 × 256 floats per call showed in decode profiles.
    match a.head_dim {
        64 => attend_hd::<E, X, 64, 64>(a),
        128 => attend_hd::<E, X, 128, 128>(a),
        _ => attend_hd::<E, X, 0, MAX_HEAD_DIM>(a),
    }
}

/// [`attend`] for heads of width `HD` (0: `a.head_dim`, any width up to `B`).
#[inline(always)]
fn attend_hd<E: KvElem, X: Widen, const HD: usize, const B: usize>(a: Attend<'_, E>) {
    let nq = a.pos.len();
    let hd = if HD == 0 { a.head_dim } else { HD };
    assert!(
        nq <= QUERIES && hd <= MAX_HEAD_DIM,
        "{nq} queries of width {hd}"
    );
    let Some(&last) = a.pos.iter().max() else {
        return;
    };
    assert!(last < a.cap, "position {last} past the cache ({})", a.cap);
    assert!(
        a.kt.len() >= hd * a.cap && a.v.len() >= hd * a.cap,
        "head block size"
    );
    let mut q = [[0.0f32; B]; QUERIES];
    for (i, qi) in q.iter_mut().enumerate().take(nq) {
        for (d, &x) in qi[..hd].iter_mut().zip(&a.q[i * a.q_stride..][..hd]) {
            *d = x * a.scale;
        }
    }
    let mut o = [[0.0f32; B]; QUERIES];
    let mut m = [f32::NEG_INFINITY; QUERIES];
    let mut l = [0.0f32; QUERIES];
    let mut s = [[0.0f32; KEYS]; QUERIES];
    let mut row = [0.0f32; B];
    let n_keys = last + 1;
    for p0 in (0..n_keys).step_by(KEYS) {
        let n = KEYS.min(n_keys - p0);
        // Decode reads each block once; prefill's groups of queries share blocks, which stay
        // in cache.
        if nq == 1 && p0 + KEYS < n_keys {
            prefetch_block(&a, p0 + KEYS, KEYS.min(n_keys - p0 - KEYS));
        }
        // Whole blocks where the cache has room (keys past the last query's position are
        // computed and then masked); a short block only at the very end of the cache.
        if p0 + KEYS <= a.cap {
            let qs: [&[f32]; QUERIES] = std::array::from_fn(|i| &q[i][..]);
            if !(HD == 64 && X::scores64(a.kt, a.cap, p0, n, qs, nq, &mut s)) {
                scores::<E, X, KEYS, B>(&a, &q, &mut s, p0, KEYS, hd, nq);
            }
        } else {
            scores::<E, X, 0, B>(&a, &q, &mut s, p0, a.cap - p0, hd, nq);
        }
        // Online softmax: new maximum, rescale what was accumulated, weights of this block.
        for i in 0..nq {
            let visible = (a.pos[i] + 1).saturating_sub(p0).min(n);
            let si = &mut s[i];
            if visible == 0 {
                si.fill(0.0);
                continue;
            }
            let (mx, sum) = block_softmax(si, visible, m[i]);
            let corr = exp_approx((m[i] - mx).max(-87.0));
            l[i] = l[i] * corr + sum;
            for x in o[i][..hd].iter_mut() {
                *x *= corr;
            }
            m[i] = mx;
        }
        // Weighted values, one position at a time.
        let [o0, o1, o2, o3] = &mut o;
        let os = [&mut o0[..], &mut o1[..], &mut o2[..], &mut o3[..]];
        if HD == 64 && X::pv64(a.v, p0, n, &s, nq, os) {
            continue;
        }
        for j in 0..n {
            E::widen::<X>(&a.v[(p0 + j) * hd..][..hd], &mut row[..hd]);
            for (oi, si) in o.iter_mut().zip(&s).take(nq) {
                let w = si[j];
                for (x, &v) in oi[..hd].iter_mut().zip(&row[..hd]) {
                    *x = madd::<X>(w, v, *x);
                }
            }
        }
    }
    for (i, oi) in o.iter().enumerate().take(nq) {
        let inv = 1.0 / l[i];
        for (x, &v) in a.out[i * a.out_stride..][..hd].iter_mut().zip(&oi[..hd]) {
            *x = v * inv;
        }
    }
}

/// Asks for the keys and values of positions p0..p0 + n: each key row's run and the value rows.
/// The attention of one query reads them from 64 rows of keys far apart, which the hardware
/// prefetchers do not follow; asked for one block ahead, they arrive while the current one runs.
#[inline(always)]
fn prefetch_block<E: KvElem>(a: &Attend<'_, E>, p0: usize, n: usize) {
    let size = std::mem::size_of::<E>();
    let kt = a.kt.as_ptr().cast::<u8>();
    for d in 0..a.head_dim {
        prefetch_range(
            kt.wrapping_add((d * a.cap + p0) * size),
            n * size,
            Level::L1,
        );
    }
    let v = a.v.as_ptr().cast::<u8>();
    prefetch_range(
        v.wrapping_add(p0 * a.head_dim * size),
        n * a.head_dim * size,
        Level::L1,
    );
}

/// Lanes of the partial maxima and sums in [`block_softmax`]: a fixed count, so that every vector
/// width adds in the same order.
const LANES: usize = 16;

/// One query's block of scores `s` (the first `visible` real, the rest masked) turned into
/// weights `exp(s − max)` in place, zero past `visible`; returns the new running maximum (at
/// least `m`) and the sum of the weights. Whole-block loops with the mask as a select, and the
/// reductions in [`LANES`] partial results, so that LLVM vectorizes all of it.
#[inline(always)]
fn block_softmax(s: &mut [f32; KEYS], visible: usize, m: f32) -> (f32, f32) {
    let mut lanes = [m; LANES];
    for (c, chunk) in s.chunks_exact(LANES).enumerate() {
        for (l, (x, &v)) in lanes.iter_mut().zip(chunk).enumerate() {
            let v = if c * LANES + l < visible {
                v
            } else {
                f32::NEG_INFINITY
            };
            *x = x.max(v);
        }
    }
    let mx = tree(lanes, f32::max);
    let mut sums = [0.0f32; LANES];
    for (c, chunk) in s.chunks_exact_mut(LANES).enumerate() {
        for (l, (acc, x)) in sums.iter_mut().zip(chunk).enumerate() {
            let e = exp_approx((*x - mx).max(-87.0));
            *x = if c * LANES + l < visible { e } else { 0.0 };
            *acc += *x;
        }
    }
    (mx, tree(sums, |a, b| a + b))
}

/// `lanes` reduced by `op` in a tree (halves folded onto halves): four dependent steps instead
/// of fifteen, in a fixed order whatever the vector width.
#[inline(always)]
fn tree(mut lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            lanes[i] = op(lanes[i], lanes[i + half]);
        }
        half /= 2;
    }
    lanes[0]
}

/// Scores of the queries against keys p0..p0 + n (`N` keys, or `n` when `N` is 0), one dimension
/// at a time from the transposed keys.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scores<E: KvElem, X: Widen, const N: usize, const B: usize>(
    a: &Attend<'_, E>,
    q: &[[f32; B]; QUERIES],
    s: &mut [[f32; KEYS]; QUERIES],
    p0: usize,
    n: usize,
    hd: usize,
    nq: usize,
) {
    let n = if N == 0 { n } else { N };
    let mut row = [0.0f32; KEYS];
    for si in s.iter_mut() {
        si[..n].fill(0.0);
    }
    for d in 0..hd {
        E::widen::<X>(&a.kt[d * a.cap + p0..][..n], &mut row[..n]);
        for (si, qi) in s.iter_mut().zip(q).take(nq) {
            let qd = qi[d];
            for (x, &k) in si[..n].iter_mut().zip(&row[..n]) {
                *x = madd::<X>(qd, k, *x);
            }
        }
    }
}

/// [`attend`] without target features (the scalar level's entry).
pub fn attend_portable<E: KvElem>(a: Attend<'_, E>) {
    attend::<E, Portable>(a)
}

/// [`attend`] with fused multiply-adds (aarch64, where they are part of the baseline).
#[cfg(target_arch = "aarch64")]
pub fn attend_fma<E: KvElem>(a: Attend<'_, E>) {
    attend::<E, PortableFma>(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_the_half_crate_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}
