//! Matrix multiplication against a weight matrix in its block format.
//!
//! Activations are quantized once per call to the weight type's partner format (Q8 blocks for
//! Q8_0/Q4_0/Q4_1, Q8_K for Q6_K; F16/F32 weights use f32 activations). Output rows are then
//! split across the rayon pool in small chunks, so idle threads steal work from slow ones.
//!
//! Batches of Q8_0/Q4_0/Q4_1 take the kernels' batched paths where the ISA level has them:
//! 4 × 16 panels over interleaved activations (`panel.rs`) for a few rows, 16 × 8 tiles over
//! weights regrouped sixteen rows at a time (`gemm16.rs`) for prefill-sized batches. Otherwise
//! each weight row (or group of four) is used for every activation row while it is in L1.

use std::cell::RefCell;

use bytemuck::Pod;
use rayon::prelude::*;

use crate::kernels::{Dot4Fn, DotFn, Gemm4x4Fn, Kernels};
use crate::model::Matrix;
use crate::quant::{
    blocks, BlockQ4_0, BlockQ4_1, BlockQ8Act, BlockQ8K, BlockQ8Quad, BlockQ8_0, BlockQ8x4, GgmlType,
};

/// Fewest output rows handed to a rayon task at a time.
const MIN_ROWS_PER_TASK: usize = 16;
/// Tasks per thread: enough that a slow core's share is taken over by the others, few enough that
/// scheduling costs stay small next to the work.
const TASKS_PER_THREAD: usize = 8;

/// Output rows per rayon task for a matrix of `n_out` rows.
pub(super) fn rows_per_task(n_out: usize) -> usize {
    (n_out / (rayon::current_num_threads() * TASKS_PER_THREAD)).max(MIN_ROWS_PER_TASK)
}

thread_local! {
    /// One dequantized weight row per worker thread, for the exact path.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// What a matmul needs besides its operands.
#[derive(Clone, Copy)]
pub struct MatmulCtx<'a> {
    /// The kernels to compute with.
    pub kernels: &'a Kernels,
    /// Dequantize weight rows to f32 and multiply in f32 instead of quantizing the activations:
    /// slower, but free of activation-quantization error (golden tests use it).
    pub exact: bool,
    /// The bytes of the model file.
    pub file: &'a [u8],
}

/// Buffers reused across calls: quantized (and interleaved) activations, the transposed result.
#[derive(Debug, Default)]
pub struct MatmulScratch {
    pub(super) q8: Vec<BlockQ8Act>,
    pub(super) q8x4: Vec<BlockQ8x4>,
    quads: Vec<BlockQ8Quad>,
    q8k: Vec<BlockQ8K>,
    tmp: Vec<f32>,
}

/// `out[j] = W · x[j] + bias` for each of the t rows of `x` (`x`: t × n_in, `out`: t × n_out).
///
/// Panics if `x` or `out` do not match the matrix (an internal invariant: the model sizes its
/// buffers from the validated hyperparameters).
pub fn linear(
    ctx: &MatmulCtx<'_>,
    w: &Matrix,
    bias: Option<&[f32]>,
    x: &[f32],
    out: &mut [f32],
    s: &mut MatmulScratch,
) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let t = x.len() / n_in;
    assert_eq!(x.len(), t * n_in, "{}: activation width", w.name);
    assert_eq!(out.len(), t * n_out, "{}: output size", w.name);
    let (k, file) = (ctx.kernels, ctx.file);
    if t > 1 && !ctx.exact && batched(k, file, w, x, bias, s, out) {
        return;
    }
    if t > 1 && s.tmp.len() < t * n_out {
        s.tmp.resize(t * n_out, 0.0);
    }
    let dst = if t == 1 {
        &mut *out
    } else {
        &mut s.tmp[..t * n_out]
    };
    match w.ty {
        _ if ctx.exact => exact_rows(k, file, w, x, dst),
        GgmlType::Q8_0 => {
            let fns = (k.dot_q8_0, k.dot4_q8_0, k.gemm4x4_q8_0);
            q8_matmul(k, file, w, x, fns, &mut s.q8, dst)
        }
        GgmlType::Q4_0 => match k.dot_q4_0_quad.filter(|_| t == 1 && n_in % 128 == 0) {
            Some(quad) => {
                s.q8.resize(n_in / 32, BlockQ8Act::default());
                s.quads.resize(n_in / 128, BlockQ8Quad::default());
                (k.quantize_q8)(x, &mut s.q8);
                BlockQ8Quad::pack(&s.q8, 8, &mut s.quads);
                rows(file, w, &s.quads, n_in / 128, (quad, None), dst)
            }
            None => {
                let fns = (k.dot_q4_0, k.dot4_q4_0, k.gemm4x4_q4_0);
                q8_matmul(k, file, w, x, fns, &mut s.q8, dst)
            }
        },
        GgmlType::Q4_1 => {
            let fns = (k.dot_q4_1, k.dot4_q4_1, k.gemm4x4_q4_1);
            q8_matmul(k, file, w, x, fns, &mut s.q8, dst)
        }
        GgmlType::Q6_K => {
            let nb = n_in / 256;
            s.q8k.resize(t * nb, BlockQ8K::default());
            (k.quantize_q8k)(x, &mut s.q8k);
            let multi = Some((k.dot4_q6_k, k.gemm4x4_q6_k));
            rows(file, w, &s.q8k, nb, (k.dot_q6_k, multi), dst);
        }
        GgmlType::F16 => rows(file, w, x, n_in, (k.dot_f16, None), dst),
        GgmlType::F32 => rows(file, w, x, n_in, (k.dot_f32_bytes, None), dst),
        other => unreachable!("{}: type {other} rejected at load", w.name),
    }
    if t > 1 {
        transpose_into(&s.tmp[..t * n_out], t, out, bias);
    } else if let Some(b) = bias {
        super::add_assign(out, b);
    }
}

