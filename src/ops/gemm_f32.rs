//! Batched matmul for float weights (F32, F16) on 16 × 8 float tiles.
//!
//! Each rayon task owns a range of weight rows. Sixteen at a time, it widens them to f32 and
//! regroups them into a small scratch panel (k-major: value k of the sixteen rows side by side;
//! at most 64 rows, never the whole matrix), then runs every activation row against it, eight at
//! a time, in chunks that stay in L2. Results go straight into the t × n_out output.

use std::cell::RefCell;

use rayon::prelude::*;

use super::columns::{Columns, Padded};
use super::matmul::rows_per_task;
use crate::kernels::gemm_f32::{COLS, ROWS};
use crate::kernels::Kernels;
use crate::model::Matrix;

/// Smallest batch that takes this path: widening and regrouping the rows costs about as much as
/// reading them; below this the per-row dot products are faster (measured with
/// `qgpt bench --kernels`: at batch 8 this path made 32–48 GOP/s against 60–92 for the dots).
pub(super) const MIN_BATCH: usize = 32;
/// Weight rows regrouped per pass (a multiple of 16).
const SUB_ROWS: usize = 64;
/// Activation rows per pass over a regrouped sub-panel.
const COL_CHUNK: usize = 64;

thread_local! {
    /// The widened rows and the regrouped panels of the current sub-panel, per worker thread.
    static PANEL: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `out[j] = W · x[j] + bias` for the t rows of `x` (t × n_in), W in F32 or F16.
pub(super) fn linear(
    k: &Kernels,
    file: &[u8],
    w: &Matrix,
    x: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let t = x.len() / n_in;
    let cols = Padded::new(x, n_in);
    let per_task = rows_per_task(n_out).next_multiple_of(ROWS);
    let out = Columns::new(out, t, n_out);
    (0..n_out.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let r0 = task * per_task;
            let n = per_task.min(n_out - r0);
            let full = n / ROWS * ROWS;
            PANEL.with(|p| {
                let (rows, panel) = &mut *p.borrow_mut();
                rows.resize(ROWS * n_in, 0.0);
                panel.resize(SUB_ROWS * n_in, 0.0);
                let mut tile = [[0.0f32; ROWS]; COLS];
                for s0 in (0..full).step_by(SUB_ROWS) {
                    let panels = ((s0 + SUB_ROWS).min(full) - s0) / ROWS;
                    for (p, dst) in panel.chunks_exact_mut(ROWS * n_in).take(panels).enumerate() {
                        let r = r0 + s0 + p * ROWS;
                        for (i, row) in rows.chunks_exact_mut(n_in).enumerate() {
                            w.dequantize_row(file, r + i, row);
                        }
                        for (kk, d) in dst.chunks_exact_mut(ROWS).enumerate() {
                            for (i, v) in d.iter_mut().enumerate() {
                                *v = rows[i * n_in + kk];
                            }
                        }
                    }
                    for j0 in (0..t).step_by(COL_CHUNK) {
                        for (p, wp) in panel.chunks_exact(ROWS * n_in).take(panels).enumerate() {
                            let r = r0 + s0 + p * ROWS;
                            for c0 in (j0..(j0 + COL_CHUNK).min(t)).step_by(COLS) {
                                (k.gemm16_f32)(wp, cols.group(c0), &mut tile);
                                for (c, v) in tile.iter().enumerate().take(t - c0) {
                                    // SAFETY: rows r..r + 16 belong to this task alone.
                                    unsafe { out.put_run(c0 + c, r, v, bias) };
                                }
                            }
                        }
                    }
                }
                // Rows past the last multiple of sixteen: one widened row at a time.
                let row = &mut rows[..n_in];
                for r in r0 + full..r0 + n {
                    w.dequantize_row(file, r, row);
                    let row = &*row;
                    // SAFETY: row r belongs to this task alone.
                    unsafe { out.put_row(r, bias, |j| (k.dot_f32)(row, cols.row(j))) };
                }
            });
        });
}
