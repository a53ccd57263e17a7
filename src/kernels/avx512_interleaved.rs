//! AVX-512 VNNI kernels over interleaved activations: panels (four weight rows × up to sixteen
//! activation rows per call) and the batch-1 Q4_0 quad kernel.
//!
//! Each 512-bit accumulator holds sixteen (weight row, activation row) pairs: 128-bit lane r is
//! weight row r, dword c within it is activation row c of a group of four. One `vpdpbusd` adds
//! four products to every pair, so after eight of them each lane holds the whole 32-value block
//! dot of its pair, and the block's scales cost one conversion, one multiply and one FMA per
//! sixteen pairs — the 4 × 4 tiles of `avx512.rs` pay that per pair, and it was their limit.
//! The weight side: four rows' 16-byte chunks sit in the four 128-bit lanes, and `vpshufd`
//! broadcasts dword k within each lane. The activation side comes pre-interleaved
//! ([`BlockQ8x4`]): dword k of four activation rows is 16 contiguous bytes, broadcast to all
//! lanes. Weights stay in their GGUF layout; only the activations are repacked.
//!
//! The quad kernel puts four consecutive Q4_0 blocks of one row in the four 128-bit lanes, so a
//! block costs a quarter of the nibble unpacking, `vpdpbusd`s, conversion and scaling of the
//! one-block-at-a-time kernel; the activations come regrouped to match ([`BlockQ8Quad`]).

use std::arch::x86_64::*;

use super::avx2::imp::PREFETCH_BYTES;
use crate::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ8Act, BlockQ8Quad, BlockQ8_0, BlockQ8x4, BlockW16, W16Kind,
};

/// Weight rows per panel.
const ROWS: usize = 4;

macro_rules! safe_panels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// Four weight rows against `a.len()` (at most four) activation groups.
        pub(super) fn $name(w: [&[$ty]; ROWS], a: &[&[BlockQ8x4]], out: &mut [[f32; 16]; ROWS]) {
            // SAFETY: reachable only through `avx512::table()`, which `Kernels::for_isa` calls
            // after `avx512::detected()` confirmed AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI;
            // the implementations read only within the slices they are given.
            unsafe {
                match a.len() {
                    0 => {}
                    1 => imp::$name::<1>(w, a, out),
                    2 => imp::$name::<2>(w, a, out),
                    3 => imp::$name::<3>(w, a, out),
                    4 => imp::$name::<4>(w, a, out),
                    n => panic!("{n} activation groups: a panel takes at most 4"),
                }
            }
        }
    )*};
}

safe_panels! {
    panel_q8_0: BlockQ8_0;
    panel_q4_0: BlockQ4_0;
    panel_q4_1: BlockQ4_1;
}

/// Σ w·a over a Q4_0 row of whole quads (`w.len() == 4 · a.len()`, else panics).
pub(super) fn dot_q4_0_quad(w: &[BlockQ4_0], a: &[BlockQ8Quad]) -> f32 {
    assert_eq!(
        w.len(),
        4 * a.len(),
        "four weight blocks per activation quad"
    );
    // SAFETY: as for the panels above: reachable only through `avx512::table()` after the CPU
    // features were confirmed; the implementation reads only within the slices it is given.
    unsafe { imp::dot_q4_0_quad(w, a) }
}

/// Sixteen regrouped weight rows against eight activation rows.
pub(super) fn gemm16(
    kind: W16Kind,
    w: &[BlockW16],
    a: [&[BlockQ8Act]; 8],
    out: &mut [[f32; 16]; 8],
) {
    // SAFETY: as for the panels above: reachable only through `avx512::table()` after the CPU
    // features were confirmed; the implementation reads only within the slices it is given.
    unsafe {
        match kind {
            W16Kind::Q8_0 => imp::gemm16::<0>(w, a, out),
            W16Kind::Q4_0 => imp::gemm16::<1>(w, a, out),
            W16Kind::Q4_1 => imp::gemm16::<2>(w, a, out),
        }
    }
}

