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
const _: () = assert!(COLS == ROWS, "both operands are regrouped by regroup16");
/// Activation rows per pass over a regrouped sub-panel.
const COL_CHUNK: usize = 64;

thread_local! {
    /// The widened rows and the regrouped panels of the current sub-panel, per worker thread.
    static PANEL: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The activations regrouped by [`COLS`] rows, per calling thread.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    let n_in = w.n_in;
    let t = x.len() / n_in;
    let cols = Padded::new(x, n_in);
    PACKED.with(|packed| {
        let packed = &mut *packed.borrow_mut();
        packed.resize(t.next_multiple_of(COLS) * n_in, 0.0);
        packed
            .par_chunks_mut(COLS * n_in)
            .enumerate()
            .for_each(|(g, dst)| (k.regroup16)(cols.group::<COLS>(g * COLS), n_in, dst));
        tiles(k, file, w, &cols, packed, bias, out);
    });
}

/// The tiles of [`linear`], over activations regrouped by `regroup16` (`packed`, t rounded up
/// to [`COLS`] rows) and the plain rows (`cols`, for the leftover weight rows).
fn tiles(
    k: &Kernels,
    file: &[u8],
    w: &Matrix,
    cols: &Padded<f32>,
    packed: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let t = cols.len();
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
                        let rows = std::array::from_fn(|i| &rows[i * n_in..(i + 1) * n_in]);
                        (k.regroup16)(rows, n_in, dst);
                    }
                    for j0 in (0..t).step_by(COL_CHUNK) {
                        for (p, wp) in panel.chunks_exact(ROWS * n_in).take(panels).enumerate() {
                            let r = r0 + s0 + p * ROWS;
                            for c0 in (j0..(j0 + COL_CHUNK).min(t)).step_by(COLS) {
                                let x = &packed[c0 * n_in..(c0 + COLS) * n_in];
                                (k.gemm16_f32)(wp, x, &mut tile);
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
