//! AVX2 + FMA + F16C kernels (x86-64). Same signatures as `scalar`.
//!
//! Integer dot products use `vpmaddubsw` (unsigned × signed bytes → i16 pairs) and `vpmaddwd`
//! (→ i32), with one float FMA per block for the scales.

use std::arch::x86_64::*;

use super::gemm_f32::COLS;
use super::{scalar, Isa, Kernels};
use crate::quant::{act_scale, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8_0};

/// True when the CPU has every feature these kernels are compiled for.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 table. Only [`super::Kernels::for_isa`] calls it, after [`detected`].
pub(super) fn table() -> Kernels {
    Kernels {
        isa: Isa::Avx2,
        quantize_q8,
        quantize_q8k,
        dot_q8_0,
        dot4_q8_0,
        // AVX2 has 16 vector registers: a 4 × 4 tile of accumulators would spill, so the tile
        // is four four-row calls.
        gemm4x4_q8_0: |w, a| transpose(a.map(|a| dot4_q8_0(w, a))),
        dot_q4_0,
        dot4_q4_0,
        gemm4x4_q4_0: |w, a| transpose(a.map(|a| dot4_q4_0(w, a))),
        dot4_q4_1: |w, a| w.map(|w| dot_q4_1(w, a)),
        gemm4x4_q4_1: |w, a| w.map(|w| a.map(|a| dot_q4_1(w, a))),
        dot_q4_1,
        // No interleaved-activation kernels yet: matmul uses the per-block kernels.
        dot_q4_0_quad: None,
        gemm16: None,
        gemm16_rows_q8_0: None,
        panel_q8_0: None,
        panel_q4_0: None,
        panel_q4_1: None,
        dot_q6_k,
        dot4_q6_k: |w, a| w.map(|w| dot_q6_k(w, a)),
        gemm4x4_q6_k: |w, a| w.map(|w| a.map(|a| dot_q6_k(w, a))),
        dot_f16,
        dot_f32_bytes,
        dot_f32,
        gelu,
        gemm16_f32,
        regroup16: super::gemm_f32::regroup16_portable,
        attend_f32,
        attend_f16,
    }
}

super::attend_entries!("avx2,fma,f16c", F16c);

/// f16 → f32 with `vcvtph2ps`, for the attention kernels of the x86 levels.
pub(super) struct F16c;

impl super::attend::Widen for F16c {
    const FMA: bool = true;
    #[inline(always)]
    fn f16(src: &[half::f16], dst: &mut [f32]) {
        // SAFETY: `F16c` is private to the x86 kernel files and only instantiated inside
        // `attend_entries!` functions of the AVX2 and AVX-512 tables, which are reached after
        // F16C (and AVX) were detected.
        unsafe { f16c_convert(src, dst) }
    }
}

/// Eight values at a time with F16C, the rest one by one.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16c_convert(src: &[half::f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len()) / 8 * 8;
    for (s, d) in src[..n].chunks_exact(8).zip(dst[..n].chunks_exact_mut(8)) {
        // SAFETY: `s` holds 8 halves (16 bytes) and `d` room for 8 floats.
        let v = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(v)) };
    }
    for (d, s) in dst[n..].iter_mut().zip(&src[n..]) {
        *d = super::attend::f16_to_f32(s.to_bits());
    }
}

/// The float GEMM tile at AVX2 width: the sixteen rows in two registers, four activation
/// columns (eight accumulators) at a time.
pub(super) fn gemm16_f32(w: &[f32], x: &[f32], out: &mut [[f32; 16]; COLS]) {
    #[target_feature(enable = "avx2,fma")]
    fn wide(w: &[f32], x: &[f32], out: &mut [[f32; 16]; COLS]) {
        let n = (w.len() / 16).min(x.len() / COLS);
        for quarter in 0..COLS / 4 {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for k in 0..n {
                // SAFETY: 16·k + 16 ≤ w.len() and COLS·k + COLS ≤ x.len(), since k < n.
                let (w0, w1, xk) = unsafe {
                    let p = w.as_ptr().add(16 * k);
                    let xk = x.as_ptr().add(COLS * k + 4 * quarter);
                    (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), xk)
                };
                for (c, a) in acc.iter_mut().enumerate() {
                    // SAFETY: 4·quarter + c < COLS, inside the k-th group (above).
                    let v = _mm256_set1_ps(unsafe { *xk.add(c) });
                    a[0] = _mm256_fmadd_ps(w0, v, a[0]);
                    a[1] = _mm256_fmadd_ps(w1, v, a[1]);
                }
            }
            for (o, a) in out[4 * quarter..4 * quarter + 4].iter_mut().zip(acc) {
                // SAFETY: `o` has room for 16 floats.
                unsafe {
                    _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
                }
            }
        }
    }
    // SAFETY: reachable only through `table()`, after `detected()` confirmed AVX2 and FMA.
    unsafe { wide(w, x, out) }
}

