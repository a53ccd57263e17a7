//! The operations of the forward pass, on f32 activations. Matmul, attention and GELU run on the
//! compute kernels (`crate::kernels`); LayerNorm and the residual adds are plain loops that LLVM
//! vectorizes at the baseline width.

mod attention;
mod columns;
mod gemm16;
mod gemm_f32;
mod matmul;
mod norm;
mod panel;
mod rope;

pub use attention::causal_attention;
pub use matmul::{linear, MatmulCtx, MatmulScratch};
pub use norm::{layer_norm, rms_norm};
pub use rope::RopeTable;

use crate::kernels::Kernels;

/// Values per rayon task of the elementwise operations.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

/// GELU, tanh approximation (GPT-2's `gelu_new`), in place; split over the threads above one
/// chunk (below that, waking the pool costs more than the work).
pub fn gelu(k: &Kernels, x: &mut [f32]) {
    use rayon::prelude::*;
    if x.len() <= ELEMENTWISE_CHUNK {
        (k.gelu)(x);
    } else if x.len() <= 4 * ELEMENTWISE_CHUNK {
        // One even share per thread (a batch of 16 rows of 3072 on 2 threads: 2 × 24 K values).
        let share = x
            .len()
            .div_ceil(rayon::current_num_threads())
            .next_multiple_of(64);
        x.par_chunks_mut(share.max(ELEMENTWISE_CHUNK))
            .for_each(k.gelu);
    } else {
        x.par_chunks_mut(ELEMENTWISE_CHUNK).for_each(k.gelu);
    }
}

/// SwiGLU's activation: `gate = silu(gate) · up` with silu(g) = g / (1 + e^(−g)), in place; split
/// over the threads above one chunk.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    use rayon::prelude::*;
    let f = |(g, u): (&mut [f32], &[f32])| {
        for (a, &b) in g.iter_mut().zip(u) {
            *a = *a / (1.0 + (-*a).exp()) * b;
        }
    };
    if gate.len() <= ELEMENTWISE_CHUNK {
        f((gate, up));
    } else {
        gate.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(up.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(f);
    }
}

/// `x += y`, element-wise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Softmax in place, shifted by the maximum so large logits cannot overflow.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `log(softmax(x))[i]` for every i, written to `out`.
pub fn log_softmax(x: &[f32], out: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v - lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalised() {
        let mut x = [1000.0, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn gelu_matches_known_values_on_every_isa() {
        for isa in crate::kernels::Isa::ALL {
            let Some(k) = Kernels::for_isa(isa) else {
                continue;
            };
            let mut x = [0.0f32, 1.0, -1.0, 3.0];
            gelu(&k, &mut x);
            // Values of 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) computed in f64.
            let want = [0.0f32, 0.841_192, -0.158_808, 2.996_363];
            for (a, b) in x.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{isa}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn silu_mul_matches_its_definition() {
        let n = 3 * ELEMENTWISE_CHUNK + 5;
        let mut g: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.2 - 9.0).collect();
        let u: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let want: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&a, &b)| a as f64 / (1.0 + (-a as f64).exp()) * b as f64)
            .collect();
        silu_mul(&mut g, &u);
        for (a, b) in g.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let x = [0.5f32, -2.0, 3.0, 0.0];
        let mut out = [0.0; 4];
        log_softmax(&x, &mut out);
        let total: f32 = out.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
