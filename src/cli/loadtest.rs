//! `qgpt loadtest`: a gRPC load generator for a running `qgpt serve`. N concurrent clients each
//! stream one request after another (a prompt of P random token ids, G tokens with ignore_eos)
//! until M requests have been sent or S seconds have passed. It reports aggregate throughput
//! and the client-side latency percentiles: time to first token, inter-token latency and
//! end-to-end latency, and a count of every status seen.

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
}

/// Runs the load and prints the report.
pub fn run(args: Args) -> Result<(), CliError> {
    if args.concurrency == 0 || args.prompt_tokens == 0 || args.max_new_tokens == 0 {
        return Err(
            "--concurrency, --prompt-tokens and --max-new-tokens must be at least 1".into(),
        );
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
    for w in workers {
        w.await?;
    }
    let wall = start.elapsed().as_secs_f64();
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
    })
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
    format!(
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
    )
}