/// GELU at AVX2 width.
pub(super) fn gelu(x: &mut [f32]) {
    #[target_feature(enable = "avx2,fma")]
    fn wide(x: &mut [f32]) {
        super::math::gelu_approx(x)
    }
    // SAFETY: reachable only through `table()`, after `detected()` confirmed AVX2 and FMA.
    unsafe { wide(x) }
}

/// `[c][r]` → `[r][c]`.
pub(super) fn transpose(x: [[f32; 4]; 4]) -> [[f32; 4]; 4] {
    std::array::from_fn(|r| std::array::from_fn(|c| x[c][r]))
}

macro_rules! safe_entry_points {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: these entry points are reachable only through the table built by
            // `table()`, which `Kernels::for_isa` calls after `detected()` confirmed AVX2, FMA
            // and F16C; the implementations only read within the slices they are given.
            unsafe { imp::$name($($arg),*) }
        }
    )*};
}

safe_entry_points! {
    quantize_q8(x: &[f32], out: &mut [BlockQ8Act]);
    quantize_q8k(x: &[f32], out: &mut [BlockQ8K]);
    dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32;
    dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8Act]) -> [f32; 4];
    dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32;
    dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8Act]) -> [f32; 4];
    dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32;
    dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32;
    dot_f16(w: &[[u8; 2]], x: &[f32]) -> f32;
    dot_f32_bytes(w: &[[u8; 4]], x: &[f32]) -> f32;
    dot_f32(a: &[f32], b: &[f32]) -> f32;
}

/// Shared by the AVX-512 level, whose CPUs have AVX2 too.
pub(super) mod imp {
    use super::*;

    /// An f16 scale converted and broadcast to all 8 lanes.
    ///
    /// Scales are always used as full vectors: when only one lane of a conversion is used, the
    /// compiler loads the f16 with an insert into whatever register is free, often an
    /// accumulator, which chains every block to the previous block's FMA (measured: 2× slower).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_splat(bits: [u8; 2]) -> __m256 {
        _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(bits)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hmax_ps(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }

    /// Loads 32 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn load32(b: &[i8; 32]) -> __m256i {
        // SAFETY: `b` is exactly 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// Unpacks 16 bytes of nibbles to 32 bytes 0..15: low nibbles first, then high nibbles.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn nibbles(qs: &[u8; 16]) -> __m256i {
        // SAFETY: `qs` is exactly 16 readable bytes; the load is unaligned.
        let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// Quantizes 32 floats at `x` (8-wide loads) with inverse scale `id`; returns the packed i8
    /// quants and their sum. As `act_quant` does, a NaN becomes 0 and values beyond ±127 (an
    /// infinite `id` from a subnormal scale, infinite inputs) saturate, and the sum is that of
    /// the stored quants, so the sum is never out of range whatever the row holds. (With NaN in
    /// the row, `amax`, and so the scale, may differ from the scalar twin's.)
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn quantize32(x: &[f32], id: f32) -> (__m256i, i32) {
        let idv = _mm256_set1_ps(id);
        let mut i32s = [_mm256_setzero_si256(); 4];
        for (k, v) in i32s.iter_mut().enumerate() {
            // SAFETY: `x` has 32 values (callers pass chunks_exact(32) or a 256-chunk slice).
            let xv = unsafe { _mm256_loadu_ps(x[8 * k..8 * k + 8].as_ptr()) };
            let scaled = _mm256_mul_ps(xv, idv);
            let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(scaled, scaled);
            let clamped = _mm256_min_ps(
                _mm256_max_ps(_mm256_and_ps(scaled, ordered), _mm256_set1_ps(-128.0)),
                _mm256_set1_ps(127.0),
            );
            // Rounds to nearest, ties to even (the default MXCSR mode), as `act_quant` does.
            *v = _mm256_cvtps_epi32(clamped);
        }
        let p01 = _mm256_packs_epi32(i32s[0], i32s[1]);
        let p23 = _mm256_packs_epi16(p01, _mm256_packs_epi32(i32s[2], i32s[3]));
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        // Σ (q + 128) over the bytes, four partial sums in the low halves of 64-bit lanes.
        let biased = _mm256_xor_si256(p23, _mm256_set1_epi8(i8::MIN));
        let sum = hsum_epi32(_mm256_sad_epu8(biased, _mm256_setzero_si256())) - 32 * 128;
        (_mm256_permutevar8x32_epi32(p23, perm), sum)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn amax(x: &[f32]) -> f32 {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for c in x.chunks_exact(8) {
            // SAFETY: `c` is exactly 8 readable floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        }
        hmax_ps(m)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn quantize_q8(x: &[f32], out: &mut [BlockQ8Act]) {
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
            let (d, id) = act_scale(amax(xs));
            let (q, sum) = quantize32(xs, id);
            // SAFETY: `b.qs` is exactly 32 writable bytes.
            unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q) };
            b.d = d;
            b.isum = sum;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(256)) {
            let (d, id) = act_scale(amax(xs));
            for (k, xc) in xs.chunks_exact(32).enumerate() {
                let (q, _) = quantize32(xc, id);
                // SAFETY: bytes 32k..32k+32 of the 256-byte `b.qs` are writable.
                unsafe { _mm256_storeu_si256(b.qs[32 * k..].as_mut_ptr().cast(), q) };
            }
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
            b.d = d;
        }
    }

