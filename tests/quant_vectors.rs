//! Block formats against the `gguf` PyPI package (gguf-py), bit for bit. The vectors come from
//! tests/fixtures/make_fixtures.py; gguf-py has no Q6_K quantizer, so the Q6_K quantization
//! vectors come from ggml's own `quantize_row_q6_K_ref` (tests/fixtures/convert/make_convert_ref.py).

mod common;

use common::{fixture, read_f32};
use qgpt::quant::{dequantize_row, quantize_row, GgmlType};

fn check_dequantize(ty: GgmlType, stem: &str) {
    let blocks = std::fs::read(fixture(&format!("quant/{stem}_blocks.bin"))).unwrap();
    let want = read_f32(&format!("quant/{stem}_dequant.f32"));
    assert!(!want.is_empty());
    let mut got = vec![0f32; want.len()];
    dequantize_row(ty, &blocks, &mut got).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{ty} value {i}: qgpt {g} vs gguf-py {w}"
        );
    }
}

fn check_quantize(ty: GgmlType, stem: &str) {
    let src = read_f32(&format!("quant/{stem}_src.f32"));
    let want = std::fs::read(fixture(&format!("quant/{stem}_quant.bin"))).unwrap();
    let mut got = vec![0u8; want.len()];
    quantize_row(ty, &src, &mut got).unwrap();
    let bs = ty.type_size();
    for (b, (g, w)) in got.chunks(bs).zip(want.chunks(bs)).enumerate() {
        assert_eq!(
            g,
            w,
            "{ty} block {b} differs from the reference (source {:?})",
            &src[b * ty.block_size()..(b + 1) * ty.block_size()]
        );
    }
}

#[test]
fn f16_dequantize_matches_gguf_py() {
    check_dequantize(GgmlType::F16, "f16");
}

#[test]
fn q8_0_dequantize_matches_gguf_py() {
    check_dequantize(GgmlType::Q8_0, "q8_0");
}

#[test]
fn q4_0_dequantize_matches_gguf_py() {
    check_dequantize(GgmlType::Q4_0, "q4_0");
}

#[test]
fn q4_1_dequantize_matches_gguf_py() {
    check_dequantize(GgmlType::Q4_1, "q4_1");
}

#[test]
fn q6_k_dequantize_matches_gguf_py() {
    check_dequantize(GgmlType::Q6_K, "q6_k");
}

#[test]
fn q8_0_quantize_matches_gguf_py() {
    check_quantize(GgmlType::Q8_0, "q8_0");
}

#[test]
fn q4_0_quantize_matches_gguf_py() {
    check_quantize(GgmlType::Q4_0, "q4_0");
}

#[test]
fn q4_1_quantize_matches_gguf_py() {
    check_quantize(GgmlType::Q4_1, "q4_1");
}

#[test]
fn q6_k_quantize_matches_ggml() {
    check_quantize(GgmlType::Q6_K, "q6_k");
}
