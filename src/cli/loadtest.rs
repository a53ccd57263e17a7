//! `qgpt loadtest`: a gRPC load generator for a running `qgpt serve`. N concurrent clients each
//! stream one request after another (a prompt of P random token ids, G tokens with ignore_eos)
//! until M requests have been sent or S seconds have passed. It reports aggregate throughput
//! and the client-side latency percentiles: time to first token, inter-token latency and
//! end-to-end latency, and a count of every status seen. With `--long-prompt-tokens`, long
//! prompts arrive at a fixed interval beside the streams (prefill while others decode), reported
//! apart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::{print_flush, CliError};
use qgpt::sampling::Rng;
use qgpt::server::pb::text_generation_client::TextGenerationClient;
use qgpt::server::pb::{self, generate_request::Input};

/// Arguments of `qgpt loadtest`.
#[derive(clap::Args)]
pub struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Concurrent streams.
    #[arg(short, long, default_value_t = 8)]
    concurrency: usize,
    /// Requests to send in all (default: 4 × concurrency, unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    requests: Option<usize>,
    /// Seconds to keep sending (requests in flight at the end are waited for).
    #[arg(long)]
    duration: Option<f64>,
    /// Prompt length in tokens (random ids).
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// Tokens to generate per request (ignore_eos, so every request generates them all).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: u32,
    /// Also send, beside the streams, one request with a prompt of this many tokens (and one
    /// token to generate) every --long-prompt-every seconds: prefill arriving while others
    /// decode. Reported apart; 0: none.
    #[arg(long, default_value_t = 0)]
    long_prompt_tokens: usize,
    /// Seconds between two long prompts.
    #[arg(long, default_value_t = 1.0)]
    long_prompt_every: f64,
    /// Seed of the random prompts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one request measured.
#[derive(Default)]
struct Sample {
    ttft: Option<Duration>,
    gaps: Vec<Duration>,
    e2e: Duration,
    tokens: usize,
}

#[derive(Default)]
struct Results {
    samples: Vec<Sample>,
    errors: BTreeMap<String, usize>,
}

#[derive(serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Nearest-rank percentiles of `v`, in milliseconds.
fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    v.sort();
    let at = |q: f64| {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e3
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[derive(serde::Serialize)]
struct Report {
    concurrency: usize,
    requests: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    generated_tokens: usize,
    wall_s: f64,
    generated_tokens_per_s: f64,
    requests_per_s: f64,
    ttft_ms: Percentiles,
    itl_ms: Percentiles,
    e2e_ms: Percentiles,
    /// The long prompts sent beside the streams (absent when none were asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    long_prompts: Option<LongPrompts>,
}

#[derive(serde::Serialize)]
struct LongPrompts {
    prompt_tokens: usize,
    every_s: f64,
    requests: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    ttft_ms: Percentiles,
}

/// Runs the load and prints the report.
pub fn run(args: Args) -> Result<(), CliError> {
    if args.concurrency == 0 || args.prompt_tokens == 0 || args.max_new_tokens == 0 {
        return Err(
            "--concurrency, --prompt-tokens and --max-new-tokens must be at least 1".into(),
        );
    }
    if !(args.long_prompt_every.is_finite() && args.long_prompt_every > 0.0) {
        return Err("--long-prompt-every must be a positive number of seconds".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(load(&args))?;
    if args.json {
        print_flush(&format!("{}\n", serde_json::to_string(&report)?))
    } else {
        print_flush(&table(&report))
    }
}

async fn load(args: &Args) -> Result<Report, CliError> {
    let channel = Channel::from_shared(format!("http://{}", args.addr))
        .map_err(|e| format!("--addr {}: {e}", args.addr))?
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", args.addr))?;
    let mut client = TextGenerationClient::new(channel);
    let info = client
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .map_err(|s| format!("GetModelInfo: {}", s.message()))?
        .into_inner();
    let vocab = u64::from(info.vocab_size.max(1));
    let total = match (args.requests, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
        (None, None) => 4 * args.concurrency,
    };
    let until = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let sent = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Results::default()));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let mut client = client.clone();
        let (sent, results) = (sent.clone(), results.clone());
        let (prompt_tokens, max_new) = (args.prompt_tokens, args.max_new_tokens);
        let mut rng = Rng::new(args.seed.wrapping_add(w as u64));
        workers.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::SeqCst) < total
                && until.is_none_or(|u| Instant::now() < u)
            {
                let ids = (0..prompt_tokens)
                    .map(|_| (rng.next_u64() % vocab) as u32)
                    .collect();
                let req = pb::GenerateRequest {
                    input: Some(Input::PromptTokenIds(pb::TokenIds { ids })),
                    max_new_tokens: max_new,
                    ignore_eos: true,
                    ..Default::default()
                };
                let outcome = one(&mut client, req).await;
                let mut r = results.lock().expect("results lock");
                match outcome {
                    Ok(s) => r.samples.push(s),
                    Err(code) => *r.errors.entry(code).or_default() += 1,
                }
            }
        }));
    }
    let done = Arc::new(AtomicUsize::new(0));
    let long = (args.long_prompt_tokens > 0).then(|| {
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(long_prompts(
            client,
            args.long_prompt_tokens,
            args.long_prompt_every,
            vocab,
            args.seed,
            done,
        ))
    });
    for w in workers {
        w.await?;
    }
    let wall = start.elapsed().as_secs_f64();
    done.store(1, Ordering::SeqCst);
    let long_prompts = match long {
        Some(task) => {
            let r = task.await?;
            let failed: usize = r.errors.values().sum();
            Some(LongPrompts {
                prompt_tokens: args.long_prompt_tokens,
                every_s: args.long_prompt_every,
                requests: r.samples.len() + failed,
                ok: r.samples.len(),
                ttft_ms: percentiles(r.samples.iter().filter_map(|s| s.ttft).collect()),
                errors: r.errors,
            })
        }
        None => None,
    };
    let r = std::mem::take(&mut *results.lock().expect("results lock"));
    let ok = r.samples.len();
    let tokens: usize = r.samples.iter().map(|s| s.tokens).sum();
    let failed: usize = r.errors.values().sum();
    Ok(Report {
        concurrency: args.concurrency,
        requests: ok + failed,
        ok,
        generated_tokens: tokens,
        wall_s: wall,
        generated_tokens_per_s: tokens as f64 / wall,
        requests_per_s: ok as f64 / wall,
        ttft_ms: percentiles(r.samples.iter().filter_map(|s| s.ttft).collect()),
        itl_ms: percentiles(
            r.samples
                .iter()
                .flat_map(|s| s.gaps.iter().copied())
                .collect(),
        ),
        e2e_ms: percentiles(r.samples.iter().map(|s| s.e2e).collect()),
        errors: r.errors,
        long_prompts,
    })
}

