//! AVX-512 (F/BW/VL) + VNNI kernels (x86-64). Same signatures as `scalar`.
//!
//! Integer dot products use `vpdpbusd` (unsigned × signed bytes summed straight into i32 lanes)
//! on 256-bit vectors: the blocks are 32 values wide, and Zen 4 splits 512-bit integer ops in two
//! anyway. Activation quantization and the float dot products are AVX2's.

use std::arch::x86_64::*;

use super::avx2::imp::{
    f16_splat, four_rows, hsum_epi32, hsum_ps, load32, nibbles, q6_chunk, q6_offset, q8_family,
    two_lanes, PREFETCH_BYTES,
};
use super::{avx2, Isa, Kernels};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8_0};

/// True when the CPU has AVX2 (for the shared helpers) and AVX-512 F/BW/VL with VNNI.
pub(super) fn detected() -> bool {
    avx2::detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The AVX-512 table. Only [`super::Kernels::for_isa`] calls it, after [`detected`].
pub(super) fn table() -> Kernels {
    Kernels {
        isa: Isa::Avx512,
        quantize_q8: avx2::quantize_q8,
        quantize_q8k: avx2::quantize_q8k,
        dot_q8_0,
        dot4_q8_0,
        gemm4x4_q8_0,
        dot_q4_0,
        dot4_q4_0,
        gemm4x4_q4_0,
        dot_q4_1,
        dot_q6_k,
        // 512-bit float FMAs run as two 256-bit halves on Zen 4: AVX2's float dots do as well.
        dot_f16: avx2::dot_f16,
        dot_f32_bytes: avx2::dot_f32_bytes,
        dot_f32: avx2::dot_f32,
    }
}

macro_rules! safe_entry_points {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: reachable only through `table()`, which `Kernels::for_isa` calls after
            // `detected()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI; the
            // implementations only read within the slices they are given.
            unsafe { imp::$name($($arg),*) }
        }
    )*};
}

safe_entry_points! {
    dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32;
    dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8Act]) -> [f32; 4];
    gemm4x4_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4];
    gemm4x4_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4];
    dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32;
    dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8Act]) -> [f32; 4];
    dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32;
    dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32;
}

mod imp {
    use super::*;

