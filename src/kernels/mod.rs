//! Compute kernels behind a table of function pointers, chosen once at startup for the CPU.
//!
//! Every ISA file exports the same functions; `scalar` always compiles and is the reference twin.
//! `QGPT_ISA=scalar|avx2|avx512|neon|neon-dotprod` forces a level. Kernels are safe functions over slices of
//! blocks; callers pair weight and activation slices of equal length (they zip, so a mismatch can
//! never read out of bounds).

pub mod attend;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_interleaved;
pub mod gemm_f32;
mod math;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod prefetch;
pub mod scalar;

use std::fmt;
use std::sync::OnceLock;

use crate::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8Quad, BlockQ8_0, BlockQ8x4,
    BlockW16, W16Kind,
};

/// An instruction-set level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (on top of AVX2).
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
    /// aarch64 Advanced SIMD with the Armv8.2 dot-product instructions (`sdot`).
    NeonDotprod,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Neon,
        Isa::NeonDotprod,
    ];

    /// The name used by `QGPT_ISA` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }

    /// Parses a `QGPT_ISA` value.
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
    }

    /// True when this CPU can run the level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::detected(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::detected(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::detected(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => neon::detected_dotprod(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dot product of a weight row in a block format with a quantized activation row.
pub type DotFn<W, A> = fn(&[W], &[A]) -> f32;

/// Four weight rows against one activation row at once: the activation block is loaded once for
/// four rows and the four accumulations run independently.
pub type Dot4Fn<W, A> = fn([&[W]; 4], &[A]) -> [f32; 4];

/// A 4 × 4 tile: four weight rows against four activation rows, `out[r][c] = W[r] · A[c]`.
/// Each weight block is prepared once for four activations and each activation block once for
/// four weight rows (prefill and batched decode).
pub type Gemm4x4Fn<W, A> = fn([&[W]; 4], [&[A]; 4]) -> [[f32; 4]; 4];

/// A panel: four weight rows against up to four groups of four interleaved activation rows
/// ([`BlockQ8x4`], packed with the weight type's offset), `out[r][4g + c] = W[r] · A[g][c]`.
/// Entries for groups not given are left as they were. Panics on more than four groups.
pub type GemmPanelFn<W> = fn([&[W]; 4], &[&[BlockQ8x4]], &mut [[f32; 16]; 4]);

/// Sixteen regrouped weight rows ([`BlockW16`]) against eight activation rows:
/// `out[c][r] = W[r] · A[c]` over the blocks both sides have.
pub type Gemm16Fn = fn(W16Kind, &[BlockW16], [&[BlockQ8Act]; 8], &mut [[f32; 16]; 8]);

/// Sixteen consecutive weight rows in their file format (`w`: 16 × nb blocks, row r from r·nb)
/// against groups of eight consecutive activation rows (`a`: 8·G × nb blocks, G = `out.len()`,
/// at most 4): `out[g][c][r] = W[r] · A[8g + c]`. Panics if the lengths disagree.
pub type Gemm16RowsFn<W> = fn(&[W], usize, &[BlockQ8Act], &mut [[[f32; 16]; 8]]);

