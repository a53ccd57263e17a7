//! Token sampling: greedy, or a fixed chain of processors and a draw from a seeded RNG.
//!
//! The order (the API documents it): repetition, presence and frequency penalties over every token
//! seen (prompt and generated); then temperature; then top-k, top-p, min-p and typical-p; then the
//! draw. Temperature 0 is greedy: the argmax after the penalties.

use std::collections::HashMap;

/// Sampling settings, validated by [`SamplingParams::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Locally typical sampling mass; 1 disables.
    pub typical_p: f32,
    /// CTRL's repetition penalty on seen tokens; 1 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of each seen token; 0 disables.
    pub presence_penalty: f32,
    /// Subtracted from a seen token's logit per occurrence; 0 disables.
    pub frequency_penalty: f32,
    /// RNG seed; the same seed, model and prompt give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// `qgpt generate`'s defaults: temperature 0.8, top-k 40, top-p 0.95, no penalties.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            ..Self::greedy()
        }
    }
}

/// A sampling setting out of range: the field, its value and the accepted range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field} must be in {range}, got {value}")]
pub struct SamplingError {
    /// Field name, as in the API.
    pub field: &'static str,
    /// The value given.
    pub value: f32,
    /// The accepted range, e.g. "[0, 100]".
    pub range: &'static str,
}

/// Highest temperature accepted.
pub const MAX_TEMPERATURE: f32 = 100.0;

impl SamplingParams {
    /// Greedy decoding with every processor off.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }

    /// Checks every field's range (NaN is out of every range).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let check = |field, value: f32, ok: bool, range| {
            if ok && !value.is_nan() {
                Ok(())
            } else {
                Err(SamplingError {
                    field,
                    value,
                    range,
                })
            }
        };
        let t = self.temperature;
        check(
            "temperature",
            t,
            (0.0..=MAX_TEMPERATURE).contains(&t),
            "[0, 100]",
        )?;
        let p = self.top_p;
        check("top_p", p, p > 0.0 && p <= 1.0, "(0, 1]")?;
        let m = self.min_p;
        check("min_p", m, (0.0..=1.0).contains(&m), "[0, 1]")?;
        let y = self.typical_p;
        check("typical_p", y, y > 0.0 && y <= 1.0, "(0, 1]")?;
        let r = self.repetition_penalty;
        check("repetition_penalty", r, r > 0.0 && r <= 10.0, "(0, 10]")?;
        let pp = self.presence_penalty;
        check(
            "presence_penalty",
            pp,
            (-2.0..=2.0).contains(&pp),
            "[-2, 2]",
        )?;
        let f = self.frequency_penalty;
        check("frequency_penalty", f, (-2.0..=2.0).contains(&f), "[-2, 2]")?;
        Ok(())
    }

    fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

/// xoshiro256** seeded through splitmix64: small, fast and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Picks tokens from logits. Holds its scratch so sampling allocates nothing per token once
/// warm.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(f32, u32)>,
    /// Occurrences of each token seen so far (for the penalties).
    seen: HashMap<u32, u32>,
}

/// Index of the largest value (the first one on ties); NaN never wins (all NaN: 0).
pub fn argmax(x: &[f32]) -> u32 {
    // Two passes that vectorize (the maximum in 16 lanes, then its first position) instead of
    // one compare-and-branch per value: a 50257-entry vocabulary is scanned for every token.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let max = lanes.iter().fold(tail, |a, &b| a.max(b));
    x.iter().position(|&v| v == max).unwrap_or(0) as u32
}

impl Sampler {
    /// A sampler for validated `params`.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        Ok(Self {
            rng: Rng::new(params.seed),
            params,
            candidates: Vec::new(),
            seen: HashMap::new(),
        })
    }

    /// Records tokens for the penalties (the prompt, then each generated token).
    pub fn observe(&mut self, ids: &[u32]) {
        if self.params.penalizes() {
            for &id in ids {
                *self.seen.entry(id).or_insert(0) += 1;
            }
        }
    }

    /// Chooses the next token from `logits`, applying the penalties to them in place.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for (&id, &n) in &self.seen {
            let Some(l) = logits.get_mut(id as usize) else {
                continue;
            };
            if p.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
            *l -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
        if p.temperature == 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, &v)| (v / p.temperature, i as u32)),
        );
        if c.is_empty() {
            return 0;
        }
        let by_logit_desc =
            |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit_desc);
        // Probabilities (unnormalized until `total`).
        let max = c[0].0;
        for e in c.iter_mut() {
            e.0 = (e.0 - max).exp();
        }
        let mut total: f32 = c.iter().map(|e| e.0).sum();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = c.len();
            for (i, e) in c.iter().enumerate() {
                acc += e.0 / total;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
            total = c.iter().map(|e| e.0).sum();
        }
        if p.min_p > 0.0 {
            // c[0] is the most likely token, with weight 1.
            let floor = p.min_p * c[0].0;
            c.retain(|e| e.0 >= floor);
            total = c.iter().map(|e| e.0).sum();
        }
        if p.typical_p < 1.0 && c.len() > 1 {
            typical(c, total, p.typical_p);
            total = c.iter().map(|e| e.0).sum();
        }
        let mut r = self.rng.next_f32() * total;
        for e in c.iter() {
            if r < e.0 {
                return e.1;
            }
            r -= e.0;
        }
        c[c.len() - 1].1
    }
}

