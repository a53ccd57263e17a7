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

/// Block b of four activation rows, interleaved for the panel GEMM kernels: byte group k (16
/// bytes) holds quants 4k..4k+4 of row 0, then of rows 1, 2 and 3, so one 16-byte broadcast
/// feeds a vector whose lanes are (weight row, activation row) pairs. Rows missing from the last
/// group of a batch are zero and contribute nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8x4 {
    /// `qs[16k + 4c + i]` = quant 4k + i of row c.
    pub qs: [i8; 128],
    /// Scale of each row.
    pub d: [f32; 4],
    /// Integer offset each row's dot products start from: −k·Σq, with k the weight type's
    /// offset (see [`BlockQ8x4::offset`]).
    pub bias: [i32; 4],
    /// d·Σq of each row (the minimum term of Q4_1).
    pub ds: [f32; 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ8x4>() == 176);

impl Default for BlockQ8x4 {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl BlockQ8x4 {
    /// The constant k the panel kernels of a weight type subtract times Σq: Q8_0 quants enter the
    /// unsigned side of the multiply as q + 128, Q4_0 nibbles as n = q + 8, Q4_1 nibbles as they
    /// are (their minimum is a float term). `None` for types without panel kernels.
    pub fn offset(ty: super::GgmlType) -> Option<i32> {
        match ty {
            super::GgmlType::Q8_0 => Some(128),
            super::GgmlType::Q4_0 => Some(8),
            super::GgmlType::Q4_1 => Some(0),
            _ => None,
        }
    }

    /// Interleaves up to four activation rows of equal length (in blocks) into `out` (one block
    /// per column block), for weights whose panel offset is `k`. Missing rows are zero.
    ///
    /// Panics if there are more than four rows or a row is shorter than `out`.
    pub fn pack(rows: &[&[BlockQ8Act]], k: i32, out: &mut [BlockQ8x4]) {
        assert!(rows.len() <= 4, "at most four rows per group");
        for (b, o) in out.iter_mut().enumerate() {
            *o = Self::zeroed();
            for (c, row) in rows.iter().enumerate() {
                let a = &row[b];
                for (k4, q) in a.qs.chunks_exact(4).enumerate() {
                    o.qs[16 * k4 + 4 * c..][..4].copy_from_slice(q);
                }
                o.d[c] = a.d;
                o.bias[c] = -k * a.isum;
                o.ds[c] = a.d * a.isum as f32;
            }
        }
    }
}

/// Four consecutive activation blocks of one row, laid out for single-row kernels that hold one
/// block per 128-bit lane: `lo` holds quants 0..16 of each block, `hi` quants 16..32, and the
/// per-lane bias and scale are spelled out for each of a block's four dword lanes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8Quad {
    /// `lo[16i + j]` = quant j of block i.
    pub lo: [i8; 64],
    /// `hi[16i + j]` = quant 16 + j of block i.
    pub hi: [i8; 64],
    /// `bias[4i + j]` = −k·Σq of block i, divided among its four lanes (k/4 each).
    pub bias: [i32; 16],
    /// `d[4i + j]` = scale of block i.
    pub d: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8Quad>() == 256);

impl Default for BlockQ8Quad {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl BlockQ8Quad {
    /// Regroups `a` (4·`out.len()` blocks) for weights whose offset is `k` (a multiple of 4; see
    /// [`BlockQ8x4::offset`]).
    ///
    /// Panics if the lengths do not match or `k` is not a multiple of 4.
    pub fn pack(a: &[BlockQ8Act], k: i32, out: &mut [BlockQ8Quad]) {
        assert_eq!(a.len(), 4 * out.len(), "four blocks per quad");
        assert_eq!(k % 4, 0, "the offset is divided among four lanes");
        for (o, a) in out.iter_mut().zip(a.chunks_exact(4)) {
            for (i, a) in a.iter().enumerate() {
                o.lo[16 * i..][..16].copy_from_slice(&a.qs[..16]);
                o.hi[16 * i..][..16].copy_from_slice(&a.qs[16..]);
                o.bias[4 * i..][..4].fill(-(k / 4) * a.isum);
                o.d[4 * i..][..4].fill(a.d);
            }
        }
    }
}
