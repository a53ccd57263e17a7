//! Prometheus metrics: every name qgpt exports, registered once with its unit and help text, the
//! recording helpers the engine and the server call, and the exporter.
//!
//! Recording goes through the `metrics` facade: with no exporter installed (`--metrics-port 0`,
//! the library in tests) every call is a no-op. Labels come from closed sets only (finish
//! reasons, gRPC codes and methods), never from request ids or prompts.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::Code;

/// Time from a request's arrival to its first generated token.
pub const TIME_TO_FIRST_TOKEN: &str = "qgpt_time_to_first_token_seconds";
/// Time between consecutive generated tokens of one request.
pub const INTER_TOKEN_LATENCY: &str = "qgpt_inter_token_latency_seconds";
/// Time from a request's arrival to its end.
pub const REQUEST_DURATION: &str = "qgpt_request_duration_seconds";
/// Time a request waited before the engine admitted it.
pub const QUEUE_TIME: &str = "qgpt_queue_time_seconds";
/// Time from admission until the whole prompt was in the KV cache.
pub const PREFILL_DURATION: &str = "qgpt_prefill_duration_seconds";
/// Time of one engine step (one batched forward pass, sampling and streaming).
pub const STEP_DURATION: &str = "qgpt_step_duration_seconds";
/// Requests advanced by one engine step.
pub const BATCH_SIZE: &str = "qgpt_batch_size";
/// Tokens fed to one engine step (one per decoding request plus prompt chunks).
pub const BATCH_TOKENS: &str = "qgpt_batch_tokens";
/// Prompt tokens of each finished request.
pub const REQUEST_PROMPT_TOKENS: &str = "qgpt_request_prompt_tokens";
/// Generated tokens of each finished request.
pub const REQUEST_GENERATED_TOKENS: &str = "qgpt_request_generated_tokens";
/// Prompt tokens processed (prefilled).
pub const PROMPT_TOKENS: &str = "qgpt_prompt_tokens_total";
/// Tokens generated and streamed.
pub const GENERATED_TOKENS: &str = "qgpt_generated_tokens_total";
/// Generation requests that ended, by `finish_reason` and `code`.
pub const REQUESTS: &str = "qgpt_requests_total";
/// Requests generating now.
pub const RUNNING_REQUESTS: &str = "qgpt_running_requests";
/// Requests waiting for the engine now.
pub const QUEUED_REQUESTS: &str = "qgpt_queued_requests";
/// KV-cache positions reserved by running requests ÷ the budget (`--kv-cache-tokens`).
pub const KV_CACHE_USAGE: &str = "qgpt_kv_cache_usage_ratio";
/// Time from start to serving: mapping, validating and warming up the model.
pub const MODEL_LOAD: &str = "qgpt_model_load_seconds";
/// Always 1; the labels say what runs.
pub const BUILD_INFO: &str = "qgpt_build_info";
/// gRPC calls that ended, by `service`, `method` and `code`.
pub const GRPC_REQUESTS: &str = "qgpt_grpc_requests_total";
/// gRPC call duration (for streams: until the last message), by `service`, `method`, `code`.
pub const GRPC_DURATION: &str = "qgpt_grpc_request_duration_seconds";

/// Buckets of per-token latencies (inter-token, step): 0.5 ms to 2.5 s.
const TOKEN_LATENCY: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of a request's phases (first token, queue, prefill): 5 ms to 1 min.
const PHASE_LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of whole calls: 1 ms to 10 min.
const CALL_LATENCY: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets of token counts per request.
const TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 32768.0,
];
/// Buckets of requests and tokens per step.
const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every histogram with its unit, help text and default buckets.
pub const HISTOGRAMS: &[(&str, Unit, &str, &[f64])] = &[
    (
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from a generation request's arrival to its first generated token.",
        PHASE_LATENCY,
    ),
    (
        INTER_TOKEN_LATENCY,
        Unit::Seconds,
        "Time between consecutive generated tokens of one request.",
        TOKEN_LATENCY,
    ),
    (
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a generation request's arrival to its end (end-to-end latency).",
        CALL_LATENCY,
    ),
    (
        QUEUE_TIME,
        Unit::Seconds,
        "Time a generation request waited in the queue before the engine admitted it (or it left).",
        PHASE_LATENCY,
    ),
    (
        PREFILL_DURATION,
        Unit::Seconds,
        "Time from admission until the request's whole prompt was in its KV cache.",
        PHASE_LATENCY,
    ),
    (
        STEP_DURATION,
        Unit::Seconds,
        "Time of one engine step (forward pass, sampling, streaming), by kind: decode, prefill, mixed.",
        TOKEN_LATENCY,
    ),
    (
        BATCH_SIZE,
        Unit::Count,
        "Requests advanced by one engine step.",
        BATCH,
    ),
    (
        BATCH_TOKENS,
        Unit::Count,
        "Tokens fed to one engine step (one per decoding request, plus prompt chunks).",
        BATCH,
    ),
    (
        REQUEST_PROMPT_TOKENS,
        Unit::Count,
        "Prompt tokens of each finished generation request.",
        TOKENS,
    ),
    (
        REQUEST_GENERATED_TOKENS,
        Unit::Count,
        "Generated tokens of each finished generation request.",
        TOKENS,
    ),
    (
        GRPC_DURATION,
        Unit::Seconds,
        "Duration of gRPC calls (streams: until their last message), by service, method and code.",
        CALL_LATENCY,
    ),
];