/// The kernels of one ISA level.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The level these kernels use.
    pub isa: Isa,
    /// f32 → [`BlockQ8Act`] (32 values a block).
    pub quantize_q8: fn(&[f32], &mut [BlockQ8Act]),
    /// f32 → [`BlockQ8K`] (256 values a block).
    pub quantize_q8k: fn(&[f32], &mut [BlockQ8K]),
    /// Q8_0 · Q8 activations.
    pub dot_q8_0: DotFn<BlockQ8_0, BlockQ8Act>,
    /// Four Q8_0 rows · Q8 activations.
    pub dot4_q8_0: Dot4Fn<BlockQ8_0, BlockQ8Act>,
    /// 4 × 4 tile of Q8_0 rows · Q8 activations.
    pub gemm4x4_q8_0: Gemm4x4Fn<BlockQ8_0, BlockQ8Act>,
    /// Q4_0 · Q8 activations.
    pub dot_q4_0: DotFn<BlockQ4_0, BlockQ8Act>,
    /// Four Q4_0 rows · Q8 activations.
    pub dot4_q4_0: Dot4Fn<BlockQ4_0, BlockQ8Act>,
    /// 4 × 4 tile of Q4_0 rows · Q8 activations.
    pub gemm4x4_q4_0: Gemm4x4Fn<BlockQ4_0, BlockQ8Act>,
    /// Four Q4_1 rows · Q8 activations.
    pub dot4_q4_1: Dot4Fn<BlockQ4_1, BlockQ8Act>,
    /// 4 × 4 tile of Q4_1 rows · Q8 activations.
    pub gemm4x4_q4_1: Gemm4x4Fn<BlockQ4_1, BlockQ8Act>,
    /// Q4_1 · Q8 activations.
    pub dot_q4_1: DotFn<BlockQ4_1, BlockQ8Act>,
    /// Q4_0 · quads of activation blocks (`w.len() == 4 · a.len()`), where the level has it:
    /// the batch-1 kernel for rows of whole quads.
    pub dot_q4_0_quad: Option<DotFn<BlockQ4_0, BlockQ8Quad>>,
    /// 16 × 8 tiles over regrouped weights (large batches), where the level has them.
    pub gemm16: Option<Gemm16Fn>,
    /// 16 × 8 tiles of Q8_0 rows regrouped in registers (small batches), where the level has
    /// them: `out[c][r] = W[r] · A[c]`.
    pub gemm16_rows_q8_0: Option<Gemm16RowsFn<BlockQ8_0>>,
    /// Q8_0 panel, where the level has one (matmul falls back to the 4 × 4 tiles).
    pub panel_q8_0: Option<GemmPanelFn<BlockQ8_0>>,
    /// Q4_0 panel, where the level has one.
    pub panel_q4_0: Option<GemmPanelFn<BlockQ4_0>>,
    /// Q4_1 panel, where the level has one.
    pub panel_q4_1: Option<GemmPanelFn<BlockQ4_1>>,
    /// Q6_K · Q8_K activations.
    pub dot_q6_k: DotFn<BlockQ6K, BlockQ8K>,
    /// Four Q6_K rows · Q8_K activations.
    pub dot4_q6_k: Dot4Fn<BlockQ6K, BlockQ8K>,
    /// 4 × 4 tile of Q6_K rows · Q8_K activations (each weight block unpacked once for four
    /// activation rows).
    pub gemm4x4_q6_k: Gemm4x4Fn<BlockQ6K, BlockQ8K>,
    /// F16 weights · f32 activations.
    pub dot_f16: DotFn<[u8; 2], f32>,
    /// F32 weights (as bytes) · f32 activations.
    pub dot_f32_bytes: DotFn<[u8; 4], f32>,
    /// f32 · f32.
    pub dot_f32: DotFn<f32, f32>,
    /// GELU (tanh form) in place.
    pub gelu: fn(&mut [f32]),
    /// 16 × 8 float tiles over regrouped F32/F16 weight rows (prefill on float models).
    pub gemm16_f32: gemm_f32::Gemm16F32Fn,
    /// Sixteen rows to k-major order, the layout of both operands of `gemm16_f32`.
    pub regroup16: gemm_f32::Regroup16Fn,
    /// Attention over an F32 KV cache.
    pub attend_f32: attend::AttendFn<f32>,
    /// Attention over an F16 KV cache.
    pub attend_f16: attend::AttendFn<half::f16>,
}

/// The attention entries of an ISA level: `attend::attend` compiled for `$features` (used by the
/// x86 levels; NEON's attention runs the portable loops with FMA).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! attend_entries {
    ($features:literal, $widen:ty) => {
        /// Attention over an F32 cache at this level's vector width.
        pub(super) fn attend_f32(a: super::attend::Attend<'_, f32>) {
            #[target_feature(enable = $features)]
            fn wide(a: super::attend::Attend<'_, f32>) {
                super::attend::attend::<f32, $widen>(a)
            }
            // SAFETY: reachable only through this level's table, built after its features were
            // detected.
            unsafe { wide(a) }
        }

        /// Attention over an F16 cache at this level's vector width.
        pub(super) fn attend_f16(a: super::attend::Attend<'_, half::f16>) {
            #[target_feature(enable = $features)]
            fn wide(a: super::attend::Attend<'_, half::f16>) {
                super::attend::attend::<half::f16, $widen>(a)
            }
            // SAFETY: as above.
            unsafe { wide(a) }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use attend_entries;

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kernels({})", self.isa)
    }
}

