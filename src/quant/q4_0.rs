//! Q4_0: 32 values, one f16 scale and 16 bytes of nibbles; value = (q − 8) · d.

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, f32_to_f16_bits, QuantBlock, QuantizeBlock};

/// One Q4_0 block (18 bytes). Byte j holds value j in its low nibble and value j+16 in its high.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, IEEE f16 little-endian.
    pub d: [u8; 2],
    /// Packed nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl QuantBlock for BlockQ4_0 {
    const VALUES: usize = 32;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(self.d);
        let (lo, hi) = out.split_at_mut(16);
        for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = ((b & 0x0F) as i32 - 8) as f32 * d;
            *h = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ4_0 {
    fn quantize(src: &[f32]) -> Self {
        // The scale maps the value of largest magnitude (the first one, on ties) to −8.
        let mut max = 0.0f32;
        for &x in src {
            if x.abs() > max.abs() {
                max = x;
            }
        }
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
        let mut qs = [0u8; 16];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(src[j]) | (q(src[j + 16]) << 4);
        }
        Self {
            d: f32_to_f16_bits(d),
            qs,
        }
    }
}
