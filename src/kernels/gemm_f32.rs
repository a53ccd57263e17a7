//! The float GEMM tile: sixteen weight rows, regrouped so that one vector holds value k of each of
//! them, against sixteen activation rows, regrouped the same way: per k, one load and sixteen FMAs with each
//! activation value broadcast from one pointer. This file holds the portable form (plain loops, the reference twin, and NEON's
//! entry); the x86 levels have intrinsics versions in their own files, since the compiler
//! vectorized the plain loops either with a weight reload per column or, worse, with gathers.

/// Rows per regrouped panel.
pub const ROWS: usize = 16;
/// Activation rows per call.
pub const COLS: usize = 16;

/// `out[c][r] = Σ_k w[k·16 + r] · x[k·16 + c]`: `w` holds value k of the sixteen weight rows side
/// by side, `x` value k of the sixteen activation rows side by side (see [`Regroup16Fn`]); the length is
/// the shorter of the two.
pub type Gemm16F32Fn = fn(&[f32], &[f32], &mut [[f32; ROWS]; COLS]);

/// Regroups sixteen rows (each at least `n` long) k-major: value k of row i at `dst[k·16 + i]`
/// for k < n. Used for both operands of the tile (weight panels and packed activations).
pub type Regroup16Fn = fn([&[f32]; ROWS], usize, &mut [f32]);

/// [`Regroup16Fn`] in plain loops.
pub fn regroup16_portable(rows: [&[f32]; ROWS], n: usize, dst: &mut [f32]) {
    assert!(
        dst.len() >= n * ROWS && rows.iter().all(|r| r.len() >= n),
        "regroup shape"
    );
    for (k, d) in dst.chunks_exact_mut(ROWS).take(n).enumerate() {
        for (v, r) in d.iter_mut().zip(&rows) {
            *v = r[k];
        }
    }
}

/// The tile, in plain loops. `FMA`: fused multiply-adds (`mul_add`), for levels that have them
/// in hardware (elsewhere `mul_add` is a library call).
#[inline(always)]
pub(crate) fn tile<const FMA: bool>(w: &[f32], x: &[f32], out: &mut [[f32; ROWS]; COLS]) {
    let n = (w.len() / ROWS).min(x.len() / COLS);
    let mut acc = [[0.0f32; ROWS]; COLS];
    for (wk, xk) in w.chunks_exact(ROWS).zip(x.chunks_exact(COLS)).take(n) {
        for (a, &v) in acc.iter_mut().zip(xk) {
            for (a, &wr) in a.iter_mut().zip(wk) {
                *a = if FMA { wr.mul_add(v, *a) } else { *a + wr * v };
            }
        }
    }
    *out = acc;
}

/// [`tile`] without target features (the scalar level's entry, and the reference twin).
pub fn tile_portable(w: &[f32], x: &[f32], out: &mut [[f32; ROWS]; COLS]) {
    tile::<false>(w, x, out)
}

/// [`tile`] with fused multiply-adds, for aarch64 (where they are part of the baseline).
#[cfg(target_arch = "aarch64")]
pub fn tile_fma(w: &[f32], x: &[f32], out: &mut [[f32; ROWS]; COLS]) {
    tile::<true>(w, x, out)
}
