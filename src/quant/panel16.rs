//! Sixteen weight rows regrouped block by block for the large-batch GEMM kernels.
//!
//! This is a scratch format, built per matmul for a few rows at a time from the memory-mapped
//! blocks (the model file is never copied): `q[k]` holds dword k (values 4k..4k+4) of each of the
//! sixteen rows, as unsigned bytes, so one 64-byte vector multiplies sixteen rows by one
//! activation dword broadcast to every lane. Building it costs about as much as reading the rows
//! once; a batch of t activation rows then reuses it t times.

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, BlockQ4_0, BlockQ4_1, BlockQ8_0};

/// Rows per panel.
pub const PANEL_ROWS: usize = 16;

/// One 32-value block of sixteen weight rows.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockW16 {
    /// `q[k][4r + i]` = unsigned quant 4k + i of row r (Q8_0: q + 128; Q4: the nibble).
    pub q: [[u8; 64]; 8],
    /// Scale of each row.
    pub d: [f32; 16],
    /// Minimum of each row (Q4_1; zero otherwise).
    pub m: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<BlockW16>() == 640);

impl Default for BlockW16 {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// How a weight type's unsigned quants relate to its values, for the kernels that use
/// [`BlockW16`]: value = d·(u − offset) (+ m for Q4_1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum W16Kind {
    /// u = q + 128.
    Q8_0,
    /// u = q + 8 (the stored nibble).
    Q4_0,
    /// u = the nibble, value = d·u + m.
    Q4_1,
}

impl W16Kind {
    /// The offset subtracted from the unsigned quants (times Σa per block).
    pub fn offset(self) -> i32 {
        match self {
            W16Kind::Q8_0 => 128,
            W16Kind::Q4_0 => 8,
            W16Kind::Q4_1 => 0,
        }
    }
}

/// A block format that can be regrouped into [`BlockW16`].
pub trait W16Source: Pod + Sync {
    /// The kind of the regrouped blocks.
    const KIND: W16Kind;
    /// The 32 unsigned quants of this block, in value order.
    fn unsigned(&self) -> [u8; 32];
    /// Scale (and minimum, zero where the format has none).
    fn scales(&self) -> (f32, f32);
}

fn nibbles(qs: &[u8; 16]) -> [u8; 32] {
    std::array::from_fn(|i| {
        if i < 16 {
            qs[i] & 0x0F
        } else {
            qs[i - 16] >> 4
        }
    })
}

impl W16Source for BlockQ8_0 {
    const KIND: W16Kind = W16Kind::Q8_0;
    #[inline(always)]
    fn unsigned(&self) -> [u8; 32] {
        // Not `qs.map`: that left a call per block to an uninlined `try_map` (5 % of pp512).
        std::array::from_fn(|i| (self.qs[i] as u8) ^ 0x80)
    }
    fn scales(&self) -> (f32, f32) {
        (f16_bits_to_f32(self.d), 0.0)
    }
}

impl W16Source for BlockQ4_0 {
    const KIND: W16Kind = W16Kind::Q4_0;
    #[inline(always)]
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
    fn scales(&self) -> (f32, f32) {
        (f16_bits_to_f32(self.d), 0.0)
    }
}

impl W16Source for BlockQ4_1 {
    const KIND: W16Kind = W16Kind::Q4_1;
    #[inline(always)]
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
    fn scales(&self) -> (f32, f32) {
        (f16_bits_to_f32(self.d), f16_bits_to_f32(self.m))
    }
}

impl BlockW16 {
    /// Regroups sixteen rows (each at least `out.len()` blocks long) block by block.
    ///
    /// Panics if a row is shorter than `out`.
    pub fn pack<W: W16Source>(rows: [&[W]; PANEL_ROWS], out: &mut [BlockW16]) {
        for (b, o) in out.iter_mut().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                let w = &row[b];
                let u = w.unsigned();
                for (k, q) in o.q.iter_mut().enumerate() {
                    q[4 * r..4 * r + 4].copy_from_slice(&u[4 * k..4 * k + 4]);
                }
                (o.d[r], o.m[r]) = w.scales();
            }
        }
    }
}
