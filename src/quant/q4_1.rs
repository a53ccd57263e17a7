//! Q4_1: 32 values, f16 scale and f16 minimum, 16 bytes of nibbles; value = q · d + m.

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, f32_to_f16_bits, QuantBlock, QuantizeBlock};

/// One Q4_1 block (20 bytes). Byte j holds value j in its low nibble and value j+16 in its high.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, IEEE f16 little-endian.
    pub d: [u8; 2],
    /// Minimum, IEEE f16 little-endian.
    pub m: [u8; 2],
    /// Packed nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl QuantBlock for BlockQ4_1 {
    const VALUES: usize = 32;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(self.d);
        let m = f16_bits_to_f32(self.m);
        let (lo, hi) = out.split_at_mut(16);
        for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = (b & 0x0F) as f32 * d + m;
            *h = (b >> 4) as f32 * d + m;
        }
    }
}

impl QuantizeBlock for BlockQ4_1 {
    fn quantize(src: &[f32]) -> Self {
        let min = src.iter().copied().fold(f32::INFINITY, f32::min);
        let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |x: f32| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
        let mut qs = [0u8; 16];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(src[j]) | (q(src[j + 16]) << 4);
        }
        Self {
            d: f32_to_f16_bits(d),
            m: f32_to_f16_bits(min),
            qs,
        }
    }
}
