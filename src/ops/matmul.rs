//! Reference matrix multiplication against a weight matrix in its block format.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::model::Matrix;

/// Output rows handed to a rayon task at a time.
const ROWS_PER_TASK: usize = 16;

thread_local! {
    /// One dequantized weight row per worker thread, reused across calls.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Dot product with eight independent accumulators (lets the compiler vectorise it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[t] = W · x[t] + bias` for each of the `t` rows of `x` (`x`: t × n_in, `out`: t × n_out).
///
/// Each weight row is dequantized once and used for every activation row. `tmp` (≥ t × n_out)
/// holds the result transposed while threads fill disjoint weight rows; unused when t = 1.
pub fn linear(
    file: &[u8],
    w: &Matrix,
    bias: Option<&[f32]>,
    x: &[f32],
    out: &mut [f32],
    tmp: &mut [f32],
) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let t = x.len() / n_in;
    assert_eq!(x.len(), t * n_in, "activation width");
    assert_eq!(out.len(), t * n_out, "output size");
    let dst = if t == 1 {
        &mut *out
    } else {
        &mut tmp[..t * n_out]
    };
    dst.par_chunks_mut(t * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(c, chunk)| {
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.resize(n_in, 0.0);
                for (i, o) in chunk.chunks_exact_mut(t).enumerate() {
                    w.dequantize_row(file, c * ROWS_PER_TASK + i, &mut row);
                    for (j, v) in o.iter_mut().enumerate() {
                        *v = dot(&row, &x[j * n_in..(j + 1) * n_in]);
                    }
                }
            })
        });
    if t > 1 {
        for (j, orow) in out.chunks_exact_mut(n_out).enumerate() {
            for (r, o) in orow.iter_mut().enumerate() {
                *o = tmp[r * t + j];
            }
        }
    }
    if let Some(b) = bias {
        for orow in out.chunks_exact_mut(n_out) {
            super::add_assign(orow, b);
        }
    }
}
