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
use super::gemm_f32::COLS;
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
        // Matmul runs batches on the panels below; the 4 × 4 tiles are four-row calls.
        gemm4x4_q8_0: |w, a| avx2::transpose(a.map(|a| dot4_q8_0(w, a))),
        dot_q4_0,
        dot4_q4_0,
        gemm4x4_q4_0: |w, a| avx2::transpose(a.map(|a| dot4_q4_0(w, a))),
        dot4_q4_1: |w, a| w.map(|w| dot_q4_1(w, a)),
        gemm4x4_q4_1: |w, a| w.map(|w| a.map(|a| dot_q4_1(w, a))),
        dot_q4_1,
        dot_q4_0_quad: Some(super::avx512_interleaved::dot_q4_0_quad),
        gemm16: Some(super::avx512_interleaved::gemm16),
        gemm16_rows_q8_0: Some(super::avx512_interleaved::gemm16_rows_q8_0),
        panel_q8_0: Some(super::avx512_interleaved::panel_q8_0),
        panel_q4_0: Some(super::avx512_interleaved::panel_q4_0),
        panel_q4_1: Some(super::avx512_interleaved::panel_q4_1),
        dot_q6_k,
        dot4_q6_k: |w, a| w.map(|w| dot_q6_k(w, a)),
        gemm4x4_q6_k,
        // 512-bit float FMAs run as two 256-bit halves on Zen 4: AVX2's float dots do as well.
        dot_f16: avx2::dot_f16,
        dot_f32_bytes: avx2::dot_f32_bytes,
        dot_f32: avx2::dot_f32,
        gelu,
        gemm16_f32,
        regroup16,
        attend_f32,
        attend_f16,
    }
}

super::attend_entries!("avx2,fma,f16c,avx512f,avx512bw,avx512vl", Attn);

/// The AVX-512 attention hooks: register-blocked scores and weighted values for 64-wide heads
/// (four queries × 64 keys or × 64 dimensions: sixteen accumulators).
struct Attn;

impl super::attend::Widen for Attn {
    const FMA: bool = true;

    #[inline(always)]
    fn f16(src: &[half::f16], dst: &mut [f32]) {
        <avx2::F16c as super::attend::Widen>::f16(src, dst)
    }

    #[inline(always)]
    fn scores64<E: super::attend::KvElem>(
        kt: &[E],
        cap: usize,
        p0: usize,
        n: usize,
        q: [&[f32]; 4],
        nq: usize,
        s: &mut [[f32; 64]; 4],
    ) -> bool {
        assert!(p0 + 64 <= cap && kt.len() >= 64 * cap && q.iter().all(|q| q.len() >= 64));
        assert!((1..=4).contains(&nq), "{nq} queries");
        // SAFETY (all calls): `Attn` is only instantiated inside this level's attention entries,
        // reached after AVX-512 and F16C were detected; every row read, d·cap + p0 .. + 64 at
        // most for d < 64, lies inside `kt` (asserted above).
        let (ptr, size) = match (E::as_f16(kt), E::as_f32(kt)) {
            (Some(kt), _) => (kt.as_ptr().cast::<u8>(), 2),
            (_, Some(kt)) => (kt.as_ptr().cast::<u8>(), 4),
            _ => return false,
        };
        unsafe {
            match nq {
                1 => attn::scores_n::<1>(ptr, size, cap, p0, n, q, s),
                2 => attn::scores_n::<2>(ptr, size, cap, p0, n, q, s),
                3 => attn::scores64::<3, 4>(ptr, size, cap, p0, q, s),
                _ => attn::scores64::<4, 4>(ptr, size, cap, p0, q, s),
            }
        }
        true
    }

    #[inline(always)]
    fn pv64<E: super::attend::KvElem>(
        v: &[E],
        p0: usize,
        n: usize,
        s: &[[f32; 64]; 4],
        nq: usize,
        o: [&mut [f32]; 4],
    ) -> bool {
        assert!(n <= 64 && v.len() >= (p0 + n) * 64 && o.iter().all(|o| o.len() >= 64));
        assert!((1..=4).contains(&nq), "{nq} queries");
        // SAFETY (both calls): as above; rows p0 .. p0 + n of 64 values lie inside `v`.
        let (ptr, size) = match (E::as_f16(v), E::as_f32(v)) {
            (Some(v), _) => (v.as_ptr().cast::<u8>(), 2),
            (_, Some(v)) => (v.as_ptr().cast::<u8>(), 4),
            _ => return false,
        };
        unsafe {
            match nq {
                1 => attn::pv64::<1>(ptr, size, p0, n, s, o),
                2 => attn::pv64::<2>(ptr, size, p0, n, s, o),
                3 => attn::pv64::<3>(ptr, size, p0, n, s, o),
                _ => attn::pv64::<4>(ptr, size, p0, n, s, o),
            }
        }
        true
    }
}