/// The counters and gauges (the histograms are in [`HISTOGRAMS`]).
pub const COUNTERS_AND_GAUGES: &[&str] = &[
    PROMPT_TOKENS,
    GENERATED_TOKENS,
    REQUESTS,
    GRPC_REQUESTS,
    RUNNING_REQUESTS,
    QUEUED_REQUESTS,
    KV_CACHE_USAGE,
    MODEL_LOAD,
    BUILD_INFO,
];

/// Registers every metric's unit and help text with the installed recorder.
fn describe() {
    for &(name, unit, help, _) in HISTOGRAMS {
        describe_histogram!(name, unit, help);
    }
    describe_counter!(
        PROMPT_TOKENS,
        Unit::Count,
        "Prompt tokens processed (prefilled) by the engine."
    );
    describe_counter!(
        GENERATED_TOKENS,
        Unit::Count,
        "Tokens generated and streamed to clients."
    );
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Generation requests that ended, by finish_reason (length, eos, stop_sequence, \
         context_full, deadline, cancelled, or error) and gRPC code."
    );
    describe_counter!(
        GRPC_REQUESTS,
        Unit::Count,
        "gRPC calls that ended, by service, method and code."
    );
    describe_gauge!(
        RUNNING_REQUESTS,
        Unit::Count,
        "Generation requests running now."
    );
    describe_gauge!(
        QUEUED_REQUESTS,
        Unit::Count,
        "Generation requests waiting for the engine now."
    );
    describe_gauge!(
        KV_CACHE_USAGE,
        Unit::Count,
        "KV-cache positions reserved by running requests, as a fraction of the budget."
    );
    describe_gauge!(
        MODEL_LOAD,
        Unit::Seconds,
        "Time from start to serving: mapping, validating and warming up the model."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1: the labels name qgpt's version and commit, the kernels' ISA and the model."
    );
}

/// A bad `--metrics-buckets` value.
#[derive(Debug, thiserror::Error)]
pub enum BucketsError {
    #[error(
        "--metrics-buckets {0:?}: expected NAME=B1,B2,... (a histogram name and its bucket bounds)"
    )]
    Syntax(String),
    #[error("--metrics-buckets: {0:?} is not one of qgpt's histograms ({1})")]
    Unknown(String, String),
    #[error("--metrics-buckets {0}: bounds must be finite numbers in increasing order")]
    Bounds(String),
}

/// Bucket bounds for one histogram, parsed from `NAME=B1,B2,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketOverride {
    /// The histogram's name (one of [`HISTOGRAMS`]).
    pub name: String,
    /// Upper bounds, increasing.
    pub bounds: Vec<f64>,
}

impl std::str::FromStr for BucketOverride {
    type Err = BucketsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, list) = s
            .split_once('=')
            .ok_or_else(|| BucketsError::Syntax(s.to_owned()))?;
        let name = name.trim();
        if !HISTOGRAMS.iter().any(|h| h.0 == name) {
            let known: Vec<&str> = HISTOGRAMS.iter().map(|h| h.0).collect();
            return Err(BucketsError::Unknown(name.to_owned(), known.join(", ")));
        }
        let bounds = list
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BucketsError::Bounds(name.to_owned()))?;
        let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
        if bounds.is_empty() || !increasing || bounds.iter().any(|b| !b.is_finite()) {
            return Err(BucketsError::Bounds(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            bounds,
        })
    }
}