/// The batched paths that write the t × n_out result themselves, bias included: float tiles
/// over regrouped rows for F32/F16 weights; for the integer types, regrouped 16 × 8 tiles for
/// large batches and 4 × 16 panels for small ones. False when the type or the kernels have none.
fn batched(
    k: &Kernels,
    file: &[u8],
    w: &Matrix,
    x: &[f32],
    bias: Option<&[f32]>,
    s: &mut MatmulScratch,
    out: &mut [f32],
) -> bool {
    let t = x.len() / w.n_in;
    if matches!(w.ty, GgmlType::F32 | GgmlType::F16) && t >= super::gemm_f32::MIN_BATCH {
        super::gemm_f32::linear(k, file, w, x, bias, out);
        return true;
    }
    if let (Some(g), true) = (k.gemm16, super::gemm16::applies(k, w.ty, t)) {
        use super::gemm16::linear as gemm16;
        if !matches!(w.ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1) {
            return false;
        }
        quantize_rows(k, x, w.n_in, &mut s.q8);
        let act = &s.q8;
        match w.ty {
            GgmlType::Q8_0 => gemm16::<BlockQ8_0>(file, w, act, bias, (k.dot_q8_0, g), out),
            GgmlType::Q4_0 => gemm16::<BlockQ4_0>(file, w, act, bias, (k.dot_q4_0, g), out),
            _ => gemm16::<BlockQ4_1>(file, w, act, bias, (k.dot_q4_1, g), out),
        }
        return true;
    }
    if let (GgmlType::Q8_0, Some(g)) = (w.ty, k.gemm16_rows_q8_0) {
        quantize_rows(k, x, w.n_in, &mut s.q8);
        // Zero rows up to a whole group of eight.
        s.q8.resize(t.next_multiple_of(8) * (w.n_in / 32), BlockQ8Act::default());
        let act = &s.q8;
        super::gemm16::linear_rows::<BlockQ8_0>(file, w, act, t, bias, (k.dot_q8_0, g), out);
        return true;
    }
    let (q8, q8x4) = (&mut s.q8, &mut s.q8x4);
    use super::panel::linear as panel;
    match (w.ty, k.panel_q8_0, k.panel_q4_0, k.panel_q4_1) {
        (GgmlType::Q8_0, Some(p), _, _) => {
            panel(k, file, w, x, bias, (k.dot_q8_0, p), q8, q8x4, out)
        }
        (GgmlType::Q4_0, _, Some(p), _) => {
            panel(k, file, w, x, bias, (k.dot_q4_0, p), q8, q8x4, out)
        }
        (GgmlType::Q4_1, _, _, Some(p)) => {
            panel(k, file, w, x, bias, (k.dot_q4_1, p), q8, q8x4, out)
        }
        _ => return false,
    }
    true
}

/// A Q8-partnered weight type's kernels: single row, four rows, 4 × 4 tile.
type Q8Fns<W> = (
    DotFn<W, BlockQ8Act>,
    Dot4Fn<W, BlockQ8Act>,
    Gemm4x4Fn<W, BlockQ8Act>,
);

/// Quantizes the activations to Q8 blocks (rows in parallel from batch 2 on), then multiplies.
fn q8_matmul<W: Pod>(
    k: &Kernels,
    file: &[u8],
    w: &Matrix,
    x: &[f32],
    (dot, dot4, gemm): Q8Fns<W>,
    q8: &mut Vec<BlockQ8Act>,
    dst: &mut [f32],
) {
    quantize_rows(k, x, w.n_in, q8);
    rows(file, w, q8, w.n_in / 32, (dot, Some((dot4, gemm))), dst)
}

