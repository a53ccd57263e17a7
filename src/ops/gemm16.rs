//! Large-batch matmul (prefill) on 16 × 8 tiles over regrouped weights.
//!
//! Each rayon task owns a range of weight rows. It regroups them sixteen rows at a time into a
//! small scratch panel ([`BlockW16`], a few KiB to a few hundred KiB: never the whole matrix), then
//! runs every activation row against it, eight at a time, in chunks that stay in L2. The weights
//! themselves are read from the memory map once per chunk of activation rows.

use std::cell::RefCell;

use rayon::prelude::*;

use super::columns::{Columns, Padded};
use super::matmul::rows_per_task;
use crate::kernels::{DotFn, Gemm16Fn, Gemm16RowsFn, Kernels};
use crate::model::Matrix;
use crate::quant::{blocks, BlockQ8Act, BlockW16, GgmlType, W16Source, PANEL_ROWS};

/// Smallest batch that takes this path: below it, regrouping the weights costs more than the
/// 4 × 16 panels lose (measured on GPT-2's shapes, 2 threads: panels ahead at 16 rows, even at
/// 32, this path ahead by 20–40 % at 64).
pub(super) const MIN_BATCH: usize = 32;
/// The same for Q8_0, whose small-batch kernel regroups weights in registers once for up to 32
/// activation rows: it stays ahead of this path up to a few hundred rows (measured on GPT-2
/// 124M, 2 threads, prompt t/s: +45 % at 48 rows, +15 % at 128, +5 % at 256, −6 % at 512).
pub(super) const MIN_BATCH_Q8_0: usize = 384;
/// Weight rows regrouped per pass (a multiple of 16).
const SUB_ROWS: usize = 64;
/// Activation rows per pass over a regrouped sub-panel: they stay in L2 while it is swept.
const COL_CHUNK: usize = 64;
/// Activation rows per kernel call.
const COLS: usize = 8;

thread_local! {
    /// The regrouped weight rows of the current sub-panel, per worker thread.
    static PANEL: RefCell<Vec<BlockW16>> = const { RefCell::new(Vec::new()) };
}

/// `out[j] = W · x[j] + bias` for the rows of `x`, already quantized into `act` (t × nb).
pub(super) fn linear<W: W16Source>(
    file: &[u8],
    w: &Matrix,
    act: &[BlockQ8Act],
    bias: Option<&[f32]>,
    (dot, gemm): (DotFn<W, BlockQ8Act>, Gemm16Fn),
    out: &mut [f32],
) {
    let (nb, n_out) = (w.n_in / 32, w.n_out);
    let t = act.len() / nb;
    let cols = Padded::new(act, nb);
    let row = |r: usize| -> &[W] {
        blocks(w.row(file, r)).expect("row length is a whole number of blocks (checked at load)")
    };
    let per_task = rows_per_task(n_out).next_multiple_of(PANEL_ROWS);
    let out = Columns::new(out, t, n_out);
    (0..n_out.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let r0 = task * per_task;
            let n = per_task.min(n_out - r0);
            let full = n / PANEL_ROWS * PANEL_ROWS;
            PANEL.with(|panel| {
                let mut panel = panel.borrow_mut();
                panel.resize(SUB_ROWS / PANEL_ROWS * nb, BlockW16::default());
                let mut tile = [[0.0f32; 16]; COLS];
                for s0 in (0..full).step_by(SUB_ROWS) {
                    let s1 = (s0 + SUB_ROWS).min(full);
                    let panels = (s1 - s0) / PANEL_ROWS;
                    for (p, dst) in panel.chunks_exact_mut(nb).take(panels).enumerate() {
                        let r = r0 + s0 + p * PANEL_ROWS;
                        BlockW16::pack(std::array::from_fn(|i| row(r + i)), dst);
                    }
                    for j0 in (0..t).step_by(COL_CHUNK) {
                        for (p, wp) in panel.chunks_exact(nb).take(panels).enumerate() {
                            let r = r0 + s0 + p * PANEL_ROWS;
                            for c0 in (j0..(j0 + COL_CHUNK).min(t)).step_by(COLS) {
                                gemm(W::KIND, wp, cols.group(c0), &mut tile);
                                for (c, v) in tile.iter().enumerate().take(t - c0) {
                                    // SAFETY: rows r..r + 16 belong to this task alone.
                                    unsafe { out.put_run(c0 + c, r, v, bias) };
                                }
                            }
                        }
                    }
                }
            });
            for r in r0 + full..r0 + n {
                let wr = row(r);
                // SAFETY: row r belongs to this task alone.
                unsafe { out.put_row(r, bias, |j| dot(wr, cols.row(j))) };
            }
        });
}

/// Activation groups of eight rows per call of the small-batch kernel.
const MAX_GROUPS: usize = 4;

/// `out[j] = W · x[j] + bias` for small batches: sixteen rows at a time go to a kernel that
/// regroups them in registers (no stored panel) once for up to four groups of eight activation
/// rows. `act` holds the t rows followed by zero rows up to a multiple of eight.
pub(super) fn linear_rows<W: W16Source>(
    file: &[u8],
    w: &Matrix,
    act: &[BlockQ8Act],
    t: usize,
    bias: Option<&[f32]>,
    (dot, gemm): (DotFn<W, BlockQ8Act>, Gemm16RowsFn<W>),
    out: &mut [f32],
) {
    let (nb, n_out) = (w.n_in / 32, w.n_out);
    assert_eq!(
        act.len(),
        t.next_multiple_of(8) * nb,
        "activations padded to groups of 8"
    );
    let per_task = rows_per_task(n_out).next_multiple_of(PANEL_ROWS);
    let out = Columns::new(out, t, n_out);
    let slab = |r: usize, n: usize| -> &[W] {
        blocks(w.rows(file, r, n)).expect("rows are whole numbers of blocks (checked at load)")
    };
    (0..n_out.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let r0 = task * per_task;
            let n = per_task.min(n_out - r0);
            let full = n / PANEL_ROWS * PANEL_ROWS;
            let mut tiles = [[[0.0f32; 16]; 8]; MAX_GROUPS];
            for r in (r0..r0 + full).step_by(PANEL_ROWS) {
                let rows = slab(r, PANEL_ROWS);
                for c0 in (0..t).step_by(8 * MAX_GROUPS) {
                    let groups = (t - c0).div_ceil(8).min(MAX_GROUPS);
                    let tiles = &mut tiles[..groups];
                    gemm(rows, nb, &act[c0 * nb..(c0 + 8 * groups) * nb], tiles);
                    for (c, v) in tiles.iter().flatten().enumerate().take(t - c0) {
                        // SAFETY: rows r..r + 16 belong to this task alone.
                        unsafe { out.put_run(c0 + c, r, v, bias) };
                    }
                }
            }
            for r in r0 + full..r0 + n {
                let wr = slab(r, 1);
                // SAFETY: row r belongs to this task alone.
                unsafe { out.put_row(r, bias, |j| dot(wr, &act[j * nb..(j + 1) * nb])) };
            }
        });
}

/// True when this matmul should take the regrouped-weight path.
pub(super) fn applies(k: &Kernels, ty: GgmlType, t: usize) -> bool {
    let rows_kernel = ty == GgmlType::Q8_0 && k.gemm16_rows_q8_0.is_some();
    k.gemm16.is_some()
        && t >= if rows_kernel {
            MIN_BATCH_Q8_0
        } else {
            MIN_BATCH
        }
}
