//! The Prometheus endpoint of `qgpt serve`, scraped over HTTP after real gRPC traffic: the
//! counters add up to what the clients received, every request is observed once, the gauges
//! return to zero when the server is idle, and the gRPC layer counts calls by method and code.
//!
//! One test in its own binary: the metrics recorder is process-wide.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixture;
use qgpt::metrics as m;
use qgpt::server::pb::text_generation_client::TextGenerationClient;
use qgpt::server::pb::{self, generate_request::Input};
use qgpt::server::{serve_on, Batching, Limits, ServeConfig, Transport};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// `GET path` on `addr`: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A scrape: `name{labels}` → value, plus the names that have a TYPE line.
struct Scrape {
    samples: HashMap<String, f64>,
    typed: Vec<String>,
}

impl Scrape {
    fn take(addr: SocketAddr) -> Self {
        let (status, body) = http_get(addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        let mut samples = HashMap::new();
        let mut typed = Vec::new();
        for line in body.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                typed.push(t.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (k, v) = line.rsplit_once(' ').unwrap();
                samples.insert(k.to_owned(), v.parse::<f64>().unwrap());
            }
        }
        Self { samples, typed }
    }

    /// The sample `key` (exact text before the value), 0 when absent.
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// The sample `key`, which must be there.
    fn must(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}"))
    }

    /// The sum of `name`'s samples over all its label sets.
    fn total(&self, name: &str) -> f64 {
        let labelled = format!("{name}{{");
        self.samples
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&labelled))
            .map(|(_, v)| v)
            .sum()
    }

    fn requests(&self, finish_reason: &str, code: &str) -> f64 {
        self.get(&format!(
            "{}{{finish_reason=\"{finish_reason}\",code=\"{code}\"}}",
            m::REQUESTS
        ))
    }

    fn grpc(&self, service: &str, method: &str, code: &str) -> f64 {
        self.get(&format!(
            "{}{{service=\"{service}\",method=\"{method}\",code=\"{code}\"}}",
            m::GRPC_REQUESTS
        ))
    }
}