/// `QGPT_ISA` named a level that is unknown or that this CPU lacks.
#[derive(Debug, thiserror::Error)]
pub enum IsaError {
    #[error("QGPT_ISA={0:?} is not one of scalar, avx2, avx512, neon, neon-dotprod")]
    Unknown(String),
    #[error("QGPT_ISA={0}: this CPU does not support it")]
    Unavailable(Isa),
}

impl Kernels {
    /// The portable kernels.
    pub fn scalar() -> Self {
        Self {
            isa: Isa::Scalar,
            quantize_q8: scalar::quantize_q8,
            quantize_q8k: scalar::quantize_q8k,
            dot_q8_0: scalar::dot_q8_0,
            dot4_q8_0: scalar::dot4_q8_0,
            gemm4x4_q8_0: scalar::gemm4x4_q8_0,
            dot_q4_0: scalar::dot_q4_0,
            dot4_q4_0: scalar::dot4_q4_0,
            gemm4x4_q4_0: scalar::gemm4x4_q4_0,
            dot4_q4_1: |w, a| w.map(|w| scalar::dot_q4_1(w, a)),
            gemm4x4_q4_1: |w, a| w.map(|w| a.map(|a| scalar::dot_q4_1(w, a))),
            dot_q4_1: scalar::dot_q4_1,
            dot_q4_0_quad: Some(scalar::dot_q4_0_quad),
            gemm16: Some(scalar::gemm16),
            gemm16_rows_q8_0: Some(scalar::gemm16_rows_q8_0),
            panel_q8_0: Some(scalar::panel_q8_0),
            panel_q4_0: Some(scalar::panel_q4_0),
            panel_q4_1: Some(scalar::panel_q4_1),
            dot_q6_k: scalar::dot_q6_k,
            dot4_q6_k: |w, a| w.map(|w| scalar::dot_q6_k(w, a)),
            gemm4x4_q6_k: |w, a| w.map(|w| a.map(|a| scalar::dot_q6_k(w, a))),
            dot_f16: scalar::dot_f16,
            dot_f32_bytes: scalar::dot_f32_bytes,
            dot_f32: scalar::dot_f32,
            gelu: scalar::gelu,
            gemm16_f32: gemm_f32::tile_portable,
            regroup16: gemm_f32::regroup16_portable,
            attend_f32: attend::attend_portable,
            attend_f16: attend::attend_portable,
        }
    }

    /// The kernels of `isa`, or `None` if this CPU cannot run them.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.is_available() {
            return None;
        }
        Some(match isa {
            Isa::Scalar => Self::scalar(),
            // SAFETY (all arms): each `table()` is reached only after `is_available` confirmed
            // the CPU features its functions are compiled for.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::table(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::table(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::table(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => neon::table_dotprod(),
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// The best level this CPU supports.
    pub fn best() -> Self {
        Isa::ALL
            .into_iter()
            .rev()
            .find_map(Self::for_isa)
            .unwrap_or_else(Self::scalar)
    }

    /// The level `QGPT_ISA` asks for, or the best one when it is unset.
    pub fn from_env() -> Result<Self, IsaError> {
        match std::env::var("QGPT_ISA") {
            Err(_) => Ok(Self::best()),
            Ok(v) if v.trim().is_empty() => Ok(Self::best()),
            Ok(v) => {
                let isa = Isa::parse(&v).ok_or(IsaError::Unknown(v))?;
                Self::for_isa(isa).ok_or(IsaError::Unavailable(isa))
            }
        }
    }
}

static SELECTED: OnceLock<Kernels> = OnceLock::new();

/// Chooses the process-wide kernels once (from `QGPT_ISA`, else the best level) and logs it.
pub fn init() -> Result<&'static Kernels, IsaError> {
    if let Some(k) = SELECTED.get() {
        return Ok(k);
    }
    let k = Kernels::from_env()?;
    let k = SELECTED.get_or_init(|| k);
    tracing::info!(isa = %k.isa, "compute kernels selected");
    Ok(k)
}

/// The process-wide kernels; an invalid `QGPT_ISA` falls back to the best level with a warning
/// (binaries call [`init`] first and refuse to start instead).
pub fn get() -> &'static Kernels {
    match init() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("{e}; using the best available kernels");
            SELECTED.get_or_init(Kernels::best)
        }
    }
}