/// The exporter's handle, once installed in this process.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (default buckets, then `overrides`) and
/// returns its handle. A second call returns the first handle: the recorder is process-wide.
pub fn install(overrides: &[BucketOverride]) -> Result<PrometheusHandle, String> {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut b = PrometheusBuilder::new();
    for &(name, _, _, bounds) in HISTOGRAMS {
        let bounds = overrides
            .iter()
            .rev()
            .find(|o| o.name == name)
            .map_or(bounds, |o| &o.bounds[..]);
        b = b
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
            .map_err(|e| format!("histogram buckets of {name}: {e}"))?;
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The canonical name of a gRPC code, as in the gRPC specification (`OK`, `INVALID_ARGUMENT`...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A generation request ended: `finish_reason` is a [`crate::generate::FinishReason`] name, or
/// "error" with the code it failed with.
pub fn request_ended(finish_reason: &'static str, code: Code) {
    counter!(REQUESTS, "finish_reason" => finish_reason, "code" => code_name(code)).increment(1);
}

/// A request that ran ended: its end-to-end time and token counts.
pub fn request_totals(total: Duration, prompt_tokens: usize, generated_tokens: usize) {
    histogram!(REQUEST_DURATION).record(total.as_secs_f64());
    histogram!(REQUEST_PROMPT_TOKENS).record(prompt_tokens as f64);
    histogram!(REQUEST_GENERATED_TOKENS).record(generated_tokens as f64);
}

/// A request left the queue (admitted, refused, or its client gone) after waiting `queued`.
pub fn left_queue(queued: Duration) {
    histogram!(QUEUE_TIME).record(queued.as_secs_f64());
}

/// `n` prompt tokens went into a KV cache; `done`: the prefill that ended took this long.
pub fn prefilled(n: usize, done: Option<Duration>) {
    counter!(PROMPT_TOKENS).increment(n as u64);
    if let Some(d) = done {
        histogram!(PREFILL_DURATION).record(d.as_secs_f64());
    }
}

/// A token was streamed: the first of its request (`since` = time since arrival) or a later
/// one (`since` = time since the previous).
pub fn token(first: bool, since: Duration) {
    counter!(GENERATED_TOKENS).increment(1);
    let name = if first {
        TIME_TO_FIRST_TOKEN
    } else {
        INTER_TOKEN_LATENCY
    };
    histogram!(name).record(since.as_secs_f64());
}

/// An engine step of `kind` ("decode": only decoding requests, "prefill": only prompt chunks,
/// "mixed") advanced `requests` requests by `tokens` tokens in `took`.
pub fn step(kind: &'static str, requests: usize, tokens: usize, took: Duration) {
    histogram!(STEP_DURATION, "kind" => kind).record(took.as_secs_f64());
    histogram!(BATCH_SIZE).record(requests as f64);
    histogram!(BATCH_TOKENS).record(tokens as f64);
}

/// The engine's load gauges, set when the exporter renders.
pub fn load(running: usize, queued: usize, kv_used: u64, kv_total: u64) {
    gauge!(RUNNING_REQUESTS).set(running as f64);
    gauge!(QUEUED_REQUESTS).set(queued as f64);
    gauge!(KV_CACHE_USAGE).set(if kv_total == 0 {
        0.0
    } else {
        kv_used as f64 / kv_total as f64
    });
}

/// The model is serving after `took`; what runs, for `qgpt_build_info`.
pub fn serving(took: Duration, isa: &str, model: &str, file_type: &str) {
    gauge!(MODEL_LOAD).set(took.as_secs_f64());
    let labels: [(&str, SharedString); 5] = [
        ("version", env!("CARGO_PKG_VERSION").into()),
        ("git_sha", env!("QGPT_GIT_SHA").into()),
        ("isa", isa.to_owned().into()),
        ("model", model.to_owned().into()),
        ("file_type", file_type.to_owned().into()),
    ];
    gauge!(BUILD_INFO, &labels).set(1.0);
}

/// A gRPC call ended.
pub fn grpc_call(service: &'static str, method: &'static str, code: Code, took: Duration) {
    let code = code_name(code);
    let labels = [("service", service), ("method", method), ("code", code)];
    counter!(GRPC_REQUESTS, &labels).increment(1);
    histogram!(GRPC_DURATION, &labels).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_overrides_parse_and_bad_ones_are_refused() {
        let o: BucketOverride = "qgpt_step_duration_seconds=0.001, 0.01,1".parse().unwrap();
        assert_eq!(o.name, STEP_DURATION);
        assert_eq!(o.bounds, [0.001, 0.01, 1.0]);
        for bad in [
            "qgpt_step_duration_seconds",
            "qgpt_nope_seconds=1,2",
            "qgpt_step_duration_seconds=",
            "qgpt_step_duration_seconds=2,1",
            "qgpt_step_duration_seconds=1,x",
            "qgpt_step_duration_seconds=1,inf",
        ] {
            assert!(bad.parse::<BucketOverride>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_buckets_increase_and_names_are_unique() {
        for &(name, _, help, bounds) in HISTOGRAMS {
            assert!(name.starts_with("qgpt_") && !help.is_empty(), "{name}");
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
        let mut names: Vec<&str> = HISTOGRAMS.iter().map(|h| h.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HISTOGRAMS.len());
    }

    #[test]
    fn code_names_follow_the_grpc_spec() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
