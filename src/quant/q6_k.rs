//! Q6_K: 256 values in 16 groups of 16, 6-bit quants, an i8 scale per group and an f16 super-scale;
//! value = d · scale[group] · (q − 32).

use bytemuck::{Pod, Zeroable};

use super::{f16_bits_to_f32, f32_to_f16_bits, QuantBlock, QuantizeBlock};

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

/// Below this, a group (or a whole block) counts as all zero, as in ggml.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, by ggml's trick: adding 1.5·2²³ puts the integer in the low
/// mantissa bits. Valid for |x| ≤ 2²² − 1, which every caller here stays within.
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// Scale and 6-bit levels (offset by 32) for one group of 16, weighted by x²: the first guess
/// −32/max and 18 nearby ones, keeping the scale that minimises the weighted squared error.
/// The arithmetic (order of f32 operations included) is that of ggml's reference quantizer, so
/// the bytes are identical.
fn group_scale(x: &[f32; 16], levels: &mut [u8; 16]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        *levels = [0; 16];
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, levels: &mut [u8; 16]| {
        for (o, &v) in levels.iter_mut().zip(x) {
            *o = (level(iscale, v) + NMAX) as u8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut chosen = iscale;
    // The 18 other candidate scales, each summed in the same element order as ggml (so each
    // lane's f32 result is ggml's), side by side so the compiler can vectorize across them.
    const TRIALS: usize = 18;
    let mut iscales = [0f32; TRIALS];
    for (k, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
        iscales[k] = -(NMAX as f32 + 0.1 * is as f32) / max;
    }
    let (mut lx, mut l2) = ([0f32; TRIALS], [0f32; TRIALS]);
    for &v in x {
        let w = v * v;
        let wv = w * v;
        for k in 0..TRIALS {
            let l = level(iscales[k], v) as f32;
            lx[k] += wv * l;
            l2[k] += w * l * l;
        }
    }
    for k in 0..TRIALS {
        if l2[k] > 0.0 && lx[k] * lx[k] > best * l2[k] {
            scale = lx[k] / l2[k];
            best = scale * lx[k];
            chosen = iscales[k];
        }
    }
    fill(chosen, levels);
    scale
}

impl QuantizeBlock for BlockQ6K {
    fn quantize(src: &[f32]) -> Self {
        let mut levels = [[0u8; 16]; 16];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (g, (lv, sc)) in levels.iter_mut().zip(&mut scales).enumerate() {
            let x: &[f32; 16] = src[16 * g..16 * g + 16].try_into().expect("16 values");
            *sc = group_scale(x, lv);
            if sc.abs() > max_abs_scale {
                max_abs_scale = sc.abs();
                max_scale = *sc;
            }
        }
        let mut block = BlockQ6K::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            return block;
        }
        let iscale = -128.0 / max_scale;
        block.d = f32_to_f16_bits(1.0 / iscale);
        for (o, &sc) in block.scales.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * sc).min(127) as i8;
        }
        let d_block = f16_bits_to_f32(block.d);
        for (g, lv) in levels.iter_mut().enumerate() {
            let d = d_block * block.scales[g] as f32;
            if d == 0.0 {
                continue; // keeps the group's first-pass levels, as ggml does
            }
            for (o, &v) in lv.iter_mut().zip(&src[16 * g..16 * g + 16]) {
                *o = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
            }
        }
        let l = |i: usize| levels[i / 16][i % 16];
        for h in 0..2 {
            let (base, ql, qh) = (128 * h, 64 * h, 32 * h);
            for j in 0..32 {
                let (a, b, c, e) = (
                    l(base + j),
                    l(base + j + 32),
                    l(base + j + 64),
                    l(base + j + 96),
                );
                block.ql[ql + j] = (a & 0xF) | ((c & 0xF) << 4);
                block.ql[ql + j + 32] = (b & 0xF) | ((e & 0xF) << 4);
                block.qh[qh + j] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
        block
    }
}
