//! A hint to the memory system that bytes will be read soon. Never faults, whatever the address
//! (an address outside the process is dropped by the hardware), and changes no result.

/// Which cache a prefetch fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The first-level data cache: for data needed within a few hundred cycles.
    L1,
    /// The second-level cache: for data needed later, or more than L1 holds.
    L2,
}

/// Asks for the cache line holding `p` to be brought into `level`.
#[inline(always)]
pub fn prefetch(p: *const u8, level: Level) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        // SAFETY: `prefetcht0/1` are part of SSE, which every x86-64 CPU has; the instructions
        // only hint and cannot fault, so any address is allowed.
        unsafe {
            match level {
                Level::L1 => _mm_prefetch::<_MM_HINT_T0>(p.cast()),
                Level::L2 => _mm_prefetch::<_MM_HINT_T1>(p.cast()),
            }
        };
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` only hints: it never faults, reads nothing architecturally, and touches no
    // register but its address operand, which it does not modify.
    unsafe {
        match level {
            Level::L1 => std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p,
                options(nostack, readonly, preserves_flags)),
            Level::L2 => std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p,
                options(nostack, readonly, preserves_flags)),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (p, level);
}

/// Asks for `len` bytes from `p` (whole cache lines of 64 bytes) to be brought into `level`.
#[inline(always)]
pub fn prefetch_range(p: *const u8, len: usize, level: Level) {
    for off in (0..len).step_by(64) {
        prefetch(p.wrapping_add(off), level);
    }
}
