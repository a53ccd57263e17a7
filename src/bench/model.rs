//! End-to-end model benchmarks, by llama-bench's method: `pp N` processes N random tokens from an
//! empty context in one batch; `tg N` generates N tokens one at a time from an empty context (each
//! step computes the logits of its token). Each repetition starts from a cleared KV cache; one
//! warm-up run comes first and is not counted.

use std::path::Path;
use std::time::Instant;

use crate::gguf::{file_type_short_name, GgufFile};
use crate::model::{ForwardError, Logits, Model, Scratch, SeqStep};
use crate::sampling::Rng;

/// Largest number of tokens one prompt-processing step carries (llama.cpp's default micro-batch).
pub const MAX_BATCH: usize = 512;

/// What llama-bench reports about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file name as given.
    pub filename: String,
    /// `"{arch} {size} {file type}"`, e.g. "gpt2 0.1B Q8_0", as llama-bench writes it.
    pub model_type: String,
    /// Bytes of tensor data.
    pub size: u64,
    /// Parameters (values in all tensors).
    pub n_params: u64,
}

impl ModelInfo {
    /// Describes `file`, opened from `path`.
    pub fn new(path: &Path, file: &GgufFile) -> Self {
        let arch = file.get_str("general.architecture").unwrap_or("unknown");
        let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        let size = file.tensors().iter().map(|t| t.n_bytes).sum();
        let ftype = file
            .get_u64("general.file_type")
            .map_or("unknown type", file_type_short_name);
        let b = n_params as f64 / 1e9;
        let label = if b < 1.0 {
            format!("{b:.1}B")
        } else {
            format!("{}B", b.round())
        };
        Self {
            filename: path.display().to_string(),
            model_type: format!("{arch} {label} {ftype}"),
            size,
            n_params,
        }
    }
}

/// One test's timings.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// Prompt tokens processed per sequence (0 for a generation test).
    pub n_prompt: usize,
    /// Tokens generated per sequence (0 for a prompt test).
    pub n_gen: usize,
    /// Sequences run together (their tokens counted together).
    pub n_seq: usize,
    /// Wall time of each repetition, nanoseconds.
    pub samples_ns: Vec<u64>,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Sample standard deviation (n − 1), 0 for fewer than two samples (as llama-bench).
fn stddev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

impl TestResult {
    /// "pp512", "tg128" or "pp512+tg128", with "×8" for 8 sequences together.
    pub fn name(&self) -> String {
        let base = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        match self.n_seq {
            1 => base,
            s => format!("{base}×{s}"),
        }
    }

    fn ns(&self) -> Vec<f64> {
        self.samples_ns.iter().map(|&n| n as f64).collect()
    }

    /// Tokens per second of each repetition (all sequences together).
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = (self.n_seq * (self.n_prompt + self.n_gen)) as f64;
        self.ns().iter().map(|&t| 1e9 * n / t).collect()
    }

    /// Mean wall time, nanoseconds.
    pub fn avg_ns(&self) -> f64 {
        mean(&self.ns())
    }

    /// Standard deviation of the wall time, nanoseconds.
    pub fn stddev_ns(&self) -> f64 {
        stddev(&self.ns())
    }

    /// Mean tokens per second.
    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    /// Standard deviation of the tokens per second.
    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }
}

/// Runs one test `reps` times after a warm-up: `n_seq` sequences together (one batched step for
/// their prompts of `n_prompt` tokens, then `n_gen` batched steps of one token each). Tokens are
/// random (seeded, so runs repeat).
pub fn run_test(
    model: &Model,
    n_prompt: usize,
    n_gen: usize,
    n_seq: usize,
    reps: usize,
) -> Result<TestResult, ForwardError> {
    let cfg = model.config();
    let (n_vocab, n_seq) = (cfg.n_vocab as u64, n_seq.max(1));
    let mut caches: Vec<_> = (0..n_seq)
        .map(|_| model.new_cache(n_prompt + n_gen))
        .collect();
    let mut scratch = Scratch::new(cfg, (n_seq * n_prompt).clamp(n_seq, MAX_BATCH.max(n_seq)));
    let mut logits = vec![vec![0.0f32; cfg.n_vocab]; n_seq];
    let mut rng = Rng::new(0x006c_6c61_6d61);
    let mut token = || (rng.next_u64() % n_vocab) as u32;
    let mut once = |n_prompt: usize, n_gen: usize| -> Result<u64, ForwardError> {
        caches.iter_mut().for_each(|c| c.clear());
        let prompts: Vec<Vec<u32>> = (0..n_seq)
            .map(|_| (0..n_prompt).map(|_| token()).collect())
            .collect();
        let gen: Vec<Vec<u32>> = (0..n_gen)
            .map(|_| (0..n_seq).map(|_| token()).collect())
            .collect();
        let mut step = |tokens: &mut dyn Iterator<Item = &[u32]>| {
            let mut steps: Vec<SeqStep<'_>> = caches
                .iter_mut()
                .zip(logits.iter_mut())
                .zip(tokens)
                .map(|((cache, logits), tokens)| SeqStep {
                    cache,
                    tokens,
                    which: Logits::Last,
                    logits,
                })
                .collect();
            model.forward_batch(&mut steps, &mut scratch)
        };
        let start = Instant::now();
        if n_prompt > 0 {
            step(&mut prompts.iter().map(|p| p.as_slice()))?;
        }
        for g in &gen {
            step(&mut g.chunks(1))?;
        }
        Ok(start.elapsed().as_nanos() as u64)
    };
    // Warm-up, as llama-bench: the prompt once and one generated token.
    once(n_prompt, n_gen.min(1))?;
    let samples_ns = (0..reps.max(1))
        .map(|_| once(n_prompt, n_gen))
        .collect::<Result<_, _>>()?;
    Ok(TestResult {
        n_prompt,
        n_gen,
        n_seq,
        samples_ns,
    })
}

/// `secs` since the Unix epoch as RFC 3339 UTC ("2026-11-29T14:41:15Z").
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_llama_bench() {
        let r = TestResult {
            n_prompt: 0,
            n_gen: 100,
            n_seq: 1,
            samples_ns: vec![1_000_000_000, 500_000_000],
        };
        assert_eq!(r.name(), "tg100");
        assert_eq!(r.samples_ts(), vec![100.0, 200.0]);
        assert_eq!(r.avg_ts(), 150.0);
        // Sample standard deviation: |100 − 200| / √2.
        assert!((r.stddev_ts() - 50.0 * 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(r.avg_ns(), 750_000_000.0);
        let r8 = TestResult { n_seq: 8, ..r };
        assert_eq!(r8.name(), "tg100×8");
        assert_eq!(r8.samples_ts(), vec![800.0, 1600.0]);
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_963_275), "2026-11-29T14:41:15Z");
    }
}