mod attn {
    use std::arch::x86_64::*;

    /// `[f(0), f(1), f(2), f(3)]`, written out: `[0, 1, 2, 3].map(f)` was left as a call per
    /// row of values (seen in a prefill profile).
    #[inline(always)]
    fn four<T>(mut f: impl FnMut(usize) -> T) -> [T; 4] {
        [f(0), f(1), f(2), f(3)]
    }

    /// Sixteen values at `p` (f16 when `size` is 2, f32 when 4) as f32.
    #[inline(always)]
    unsafe fn load16(p: *const u8, size: usize) -> __m512 {
        // SAFETY: the caller guarantees 16 readable values at `p`.
        unsafe {
            if size == 2 {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
            } else {
                _mm512_loadu_ps(p.cast())
            }
        }
    }

    /// `scores64` for the first `n` keys rounded up to 16 (decode reads no more of the keys
    /// than it needs: a new sequence's first block holds few).
    ///
    /// # Safety
    /// As for `scores64`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn scores_n<const NQ: usize>(
        kt: *const u8,
        size: usize,
        cap: usize,
        p0: usize,
        n: usize,
        q: [&[f32]; 4],
        s: &mut [[f32; 64]; 4],
    ) {
        // SAFETY: the caller's contract, which every variant shares.
        unsafe {
            match n.div_ceil(16) {
                0 | 1 => scores64::<NQ, 1>(kt, size, cap, p0, q, s),
                2 => scores64::<NQ, 2>(kt, size, cap, p0, q, s),
                3 => scores64::<NQ, 3>(kt, size, cap, p0, q, s),
                _ => scores64::<NQ, 4>(kt, size, cap, p0, q, s),
            }
        }
    }

    /// See `Widen::scores64`, for the first `NQ` queries and the first 16·`CH` keys. `kt` points
    /// at element 0 of a `size`-byte element array.
    ///
    /// # Safety
    /// AVX-512 F and F16C; elements d·cap + p0 .. + 64 readable for d < 64.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn scores64<const NQ: usize, const CH: usize>(
        kt: *const u8,
        size: usize,
        cap: usize,
        p0: usize,
        q: [&[f32]; 4],
        s: &mut [[f32; 64]; 4],
    ) {
        // One or two queries fill too few accumulators to hide the FMA latency: they take even
        // and odd dimensions into two sets, added at the end.
        let sets = if NQ <= 2 { 2 } else { 1 };
        let mut acc = [[[_mm512_setzero_ps(); CH]; NQ]; 2];
        for d0 in (0..64).step_by(sets) {
            for (h, acc) in acc.iter_mut().enumerate().take(sets) {
                let d = d0 + h;
                let row = kt.wrapping_add((d * cap + p0) * size);
                // SAFETY: 64 elements from `row` are readable (the caller's contract).
                let k: [__m512; CH] = std::array::from_fn(|j| unsafe {
                    load16(row.wrapping_add(16 * j * size), size)
                });
                for (acc, q) in acc.iter_mut().zip(&q) {
                    let qd = _mm512_set1_ps(q[d]);
                    for (a, k) in acc.iter_mut().zip(&k) {
                        *a = _mm512_fmadd_ps(qd, *k, *a);
                    }
                }
            }
        }
        let acc = merge(acc, sets);
        for (s, acc) in s.iter_mut().zip(&acc) {
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: s has room for 64 floats, 16 at 16·j.
                unsafe { _mm512_storeu_ps(s.as_mut_ptr().add(16 * j), *a) };
            }
        }
    }

    /// The first set of accumulators, plus the second when `sets` is 2.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn merge<const NQ: usize, const CH: usize>(
        acc: [[[__m512; CH]; NQ]; 2],
        sets: usize,
    ) -> [[__m512; CH]; NQ] {
        let [mut a, b] = acc;
        if sets == 2 {
            for (a, b) in a.iter_mut().zip(&b) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x = _mm512_add_ps(*x, *y);
                }
            }
        }
        a
    }

    /// See `Widen::pv64`.
    ///
    /// # Safety
    /// AVX-512 F and F16C; rows p0 .. p0 + n of 64 elements readable from `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pv64<const NQ: usize>(
        v: *const u8,
        size: usize,
        p0: usize,
        n: usize,
        s: &[[f32; 64]; 4],
        o: [&mut [f32]; 4],
    ) {
        // As in `scores64`: one or two queries take even and odd positions into two sets.
        let sets = if NQ <= 2 { 2 } else { 1 };
        let mut acc = [[[_mm512_setzero_ps(); 4]; NQ]; 2];
        // SAFETY: each `o[i]` holds at least 64 floats (asserted by the caller).
        acc[0] = std::array::from_fn(|i| {
            four(|j| unsafe { _mm512_loadu_ps(o[i].as_ptr().add(16 * j)) })
        });
        let add_row = |acc: &mut [[__m512; 4]; NQ], j: usize| {
            let row = v.wrapping_add((p0 + j) * 64 * size);
            // SAFETY: row p0 + j is readable (the caller's contract).
            let vr = four(|c| unsafe { load16(row.wrapping_add(16 * c * size), size) });
            for (acc, s) in acc.iter_mut().zip(s) {
                let w = _mm512_set1_ps(s[j]);
                for (a, v) in acc.iter_mut().zip(&vr) {
                    *a = _mm512_fmadd_ps(w, *v, *a);
                }
            }
        };
        let paired = n / sets * sets;
        for j0 in (0..paired).step_by(sets) {
            for (h, acc) in acc.iter_mut().enumerate().take(sets) {
                add_row(acc, j0 + h);
            }
        }
        for j in paired..n {
            add_row(&mut acc[0], j);
        }
        let acc = merge(acc, sets);
        for (o, acc) in o.into_iter().zip(&acc) {
            for (c, a) in acc.iter().enumerate() {
                // SAFETY: `o` holds at least 64 floats.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * c), *a) };
            }
        }
    }
}