/// Sends a request with a prompt of `tokens` random ids (one token to generate) every `every`
/// seconds until `done` is set, each in its own task; returns what they measured once all have
/// ended.
async fn long_prompts(
    client: TextGenerationClient<Channel>,
    tokens: usize,
    every: f64,
    vocab: u64,
    seed: u64,
    done: Arc<AtomicUsize>,
) -> Results {
    let results = Arc::new(Mutex::new(Results::default()));
    let mut rng = Rng::new(seed ^ 0x6c6f_6e67);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
    let mut sent = Vec::new();
    loop {
        tick.tick().await;
        if done.load(Ordering::SeqCst) != 0 {
            break;
        }
        let ids = (0..tokens)
            .map(|_| (rng.next_u64() % vocab) as u32)
            .collect();
        let req = pb::GenerateRequest {
            input: Some(Input::PromptTokenIds(pb::TokenIds { ids })),
            max_new_tokens: 1,
            ignore_eos: true,
            ..Default::default()
        };
        let (mut client, results) = (client.clone(), results.clone());
        sent.push(tokio::spawn(async move {
            let outcome = one(&mut client, req).await;
            let mut r = results.lock().expect("results lock");
            match outcome {
                Ok(s) => r.samples.push(s),
                Err(code) => *r.errors.entry(code).or_default() += 1,
            }
        }));
    }
    for t in sent {
        let _ = t.await;
    }
    let r = std::mem::take(&mut *results.lock().expect("results lock"));
    r
}

/// Streams one request; the status code's name on failure.
async fn one(
    client: &mut TextGenerationClient<Channel>,
    req: pb::GenerateRequest,
) -> Result<Sample, String> {
    let t0 = Instant::now();
    let code = |s: tonic::Status| format!("{:?}", s.code());
    let mut stream = client
        .generate_stream(req)
        .await
        .map_err(code)?
        .into_inner();
    let mut s = Sample::default();
    let mut last: Option<Instant> = None;
    while let Some(m) = stream.next().await {
        let m = m.map_err(code)?;
        if m.tokens.is_empty() {
            continue;
        }
        let now = Instant::now();
        match last {
            None => s.ttft = Some(now - t0),
            Some(l) => s.gaps.push(now - l),
        }
        last = Some(now);
        s.tokens += m.tokens.len();
    }
    s.e2e = t0.elapsed();
    Ok(s)
}

fn table(r: &Report) -> String {
    let p = |x: &Percentiles| format!("{:.1} / {:.1} / {:.1} / {:.1}", x.p50, x.p90, x.p99, x.max);
    let errors = if r.errors.is_empty() {
        "none".to_owned()
    } else {
        r.errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "concurrency {} | requests {} ({} ok; errors: {errors}) | {:.1} s\n\
         generated tokens/s {:.1} | requests/s {:.2}\n\
         latency ms (p50 / p90 / p99 / max):\n  ttft {}\n  itl  {}\n  e2e  {}\n",
        r.concurrency,
        r.requests,
        r.ok,
        r.wall_s,
        r.generated_tokens_per_s,
        r.requests_per_s,
        p(&r.ttft_ms),
        p(&r.itl_ms),
        p(&r.e2e_ms),
    );
    if let Some(l) = &r.long_prompts {
        s.push_str(&format!(
            "long prompts ({} tokens every {} s): {} sent, {} ok; ttft {}\n",
            l.prompt_tokens,
            l.every_s,
            l.requests,
            l.ok,
            p(&l.ttft_ms)
        ));
    }
    s
}
