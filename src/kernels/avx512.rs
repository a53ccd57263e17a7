//! AVX-512 (F/BW/VL) + VNNI kernels (x86-64). Same signatures as `scalar`.
//!
//! Integer dot products use `vpdpbusd` (unsigned × signed bytes summed straight into i32 lanes)
//! on 256-bit vectors: the blocks are 32 values wide, and Zen 4 splits 512-bit integer ops in two
//! anyway. Activation quantization and the float dot products are AVX2's.

use std::arch::x86_64::*;

use super::avx2::imp::{
    f16_splat, four_rows, hsum_epi32, hsum_ps, load32, nibbles, q6_chunk, q6_offset, q8_family,
    scale_add, two_lanes, PREFETCH_BYTES,
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
        dot4_q4_1: |w, a| w.map(|w| dot_q4_1(w, a)),
        gemm4x4_q4_1,
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
    gemm4x4_q4_1(w: [&[BlockQ4_1]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4];
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
        // Subtracting a broadcast of Σa (a load) is cheaper than starting the lanes at −Σa (a
        // scalar negation moved to a vector register).
        let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles(&w.qs), av);
        _mm256_sub_epi32(p, _mm256_set1_epi32(a.isum))
    }

    q8_family!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", pub(super));

    /// Two 256-bit halves as one 512-bit vector.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn join_i(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// Two 256-bit halves as one 512-bit vector.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn join_f(lo: __m256, hi: __m256) -> __m512 {
        let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
    }

    /// The horizontal sums of four vectors at once (cheaper than four separate reductions).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn sum4(v: [__m512; 4]) -> [f32; 4] {
        let half = v.map(|x| {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
            _mm256_add_ps(_mm512_castps512_ps256(x), hi)
        });
        let h = _mm256_hadd_ps(
            _mm256_hadd_ps(half[0], half[1]),
            _mm256_hadd_ps(half[2], half[3]),
        );
        let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0.0f32; 4];
        // SAFETY: `out` has room for the four floats stored.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), q) };
        out
    }

    /// The 4 × 4 tile loop, two blocks per 512-bit vector (the lower half holds block b, the
    /// upper half block b + 1).
    ///
    /// Weights enter `vpdpbusd` as unsigned bytes (`$prep_w`: Q8_0 quants + 128, or Q4_0
    /// nibbles) against signed activations. The activation side's offset, −`$k`·Σa per block,
    /// starts the lanes (8 lanes a block, −`$k`/8·Σa each), so each of the 16 pairs costs one
    /// `vpdpbusd`, one conversion, one scale product and one FMA per two blocks. The 16
    /// accumulators, 4 weight and 4 scale registers fit the 32 vector registers. An odd last
    /// block goes through the single-row kernel.
    macro_rules! tile4x4 {
        ($w:expr, $a:expr, $prep_w:ident, $k:expr, $dot:ident $(, min: $min:ident)?) => {{
            let (w, a) = ($w, $a);
            let n = w
                .iter()
                .map(|r| r.len())
                .chain(a.iter().map(|c| c.len()))
                .min()
                .unwrap_or(0);
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let mut b = 0;
            while b + 2 <= n {
                // Four interleaved row streams defeat the hardware prefetcher on weights that
                // come from DRAM; ask for each row's bytes ahead explicitly.
                for row in w.iter() {
                    let p = row
                        .as_ptr()
                        .wrapping_add(b)
                        .cast::<i8>()
                        .wrapping_add(PREFETCH_BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(p);
                }
                let wq: [__m512i; 4] =
                    std::array::from_fn(|r| join_i($prep_w(&w[r][b]), $prep_w(&w[r][b + 1])));
                let wd: [__m512; 4] =
                    std::array::from_fn(|r| join_f(f16_splat(w[r][b].d), f16_splat(w[r][b + 1].d)));
                // Formats with a per-block minimum (Q4_1) add m·da·Σa: the minima of the rows...
                $(let wm: [__m512; 4] = std::array::from_fn(|r| {
                    join_f(f16_splat(w[r][b].$min), f16_splat(w[r][b + 1].$min))
                });)?
                for c in 0..4 {
                    let (a0, a1) = (&a[c][b], &a[c][b + 1]);
                    let av = join_i(load32(&a0.qs), load32(&a1.qs));
                    let init = join_i(
                        _mm256_set1_epi32(-($k / 8) * a0.isum),
                        _mm256_set1_epi32(-($k / 8) * a1.isum),
                    );
                    let da = join_f(_mm256_set1_ps(a0.d), _mm256_set1_ps(a1.d));
                    // ...times da·Σa / 8 per lane (8 lanes a block) of this activation.
                    $(let _ = stringify!($min);
                    let sums = join_f(
                        _mm256_set1_ps(a0.d * a0.isum as f32 / 8.0),
                        _mm256_set1_ps(a1.d * a1.isum as f32 / 8.0),
                    );)?
                    for r in 0..4 {
                        let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wq[r], av));
                        acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], da), p, acc[r][c]);
                        $(let _ = stringify!($min);
                        acc[r][c] = _mm512_fmadd_ps(wm[r], sums, acc[r][c]);)?
                    }
                }
                b += 2;
            }
            let mut out = acc.map(|row| sum4(row));
            if b < n {
                for (r, row) in out.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v += $dot(&w[r][b..b + 1], &a[c][b..b + 1]);
                    }
                }
            }
            out
        }};
    }

    /// Q8_0 quants as unsigned bytes: q + 128.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn q8_0_unsigned(w: &BlockQ8_0) -> __m256i {
        _mm256_xor_si256(load32(&w.qs), _mm256_set1_epi8(-128))
    }

    /// Q4_0 nibbles, unsigned.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn q4_0_unsigned(w: &BlockQ4_0) -> __m256i {
        nibbles(&w.qs)
    }

    /// Σ (w + 128)·a − 128·Σa = Σ w·a.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
        tile4x4!(w, a, q8_0_unsigned, 128, dot_q8_0)
    }

    /// Σ n·a − 8·Σa = Σ (n − 8)·a.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
        tile4x4!(w, a, q4_0_unsigned, 8, dot_q4_0)
    }

    /// Q4_1 nibbles, unsigned.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn q4_1_unsigned(w: &BlockQ4_1) -> __m256i {
        nibbles(&w.qs)
    }

    /// d·da·Σ n·a + m·da·Σa.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q4_1(w: [&[BlockQ4_1]; 4], a: [&[BlockQ8Act]; 4]) -> [[f32; 4]; 4] {
        tile4x4!(w, a, q4_1_unsigned, 0, dot_q4_1, min: m)
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
