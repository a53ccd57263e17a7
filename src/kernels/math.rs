//! Elementwise math written so that LLVM vectorizes it at whatever width the calling function's
//! target features allow: each ISA file instantiates these `#[inline(always)]` bodies inside its
//! own `#[target_feature]` functions. Plain multiplies and adds only (no `mul_add`), so every
//! level rounds identically.

/// eˣ for x in [−87, 88] (outside it, x is clamped to it; NaN stays NaN): x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, eʳ by a degree-6 polynomial (Cephes' `expf` coefficients), 2ⁿ by building
/// the exponent bits. Relative error below 2·10⁻⁷.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Keeps 2ⁿ's exponent in range for infinite inputs (a model file can hold anything).
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    er * scale
}

/// GELU, tanh form (GPT-2's `gelu_new`): 0.5·x·(1 + tanh(u)) = x / (1 + e^(−2u)),
/// u = √(2/π)·(x + 0.044715·x³). The second form needs one exponential and has no cancellation
/// for negative x.
#[inline(always)]
pub(crate) fn gelu_approx(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let x = *v;
        let y = -2.0 * SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
        // Below −87 the exponential is 1 + e⁻⁸⁷ from 1 and the result is x; above 87 it would
        // overflow, and the result is 0 (also for x = −∞, where x / ∞ would not be).
        let e = exp_approx(y.clamp(-87.0, 87.0));
        *v = if y > 87.0 { 0.0 } else { x / (1.0 + e) };
    }
}