/// Locally typical filtering (Meister et al. 2022): keeps the tokens whose surprise −log p is
/// closest to the entropy, in that order, until their mass reaches `mass`. `c` holds weights
/// summing to `total`; it is left holding the kept tokens (at least one).
fn typical(c: &mut Vec<(f32, u32)>, total: f32, mass: f32) {
    let entropy: f32 = c
        .iter()
        .map(|e| e.0 / total)
        .filter(|&q| q > 0.0)
        .map(|q| -q * q.ln())
        .sum();
    let distance = |e: &(f32, u32)| {
        let q = e.0 / total;
        if q > 0.0 {
            (-q.ln() - entropy).abs()
        } else {
            f32::INFINITY
        }
    };
    c.sort_by(|a, b| distance(a).total_cmp(&distance(b)).then(a.1.cmp(&b.1)));
    let mut acc = 0.0;
    let mut keep = c.len();
    for (i, e) in c.iter().enumerate() {
        acc += e.0 / total;
        if acc >= mass {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..SamplingParams::greedy()
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(params(0.0, 0, 1.0, 1)).unwrap();
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 2.0]), 1);
        // Long inputs (the vectorized path), ties, NaN and infinities.
        let mut x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        assert_eq!(
            argmax(&x),
            30,
            "the first of the ties at 100 (30 · 37 mod 101)"
        );
        x[500] = f32::NAN;
        x[999] = f32::INFINITY;
        assert_eq!(argmax(&x), 999);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_limits_choices() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.7).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 3, 1.0, seed)).unwrap();
            (0..200)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        let mut top3: Vec<u32> = (0..100).collect();
        top3.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]));
        top3.truncate(3);
        assert!(a.iter().all(|t| top3.contains(t)));
        // With 200 draws over three comparable tokens, all three appear.
        assert!(top3.iter().all(|t| a.contains(t)));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ≈ 0.88, 0.12, ~0: top_p 0.5 keeps only the first token.
        let logits = [4.0, 2.0, -10.0];
        let mut s = Sampler::new(params(1.0, 0, 0.5, 3)).unwrap();
        assert!((0..100).all(|_| s.sample(&mut logits.clone()) == 0));
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(f32::NAN, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 1.5, 0)).is_err());
        assert!(Sampler::new(params(101.0, 0, 1.0, 0)).is_err());
        for bad in [
            SamplingParams {
                min_p: 1.5,
                ..SamplingParams::greedy()
            },
            SamplingParams {
                typical_p: 0.0,
                ..SamplingParams::greedy()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..SamplingParams::greedy()
            },
            SamplingParams {
                presence_penalty: f32::NAN,
                ..SamplingParams::greedy()
            },
            SamplingParams {
                frequency_penalty: 3.0,
                ..SamplingParams::greedy()
            },
        ] {
            let e = Sampler::new(bad).unwrap_err();
            assert!(e.to_string().contains(e.field), "{e}");
        }
    }

    #[test]
    fn penalties_steer_greedy_away_from_seen_tokens() {
        let logits = [2.0f32, 1.9, -1.0];
        // Repetition: 2.0 / 1.2 < 1.9.
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.2,
            ..SamplingParams::greedy()
        })
        .unwrap();
        s.observe(&[0]);
        assert_eq!(s.sample(&mut logits.clone()), 1);
        // Frequency: two occurrences cost 2 × 0.06 > 0.1.
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.06,
            ..SamplingParams::greedy()
        })
        .unwrap();
        s.observe(&[0]);
        assert_eq!(
            s.sample(&mut logits.clone()),
            0,
            "one occurrence: 1.94 > 1.9"
        );
        s.observe(&[0]);
        assert_eq!(s.sample(&mut logits.clone()), 1, "two: 1.88 < 1.9");
        // Presence: once, whatever the count (three occurrences still cost 0.05: 1.95 > 1.9).
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.05,
            ..SamplingParams::greedy()
        })
        .unwrap();
        s.observe(&[0, 0, 0]);
        assert_eq!(s.sample(&mut logits.clone()), 0);
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.2,
            ..SamplingParams::greedy()
        })
        .unwrap();
        s.observe(&[0]);
        assert_eq!(s.sample(&mut logits.clone()), 1, "1.8 < 1.9");
    }

    #[test]
    fn min_p_and_typical_p_filter() {
        // p ≈ 0.665, 0.245, 0.090: min_p 0.2 keeps the first two (0.090 < 0.2 · 0.665).
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            min_p: 0.2,
            seed: 5,
            ..SamplingParams::greedy()
        })
        .unwrap();
        let draws: Vec<u32> = (0..300).map(|_| s.sample(&mut logits.clone())).collect();
        assert!(!draws.contains(&2) && draws.contains(&1) && draws.contains(&0));
        // Entropy ≈ 0.83 nats; surprises 0.41, 1.41, 2.41: the closest is token 0, then 1, and a
        // small mass keeps token 0 alone.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            typical_p: 0.2,
            seed: 5,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert!((0..100).all(|_| s.sample(&mut logits.clone()) == 0));
    }
}
