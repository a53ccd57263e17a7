//! Q6_K: 256 values in 16 groups of 16, 6-bit quants, an i8 scale per group and an f16 super-scale;
//! value = d · scale[group] · (q − 32).

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, QuantBlock};

/// One Q6_K block (210 bytes).
///
/// Layout per 128-value half h: value j < 64 takes its low 4 bits from the low nibble of
/// `ql[64h + j]`, value j ≥ 64 from the high nibble of `ql[64h + j − 64]`; the top 2 bits of value
/// j come from `qh[32h + j % 32] >> (2 · (j / 32))`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits of each quant.
    pub ql: [u8; 128],
    /// High 2 bits of each quant.
    pub qh: [u8; 64],
    /// Per-group scales.
    pub scales: [i8; 16],
    /// Super-scale, IEEE f16 little-endian.
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The 6-bit quant of value `i` (0..256), offset by −32.
    #[inline]
    pub fn q(&self, i: usize) -> i8 {
        let (h, j) = (i / 128, i % 128);
        let ql = self.ql[64 * h + j % 64];
        let lo = if j < 64 { ql & 0x0F } else { ql >> 4 };
        let hi = (self.qh[32 * h + j % 32] >> (2 * (j / 32))) & 3;
        (lo | (hi << 4)) as i8 - 32
    }
}

impl QuantBlock for BlockQ6K {
    const VALUES: usize = 256;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(self.d);
        for (g, group) in out.chunks_exact_mut(16).enumerate() {
            // Scale first, then quant: the same order of f32 products as ggml and gguf-py.
            let dg = d * self.scales[g] as f32;
            for (k, o) in group.iter_mut().enumerate() {
                *o = dg * self.q(16 * g + k) as f32;
            }
        }
    }
}