    /// Σ x·y over 32 signed bytes as 8 i32 lanes: |x| · (y · sign x) through `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn idot_i8(x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            _mm256_abs_epi8(x),
            _mm256_sign_epi8(y, x),
        )
    }

    /// Σ n·a for unsigned bytes n and signed a, as 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn idot_u8(n: __m256i, a: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), n, a)
    }

    /// Σ w·a of one Q8_0 block, as 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn idot_q8_0(w: &BlockQ8_0, _a: &BlockQ8Act, av: __m256i) -> __m256i {
        idot_i8(load32(&w.qs), av)
    }

    /// Σ (n − 8)·a of one Q4_0 block, as 8 i32 lanes: the unsigned nibbles n go straight into
    /// the multiply, and the −8·Σa term starts the lanes (−Σa each, 8 lanes).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn idot_q4_0(w: &BlockQ4_0, a: &BlockQ8Act, av: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_set1_epi32(-a.isum), nibbles(&w.qs), av)
    }

    q8_family!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", pub(super));

    /// The 4 × 4 tile loop. Per block step: each weight row is loaded and prepared once
    /// (`$prep_w`), each activation once (`$prep_a`), and each of the 16 pairs costs one
    /// `vpdpbusd` (`$pair`), one conversion, one scale product and one FMA. The 16 accumulators,
    /// 4 activation and 4 weight registers fit AVX-512VL's 32 vector registers.
    macro_rules! tile4x4 {
        ($w:expr, $a:expr, $prep_w:ident, $prep_a:ident, $pair:ident) => {{
            let (w, a) = ($w, $a);
            let n = w
                .iter()
                .map(|r| r.len())
                .chain(a.iter().map(|c| c.len()))
                .min()
                .unwrap_or(0);
            let mut acc = [[_mm256_setzero_ps(); 4]; 4];
            for b in 0..n {
                // Four interleaved row streams defeat the hardware prefetcher on weights that
                // come from DRAM; ask for each row's bytes ahead explicitly.
                for row in w.iter() {
                    _mm_prefetch::<_MM_HINT_T0>(
                        row.as_ptr()
                            .wrapping_add(b)
                            .cast::<i8>()
                            .wrapping_add(PREFETCH_BYTES),
                    );
                }
                let wp = [
                    $prep_w(&w[0][b]),
                    $prep_w(&w[1][b]),
                    $prep_w(&w[2][b]),
                    $prep_w(&w[3][b]),
                ];
                let ap = [
                    $prep_a(&a[0][b]),
                    $prep_a(&a[1][b]),
                    $prep_a(&a[2][b]),
                    $prep_a(&a[3][b]),
                ];
                for r in 0..4 {
                    for c in 0..4 {
                        let p = _mm256_cvtepi32_ps($pair(&wp[r], &ap[c]));
                        let d = _mm256_mul_ps(wp[r].2, ap[c].2);
                        acc[r][c] = _mm256_fmadd_ps(d, p, acc[r][c]);
                    }
                }
            }
            acc.map(|row| row.map(|v| hsum_ps(v)))
        }};
    }

    /// Q8_0 weight block for the tile: quants, −128·Σw per lane (the activations are offset by
    /// +128 to be unsigned), scale.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn prep_w_q8_0(w: &BlockQ8_0) -> (__m256i, __m256i, __m256) {
        let q = load32(&w.qs);
        let sum128 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), q);
        (
            q,
            _mm256_sub_epi32(_mm256_setzero_si256(), sum128),
            f16_splat(w.d),
        )
    }

    /// Activation block for Q8_0 tiles: quants + 128 (as unsigned bytes), unused, scale.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn prep_a_unsigned(a: &BlockQ8Act) -> (__m256i, __m256i, __m256) {
        let u = _mm256_xor_si256(load32(&a.qs), _mm256_set1_epi8(-128));
        (u, _mm256_setzero_si256(), _mm256_set1_ps(a.d))
    }

    /// Σ (a + 128)·w − 128·Σw = Σ a·w.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn pair_q8_0(w: &(__m256i, __m256i, __m256), a: &(__m256i, __m256i, __m256)) -> __m256i {
        _mm256_dpbusd_epi32(w.1, a.0, w.0)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
        tile4x4!(w, a, prep_w_q8_0, prep_a_unsigned, pair_q8_0)
    }

    /// Q4_0 weight block for the tile: unsigned nibbles, unused, scale.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn prep_w_q4_0(w: &BlockQ4_0) -> (__m256i, __m256i, __m256) {
        (nibbles(&w.qs), _mm256_setzero_si256(), f16_splat(w.d))
    }

    /// Activation block for Q4_0 tiles: quants, −Σa per lane (8 lanes: −8·Σa), scale.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn prep_a_q4_0(a: &BlockQ8Act) -> (__m256i, __m256i, __m256) {
        (
            load32(&a.qs),
            _mm256_set1_epi32(-a.isum),
            _mm256_set1_ps(a.d),
        )
    }

    /// Σ n·a − 8·Σa = Σ (n − 8)·a.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn pair_q4_0(w: &(__m256i, __m256i, __m256), a: &(__m256i, __m256i, __m256)) -> __m256i {
        _mm256_dpbusd_epi32(a.1, w.0, a.0)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
        tile4x4!(w, a, prep_w_q4_0, prep_a_q4_0, pair_q4_0)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let mut sum = _mm256_setzero_ps();
        for (w, a) in w.iter().zip(a) {
            let mut acc = _mm256_setzero_si256();
            for k in 0..8 {
                // SAFETY: bytes 32k..32k+32 of the 256-byte `a.qs` are readable.
                let av = unsafe { _mm256_loadu_si256(a.qs[32 * k..].as_ptr().cast()) };
                // Lanes 0..3 sum group 2k, lanes 4..7 group 2k + 1.
                let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q6_chunk(w, k), av);
                let sc = _mm256_set_m128i(
                    _mm_set1_epi32(w.scales[2 * k + 1] as i32),
                    _mm_set1_epi32(w.scales[2 * k] as i32),
                );
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, sc));
            }
            let isum = hsum_epi32(acc) - 32 * q6_offset(w, a);
            let d = _mm256_mul_ps(f16_splat(w.d), _mm256_set1_ps(a.d));
            sum = _mm256_fmadd_ps(d, _mm256_set1_ps(isum as f32), sum);
        }
        // Every lane holds the same sum.
        _mm_cvtss_f32(_mm256_castps256_ps128(sum))
    }
}
