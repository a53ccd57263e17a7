//! Perplexity by llama-perplexity's method, so that the two tools' figures compare directly.
//!
//! The text's tokens are cut into non-overlapping chunks of `n_ctx`; each chunk runs from an empty
//! KV cache (its first token replaced by BOS when the vocabulary says to add one), and only the
//! predictions of its second half are scored: the logits at position p (for p from n_ctx/2 to
//! n_ctx − 2) against the token at p + 1. PPL = exp(mean negative log-likelihood); its uncertainty
//! is PPL times the standard error of that mean.

use crate::model::{ForwardError, Logits, Model, Scratch};

/// Tokens per forward step while scoring (logits are kept for one step at a time).
const STEP: usize = 128;

/// Why perplexity could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the context must be at least 4 tokens and at most the model's {max}, not {n_ctx}")]
    Context { n_ctx: usize, max: usize },
    #[error("the text has {have} tokens: at least {need} (two chunks of {n_ctx}) are needed")]
    TooShort {
        have: usize,
        need: usize,
        n_ctx: usize,
    },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// PPL × the standard error of the mean negative log-likelihood.
    pub ppl_stderr: f64,
    /// Mean negative log-likelihood, nats per token.
    pub nll: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub scored: usize,
    /// Running PPL after each chunk (llama-perplexity's `[i]x` figures).
    pub running: Vec<f64>,
}

/// −log softmax(logits)[target], with the sum in f64 as llama-perplexity does.
pub fn nll_of(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    sum.ln() + (max - logits[target as usize]) as f64
}

/// Computes the perplexity of `tokens` with chunks of `n_ctx` tokens, at most `max_chunks` of
/// them; `bos` replaces the first token of each chunk when given. `on_chunk(i, running_ppl)` is
/// called after each chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity, PerplexityError> {
    let cfg = model.config();
    if !(4..=cfg.n_ctx).contains(&n_ctx) {
        return Err(PerplexityError::Context {
            n_ctx,
            max: cfg.n_ctx,
        });
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            have: tokens.len(),
            need: 2 * n_ctx,
            n_ctx,
        });
    }
    let n_chunks = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
    let first = n_ctx / 2;
    let v = cfg.n_vocab;
    let mut cache = model.new_cache(n_ctx);
    let mut scratch = Scratch::new(cfg, STEP.max(first).min(crate::bench::MAX_BATCH));
    let mut last = vec![0.0f32; v];
    let mut logits = vec![0.0f32; STEP * v];
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for i in 0..n_chunks {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        cache.clear();
        // The first half only builds context.
        model.forward(
            &mut cache,
            &chunk[..first],
            &mut scratch,
            Logits::Last,
            &mut last,
        )?;
        // The second half is scored, STEP positions at a time (the last position predicts
        // nothing inside the chunk, so it is not run).
        let mut p = first;
        while p < n_ctx - 1 {
            let n = STEP.min(n_ctx - 1 - p);
            let out = &mut logits[..n * v];
            model.forward(&mut cache, &chunk[p..p + n], &mut scratch, Logits::All, out)?;
            for (j, row) in out.chunks_exact(v).enumerate() {
                let x = nll_of(row, chunk[p + j + 1]);
                nll += x;
                nll2 += x * x;
                count += 1;
            }
            p += n;
        }
        let r = (nll / count as f64).exp();
        running.push(r);
        on_chunk(i, r);
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let stderr = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        ppl_stderr: ppl * stderr,
        nll: mean,
        chunks: n_chunks,
        scored: count,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_minus_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            let want = -((logits[t] as f64).exp() / z).ln();
            assert!((nll_of(&logits, t as u32) - want).abs() < 1e-6);
        }
        // Uniform logits: ln(V).
        assert!((nll_of(&[5.0; 8], 3) - 8f64.ln()).abs() < 1e-6);
    }
}
