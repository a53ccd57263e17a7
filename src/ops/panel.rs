//! Batched matmul on panel kernels: four weight rows × up to sixteen activation rows per call.
//!
//! The activations are quantized and interleaved four rows at a time ([`BlockQ8x4`]), in
//! parallel. Each rayon task owns a range of weight rows and walks it in sub-panels small
//! enough to stay in L2 while every activation group streams past, writing its results
//! straight into the t × n_out output (no transposed copy).

use bytemuck::Pod;
use rayon::prelude::*;

use super::columns::Columns;
use super::matmul::rows_per_task;
use crate::kernels::{DotFn, GemmPanelFn, Kernels};
use crate::model::Matrix;
use crate::quant::{blocks, BlockQ8Act, BlockQ8x4};

/// Weight bytes of the rows a panel pass keeps in L2 while every activation group streams past.
const SUB_PANEL_BYTES: usize = 192 << 10;
/// Activation groups (of four rows) per panel call.
const GROUPS: usize = 4;

/// `out[j] = W · x[j] + bias` for t ≥ 2 rows of `x`, with the panel kernel `panel` (and `dot`
/// for the rows past the last multiple of four).
#[allow(clippy::too_many_arguments)]
pub(super) fn linear<W: Pod>(
    k: &Kernels,
    file: &[u8],
    w: &Matrix,
    x: &[f32],
    bias: Option<&[f32]>,
    (dot, panel): (DotFn<W, BlockQ8Act>, GemmPanelFn<W>),
    q8: &mut Vec<BlockQ8Act>,
    q8x4: &mut Vec<BlockQ8x4>,
    out: &mut [f32],
) {
    let (nb, n_out) = (w.n_in / 32, w.n_out);
    let t = x.len() / w.n_in;
    let offset = BlockQ8x4::offset(w.ty).expect("a type with panel kernels");
    q8.resize(t * nb, BlockQ8Act::default());
    q8x4.resize(t.div_ceil(4) * nb, BlockQ8x4::default());
    q8.par_chunks_mut(4 * nb)
        .zip(q8x4.par_chunks_mut(nb))
        .zip(x.par_chunks(4 * w.n_in))
        .for_each(|((q, p), x)| {
            (k.quantize_q8)(x, q);
            let mut group: [&[BlockQ8Act]; 4] = [&[]; 4];
            let n = q.len() / nb;
            for (g, row) in group.iter_mut().zip(q.chunks_exact(nb)) {
                *g = row;
            }
            BlockQ8x4::pack(&group[..n], offset, p);
        });
    let (act, packed) = (&q8[..], &q8x4[..]);

    let groups = t.div_ceil(4);
    let per_task = rows_per_task(n_out).next_multiple_of(4);
    let sub = (SUB_PANEL_BYTES / w.row_bytes().max(1)).max(4) / 4 * 4;
    let row = |r: usize| -> &[W] {
        blocks(w.row(file, r)).expect("row length is a whole number of blocks (checked at load)")
    };
    assert_eq!(out.len(), t * n_out, "{}: output size", w.name);
    let cols_out = Columns::new(out, t, n_out);
    (0..n_out.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let r0 = task * per_task;
            let n = per_task.min(n_out - r0);
            let full = n / 4 * 4;
            let mut tile = [[0.0f32; 16]; 4];
            for s0 in (0..full).step_by(sub) {
                for g0 in (0..groups).step_by(GROUPS) {
                    let ng = (groups - g0).min(GROUPS);
                    let mut ga: [&[BlockQ8x4]; GROUPS] = [&[]; GROUPS];
                    for (i, g) in ga.iter_mut().take(ng).enumerate() {
                        *g = &packed[(g0 + i) * nb..][..nb];
                    }
                    let j0 = 4 * g0;
                    let cols = (t - j0).min(4 * GROUPS);
                    for i in (s0..(s0 + sub).min(full)).step_by(4) {
                        let r = r0 + i;
                        panel(
                            [row(r), row(r + 1), row(r + 2), row(r + 3)],
                            &ga[..ng],
                            &mut tile,
                        );
                        let [t0, t1, t2, t3] = &tile;
                        for (c, (((&a, &b), &c2), &d)) in
                            t0.iter().zip(t1).zip(t2).zip(t3).take(cols).enumerate()
                        {
                            let run = [a, b, c2, d];
                            // SAFETY: rows r..r + 4 belong to this task alone.
                            unsafe { cols_out.put_run(j0 + c, r, &run, bias) };
                        }
                    }
                }
            }
            for r in r0 + full..r0 + n {
                let wr = row(r);
                // SAFETY: row r belongs to this task alone.
                unsafe { cols_out.put_row(r, bias, |j| dot(wr, &act[j * nb..(j + 1) * nb])) };
            }
        });
}
