//! LayerNorm (GPT-2) and RMSNorm (LLaMA).

use rayon::prelude::*;

/// Partial sums per row: a fixed count, so that LLVM vectorizes the reductions at any width and
/// every width adds in the same order.
const LANES: usize = 16;
/// Values from which rows are normalized in parallel (below, waking the pool costs more).
const PARALLEL_VALUES: usize = 64 * 1024;

/// `out = (x − mean) / √(var + eps) · w + b` for each row of `x` (rows of `w.len()` values).
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    each_row(x, w.len(), out, |xr, or| norm_row(xr, w, b, eps, or));
}

/// `out = x / √(mean(x²) + eps) · w` for each row of `x` (rows of `w.len()` values).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    each_row(x, w.len(), out, |xr, or| rms_row(xr, w, eps, or));
}

/// `f(x row, out row)` for every row of `n` values, in parallel from [`PARALLEL_VALUES`] on.
fn each_row(x: &[f32], n: usize, out: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Sync) {
    let row = |(xr, or): (&[f32], &mut [f32])| f(xr, or);
    if x.len() < PARALLEL_VALUES {
        x.chunks_exact(n).zip(out.chunks_exact_mut(n)).for_each(row);
    } else {
        x.par_chunks_exact(n)
            .zip(out.par_chunks_exact_mut(n))
            .for_each(row);
    }
}

/// One row of [`rms_norm`].
fn rms_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = lane_sum(x, |v| v * v) / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * wi;
    }
}

/// One row of [`layer_norm`].
fn norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &wi), &bi) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * inv * wi + bi;
    }
}

/// `Σ f(x[i])` in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_rows() {
        let x = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        let (w, b) = ([1.0; 4], [0.5; 4]);
        let mut out = [0.0; 8];
        layer_norm(&x, &w, &b, 1e-5, &mut out);
        let row: &[f32] = &out[..4];
        assert!((row.iter().sum::<f32>() / 4.0 - 0.5).abs() < 1e-6);
        assert!((out[3] - (0.5 + 1.5 / 1.25f32.sqrt())).abs() < 1e-4);
        assert!(
            out[4..].iter().all(|v| (v - 0.5).abs() < 1e-6),
            "constant row maps to b"
        );
    }

    #[test]
    fn rms_normalises_rows() {
        // Row [3, 4]: mean square 12.5, so each value is divided by √12.5 then scaled by w.
        let x = [3.0, 4.0, 0.0, 0.0];
        let w = [1.0, 2.0];
        let mut out = [9.0; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        let r = 12.5f32.sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 8.0 / r).abs() < 1e-6);
        rms_norm(&x, &w, 1e-5, &mut out);
        assert_eq!(
            &out[2..],
            &[0.0, 0.0],
            "a zero row stays zero (eps keeps it finite)"
        );
    }
}