/// The float GEMM tile: sixteen rows in one register, sixteen accumulators, each activation
/// value an embedded broadcast from the packed columns.
fn gemm16_f32(w: &[f32], x: &[f32], out: &mut [[f32; 16]; COLS]) {
    #[target_feature(enable = "avx2,fma,avx512f")]
    fn wide(w: &[f32], x: &[f32], out: &mut [[f32; 16]; COLS]) {
        let n = (w.len() / 16).min(x.len() / COLS);
        let mut acc = [_mm512_setzero_ps(); COLS];
        for k in 0..n {
            // SAFETY: 16·k + 16 ≤ w.len() and COLS·k + COLS ≤ x.len(), since k < n.
            let (wk, xk) = unsafe {
                (
                    _mm512_loadu_ps(w.as_ptr().add(16 * k)),
                    x.as_ptr().add(COLS * k),
                )
            };
            for (c, a) in acc.iter_mut().enumerate() {
                // SAFETY: c < COLS, inside the k-th group (above).
                let v = unsafe { *xk.add(c) };
                *a = _mm512_fmadd_ps(wk, _mm512_set1_ps(v), *a);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            // SAFETY: `o` has room for 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
        }
    }
    // SAFETY: reachable only through `table()`, after `detected()` confirmed AVX-512 and FMA.
    unsafe { wide(w, x, out) }
}

/// Sixteen rows to k-major order, sixteen values of each at a time: a 16 × 16 transpose in
/// registers (pairs, then quads, then 128-bit lanes twice), scalar for the last n mod 16.
fn regroup16(rows: [&[f32]; 16], n: usize, dst: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,avx512f")]
    fn wide(rows: [&[f32]; 16], n: usize, dst: &mut [f32]) {
        assert!(
            dst.len() >= n * 16 && rows.iter().all(|r| r.len() >= n),
            "regroup shape"
        );
        let whole = n / 16 * 16;
        for k0 in (0..whole).step_by(16) {
            // SAFETY: k0 + 16 ≤ n ≤ every row's length (asserted above).
            let r: [__m512; 16] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(rows[i].as_ptr().add(k0)) });
            // t[2j], t[2j + 1]: rows 2j and 2j + 1 interleaved (low and high pairs of each lane).
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // u[4j + m]: in lane L, rows 4j..4j + 4 at column 4L + m.
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (j, m) = (i / 4, i % 4);
                let a = _mm512_castps_pd(t[4 * j + m / 2]);
                let b = _mm512_castps_pd(t[4 * j + m / 2 + 2]);
                _mm512_castpd_ps(if m % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                })
            });
            for m in 0..4 {
                let x0 = _mm512_shuffle_f32x4::<0x44>(u[m], u[4 + m]);
                let x1 = _mm512_shuffle_f32x4::<0xee>(u[m], u[4 + m]);
                let y0 = _mm512_shuffle_f32x4::<0x44>(u[8 + m], u[12 + m]);
                let y1 = _mm512_shuffle_f32x4::<0xee>(u[8 + m], u[12 + m]);
                let out = [
                    _mm512_shuffle_f32x4::<0x88>(x0, y0),
                    _mm512_shuffle_f32x4::<0xdd>(x0, y0),
                    _mm512_shuffle_f32x4::<0x88>(x1, y1),
                    _mm512_shuffle_f32x4::<0xdd>(x1, y1),
                ];
                for (l, v) in out.into_iter().enumerate() {
                    // SAFETY: column k0 + 4l + m < n, so its 16 values lie inside `dst`.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add((k0 + 4 * l + m) * 16), v) };
                }
            }
        }
        for (k, d) in dst.chunks_exact_mut(16).enumerate().take(n).skip(whole) {
            for (v, r) in d.iter_mut().zip(&rows) {
                *v = r[k];
            }
        }
    }
    // SAFETY: reachable only through `table()`, after `detected()` confirmed AVX-512.
    unsafe { wide(rows, n, dst) }
}

