//! Q8_0: 32 values, one f16 scale and 32 signed bytes; value = q · d.

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, f32_to_f16_bits, QuantBlock, QuantizeBlock};

/// One Q8_0 block (34 bytes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, IEEE f16 little-endian.
    pub d: [u8; 2],
    /// Quantized values.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl QuantBlock for BlockQ8_0 {
    const VALUES: usize = 32;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(self.d);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    fn quantize(src: &[f32]) -> Self {
        let amax = src.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut qs = [0i8; 32];
        for (q, &x) in qs.iter_mut().zip(src) {
            // f32::round rounds half away from zero, as C's roundf does in ggml's reference.
            *q = (x * id).round() as i8;
        }
        Self {
            d: f32_to_f16_bits(d),
            qs,
        }
    }
}
