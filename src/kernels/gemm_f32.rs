//! The float GEMM tile: sixteen weight rows, regrouped so that one vector holds value k of each of
//! them, against eight activation rows: per k, one load and eight FMAs with each activation value
//! broadcast. This file holds the portable form (plain loops, the reference twin, and NEON's
//! entry); the x86 levels have intrinsics versions in their own files, since the compiler
//! vectorized the plain loops either with a weight reload per column or, worse, with gathers.

/// Rows per regrouped panel.
pub const ROWS: usize = 16;
/// Activation rows per call.
pub const COLS: usize = 8;

/// `out[c][r] = Σ_k w[k·16 + r] · x[c][k]` over the k both sides have (`w` holds `w.len() / 16`
/// values of each of the sixteen rows).
pub type Gemm16F32Fn = fn(&[f32], [&[f32]; COLS], &mut [[f32; ROWS]; COLS]);

/// The tile, in plain loops. `FMA`: fused multiply-adds (`mul_add`), for levels that have them
/// in hardware (elsewhere `mul_add` is a library call).
#[inline(always)]
pub(crate) fn tile<const FMA: bool>(w: &[f32], x: [&[f32]; COLS], out: &mut [[f32; ROWS]; COLS]) {
    let n = x.iter().map(|c| c.len()).fold(w.len() / ROWS, usize::min);
    let w = &w[..n * ROWS];
    let mut acc = [[0.0f32; ROWS]; COLS];
    for k in 0..n {
        let wk: &[f32; ROWS] = w[k * ROWS..(k + 1) * ROWS].try_into().expect("16 values");
        for (a, xc) in acc.iter_mut().zip(&x) {
            let v = xc[k];
            for (a, &wr) in a.iter_mut().zip(wk) {
                *a = if FMA { wr.mul_add(v, *a) } else { *a + wr * v };
            }
        }
    }
    *out = acc;
}

/// [`tile`] without target features (the scalar level's entry, and the reference twin).
pub fn tile_portable(w: &[f32], x: [&[f32]; COLS], out: &mut [[f32; ROWS]; COLS]) {
    tile::<false>(w, x, out)
}

/// [`tile`] with fused multiply-adds, for aarch64 (where they are part of the baseline).
#[cfg(target_arch = "aarch64")]
pub fn tile_fma(w: &[f32], x: [&[f32]; COLS], out: &mut [[f32; ROWS]; COLS]) {
    tile::<true>(w, x, out)
}
