//! NEON kernels (aarch64). Same signatures as `scalar`.
//!
//! Integer dot products widen i8 × i8 products to i16 (`smull`/`smlal2`) and pairwise-add them
//! into i32 (`sadalp`); where the CPU has the dot-product extension, a second table uses `sdot`
//! for the 32-value block formats. F16 weights use the scalar conversion: Rust's f16 NEON intrinsics are not
//! stable yet.

use std::arch::aarch64::*;

use super::{scalar, Isa, Kernels};
use crate::quant::{act_scale, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8_0};

/// True when the CPU has Advanced SIMD (every aarch64 Linux CPU does).
pub(super) fn detected() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// True when the CPU also has the Armv8.2 dot-product instructions (`sdot`).
pub(super) fn detected_dotprod() -> bool {
    detected() && std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The NEON + dot-product table: `sdot` for Q8_0, Q4_0 and Q4_1. Only
/// [`super::Kernels::for_isa`] calls it, after [`detected_dotprod`].
pub(super) fn table_dotprod() -> Kernels {
    Kernels {
        isa: Isa::NeonDotprod,
        dot_q8_0: dot_q8_0_sdot,
        dot4_q8_0: |w, a| w.map(|w| dot_q8_0_sdot(w, a)),
        gemm4x4_q8_0: |w, a| w.map(|w| a.map(|a| dot_q8_0_sdot(w, a))),
        dot_q4_0: dot_q4_0_sdot,
        dot4_q4_0: |w, a| w.map(|w| dot_q4_0_sdot(w, a)),
        gemm4x4_q4_0: |w, a| w.map(|w| a.map(|a| dot_q4_0_sdot(w, a))),
        dot_q4_1: dot_q4_1_sdot,
        dot4_q4_1: |w, a| w.map(|w| dot_q4_1_sdot(w, a)),
        gemm4x4_q4_1: |w, a| w.map(|w| a.map(|a| dot_q4_1_sdot(w, a))),
        ..table()
    }
}

/// The NEON table. Only [`super::Kernels::for_isa`] calls it, after [`detected`].
pub(super) fn table() -> Kernels {
    Kernels {
        isa: Isa::Neon,
        quantize_q8,
        quantize_q8k,
        dot_q8_0,
        dot4_q8_0: |w, a| w.map(|w| dot_q8_0(w, a)),
        gemm4x4_q8_0: |w, a| w.map(|w| a.map(|a| dot_q8_0(w, a))),
        dot_q4_0,
        dot4_q4_0: |w, a| w.map(|w| dot_q4_0(w, a)),
        gemm4x4_q4_0: |w, a| w.map(|w| a.map(|a| dot_q4_0(w, a))),
        dot_q4_1,
        dot4_q4_1: |w, a| w.map(|w| dot_q4_1(w, a)),
        gemm4x4_q4_1: |w, a| w.map(|w| a.map(|a| dot_q4_1(w, a))),
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
        dot_f16: scalar::dot_f16,
        dot_f32_bytes,
        dot_f32,
        // NEON is part of the aarch64 baseline: the portable form vectorizes to it.
        gelu: super::math::gelu_approx,
        gemm16_f32: super::gemm_f32::tile_fma,
        regroup16: super::gemm_f32::regroup16_portable,
        attend_f32: super::attend::attend_fma,
        attend_f16: super::attend::attend_fma,
    }
}

macro_rules! safe_entry_points {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: reachable only through `table()` / `table_dotprod()`, which
            // `Kernels::for_isa` calls after `detected()` confirmed NEON (and, for the `_sdot`
            // functions, `detected_dotprod()` the dot-product extension); the implementations
            // only read within their slices.
            unsafe { imp::$name($($arg),*) }
        }
    )*};
}

