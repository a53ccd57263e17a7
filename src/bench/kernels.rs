//! Matmul throughput per weight type and shape: GB/s of weights streamed at batch 1 (decode),
//! GOP/s at larger batches (batched decode, prefill).

use crate::kernels::Kernels;
use crate::model::Matrix;
use crate::ops::{linear, MatmulCtx, MatmulScratch};
use crate::quant::{quantize_row, GgmlType};
use crate::sampling::Rng;

use super::median_time;

/// GPT-2 124M's matrices as (n_in, n_out): QKV, attention output, MLP up, MLP down, output head.
pub const SHAPES: [(usize, usize); 5] = [
    (768, 2304),
    (768, 768),
    (768, 3072),
    (3072, 768),
    (768, 50257),
];

/// Every weight type qgpt computes with (benchmarks build Q6_K from random blocks: qgpt has no
/// Q6_K quantizer).
pub const TYPES: [GgmlType; 6] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q6_K,
    GgmlType::F16,
    GgmlType::F32,
];

/// One row of the kernel benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelResult {
    /// Weight type.
    pub ty: String,
    /// Row length.
    pub n_in: usize,
    /// Rows.
    pub n_out: usize,
    /// Bytes of one matrix.
    pub bytes: usize,
    /// Copies cycled through at batch 1 so that the working set exceeds the last-level cache.
    pub copies: usize,
    /// Batch 1: weight bytes streamed per second, 10⁹.
    pub batch1_gb_s: f64,
    /// Batch 8: 10⁹ multiply-adds × 2 per second.
    pub batch8_gop_s: f64,
    /// Batch 512 (0 when skipped).
    pub batch512_gop_s: f64,
}

/// Random weights of type `ty`: quantized from random floats where qgpt can, else random bytes
/// with finite f16 scales (Q6_K).
fn random_weights(rng: &mut Rng, ty: GgmlType, n_in: usize, n_out: usize) -> Vec<u8> {
    let row = ty.row_bytes(n_in as u64).expect("whole blocks") as usize;
    let mut out = vec![0u8; row * n_out];
    if ty == GgmlType::Q6_K {
        for b in out.chunks_exact_mut(210) {
            for v in b.iter_mut() {
                *v = rng.next_u64() as u8;
            }
            b[208..].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
        return out;
    }
    let src: Vec<f32> = (0..n_in).map(|_| rng.next_f32() - 0.5).collect();
    for r in out.chunks_exact_mut(row) {
        quantize_row(ty, &src, r).expect("supported type");
    }
    out
}

/// Benchmarks `y = W x` for one type and shape with kernels `k`. Batch 1 cycles through enough
/// copies of W to exceed `llc_bytes` twice over, so it measures DRAM, not cache, bandwidth.
pub fn bench_matmul(
    k: &Kernels,
    ty: GgmlType,
    (n_in, n_out): (usize, usize),
    llc_bytes: usize,
    reps: usize,
    with_512: bool,
) -> KernelResult {
    let mut rng = Rng::new(0x5eed);
    let one = random_weights(&mut rng, ty, n_in, n_out);
    let bytes = one.len();
    let copies = (2 * llc_bytes).div_ceil(bytes).max(1);
    let file: Vec<u8> = one.repeat(copies);
    let mats: Vec<Matrix> = (0..copies)
        .map(|c| Matrix::at("bench", ty, n_in, n_out, c * bytes))
        .collect();
    let ctx = MatmulCtx {
        kernels: k,
        exact: false,
        file: &file,
    };
    let mut scratch = MatmulScratch::default();
    let mut run = |t: usize, m: &Matrix, out: &mut Vec<f32>, x: &[f32]| {
        out.resize(t * n_out, 0.0);
        linear(&ctx, m, None, &x[..t * n_in], out, &mut scratch);
    };
    let x: Vec<f32> = (0..512 * n_in).map(|_| rng.next_f32() - 0.5).collect();
    let mut out = Vec::new();

    // The loop runs on a pool worker, as the model's forward pass does: each matmul's parallel
    // section then starts without waking the pool from outside.
    let t1 = median_time(reps, || {
        rayon::scope(|_| {
            for m in &mats {
                run(1, m, &mut out, &x);
            }
        })
    });
    let batch1_gb_s = (bytes * copies) as f64 / t1.as_secs_f64() / 1e9;
    let ops = |t: usize| 2.0 * (n_in * n_out * t) as f64;
    let t8 = median_time(reps, || rayon::scope(|_| run(8, &mats[0], &mut out, &x)));
    let batch512_gop_s = if with_512 {
        let t512 = median_time(reps.min(3), || {
            rayon::scope(|_| run(512, &mats[0], &mut out, &x))
        });
        ops(512) / t512.as_secs_f64() / 1e9
    } else {
        0.0
    };
    KernelResult {
        ty: ty.name().to_owned(),
        n_in,
        n_out,
        bytes,
        copies,
        batch1_gb_s,
        batch8_gop_s: ops(8) / t8.as_secs_f64() / 1e9,
        batch512_gop_s,
    }
}
