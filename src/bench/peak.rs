//! The core's integer dot-product peak: the roofline for prefill GEMMs, measured rather than taken
//! from a datasheet (the same instruction can run at half rate on one microarchitecture and full
//! rate on the next, e.g. 512-bit `vpdpbusd` on AMD Zen 4 versus Zen 5).

/// int8 multiply-adds × 2 per second (10⁹) that every thread of the rayon pool reaches together
/// with independent chains of the widest dot-product instruction the ISA level `isa` uses, best
/// of `reps` runs of about 50 ms; `None` where qgpt has no such loop (levels other than AVX-512).
pub fn int8_peak_gop_s(isa: crate::kernels::Isa, reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if isa == crate::kernels::Isa::Avx512 && isa.is_available() {
        use rayon::prelude::*;
        use std::time::Instant;

        const ITERS: usize = 4_000_000;
        let threads = rayon::current_num_threads();
        let mut best = f64::MAX;
        for _ in 0..reps.max(1) + 1 {
            let t = Instant::now();
            let sink: i64 = (0..threads)
                .into_par_iter()
                // SAFETY: AVX-512 F/BW and VNNI were confirmed by `is_available` above.
                .map(|_| unsafe { vnni::chains(ITERS) } as i64)
                .sum();
            std::hint::black_box(sink);
            best = best.min(t.elapsed().as_secs_f64());
        }
        // 12 instructions per iteration, 64 multiply-adds each.
        let ops = (threads * ITERS * 12 * 64 * 2) as f64;
        return Some(ops / best / 1e9);
    }
    let _ = (isa, reps);
    None
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    /// Twelve independent `vpdpbusd` chains (enough to cover its latency), `n` steps.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn chains(n: usize) -> i32 {
        // Opaque operands, so that the loop cannot be folded away.
        let a = _mm512_set1_epi8(std::hint::black_box(3));
        let b = _mm512_set1_epi8(std::hint::black_box(-2));
        let mut acc = [_mm512_setzero_si512(); 12];
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        let s = acc
            .iter()
            .fold(_mm512_setzero_si512(), |s, x| _mm512_add_epi32(s, *x));
        _mm512_reduce_add_epi32(s)
    }
}