/// Values below which activations are quantized on the calling thread: a few microseconds of
/// work, less than waking the pool (measured in batched decode, where the fork-joins of small
/// steps showed as a tenth of the profile).
pub(super) const SERIAL_VALUES: usize = 32 * 1024;

/// Quantizes the rows of `x` (each `n_in` wide) into `q8`, in parallel for large batches.
pub(super) fn quantize_rows(k: &Kernels, x: &[f32], n_in: usize, q8: &mut Vec<BlockQ8Act>) {
    let nb = n_in / 32;
    q8.resize(x.len() / 32, BlockQ8Act::default());
    if x.len() <= SERIAL_VALUES {
        for (q, x) in q8.chunks_exact_mut(nb).zip(x.chunks_exact(n_in)) {
            (k.quantize_q8)(x, q);
        }
    } else {
        q8.par_chunks_mut(nb)
            .zip(x.par_chunks(n_in))
            .for_each(|(q, x)| (k.quantize_q8)(x, q));
    }
}

/// Output rows per transpose task: for each weight row, their values are one cache line of `tmp`.
const TRANSPOSE_ROWS: usize = 16;

/// `out[j][r] = tmp[r][j] + bias[r]`, in parallel bands of output rows so that every read of
/// `tmp` uses a whole cache line (a plain strided transpose touched one line per value).
fn transpose_into(tmp: &[f32], t: usize, out: &mut [f32], bias: Option<&[f32]>) {
    let n_out = tmp.len() / t;
    out.par_chunks_mut(TRANSPOSE_ROWS * n_out)
        .enumerate()
        .for_each(|(band, o)| {
            let j0 = band * TRANSPOSE_ROWS;
            let rows = o.len() / n_out;
            for r in 0..n_out {
                let b = bias.map_or(0.0, |b| b[r]);
                for (jj, &v) in tmp[r * t + j0..][..rows].iter().enumerate() {
                    o[jj * n_out + r] = v + b;
                }
            }
        });
}

/// Like [`rows`], dequantizing each weight row to f32 first.
fn exact_rows(k: &Kernels, file: &[u8], w: &Matrix, x: &[f32], dst: &mut [f32]) {
    let t = x.len() / w.n_in;
    let per_task = rows_per_task(w.n_out);
    dst.par_chunks_mut(t * per_task)
        .enumerate()
        .for_each(|(c, chunk)| {
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.resize(w.n_in, 0.0);
                for (i, o) in chunk.chunks_exact_mut(t).enumerate() {
                    w.dequantize_row(file, c * per_task + i, &mut row);
                    for (v, xr) in o.iter_mut().zip(x.chunks_exact(w.n_in)) {
                        *v = (k.dot_f32)(&row, xr);
                    }
                }
            })
        });
}

/// The four-row and 4 × 4 kernels of a weight type that has them.
type MultiRow<W, A> = (Dot4Fn<W, A>, Gemm4x4Fn<W, A>);