/// GELU at AVX-512 width.
fn gelu(x: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    fn wide(x: &mut [f32]) {
        super::math::gelu_approx(x)
    }
    // SAFETY: reachable only through `table()`, after `detected()` confirmed AVX-512.
    unsafe { wide(x) }
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
    dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32;
    dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8Act]) -> [f32; 4];
    dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32;
    dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32;
    gemm4x4_q6_k(w: [&[BlockQ6K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4];
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

    /// The scales of groups 2k (lanes 0..3) and 2k + 1 (lanes 4..7) in the low halves of i32
    /// lanes (high halves zero), for `vpmaddwd` against four-value sums: each sum is at most
    /// 4 · 63 · 127 in magnitude, so its low half read as i16 is the sum itself, and the
    /// product is exact — one fast multiply instead of `vpmulld`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn q6_scales(w: &BlockQ6K, k: usize) -> __m256i {
        let lo = |s: i8| (s as i16 as u16) as i32;
        _mm256_set_m128i(
            _mm_set1_epi32(lo(w.scales[2 * k + 1])),
            _mm_set1_epi32(lo(w.scales[2 * k])),
        )
    }

    /// Four Q6_K rows × four activation rows: each 32-value chunk of a weight block is unpacked
    /// once and multiplied with the four activations (the single-pair kernel unpacks it per pair).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm4x4_q6_k(w: [&[BlockQ6K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        let n = w
            .iter()
            .map(|r| r.len())
            .chain(a.iter().map(|c| c.len()))
            .min()
            .unwrap_or(0);
        let mut sum = [[0.0f32; 4]; 4];
        for b in 0..n {
            for (r, sr) in sum.iter_mut().enumerate() {
                let wb = &w[r][b];
                let mut acc = [_mm256_setzero_si256(); 4];
                for k in 0..8 {
                    let chunk = q6_chunk(wb, k);
                    let sc = q6_scales(wb, k);
                    for (acc, col) in acc.iter_mut().zip(&a) {
                        // SAFETY: bytes 32k..32k+32 of the 256-byte `qs` are readable.
                        let av = unsafe { _mm256_loadu_si256(col[b].qs[32 * k..].as_ptr().cast()) };
                        let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), chunk, av);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, sc));
                    }
                }
                let dw = f16_splat(wb.d);
                for ((s, acc), col) in sr.iter_mut().zip(&acc).zip(&a) {
                    let ab = &col[b];
                    let isum = hsum_epi32(*acc) - 32 * q6_offset(wb, ab);
                    *s += _mm_cvtss_f32(_mm256_castps256_ps128(dw)) * ab.d * isum as f32;
                }
            }
        }
        sum
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
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, q6_scales(w, k)));
            }
            let isum = hsum_epi32(acc) - 32 * q6_offset(w, a);
            let d = _mm256_mul_ps(f16_splat(w.d), _mm256_set1_ps(a.d));
            sum = _mm256_fmadd_ps(d, _mm256_set1_ps(isum as f32), sum);
        }
        // Every lane holds the same sum.
        _mm_cvtss_f32(_mm256_castps256_ps128(sum))
    }
}
