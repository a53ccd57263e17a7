//! LayerNorm.

/// LayerNorm of each `w.len()`-wide row of `x` into `out`: `(x − mean) / sqrt(var + eps) · w + b`.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = xr.iter().sum::<f32>() / n as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &wi), &bi) in or.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (v - mean) * inv * wi + bi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_rows() {
        let x = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        let (w, b) = ([1.0; 4], [0.5; 4]);
        let mut out = [0.0; 8];
        layer_norm(&x, &w, &b, 1e-5, &mut out);
        let row: &[f32] = &out[..4];
        assert!((row.iter().sum::<f32>() / 4.0 - 0.5).abs() < 1e-6);
        assert!((out[3] - (0.5 + 1.5 / 1.25f32.sqrt())).abs() < 1e-4);
        assert!(
            out[4..].iter().all(|v| (v - 0.5).abs() < 1e-6),
            "constant row maps to b"
        );
    }
}
