//! Block formats: the bytes of a GGUF tensor and the scalar code that turns them into f32 and back.
//!
//! Blocks are `repr(C)` with byte-array fields (alignment 1), so any byte slice of the right length
//! is a valid slice of blocks; [`blocks`] is the one checked cast from bytes to blocks.

mod act;
mod panel16;
mod q4_0;
mod q4_1;
mod q6_k;
mod q8_0;
mod types;

pub use act::{act_quant, act_scale, BlockQ8Act, BlockQ8K, BlockQ8Quad, BlockQ8x4};
pub use panel16::{BlockW16, W16Kind, W16Source, PANEL_ROWS};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use types::GgmlType;

use bytemuck::Pod;
use half::f16;

/// A block of quantized values that dequantizes on its own.
pub trait QuantBlock: Pod {
    /// Values per block.
    const VALUES: usize;
    /// Writes this block's values; `out.len() == Self::VALUES`.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block format qgpt can also produce from f32.
pub trait QuantizeBlock: QuantBlock {
    /// Quantizes `src` (`src.len() == Self::VALUES`) exactly as ggml's reference quantizer does.
    fn quantize(src: &[f32]) -> Self;
}

/// Errors of the safe row-level entry points.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("type {0} is not supported for dequantization")]
    Unsupported(GgmlType),
    #[error("type {0} cannot be produced by qgpt's quantizer")]
    NoQuantizer(GgmlType),
    #[error("{ty}: {values} values are not a whole number of {block}-value blocks")]
    PartialBlock {
        ty: GgmlType,
        values: usize,
        block: usize,
    },
    #[error("{ty}: {values} values need {expected} bytes, got {found}")]
    Length {
        ty: GgmlType,
        values: usize,
        expected: usize,
        found: usize,
    },
}

#[inline]
pub(crate) fn f16_bits_to_f32(bits: [u8; 2]) -> f32 {
    f16::from_le_bytes(bits).to_f32()
}

#[inline]
pub(crate) fn f32_to_f16_bits(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// Views `bytes` as blocks of `B`; `None` when the length is not a whole number of blocks.
pub fn blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

fn check_len(ty: GgmlType, values: usize, bytes: usize) -> Result<(), QuantError> {
    let block = ty.block_size();
    if !values.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { ty, values, block });
    }
    let expected = values / block * ty.type_size();
    if bytes != expected {
        return Err(QuantError::Length {
            ty,
            values,
            expected,
            found: bytes,
        });
    }
    Ok(())
}

fn dequantize_blocks<B: QuantBlock>(bytes: &[u8], out: &mut [f32]) {
    let bs: &[B] = blocks(bytes).expect("length checked by the caller");
    for (b, o) in bs.iter().zip(out.chunks_exact_mut(B::VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantizes `bytes` of type `ty` into `out`; `out.len()` is the number of values.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_len(ty, out.len(), bytes.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => match bytemuck::try_cast_slice::<u8, f16>(bytes) {
            // Tensor data is aligned in GGUF files: convert the whole row at once (F16C or NEON
            // where the CPU has them).
            Ok(halves) if cfg!(target_endian = "little") => {
                use half::slice::HalfFloatSliceExt;
                halves.convert_to_f32_slice(out);
            }
            _ => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16_bits_to_f32([b[0], b[1]]);
                }
            }
        },
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>(bytes, out),
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>(bytes, out),
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>(bytes, out),
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>(bytes, out),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

fn quantize_blocks<B: QuantizeBlock>(src: &[f32], out: &mut [u8]) {
    let bs: &mut [B] = bytemuck::try_cast_slice_mut(out).expect("length checked by the caller");
    for (b, s) in bs.iter_mut().zip(src.chunks_exact(B::VALUES)) {
        *b = B::quantize(s);
    }
}

/// Quantizes `src` into `out` as type `ty`, bit-identical to ggml's reference quantizer.
pub fn quantize_row(ty: GgmlType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_len(ty, src.len(), out.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, x) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_f16_bits(x));
            }
        }
        GgmlType::Q8_0 => quantize_blocks::<BlockQ8_0>(src, out),
        GgmlType::Q4_0 => quantize_blocks::<BlockQ4_0>(src, out),
        GgmlType::Q4_1 => quantize_blocks::<BlockQ4_1>(src, out),
        GgmlType::Q6_K => quantize_blocks::<BlockQ6K>(src, out),
        other => return Err(QuantError::NoQuantizer(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trip_is_close() {
        let src: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut bytes = vec![0u8; 68];
        quantize_row(GgmlType::Q8_0, &src, &mut bytes).unwrap();
        let mut back = vec![0f32; 64];
        dequantize_row(GgmlType::Q8_0, &bytes, &mut back).unwrap();
        for (a, b) in src.iter().zip(&back) {
            assert!((a - b).abs() <= 3.0 / 127.0, "{a} vs {b}");
        }
    }

    #[test]
    fn lengths_are_checked() {
        let mut out = vec![0f32; 33];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0; 18], &mut out),
            Err(QuantError::PartialBlock { .. })
        ));
        let mut out = vec![0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::Length { expected: 18, .. })
        ));
        assert_eq!(
            dequantize_row(GgmlType::Q4_K, &[0; 144], &mut vec![0f32; 256]),
            Err(QuantError::Unsupported(GgmlType::Q4_K))
        );
    }
}