/// Sixteen consecutive Q8_0 rows straight from the file against groups of eight activation rows
/// (small batches); see [`crate::kernels::Gemm16RowsFn`].
pub(super) fn gemm16_rows_q8_0(
    w: &[BlockQ8_0],
    nb: usize,
    a: &[BlockQ8Act],
    out: &mut [[[f32; 16]; 8]],
) {
    assert_eq!(w.len(), 16 * nb, "sixteen rows of {nb} blocks");
    assert_eq!(
        a.len(),
        8 * out.len() * nb,
        "eight activation rows per group"
    );
    // SAFETY: as for the panels above: reachable only through `avx512::table()` after the CPU
    // features were confirmed; the lengths asserted above are the implementation's contract.
    unsafe {
        match out.len() {
            0 => {}
            1 => imp::gemm16_rows_q8_0::<1>(w, nb, a, out),
            2 => imp::gemm16_rows_q8_0::<2>(w, nb, a, out),
            3 => imp::gemm16_rows_q8_0::<3>(w, nb, a, out),
            4 => imp::gemm16_rows_q8_0::<4>(w, nb, a, out),
            n => panic!("{n} activation groups: the kernel takes at most 4"),
        }
    }
}

mod imp {
    use super::*;

    /// Four 16-byte chunks, one per 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load4(p: [&[u8; 16]; ROWS]) -> __m512i {
        // SAFETY: each reference covers the 16 bytes loaded from it.
        let l = p.map(|p| unsafe { _mm_loadu_si128(p.as_ptr().cast()) });
        let v = _mm512_castsi128_si512(l[0]);
        let v = _mm512_inserti32x4::<1>(v, l[1]);
        let v = _mm512_inserti32x4::<2>(v, l[2]);
        _mm512_inserti32x4::<3>(v, l[3])
    }

    /// Dwords 0..3 of each 128-bit lane, each broadcast across its lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn dwords(x: __m512i) -> [__m512i; 4] {
        [
            _mm512_shuffle_epi32::<0x00>(x),
            _mm512_shuffle_epi32::<0x55>(x),
            _mm512_shuffle_epi32::<0xAA>(x),
            _mm512_shuffle_epi32::<0xFF>(x),
        ]
    }

    /// The eight dword vectors of a block: k = 0..3 from `lo`, 4..7 from `hi`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn eight(lo: __m512i, hi: __m512i) -> [__m512i; 8] {
        let (l, h) = (dwords(lo), dwords(hi));
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    }

    /// Four f16 row values, each broadcast across its row's 128-bit lane. The halves are
    /// gathered in a general register, so only three vector instructions are spent.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn row_f16(v: [[u8; 2]; ROWS]) -> __m512 {
        let f = _mm_cvtph_ps(_mm_cvtsi64_si128(f16x4(v) as i64));
        let idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f))
    }

    /// Four f16 values as the bits of one u64 (value i in bits 16i..16i + 16), gathered in a
    /// general register.
    #[inline]
    fn f16x4(v: [[u8; 2]; 4]) -> u64 {
        v.iter().enumerate().fold(0, |q, (i, h)| {
            q | (u16::from_le_bytes(*h) as u64) << (16 * i)
        })
    }

    /// The unsigned dword vectors of four Q4 rows' blocks (Q4_0 and Q4_1 alike).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn nibble_dwords(qs: [&[u8; 16]; ROWS]) -> [__m512i; 8] {
        let low = _mm512_set1_epi8(0x0F);
        let x = load4(qs);
        eight(
            _mm512_and_si512(x, low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(x), low),
        )
    }

    /// Four i32 of the activation group, repeated in every 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn bcast_i(v: &[i32; 4]) -> __m512i {
        // SAFETY: `v` covers the 16 bytes loaded.
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
    }

    /// Four f32 of the activation group, repeated in every 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn bcast_f(v: &[f32; 4]) -> __m512 {
        // SAFETY: `v` covers the 16 bytes loaded.
        _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(v.as_ptr()) })
    }

    /// Quants 4k..4k+4 of the group's four rows, repeated in every 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn bcast_q(p: &BlockQ8x4, k: usize) -> __m512i {
        let q: &[i8; 16] = p.qs[16 * k..][..16].try_into().expect("16 bytes");
        // SAFETY: `q` covers the 16 bytes loaded.
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(q.as_ptr().cast()) })
    }

    /// 64 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load64<T: bytemuck::Pod>(v: &[T; 16]) -> __m512i {
        const { assert!(std::mem::size_of::<T>() == 4) };
        // SAFETY: `v` covers the 64 bytes loaded.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    }

    /// Four blocks a step, one per 128-bit lane. One accumulator: its FMA latency is well under
    /// the time four blocks take.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn dot_q4_0_quad(w: &[BlockQ4_0], a: &[BlockQ8Quad]) -> f32 {
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = _mm512_setzero_ps();
        for (w, a) in w.chunks_exact(4).zip(a) {
            let p = w.as_ptr().cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES));
            let x = load4([&w[0].qs, &w[1].qs, &w[2].qs, &w[3].qs]);
            let lo = _mm512_and_si512(x, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
            // SAFETY: `a.lo` and `a.hi` are 64 readable bytes each.
            let (al, ah) = unsafe {
                (
                    _mm512_loadu_si512(a.lo.as_ptr().cast()),
                    _mm512_loadu_si512(a.hi.as_ptr().cast()),
                )
            };
            let s = _mm512_dpbusd_epi32(load64(&a.bias), lo, al);
            let s = _mm512_dpbusd_epi32(s, hi, ah);
            let dw = row_f16([w[0].d, w[1].d, w[2].d, w[3].d]);
            // SAFETY: `a.d` is 16 readable floats.
            let da = unsafe { _mm512_loadu_ps(a.d.as_ptr()) };
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), acc);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// The 16 × 8 tile: lanes are the sixteen weight rows; each activation dword is broadcast
    /// to all of them (an embedded broadcast, no shuffle), so the eight columns' chains of eight
    /// `vpdpbusd` run side by side. `KIND`: 0 Q8_0 (offset 128), 1 Q4_0 (offset 8), 2 Q4_1.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm16<const KIND: u8>(
        w: &[BlockW16],
        a: [&[BlockQ8Act]; 8],
        out: &mut [[f32; 16]; 8],
    ) {
        let n = a.iter().map(|c| c.len()).fold(w.len(), usize::min);
        let a = a.map(|c| &c[..n]);
        let mut acc = [_mm512_setzero_ps(); 8];
        for (b, wb) in w[..n].iter().enumerate() {
            let wk: [__m512i; 8] = std::array::from_fn(|k| {
                // SAFETY: `wb.q[k]` is 64 readable bytes.
                unsafe { _mm512_loadu_si512(wb.q[k].as_ptr().cast()) }
            });
            // SAFETY: `wb.d` and `wb.m` are 16 readable floats each.
            let (dw, wm) = unsafe {
                (
                    _mm512_loadu_ps(wb.d.as_ptr()),
                    _mm512_loadu_ps(wb.m.as_ptr()),
                )
            };
            let ab: [&BlockQ8Act; 8] = std::array::from_fn(|c| &a[c][b]);
            // k outer, columns inner: eight independent `vpdpbusd`s back to back.
            let mut s: [__m512i; 8] = std::array::from_fn(|c| match KIND {
                0 => _mm512_set1_epi32(-128 * ab[c].isum),
                1 => _mm512_set1_epi32(-8 * ab[c].isum),
                _ => _mm512_setzero_si512(),
            });
            for (k, wk) in wk.iter().enumerate() {
                for (s, ab) in s.iter_mut().zip(&ab) {
                    let q = &ab.qs[4 * k..4 * k + 4];
                    let dword =
                        i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                    *s = _mm512_dpbusd_epi32(*s, *wk, _mm512_set1_epi32(dword));
                }
            }
            for c in 0..8 {
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(ab[c].d));
                acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), scale, acc[c]);
                if KIND == 2 {
                    let ds = _mm512_set1_ps(ab[c].d * ab[c].isum as f32);
                    acc[c] = _mm512_fmadd_ps(wm, ds, acc[c]);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            // SAFETY: `o` has room for the sixteen floats stored.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
    }

    /// The 16 × 8 tiles of `gemm16` with the weights regrouped in registers instead of in a
    /// stored panel, once per block for all `G` groups of activation rows: rows r and r + 8 share
    /// a vector, an 8 × 8 dword transpose inside each 256-bit half (two rounds of unpacks) and
    /// one two-source permute per output give, for each dword k of the block, the vector whose
    /// lane r is row r's dword k. Rows are addressed from one pointer and their stride, so the
    /// loop keeps few addresses in registers.
    ///
    /// # Safety
    /// The level's CPU features; `w` holds 16 × nb blocks and `a` holds 8·G × nb.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn gemm16_rows_q8_0<const G: usize>(
        w: &[BlockQ8_0],
        nb: usize,
        a: &[BlockQ8Act],
        out: &mut [[[f32; 16]; 8]],
    ) {
        const BLOCK: usize = std::mem::size_of::<BlockQ8_0>();
        let stride = nb * BLOCK;
        let base = w.as_ptr().cast::<u8>();
        let flip = _mm512_set1_epi8(-128);
        // Qwords of (rows 0-3 | rows 4-7) for the low and the high dword of each pair.
        let lo_idx = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
        let hi_idx = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
        let mut acc = [[_mm512_setzero_ps(); 8]; G];
        for b in 0..nb {
            let blk = base.wrapping_add(b * BLOCK);
            // The same block of the next sixteen rows, non-temporal (rows of a tensor are
            // contiguous; a prefetch past the mapping is harmless). Weights are read once per
            // step: kept out of the outer caches they leave room for the KV caches that
            // attention reads next (measured on GPT-2 124M, 16 sequences, 2 threads: +8–18 %
            // over a prefetch into L2, more the longer the contexts). Into L1, 32 rows ahead,
            // every other block or in file order all lost 10–25 % to the prefetch into L2.
            for r in 0..16 {
                _mm_prefetch::<_MM_HINT_NTA>(blk.wrapping_add((16 + r) * stride).cast());
            }
            // SAFETY: row r's block b starts at blk + r·stride, inside `w` (16 × nb blocks);
            // its quants are the 32 bytes after the 2-byte scale.
            let quants =
                |r: usize| unsafe { _mm256_loadu_si256(blk.add(r * stride + 2).cast::<__m256i>()) };
            let z: [__m512i; 8] = std::array::from_fn(|r| {
                let lo = _mm512_castsi256_si512(quants(r));
                _mm512_xor_si512(_mm512_inserti64x4::<1>(lo, quants(r + 8)), flip)
            });
            let t: [__m512i; 8] = std::array::from_fn(|i| {
                let (x, y) = (z[i & !1], z[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(x, y)
                } else {
                    _mm512_unpackhi_epi32(x, y)
                }
            });
            // u[m]: dwords (m, m + 4) of rows 0-3 / 8-11; u[4 + m]: of rows 4-7 / 12-15.
            let u: [__m512i; 8] = std::array::from_fn(|i| {
                let base = 4 * (i / 4);
                let (x, y) = match i % 4 {
                    0 | 1 => (t[base], t[base + 2]),
                    _ => (t[base + 1], t[base + 3]),
                };
                if i % 2 == 0 {
                    _mm512_unpacklo_epi64(x, y)
                } else {
                    _mm512_unpackhi_epi64(x, y)
                }
            });
            let wk: [__m512i; 8] = std::array::from_fn(|k| {
                let idx = if k < 4 { lo_idx } else { hi_idx };
                _mm512_permutex2var_epi64(u[k % 4], idx, u[4 + k % 4])
            });
            // SAFETY: as for `quants`: the 2-byte scale of row r's block b.
            let scale = |r: usize| unsafe { blk.add(r * stride).cast::<[u8; 2]>().read() };
            let d: [u64; 4] =
                std::array::from_fn(|j| f16x4(std::array::from_fn(|i| scale(4 * j + i))));
            let halves = _mm256_set_epi64x(d[3] as i64, d[2] as i64, d[1] as i64, d[0] as i64);
            let dw = _mm512_cvtph_ps(halves);
            // The same chains as `gemm16`'s, written out again on purpose: a shared
            // `#[target_feature]` helper for them was not inlined and cost a quarter of prompt
            // speed (measured: pp512 2566–2731 against 3509–3551 t/s). Two groups (9 to 16
            // rows: batched decode, a prompt chunk beside decoding requests) run as sixteen
            // chains side by side, each weight vector feeding all of them: measured in cache on
            // one thread, 628 against 566 GOP/s at 16 rows; pairing three or four groups the
            // same way lost 10–16 %, so they keep eight chains a group.
            macro_rules! chains {
                ($n:literal, $g:expr) => {{
                    let g: usize = $g;
                    // SAFETY: activation row 8g + c's block b, inside `a` (8·G × nb blocks).
                    let ab: [&BlockQ8Act; $n] =
                        std::array::from_fn(|c| unsafe { a.get_unchecked((8 * g + c) * nb + b) });
                    let mut s: [__m512i; $n] =
                        std::array::from_fn(|c| _mm512_set1_epi32(-128 * ab[c].isum));
                    for (k, wk) in wk.iter().enumerate() {
                        for (s, ab) in s.iter_mut().zip(&ab) {
                            let q = &ab.qs[4 * k..4 * k + 4];
                            let dword = i32::from_le_bytes([
                                q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8,
                            ]);
                            *s = _mm512_dpbusd_epi32(*s, *wk, _mm512_set1_epi32(dword));
                        }
                    }
                    for c in 0..$n {
                        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(ab[c].d));
                        let acc = &mut acc[g + c / 8][c % 8];
                        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), scale, *acc);
                    }
                }};
            }
            if G == 2 {
                chains!(16, 0);
            } else {
                for g in 0..G {
                    chains!(8, g);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (o, acc) in o.iter_mut().zip(acc) {
                // SAFETY: `o` has room for the sixteen floats stored.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *acc) };
            }
        }
    }

    /// The panel loop. `$prep` turns the four rows' blocks `$wb` into the eight unsigned dword
    /// vectors; the packed bias starts each block's lanes; Q4_1 adds m·(da·Σa) per block.
    macro_rules! panel {
        ($w:expr, $a:expr, $out:expr, $g:ident, |$wb:ident| $prep:expr $(, min: $min:ident)?) => {{
            let (w, a, out) = ($w, $a, $out);
            let n = w
                .iter()
                .map(|r| r.len())
                .chain(a.iter().map(|g| g.len()))
                .min()
                .unwrap_or(0);
            let mut acc = [_mm512_setzero_ps(); $g];
            for b in 0..n {
                // Four rows advance side by side through a window of four rows of the matrix,
                // which the hardware prefetcher does not run ahead of: ask for the same block of
                // the next four rows (rows of a GGUF tensor are contiguous; a prefetch past the
                // end of the mapping is harmless).
                for row in w.iter() {
                    let p = row.as_ptr().wrapping_add(b).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(4 * std::mem::size_of_val(*row)));
                }
                let $wb = [&w[0][b], &w[1][b], &w[2][b], &w[3][b]];
                let wk: [__m512i; 8] = $prep;
                let dw = row_f16($wb.map(|x| x.d));
                $(let wm = row_f16($wb.map(|x| x.$min));)?
                let p: [&BlockQ8x4; $g] = std::array::from_fn(|g| &a[g][b]);
                // k outer, groups inner: the groups' chains of `vpdpbusd` run side by side.
                let mut s: [__m512i; $g] = std::array::from_fn(|g| bcast_i(&p[g].bias));
                for (k, wk) in wk.iter().enumerate() {
                    for (s, p) in s.iter_mut().zip(&p) {
                        *s = _mm512_dpbusd_epi32(*s, *wk, bcast_q(p, k));
                    }
                }
                for g in 0..$g {
                    let scale = _mm512_mul_ps(dw, bcast_f(&p[g].d));
                    acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[g]), scale, acc[g]);
                    $(let _ = stringify!($min);
                    acc[g] = _mm512_fmadd_ps(wm, bcast_f(&p[g].ds), acc[g]);)?
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                let mut v = [0.0f32; 16];
                // SAFETY: `v` has room for the sixteen floats stored.
                unsafe { _mm512_storeu_ps(v.as_mut_ptr(), *acc) };
                for (r, o) in out.iter_mut().enumerate() {
                    o[4 * g..4 * g + 4].copy_from_slice(&v[4 * r..4 * r + 4]);
                }
            }
        }};
    }

    /// Q8_0: quants + 128 (unsigned), bias −128·Σa.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn panel_q8_0<const G: usize>(
        w: [&[BlockQ8_0]; ROWS],
        a: &[&[BlockQ8x4]],
        out: &mut [[f32; 16]; ROWS],
    ) {
        let flip = _mm512_set1_epi8(-128);
        panel!(w, a, out, G, |wb| {
            let half = |h: usize| {
                load4(wb.map(|x| -> &[u8; 16] {
                    let halves: &[[u8; 16]; 2] = bytemuck::cast_ref(&x.qs);
                    &halves[h]
                }))
            };
            eight(
                _mm512_xor_si512(half(0), flip),
                _mm512_xor_si512(half(1), flip),
            )
        })
    }

    /// Q4_0: nibbles n = q + 8 (unsigned), bias −8·Σa.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn panel_q4_0<const G: usize>(
        w: [&[BlockQ4_0]; ROWS],
        a: &[&[BlockQ8x4]],
        out: &mut [[f32; 16]; ROWS],
    ) {
        panel!(w, a, out, G, |wb| nibble_dwords(wb.map(|x| &x.qs)))
    }

    /// Q4_1: nibbles (unsigned), bias 0, plus the minimum term.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn panel_q4_1<const G: usize>(
        w: [&[BlockQ4_1]; ROWS],
        a: &[&[BlockQ8x4]],
        out: &mut [[f32; 16]; ROWS],
    ) {
        panel!(w, a, out, G, |wb| nibble_dwords(wb.map(|x| &x.qs)), min: m)
    }
}
