//! Activation blocks: the formats activations are quantized to, once per matmul, so that weight
//! blocks can be multiplied with integer dot products. These are qgpt's own in-memory formats
//! (never written to files), chosen for the kernels: f32 scales and precomputed quant sums.

use bytemuck::{Pod, Zeroable};

/// 32 activations: `value ≈ qs[i] · d`; `isum = Σ qs[i]`. Partner of Q8_0, Q4_0 and Q4_1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct BlockQ8Act {
    /// Scale.
    pub d: f32,
    /// Sum of the quants (the offset terms of Q4_0 and Q4_1 need it).
    pub isum: i32,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8Act>() == 40);

/// 256 activations: `value ≈ qs[i] · d`; `bsums[g]` sums the quants of group g of 16.
/// Partner of Q6_K.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quants.
    pub qs: [i8; 256],
    /// Sums of each group of 16 quants.
    pub bsums: [i16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Default for BlockQ8K {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// Scale and inverse scale that map the largest magnitude in `x` to 127.
#[inline]
pub fn act_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    (d, id)
}

/// Rounds `x · id` to the nearest integer, ties to even: what SIMD conversions do, so every ISA
/// produces the same quants as this scalar definition.
#[inline]
pub fn act_quant(x: f32, id: f32) -> i8 {
    (x * id).round_ties_even() as i8
}
