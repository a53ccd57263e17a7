//! Rotary position embeddings, llama.cpp's "normal" mode: within each head, the pairs of adjacent
//! values (2i, 2i+1) for 2i < dims are rotated by the angle pos · base^(−2i/dims). (Hugging Face
//! LLaMA rotates the two halves of a head instead; llama.cpp's converter permutes the query and
//! key weights so that the two agree, and GGUF files hold that permuted order.)

use crate::model::Rope;

/// The rotation of each position of a run of tokens: for row r (position `pos0 + r`) and pair i,
/// the cosine and sine of (pos0 + r) · pos_scale · base^(−2i/dims). Computed once per round and
/// used for the queries and keys of every layer.
pub struct RopeTable {
    dims: usize,
    cs: Vec<(f32, f32)>,
}

impl RopeTable {
    /// The angles of positions `pos0..pos0 + n_rows`.
    pub fn new(rope: &Rope, pos0: usize, n_rows: usize) -> Self {
        let half = rope.dims / 2;
        // θ_i = base^(−2i/dims), in f64 so that long contexts keep their angles exact.
        let inv: Vec<f64> = (0..half)
            .map(|i| (rope.base as f64).powf(-2.0 * i as f64 / rope.dims as f64))
            .collect();
        let mut cs = Vec::with_capacity(n_rows * half);
        for r in 0..n_rows {
            let pos = (pos0 + r) as f64 * rope.pos_scale as f64;
            cs.extend(inv.iter().map(|&f| {
                let (s, c) = (pos * f).sin_cos();
                (c as f32, s as f32)
            }));
        }
        Self {
            dims: rope.dims,
            cs,
        }
    }

    /// Rotates the table's rows of `x` in place (row r at `r * stride`: `n_head` heads of
    /// `head_dim` values), within each head the adjacent pairs of its first `dims` values.
    pub fn apply(&self, x: &mut [f32], stride: usize, n_head: usize, head_dim: usize) {
        let half = self.dims / 2;
        for (r, cs) in self.cs.chunks_exact(half.max(1)).enumerate() {
            let row = &mut x[r * stride..][..n_head * head_dim];
            for head in row.chunks_exact_mut(head_dim) {
                for (pair, &(c, s)) in head[..self.dims].chunks_exact_mut(2).zip(cs) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * c - b * s;
                    pair[1] = a * s + b * c;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_adjacent_pairs_by_position_angles() {
        let r = Rope {
            base: 10_000.0,
            dims: 4,
            pos_scale: 1.0,
        };
        // Two heads of 6 values (the last 2 of each head do not rotate), positions 3 and 4.
        let mut x: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 2.0).collect();
        let orig = x.clone();
        RopeTable::new(&r, 3, 2).apply(&mut x, 12, 2, 6);
        for row in 0..2 {
            let pos = (3 + row) as f64;
            for h in 0..2 {
                let base = row * 12 + h * 6;
                for i in 0..2 {
                    let th = pos * 10_000f64.powf(-2.0 * i as f64 / 4.0);
                    let (a, b) = (orig[base + 2 * i] as f64, orig[base + 2 * i + 1] as f64);
                    let want = (a * th.cos() - b * th.sin(), a * th.sin() + b * th.cos());
                    assert!((x[base + 2 * i] as f64 - want.0).abs() < 1e-5);
                    assert!((x[base + 2 * i + 1] as f64 - want.1).abs() < 1e-5);
                }
                assert_eq!(x[base + 4..base + 6], orig[base + 4..base + 6]);
            }
        }
    }

    #[test]
    fn position_zero_is_identity_and_norms_are_kept() {
        let r = Rope {
            base: 100_000.0,
            dims: 8,
            pos_scale: 0.5,
        };
        let mut x: Vec<f32> = (0..16).map(|i| (i as f32).sin()).collect();
        let orig = x.clone();
        RopeTable::new(&r, 0, 2).apply(&mut x, 8, 1, 8);
        assert_eq!(x[..8], orig[..8], "position 0 does not rotate");
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x[8..]) - norm(&orig[8..])).abs() < 1e-5);
    }
}