/// Fills `dst` (n_out × t, row-major by weight row) with `dot(W[r], act[j])`, four weight rows
/// at a time where the type has a four-row kernel and there is more than one activation row.
fn rows<W: Pod, A: Sync>(
    file: &[u8],
    w: &Matrix,
    act: &[A],
    per_row: usize,
    (dot, multi): (DotFn<W, A>, Option<MultiRow<W, A>>),
    dst: &mut [f32],
) {
    let t = act.len() / per_row;
    // Multiples of 4 so that four-row groups never straddle two tasks.
    let per_task = rows_per_task(w.n_out).next_multiple_of(4);
    let row = |r: usize| -> &[W] {
        blocks(w.row(file, r)).expect("row length is a whole number of blocks (checked at load)")
    };
    dst.par_chunks_mut(t * per_task)
        .enumerate()
        .for_each(|(c, chunk)| {
            let r0 = c * per_task;
            let n = chunk.len() / t;
            let mut done = 0;
            // At batch 1 a single sequential stream per task lets the hardware prefetcher run
            // ahead (measured: four interleaved row streams are 3× slower); from batch 2 on,
            // each group of four weight rows is reused for every activation row.
            if let Some((dot4, gemm)) = multi.filter(|_| t > 1) {
                let a = |j: usize| &act[j * per_row..(j + 1) * per_row];
                for g in (0..n / 4).map(|g| 4 * g) {
                    let ws = [
                        row(r0 + g),
                        row(r0 + g + 1),
                        row(r0 + g + 2),
                        row(r0 + g + 3),
                    ];
                    // 4 × 4 tiles over the activation rows, then single columns for the rest.
                    for j in (0..t / 4).map(|j| 4 * j) {
                        let v = gemm(ws, [a(j), a(j + 1), a(j + 2), a(j + 3)]);
                        for (i, vr) in v.into_iter().enumerate() {
                            chunk[(g + i) * t + j..][..4].copy_from_slice(&vr);
                        }
                    }
                    for j in t / 4 * 4..t {
                        for (i, v) in dot4(ws, a(j)).into_iter().enumerate() {
                            chunk[(g + i) * t + j] = v;
                        }
                    }
                }
                done = n / 4 * 4;
            }
            for i in done..n {
                let wr = row(r0 + i);
                let o = &mut chunk[i * t..(i + 1) * t];
                for (v, a) in o.iter_mut().zip(act.chunks_exact(per_row)) {
                    *v = dot(wr, a);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use crate::sampling::Rng;

    /// Random weight bytes with sane f16 scales wherever the format has them.
    fn random_matrix(rng: &mut Rng, ty: GgmlType, n_in: usize, n_out: usize) -> (Vec<u8>, Matrix) {
        let row = ty.row_bytes(n_in as u64).unwrap() as usize;
        let mut bytes: Vec<u8> = (0..row * n_out).map(|_| rng.next_u64() as u8).collect();
        let scale = |rng: &mut Rng| half::f16::from_f32((rng.next_f32() - 0.5) * 0.1).to_le_bytes();
        let bs = ty.type_size();
        for b in bytes.chunks_exact_mut(bs) {
            match ty {
                GgmlType::Q8_0 | GgmlType::Q4_0 => b[..2].copy_from_slice(&scale(rng)),
                GgmlType::Q4_1 => {
                    b[..2].copy_from_slice(&scale(rng));
                    b[2..4].copy_from_slice(&scale(rng));
                }
                GgmlType::Q6_K => b[208..].copy_from_slice(&scale(rng)),
                GgmlType::F16 => b.copy_from_slice(&scale(rng)),
                GgmlType::F32 => b.copy_from_slice(&(rng.next_f32() - 0.5).to_le_bytes()),
                _ => unreachable!(),
            }
        }
        (bytes, Matrix::at("test", ty, n_in, n_out, 0))
    }

    fn run(k: &Kernels, exact: bool, file: &[u8], w: &Matrix, x: &[f32]) -> Vec<f32> {
        let t = x.len() / w.n_in;
        let mut out = vec![0.0; t * w.n_out];
        let ctx = MatmulCtx {
            kernels: k,
            exact,
            file,
        };
        let bias: Vec<f32> = (0..w.n_out).map(|i| i as f32 * 0.01).collect();
        linear(
            &ctx,
            w,
            Some(&bias),
            x,
            &mut out,
            &mut MatmulScratch::default(),
        );
        out
    }

    fn norm(v: impl Iterator<Item = f32>) -> f32 {
        v.map(|x| x * x).sum::<f32>().sqrt()
    }

    /// Every ISA and the exact path agree on odd shapes: 37 rows (not a multiple of the task
    /// size, of 4 or of 16), batches of 1 (single rows, quads), 3 and 17 (panels, a short last
    /// group) and 37 (16 × 8 tiles over regrouped weights, padded columns).
    #[test]
    fn isas_and_exact_path_agree() {
        let mut rng = Rng::new(9);
        for ty in crate::bench::TYPES {
            let (file, w) = random_matrix(&mut rng, ty, 512, 37);
            for t in [1, 3, 17, 37] {
                let x: Vec<f32> = (0..t * 512).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
                let scalar = run(&Kernels::scalar(), false, &file, &w, &x);
                let exact = run(&Kernels::scalar(), true, &file, &w, &x);
                // 8-bit activations: the error is a small fraction of the result.
                let err = norm(scalar.iter().zip(&exact).map(|(a, b)| a - b));
                assert!(
                    err <= 0.02 * norm(exact.iter().copied()),
                    "{ty} t={t}: fast vs exact {err}"
                );
                for isa in Isa::ALL {
                    let Some(k) = Kernels::for_isa(isa) else {
                        continue;
                    };
                    let got = run(&k, false, &file, &w, &x);
                    for (i, (g, s)) in got.iter().zip(&scalar).enumerate() {
                        assert!(
                            (g - s).abs() <= 1e-4 * (1.0 + s.abs()),
                            "{isa} {ty} t={t} [{i}]: {g} vs {s}"
                        );
                    }
                }
            }
        }
    }
}