fn request(prompt: &str, max_new_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(Input::Prompt(prompt.into())),
        max_new_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

/// Waits until `done` holds for a fresh scrape (the engine records a request's end a step
/// after its client sees it).
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = tokio::task::spawn_blocking(move || Scrape::take(addr))
            .await
            .unwrap();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < end, "the metrics never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_to_what_clients_received() {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, maddr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let config = ServeConfig {
        model: Some(fixture("models/small-q8_0.gguf")),
        addr,
        limits: Limits::default(),
        transport: Transport::default(),
        drain_timeout: Duration::from_secs(10),
        kv_type: Default::default(),
        auth_token: None,
        tls: None,
        batching: Batching::default(),
        metrics_buckets: vec!["qgpt_batch_size=1,2,3,100".parse().unwrap()],
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(grpc, Some(metrics), config, async {
        let _ = rx.await;
    }));
    // Serving once build info shows (the endpoint answers from the start).
    let first = scrape_until(maddr, |s| s.typed.iter().any(|t| t == m::BUILD_INFO)).await;
    assert!(first.get(m::MODEL_LOAD) > 0.0);
    let info = first
        .samples
        .keys()
        .find(|k| k.starts_with(m::BUILD_INFO))
        .unwrap()
        .clone();
    for label in [
        "version=\"",
        "git_sha=\"",
        "isa=\"",
        "file_type=\"Q8_0\"",
        "model=\"",
    ] {
        assert!(info.contains(label), "{info}");
    }
    let (status, _) = http_get(maddr, "/nope");
    assert!(status.contains("404"), "{status}");

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = TextGenerationClient::new(channel);

    // Three streams and one unary call of 5 tokens, side by side.
    let streams = (0..3).map(|i| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let mut s = c
                .generate_stream(request(&format!("Once upon a time {i}"), 5))
                .await
                .unwrap()
                .into_inner();
            let (mut tokens, mut prompt) = (0, 0);
            while let Some(msg) = s.next().await {
                let msg = msg.unwrap();
                tokens += msg.tokens.len();
                if let Some(u) = msg.usage {
                    prompt = u.prompt_tokens as usize;
                }
            }
            (tokens, prompt)
        })
    });
    let streams: Vec<_> = streams.collect();
    let unary = c
        .generate(request("The end", 5))
        .await
        .unwrap()
        .into_inner();
    let (mut tokens, mut prompt) = (
        unary.tokens.len(),
        unary.usage.unwrap().prompt_tokens as usize,
    );
    for s in streams {
        let (t, p) = s.await.unwrap();
        tokens += t;
        prompt += p;
    }
    assert_eq!(tokens, 4 * 5);
    // One refusal and one call that is not a generation.
    let bad = c.generate_stream(pb::GenerateRequest::default()).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    c.tokenize(pb::TokenizeRequest {
        text: "hello".into(),
        add_special_tokens: false,
    })
    .await
    .unwrap();

    let (gen, n) = (tokens as f64, 4.0);
    // Every step fed its prompt chunks and one token per decoding request: each request's
    // prompt plus all its generated tokens but the last. Waiting for that sum also waits for
    // the engine to finish the step that ended the last request.
    let fed = prompt as f64 + gen - n;
    // A scrape is not one snapshot (the exporter reads counters before it drains histograms),
    // so the wait covers every family asserted on below.
    let tg = "qgpt.v1.TextGeneration";
    let s = scrape_until(maddr, |s| {
        s.get(&format!("{}_count", m::REQUEST_DURATION)) == n
            && s.get(&format!("{}_sum", m::BATCH_TOKENS)) == fed
            && s.get(m::RUNNING_REQUESTS) == 0.0
            && s.total(m::REQUESTS) == n + 1.0
            && s.total(m::GRPC_REQUESTS) == n + 2.0
    })
    .await;
    assert_eq!(s.get(m::GENERATED_TOKENS), gen);
    assert_eq!(s.get(m::PROMPT_TOKENS), prompt as f64);
    assert_eq!(s.requests("length", "OK"), n);
    assert_eq!(s.requests("error", "INVALID_ARGUMENT"), 1.0);
    for (name, count) in [
        (m::TIME_TO_FIRST_TOKEN, n),
        (m::INTER_TOKEN_LATENCY, gen - n),
        (m::REQUEST_DURATION, n),
        (m::QUEUE_TIME, n),
        (m::PREFILL_DURATION, n),
        (m::REQUEST_PROMPT_TOKENS, n),
        (m::REQUEST_GENERATED_TOKENS, n),
    ] {
        assert_eq!(s.get(&format!("{name}_count")), count, "{name}");
    }
    assert_eq!(s.get(&format!("{}_sum", m::REQUEST_GENERATED_TOKENS)), gen);
    assert_eq!(
        s.get(&format!("{}_sum", m::REQUEST_PROMPT_TOKENS)),
        prompt as f64
    );
    let steps = s.total(&format!("{}_count", m::STEP_DURATION));
    assert!(steps >= 5.0, "{steps} steps");
    assert_eq!(s.get(&format!("{}_count", m::BATCH_SIZE)), steps);
    let by_kind = |kind: &str| s.get(&format!("{}_count{{kind=\"{kind}\"}}", m::STEP_DURATION));
    assert!(by_kind("decode") >= 4.0, "decode steps");
    assert!(
        by_kind("prefill") + by_kind("mixed") >= 1.0,
        "steps with prompts"
    );
    // The bucket override took effect.
    assert!(s
        .samples
        .contains_key(&format!("{}_bucket{{le=\"3\"}}", m::BATCH_SIZE)));
    assert_eq!(s.grpc(tg, "GenerateStream", "OK"), 3.0);
    assert_eq!(s.grpc(tg, "GenerateStream", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(s.grpc(tg, "Generate", "OK"), 1.0);
    assert_eq!(s.grpc(tg, "Tokenize", "OK"), 1.0);
    let timed = format!(
        "{}_count{{service=\"{tg}\",method=\"GenerateStream\",code=\"OK\"}}",
        m::GRPC_DURATION
    );
    assert_eq!(s.get(&timed), 3.0);
    for gauge in [m::RUNNING_REQUESTS, m::QUEUED_REQUESTS, m::KV_CACHE_USAGE] {
        assert_eq!(s.must(gauge), 0.0, "{gauge} when idle");
    }
    for &(name, ..) in m::HISTOGRAMS {
        assert!(s.typed.iter().any(|t| t == name), "{name} has no TYPE line");
    }

    // A client that leaves after its first token. The engine notices the closed stream at its
    // next step and ends the request as cancelled; only a machine that stalled this task for the
    // whole generation could see it finish first, so each outcome is accepted, counted
    // consistently.
    let mut s1 = c
        .generate_stream(request("A", 120))
        .await
        .unwrap()
        .into_inner();
    s1.next().await.unwrap().unwrap();
    // Still running, almost always: then it holds KV positions.
    let busy = Scrape::take(maddr);
    if busy.must(m::RUNNING_REQUESTS) == 1.0 {
        assert!(busy.must(m::KV_CACHE_USAGE) > 0.0);
    }
    drop(s1);
    let s = scrape_until(maddr, |s| {
        s.get(&format!("{}_count", m::REQUEST_DURATION)) == 5.0
            && s.total(m::REQUESTS) == 6.0
            && s.total(m::GRPC_REQUESTS) == 7.0
    })
    .await;
    // On a stalled machine the generation can also reach its length just as the client leaves:
    // finish reason "length", and the code the client saw CANCELLED (seen once in CI).
    let cancelled = s.requests("cancelled", "CANCELLED") + s.requests("length", "CANCELLED");
    let mut outcomes: Vec<_> = s
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with(m::REQUESTS))
        .collect();
    outcomes.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(
        cancelled + s.requests("length", "OK"),
        5.0,
        "requests by outcome: {outcomes:?}"
    );
    let calls = s.grpc(tg, "GenerateStream", "CANCELLED") + s.grpc(tg, "GenerateStream", "OK");
    assert_eq!(calls, 4.0);
    if cancelled == 1.0 {
        // Its stream was dropped before the trailers came.
        assert_eq!(s.grpc(tg, "GenerateStream", "CANCELLED"), 1.0);
    }
    let s = scrape_until(maddr, |s| s.get(m::RUNNING_REQUESTS) == 0.0).await;
    assert_eq!(s.must(m::KV_CACHE_USAGE), 0.0);
    assert_eq!(s.must(m::QUEUED_REQUESTS), 0.0);

    // A unary call whose deadline leaves no time to generate: counted with the code its client
    // gets (tonic's own timeout may answer CANCELLED first; the engine's count is the same).
    let mut req = tonic::Request::new(request("B", 100));
    req.set_timeout(Duration::from_millis(1));
    let err = c.generate(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    scrape_until(maddr, |s| {
        s.requests("deadline", "DEADLINE_EXCEEDED") == 1.0 && s.total(m::REQUESTS) == 7.0
    })
    .await;

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The dashboard and the alert rules name only metrics qgpt exports (with a histogram's
/// `_bucket`, `_sum` and `_count` series), and name each of the main ones somewhere.
#[test]
fn deploy_files_use_only_exported_metric_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let histograms: Vec<&str> = m::HISTOGRAMS.iter().map(|h| h.0).collect();
    let known = |name: &str| {
        m::COUNTERS_AND_GAUGES.contains(&name)
            || histograms.contains(&name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| histograms.contains(&base))
            })
    };
    let mut used = Vec::new();
    for file in [
        "deploy/grafana/qgpt-dashboard.json",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("qgpt_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            assert!(known(name), "{file}: {name} is not a metric qgpt exports");
            used.push(name.to_owned());
            rest = &tail[end..];
        }
    }
    for name in [
        m::TIME_TO_FIRST_TOKEN,
        m::INTER_TOKEN_LATENCY,
        m::GENERATED_TOKENS,
        m::QUEUED_REQUESTS,
        m::RUNNING_REQUESTS,
        m::KV_CACHE_USAGE,
        m::REQUESTS,
    ] {
        assert!(
            used.iter().any(|u| u.starts_with(name)),
            "{name} is on no dashboard or alert"
        );
    }
}