safe_entry_points! {
    quantize_q8(x: &[f32], out: &mut [BlockQ8Act]);
    quantize_q8k(x: &[f32], out: &mut [BlockQ8K]);
    dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32;
    dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32;
    dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32;
    dot_q8_0_sdot(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32;
    dot_q4_0_sdot(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32;
    dot_q4_1_sdot(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32;
    dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32;
    dot_f32_bytes(w: &[[u8; 4]], x: &[f32]) -> f32;
    dot_f32(a: &[f32], b: &[f32]) -> f32;
}

mod imp {
    use super::*;

    #[inline]
    fn f16(bits: [u8; 2]) -> f32 {
        half::f16::from_le_bytes(bits).to_f32()
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn amax(x: &[f32]) -> f32 {
        let mut m = vdupq_n_f32(0.0);
        for c in x.chunks_exact(4) {
            // SAFETY: `c` is exactly 4 readable floats.
            m = vmaxq_f32(m, vabsq_f32(unsafe { vld1q_f32(c.as_ptr()) }));
        }
        vmaxvq_f32(m)
    }

    /// Quantizes 16 floats with inverse scale `id` (round to nearest, ties to even).
    #[inline]
    #[target_feature(enable = "neon")]
    fn quantize16(x: &[f32], id: f32, out: &mut [i8]) -> i32 {
        let mut q = [vdupq_n_s32(0); 4];
        for (k, v) in q.iter_mut().enumerate() {
            // SAFETY: `x` has 16 values.
            *v = vcvtnq_s32_f32(vmulq_n_f32(unsafe { vld1q_f32(x[4 * k..].as_ptr()) }, id));
        }
        let h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
        let h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
        let b = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
        // SAFETY: `out` has 16 writable bytes.
        unsafe { vst1q_s8(out.as_mut_ptr(), b) };
        // The sum of the stored (saturated) quants, whatever the input held.
        i32::from(vaddlvq_s8(b))
    }

    #[target_feature(enable = "neon")]
    pub(super) fn quantize_q8(x: &[f32], out: &mut [BlockQ8Act]) {
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
            let (d, id) = act_scale(amax(xs));
            let (lo, hi) = b.qs.split_at_mut(16);
            b.isum = quantize16(&xs[..16], id, lo) + quantize16(&xs[16..], id, hi);
            b.d = d;
        }
    }

    #[target_feature(enable = "neon")]
    pub(super) fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(256)) {
            let (d, id) = act_scale(amax(xs));
            for (g, (xc, qc)) in xs
                .chunks_exact(16)
                .zip(b.qs.chunks_exact_mut(16))
                .enumerate()
            {
                b.bsums[g] = quantize16(xc, id, qc) as i16;
            }
            b.d = d;
        }
    }

    /// Σ w·a over 16 + 16 signed bytes, as 4 i32 lanes. Each i16 lane adds two products of
    /// magnitude ≤ 128·127, so it cannot overflow.
    #[inline]
    #[target_feature(enable = "neon")]
    fn idot32(w0: int8x16_t, w1: int8x16_t, a0: int8x16_t, a1: int8x16_t) -> int32x4_t {
        let p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(a0)), w0, a0);
        let p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(a1)), w1, a1);
        vpadalq_s16(vpaddlq_s16(p0), p1)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn load_act(a: &[i8]) -> (int8x16_t, int8x16_t) {
        // SAFETY: `a` has at least 32 readable bytes (a 32-byte block or a 32-byte chunk).
        unsafe { (vld1q_s8(a.as_ptr()), vld1q_s8(a[16..].as_ptr())) }
    }

    /// The 32 nibbles of a Q4 block as signed bytes 0..15: values 0..15, then 16..31.
    #[inline]
    #[target_feature(enable = "neon")]
    fn nibbles(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
        // SAFETY: `qs` is exactly 16 readable bytes.
        let q = unsafe { vld1q_u8(qs.as_ptr()) };
        (
            vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))),
            vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
        )
    }

    /// The Q8_0, Q4_0 and Q4_1 dot products over an integer primitive `$idot` (32 signed byte
    /// pairs → 4 i32 lanes): once with `smull`/`sadalp`, once with `sdot`.
    macro_rules! q8_family {
        ($feats:literal, $idot:ident, $q8_0:ident, $q4_0:ident, $q4_1:ident) => {
            #[target_feature(enable = $feats)]
            pub(super) fn $q8_0(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> f32 {
                let mut acc = vdupq_n_f32(0.0);
                for (w, a) in w.iter().zip(a) {
                    let (w0, w1) = load_act(&w.qs);
                    let (a0, a1) = load_act(&a.qs);
                    let p = vcvtq_f32_s32($idot(w0, w1, a0, a1));
                    acc = vfmaq_n_f32(acc, p, f16(w.d) * a.d);
                }
                vaddvq_f32(acc)
            }

            #[target_feature(enable = $feats)]
            pub(super) fn $q4_0(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> f32 {
                let mut acc = vdupq_n_f32(0.0);
                let mut offset = 0.0;
                for (w, a) in w.iter().zip(a) {
                    let (n0, n1) = nibbles(&w.qs);
                    let (a0, a1) = load_act(&a.qs);
                    let d = f16(w.d) * a.d;
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32($idot(n0, n1, a0, a1)), d);
                    offset += d * (8 * a.isum) as f32;
                }
                vaddvq_f32(acc) - offset
            }

            #[target_feature(enable = $feats)]
            pub(super) fn $q4_1(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> f32 {
                let mut acc = vdupq_n_f32(0.0);
                let mut offset = 0.0;
                for (w, a) in w.iter().zip(a) {
                    let (n0, n1) = nibbles(&w.qs);
                    let (a0, a1) = load_act(&a.qs);
                    let d = f16(w.d) * a.d;
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32($idot(n0, n1, a0, a1)), d);
                    offset += f16(w.m) * a.d * a.isum as f32;
                }
                vaddvq_f32(acc) + offset
            }
        };
    }

    q8_family!("neon", idot32, dot_q8_0, dot_q4_0, dot_q4_1);
    q8_family!(
        "neon,dotprod",
        idot32_sdot,
        dot_q8_0_sdot,
        dot_q4_0_sdot,
        dot_q4_1_sdot
    );

    /// Σ w·a over 16 + 16 signed bytes as 4 i32 lanes, with `sdot` (Armv8.2 dot product).
    /// Rust's `vdotq_s32` is not stable yet, so the instruction is written out.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    fn idot32_sdot(w0: int8x16_t, w1: int8x16_t, a0: int8x16_t, a1: int8x16_t) -> int32x4_t {
        let mut acc = vdupq_n_s32(0);
        // SAFETY: `sdot` only reads and writes the named vector registers; the function's
        // `dotprod` target feature (checked at runtime before the table is built) makes the
        // instruction available.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {w0:v}.16b, {a0:v}.16b",
                "sdot {acc:v}.4s, {w1:v}.16b, {a1:v}.16b",
                acc = inout(vreg) acc,
                w0 = in(vreg) w0,
                a0 = in(vreg) a0,
                w1 = in(vreg) w1,
                a1 = in(vreg) a1,
                options(pure, nomem, nostack),
            );
        }
        acc
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let m4 = vdupq_n_u8(0x0F);
        let m3 = vdupq_n_u8(3);
        let mut sum = 0.0;
        for (w, a) in w.iter().zip(a) {
            let mut isum = 0i32;
            for k in 0..8 {
                let (h, j0) = (k / 4, 32 * (k % 4));
                // SAFETY: 64h + j0 % 64 + 32 ≤ 128 = ql.len(); 32h + 32 ≤ 64 = qh.len().
                let (ql0, ql1, qh0, qh1) = unsafe {
                    let ql = &w.ql[64 * h + j0 % 64..];
                    let qh = &w.qh[32 * h..];
                    (
                        vld1q_u8(ql.as_ptr()),
                        vld1q_u8(ql[16..].as_ptr()),
                        vld1q_u8(qh.as_ptr()),
                        vld1q_u8(qh[16..].as_ptr()),
                    )
                };
                let (lo0, lo1) = if j0 < 64 {
                    (vandq_u8(ql0, m4), vandq_u8(ql1, m4))
                } else {
                    (vshrq_n_u8::<4>(ql0), vshrq_n_u8::<4>(ql1))
                };
                let shift = vdupq_n_s8(-(2 * (k % 4) as i8));
                let hi0 = vandq_u8(vshlq_u8(qh0, shift), m3);
                let hi1 = vandq_u8(vshlq_u8(qh1, shift), m3);
                let q0 = vreinterpretq_s8_u8(vorrq_u8(lo0, vshlq_n_u8::<4>(hi0)));
                let q1 = vreinterpretq_s8_u8(vorrq_u8(lo1, vshlq_n_u8::<4>(hi1)));
                let (a0, a1) = load_act(&a.qs[32 * k..]);
                // One group of 16 values per register pair: sum each group separately.
                let g0 = vmlal_high_s8(vmull_s8(vget_low_s8(q0), vget_low_s8(a0)), q0, a0);
                let g1 = vmlal_high_s8(vmull_s8(vget_low_s8(q1), vget_low_s8(a1)), q1, a1);
                isum += w.scales[2 * k] as i32 * vaddlvq_s16(g0);
                isum += w.scales[2 * k + 1] as i32 * vaddlvq_s16(g1);
            }
            let offset: i32 = w
                .scales
                .iter()
                .zip(&a.bsums)
                .map(|(&s, &b)| s as i32 * b as i32)
                .sum();
            sum += f16(w.d) * a.d * (isum - 32 * offset) as f32;
        }
        sum
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dot_f32_bytes(w: &[[u8; 4]], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let o = i + 4 * k;
                // SAFETY: o + 4 ≤ n ≤ both lengths; vld1q_u8 has no alignment requirement.
                let (wv, xv) = unsafe {
                    (
                        vreinterpretq_f32_u8(vld1q_u8(w[o..].as_ptr().cast())),
                        vld1q_f32(x[o..].as_ptr()),
                    )
                };
                *s = vfmaq_f32(*s, wv, xv);
            }
            i += 16;
        }
        let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        vaddvq_f32(s) + scalar::dot_f32_bytes(&w[i..n], &x[i..n])
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [vdupq_n_f32(0.0); 2];
        let mut i = 0;
        while i + 8 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let o = i + 4 * k;
                // SAFETY: o + 4 ≤ n ≤ both lengths.
                let (av, bv) = unsafe { (vld1q_f32(a[o..].as_ptr()), vld1q_f32(b[o..].as_ptr())) };
                *s = vfmaq_f32(*s, av, bv);
            }
            i += 8;
        }
        vaddvq_f32(vaddq_f32(acc[0], acc[1])) + scalar::dot_f32(&a[i..n], &b[i..n])
    }
}