    /// Σ w·a over 32 signed bytes each, as 8 i32 lanes (sign trick: |w| · (a · sign w)).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn idot_i8(w: __m256i, a: __m256i) -> __m256i {
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
    }

    /// Σ n·a for unsigned bytes n ≤ 63 and signed a, as 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn idot_u8(n: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(n, a), _mm256_set1_epi16(1))
    }

    /// How far ahead of the current weight block to prefetch.
    pub(crate) const PREFETCH_BYTES: usize = 1024;

    /// Runs `$block(w, a, acc) -> acc` over paired blocks with two accumulators, so that
    /// consecutive blocks do not wait on each other's FMA; returns the summed accumulator.
    macro_rules! two_lanes {
        ($w:expr, $a:expr, $zero:expr, $add:ident, $block:ident) => {{
            let n = $w.len().min($a.len());
            let (w2, a2) = ($w[..n].chunks_exact(2), $a[..n].chunks_exact(2));
            let (wr, ar) = (w2.remainder(), a2.remainder());
            let (mut acc0, mut acc1) = ($zero, $zero);
            // Weight rows are read once, from DRAM: ask for the bytes PREFETCH_BYTES ahead so
            // that the next row (contiguous) is on its way before this one ends.
            let mut ahead = $w.as_ptr().cast::<i8>().wrapping_add(PREFETCH_BYTES);
            for (w, a) in w2.zip(a2) {
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                ahead = ahead.wrapping_add(2 * std::mem::size_of_val(&w[0]));
                acc0 = $block(&w[0], &a[0], acc0);
                acc1 = $block(&w[1], &a[1], acc1);
            }
            if let (Some(w), Some(a)) = (wr.first(), ar.first()) {
                acc0 = $block(w, a, acc0);
            }
            $add(acc0, acc1)
        }};
    }
    pub(crate) use two_lanes;

    /// Four rows: each activation block is loaded once and feeds four independent accumulators
    /// (kept in named variables so that they stay in registers).
    macro_rules! four_rows {
        ($w:expr, $a:expr, $idot:ident) => {{
            let [w0, w1, w2, w3] = $w;
            let (mut s0, mut s1, mut s2, mut s3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let rows = w0.iter().zip(w1).zip(w2).zip(w3);
            for ((((w0, w1), w2), w3), a) in rows.zip($a) {
                // Four interleaved row streams defeat the hardware prefetcher on weights that
                // come from DRAM; ask for each row's bytes ahead explicitly.
                for wb in [w0, w1, w2, w3] {
                    let p: *const i8 = (wb as *const _ as *const i8).wrapping_add(PREFETCH_BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(p);
                }
                let av = load32(&a.qs);
                let da = _mm256_set1_ps(a.d);
                macro_rules! step {
                    ($acc:ident, $wb:ident) => {
                        let p = _mm256_cvtepi32_ps($idot($wb, a, av));
                        $acc = _mm256_fmadd_ps(_mm256_mul_ps(f16_splat($wb.d), da), p, $acc);
                    };
                }
                step!(s0, w0);
                step!(s1, w1);
                step!(s2, w2);
                step!(s3, w3);
            }
            [hsum_ps(s0), hsum_ps(s1), hsum_ps(s2), hsum_ps(s3)]
        }};
    }
    pub(crate) use four_rows;

    /// `acc + f16(dw)·da·p`: one block's integer dot scaled into the float accumulator.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn scale_add(p: __m256i, dw: [u8; 2], da: f32, acc: __m256) -> __m256 {
        let d = _mm256_mul_ps(f16_splat(dw), _mm256_set1_ps(da));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc)
    }

    /// The Q8_0, Q4_0 and Q4_1 kernels of an ISA level, written once over its integer primitives
    /// (which each level defines): `idot_q8_0(w, a, av)`, `idot_q4_0(w, a, av)` and
    /// `idot_u8(n, av)`, each giving 8 i32 lanes.
    macro_rules! q8_family {
        ($feats:literal, $vis:vis) => {
        #[inline]
        #[target_feature(enable = $feats)]
        fn block_q8_0(w: &BlockQ8_0, a: &BlockQ8Act, acc: __m256) -> __m256 {
            scale_add(idot_q8_0(w, a, load32(&a.qs)), w.d, a.d, acc)
        }

        #[target_feature(enable = $feats)]
        $vis fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32 {
            hsum_ps(two_lanes!(
                w,
                a,
                _mm256_setzero_ps(),
                _mm256_add_ps,
                block_q8_0
            ))
        }

        #[inline]
        #[target_feature(enable = $feats)]
        fn block_q4_0(w: &BlockQ4_0, a: &BlockQ8Act, acc: __m256) -> __m256 {
            scale_add(idot_q4_0(w, a, load32(&a.qs)), w.d, a.d, acc)
        }

        #[target_feature(enable = $feats)]
        $vis fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32 {
            hsum_ps(two_lanes!(
                w,
                a,
                _mm256_setzero_ps(),
                _mm256_add_ps,
                block_q4_0
            ))
        }

        /// The second accumulator carries the m·da·Σq offsets, the same in every lane.
        #[inline]
        #[target_feature(enable = $feats)]
        fn block_q4_1(w: &BlockQ4_1, a: &BlockQ8Act, acc: (__m256, __m256)) -> (__m256, __m256) {
            let p = idot_u8(nibbles(&w.qs), load32(&a.qs));
            let da = _mm256_set1_ps(a.d);
            let d = _mm256_mul_ps(f16_splat(w.d), da);
            let offset = _mm256_mul_ps(da, _mm256_set1_ps(a.isum as f32));
            (
                _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc.0),
                _mm256_fmadd_ps(f16_splat(w.m), offset, acc.1),
            )
        }

        #[inline]
        #[target_feature(enable = $feats)]
        fn add_pair(x: (__m256, __m256), y: (__m256, __m256)) -> (__m256, __m256) {
            (_mm256_add_ps(x.0, y.0), _mm256_add_ps(x.1, y.1))
        }

        #[target_feature(enable = $feats)]
        $vis fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32 {
            let zero = _mm256_setzero_ps();
            let (v, offset) = two_lanes!(w, a, (zero, zero), add_pair, block_q4_1);
            // Every lane of `offset` holds the same sum of m·da·Σq terms.
            hsum_ps(v) + _mm_cvtss_f32(_mm256_castps256_ps128(offset))
        }

        #[target_feature(enable = $feats)]
        $vis fn dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8Act]) -> [f32; 4] {
            four_rows!(w, a, idot_q8_0)
        }

        #[target_feature(enable = $feats)]
        $vis fn dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8Act]) -> [f32; 4] {
            four_rows!(w, a, idot_q4_0)
        }
        };
    }
    pub(crate) use q8_family;

    /// Σ w·a of one Q8_0 block, as 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn idot_q8_0(w: &BlockQ8_0, _a: &BlockQ8Act, av: __m256i) -> __m256i {
        idot_i8(load32(&w.qs), av)
    }

    /// Σ (n − 8)·a of one Q4_0 block, as 8 i32 lanes: the unsigned nibbles n go straight into
    /// the multiply, and the −8·Σa term starts the lanes (−Σa each, 8 lanes).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn idot_q4_0(w: &BlockQ4_0, a: &BlockQ8Act, av: __m256i) -> __m256i {
        // Subtracting a broadcast of Σa (a load) is cheaper than broadcasting −Σa (a scalar
        // negation moved to a vector register).
        _mm256_sub_epi32(idot_u8(nibbles(&w.qs), av), _mm256_set1_epi32(a.isum))
    }

    q8_family!("avx2,fma,f16c", pub(crate));

    /// The 32 six-bit quants (0..63, unsigned) of values 32k..32k+32 of a Q6_K block.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn q6_chunk(w: &BlockQ6K, k: usize) -> __m256i {
        let (h, j0) = (k / 4, 32 * (k % 4));
        let m4 = _mm256_set1_epi8(0x0F);
        // SAFETY: 64h + j0 % 64 + 32 ≤ 128 = ql.len(); 32h + 32 ≤ 64 = qh.len().
        let (ql, qh) = unsafe {
            (
                _mm256_loadu_si256(w.ql[64 * h + j0 % 64..].as_ptr().cast()),
                _mm256_loadu_si256(w.qh[32 * h..].as_ptr().cast()),
            )
        };
        let lo = if j0 < 64 {
            _mm256_and_si256(ql, m4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql), m4)
        };
        let shift = _mm_cvtsi32_si128(2 * (k % 4) as i32);
        let hi = _mm256_and_si256(_mm256_srl_epi16(qh, shift), _mm256_set1_epi8(3));
        _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi))
    }

    /// Σ_g sc[g] · bsums[g]: the −32 offset of Q6_K, applied once per block (sixteen i16
    /// products summed in pairs by `vpmaddwd`).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn q6_offset(w: &BlockQ6K, a: &BlockQ8K) -> i32 {
        // SAFETY: `scales` is 16 bytes and `bsums` 16 i16 (32 bytes).
        let (sc, bs) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr().cast())),
                _mm256_loadu_si256(a.bsums.as_ptr().cast()),
            )
        };
        hsum_epi32(_mm256_madd_epi16(sc, bs))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let mut sum = _mm256_setzero_ps();
        for (w, a) in w.iter().zip(a) {
            let mut acc = _mm256_setzero_si256();
            for k in 0..8 {
                // SAFETY: bytes 32k..32k+32 of the 256-byte `a.qs` are readable.
                let av = unsafe { _mm256_loadu_si256(a.qs[32 * k..].as_ptr().cast()) };
                let p16 = _mm256_maddubs_epi16(q6_chunk(w, k), av);
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(w.scales[2 * k + 1] as i16),
                    _mm_set1_epi16(w.scales[2 * k] as i16),
                );
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sc));
            }
            let isum = hsum_epi32(acc) - 32 * q6_offset(w, a);
            let d = _mm256_mul_ps(f16_splat(w.d), _mm256_set1_ps(a.d));
            sum = _mm256_fmadd_ps(d, _mm256_set1_ps(isum as f32), sum);
        }
        // Every lane holds the same sum.
        _mm_cvtss_f32(_mm256_castps256_ps128(sum))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_f16(w: &[[u8; 2]], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let o = i + 8 * k;
                // SAFETY: o + 8 ≤ n ≤ both lengths; F16 pairs are 2 bytes, loads unaligned.
                let (wv, xv) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(w[o..].as_ptr().cast())),
                        _mm256_loadu_ps(x[o..].as_ptr()),
                    )
                };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum_ps(s) + scalar::dot_f16(&w[i..n], &x[i..n])
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn dot_f32_bytes(w: &[[u8; 4]], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let o = i + 8 * k;
                // SAFETY: o + 8 ≤ n ≤ both lengths; the weight load is unaligned.
                let (wv, xv) = unsafe {
                    (
                        _mm256_loadu_ps(w[o..].as_ptr().cast()),
                        _mm256_loadu_ps(x[o..].as_ptr()),
                    )
                };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum_ps(s) + scalar::dot_f32_bytes(&w[i..n], &x[i..n])
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let o = i + 8 * k;
                // SAFETY: o + 8 ≤ n ≤ both lengths.
                let (av, bv) = unsafe {
                    (
                        _mm256_loadu_ps(a[o..].as_ptr()),
                        _mm256_loadu_ps(b[o..].as_ptr()),
                    )
                };
                *s = _mm256_fmadd_ps(av, bv, *s);
            }
            i += 16;
        }
        hsum_ps(_mm256_add_ps(acc[0], acc[1])) + scalar::dot_f32(&a[i..n], &b[i..n])
    }
}
