//! The gRPC server over real loopback connections with tonic clients: generation (streamed and
//! unary, equal to each other and to `qgpt generate`), tokenize, model info, status, health,
//! reflection, every validation case, deadlines, cancellation, overload and SIGTERM drain.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(unix)]
use common::spawn_serve;
use common::{fixture, json_stdout};
use qgpt::server::pb::text_generation_client::TextGenerationClient;
use qgpt::server::pb::{self, generate_request::Input, FinishReason};
use qgpt::server::{serve_on, Batching, Limits, ServeConfig, ServeError, TlsFiles, Transport};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SMALL: &str = "models/small-q8_0.gguf";
/// 50257-token vocabulary: log-probabilities over it make each step measurably slower.
const BIG_VOCAB: &str = "models/gpt2vocab-q8_0.gguf";

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    async fn start(model: &str, limits: Limits) -> Self {
        Self::start_with(model, limits, None).await
    }

    async fn start_with(model: &str, limits: Limits, auth_token: Option<&str>) -> Self {
        Self::start_full(model, limits, auth_token, None, Batching::default()).await
    }

    async fn start_full(
        model: &str,
        limits: Limits,
        auth_token: Option<&str>,
        tls: Option<TlsFiles>,
        batching: Batching,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServeConfig {
            model: Some(fixture(model)),
            addr,
            limits,
            transport: Transport::default(),
            drain_timeout: Duration::from_secs(10),
            kv_type: Default::default(),
            auth_token: auth_token.map(str::to_owned),
            tls: tls.clone(),
            batching,
            metrics_buckets: Vec::new(),
        };
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, None, config, async {
            let _ = rx.await;
        }));
        let s = Self {
            addr,
            stop: Some(stop),
            task,
        };
        if tls.is_none() {
            s.wait_for(ServingStatus::Serving).await;
        }
        s
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> TextGenerationClient<Channel> {
        TextGenerationClient::new(self.channel().await)
    }

    async fn health(&self, service: &str) -> ServingStatus {
        let mut h = HealthClient::new(self.channel().await);
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        ServingStatus::try_from(r.status).unwrap()
    }

    async fn wait_for(&self, want: ServingStatus) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = match Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                Ok(ch) => HealthClient::new(ch)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status == want as i32),
                Err(_) => false,
            };
            if ok {
                return;
            }
            assert!(Instant::now() < end, "health never became {want:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn text_request(prompt: &str, max_new_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(Input::Prompt(prompt.into())),
        max_new_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

/// Waits (up to `secs`) until nothing runs or waits; returns the status then.
async fn wait_idle(
    c: &mut TextGenerationClient<Channel>,
    secs: u64,
) -> pb::GetServerStatusResponse {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = c
            .get_server_status(pb::GetServerStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if st.running_requests == 0 && st.queued_requests == 0 {
            return st;
        }
        assert!(Instant::now() < end, "the engine never became idle: {st:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every message of a stream, or the status that ended it.
async fn stream_all(
    c: &mut TextGenerationClient<Channel>,
    req: impl tonic::IntoRequest<pb::GenerateRequest>,
) -> Result<Vec<pb::GenerateResponse>, tonic::Status> {
    let mut s = c.generate_stream(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.push(m?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_unary_and_cli_generation_agree() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let req = text_request("The quick brown fox", 24);
    let msgs = stream_all(&mut c, req.clone()).await.unwrap();
    let last = msgs.last().unwrap();
    assert_eq!(last.finish_reason, FinishReason::Length as i32);
    let usage = last.usage.unwrap();
    assert_eq!(usage.generated_tokens, 24);
    let streamed_ids: Vec<u32> = msgs
        .iter()
        .flat_map(|m| m.tokens.iter().map(|t| t.id))
        .collect();
    assert_eq!(
        streamed_ids.len(),
        24,
        "one token per message, every token streamed"
    );
    assert!(msgs[..msgs.len() - 1].iter().all(|m| m.finish_reason == 0));
    let streamed_text: String = msgs.iter().map(|m| m.text_delta.as_str()).collect();
    let timings = last.timings.unwrap();
    assert!(timings.total_ms >= timings.prefill_ms && timings.time_to_first_token_ms > 0.0);

    let unary = c.generate(req).await.unwrap().into_inner();
    assert_eq!(unary.text_delta, streamed_text);
    assert_eq!(
        unary.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        streamed_ids
    );
    assert_eq!(unary.usage.unwrap().prompt_tokens, usage.prompt_tokens);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .args([
            "generate",
            "--json",
            "--ignore-eos",
            "--temperature",
            "0",
            "-n",
            "24",
            "-p",
        ])
        .arg("The quick brown fox")
        .arg("-m")
        .arg(fixture(SMALL))
        .output()
        .unwrap();
    let cli = json_stdout(&out);
    assert_eq!(cli["text"].as_str().unwrap(), streamed_text);
    let cli_ids: Vec<u32> = serde_json::from_value(cli["ids"].clone()).unwrap();
    assert_eq!(cli_ids, streamed_ids);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_is_reproducible_and_options_take_effect() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let sampled = |seed| pb::GenerateRequest {
        sampling: Some(pb::SamplingParams {
            temperature: Some(1.0),
            top_k: Some(50),
            top_p: Some(0.9),
            min_p: Some(0.01),
            repetition_penalty: Some(1.1),
            seed: Some(seed),
            ..Default::default()
        }),
        logprobs: 3,
        echo: true,
        request_id: "mine-1".into(),
        ..text_request("Once upon a time", 16)
    };
    let a = c.generate(sampled(7)).await.unwrap().into_inner();
    let b = c.generate(sampled(7)).await.unwrap().into_inner();
    let ids = |r: &pb::GenerateResponse| r.tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "same seed, same tokens");
    assert_eq!(a.seed, 7);
    assert_eq!(a.request_id, "mine-1");
    assert!(!a.prompt_tokens.is_empty(), "echo returns the prompt");
    for t in &a.tokens {
        assert_eq!(t.top_logprobs.len(), 3);
        let lp = t.logprob.unwrap();
        assert!(lp <= 0.0 && t.top_logprobs[0].logprob >= lp - 1e-6);
        assert!(t
            .top_logprobs
            .windows(2)
            .all(|w| w[0].logprob >= w[1].logprob));
    }
    // Without a seed the server picks one and reports it.
    let r = c
        .generate(text_request("Once upon a time", 4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.tokens.len(), 4);

    // A stop string: generation stops, the string is not returned.
    let full = c
        .generate(text_request("Once upon a time", 40))
        .await
        .unwrap()
        .into_inner();
    let text = full.text_delta.clone();
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(text.chars().count() / 2)
        .unwrap();
    let stop: String = text[cut..].chars().take(2).collect();
    let first_at = text.find(&stop).unwrap();
    let req = pb::GenerateRequest {
        stop: vec![stop.clone()],
        ..text_request("Once upon a time", 40)
    };
    let msgs = stream_all(&mut c, req).await.unwrap();
    let streamed: String = msgs.iter().map(|m| m.text_delta.as_str()).collect();
    let last = msgs.last().unwrap();
    assert_eq!(last.finish_reason, FinishReason::StopSequence as i32);
    assert_eq!(last.stop_reason, stop);
    assert_eq!(
        streamed,
        text[..first_at],
        "text up to the stop string {stop:?}"
    );

    // A stop token: it is returned, and generation ends there.
    let third = full.tokens[2].id;
    let req = pb::GenerateRequest {
        stop_token_ids: vec![third],
        ..text_request("Once upon a time", 40)
    };
    let r = c.generate(req).await.unwrap().into_inner();
    let first = full.tokens.iter().position(|t| t.id == third).unwrap();
    assert_eq!(r.tokens.len(), first + 1);
    assert_eq!(r.finish_reason, FinishReason::StopSequence as i32);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_detokenize_info_status_health_and_reflection() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let toks = c
        .tokenize(pb::TokenizeRequest {
            text: "Hello world".into(),
            add_special_tokens: false,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(!toks.is_empty());
    let joined: String = toks.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(joined, "Hello world");
    let ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
    let back = c
        .detokenize(pb::DetokenizeRequest {
            ids: ids.clone(),
            skip_special_tokens: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.text, "Hello world");

    let info = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.architecture, "gpt2");
    assert_eq!((info.vocab_size, info.context_length), (512, 128));
    assert_eq!(info.file_type, "Q8_0");
    assert!(info.tensor_types.contains_key("Q8_0"));
    assert!(!info.isa.is_empty() && info.threads > 0 && info.kv_cache_type == "f16");
    assert!(info
        .special_tokens
        .iter()
        .any(|t| t.role == "eos" && t.id == 511));

    let st = c
        .get_server_status(pb::GetServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.running_requests, st.queued_requests, st.draining),
        (0, 0, false)
    );
    assert_eq!(st.free_slots, st.max_running_requests);

    assert_eq!(server.health("").await, ServingStatus::Serving);
    assert_eq!(
        server.health("qgpt.v1.TextGeneration").await,
        ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut r = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = r
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("not a service list: {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["qgpt.v1.TextGeneration", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_request_is_refused_with_the_field_named() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let ok = || text_request("Hi", 4);
    let with_sampling = |s: pb::SamplingParams| pb::GenerateRequest {
        sampling: Some(s),
        ..ok()
    };
    let ids = |ids: Vec<u32>| pb::GenerateRequest {
        input: Some(Input::PromptTokenIds(pb::TokenIds { ids })),
        ..ok()
    };
    let cases: Vec<(&str, pb::GenerateRequest)> = vec![
        (
            "input",
            pb::GenerateRequest {
                input: None,
                ..ok()
            },
        ),
        ("prompt", text_request("", 4)),
        ("prompt_token_ids", ids(vec![])),
        ("prompt_token_ids[1]", ids(vec![1, 512])),
        ("prompt_token_ids", ids(vec![1; 128])),
        (
            "max_new_tokens",
            pb::GenerateRequest {
                max_new_tokens: 129,
                ..ok()
            },
        ),
        (
            "stop",
            pb::GenerateRequest {
                stop: vec!["x".into(); 17],
                ..ok()
            },
        ),
        (
            "stop[0]",
            pb::GenerateRequest {
                stop: vec![String::new()],
                ..ok()
            },
        ),
        (
            "stop[1]",
            pb::GenerateRequest {
                stop: vec!["a".into(), "b".repeat(257)],
                ..ok()
            },
        ),
        (
            "stop_token_ids",
            pb::GenerateRequest {
                stop_token_ids: vec![1; 65],
                ..ok()
            },
        ),
        (
            "stop_token_ids[0]",
            pb::GenerateRequest {
                stop_token_ids: vec![9999],
                ..ok()
            },
        ),
        (
            "logprobs",
            pb::GenerateRequest {
                logprobs: 21,
                ..ok()
            },
        ),
        (
            "request_id",
            pb::GenerateRequest {
                request_id: "r".repeat(129),
                ..ok()
            },
        ),
        (
            "sampling.temperature",
            with_sampling(pb::SamplingParams {
                temperature: Some(f32::NAN),
                ..Default::default()
            }),
        ),
        (
            "sampling.temperature",
            with_sampling(pb::SamplingParams {
                temperature: Some(-1.0),
                ..Default::default()
            }),
        ),
        (
            "sampling.top_p",
            with_sampling(pb::SamplingParams {
                top_p: Some(0.0),
                ..Default::default()
            }),
        ),
        (
            "sampling.top_k",
            with_sampling(pb::SamplingParams {
                top_k: Some(513),
                ..Default::default()
            }),
        ),
        (
            "sampling.min_p",
            with_sampling(pb::SamplingParams {
                min_p: Some(2.0),
                ..Default::default()
            }),
        ),
        (
            "sampling.typical_p",
            with_sampling(pb::SamplingParams {
                typical_p: Some(1.5),
                ..Default::default()
            }),
        ),
        (
            "sampling.repetition_penalty",
            with_sampling(pb::SamplingParams {
                repetition_penalty: Some(0.0),
                ..Default::default()
            }),
        ),
        (
            "sampling.presence_penalty",
            with_sampling(pb::SamplingParams {
                presence_penalty: Some(3.0),
                ..Default::default()
            }),
        ),
        (
            "sampling.frequency_penalty",
            with_sampling(pb::SamplingParams {
                frequency_penalty: Some(f32::INFINITY),
                ..Default::default()
            }),
        ),
        // Text whose tokens fill the context: refused once tokenized, as the stream's status.
        ("prompt", text_request(&"hello ".repeat(200), 4)),
        ("messages", chat(vec![])),
        ("messages[0].role", chat(vec![("", "Hi")])),
        (
            "messages[1].role",
            chat(vec![("user", "Hi"), (&"r".repeat(65), "x")]),
        ),
        ("messages", chat(vec![("user", "Hi"); 1025])),
    ];
    for (field, req) in cases {
        for unary in [true, false] {
            let status = if unary {
                c.generate(req.clone()).await.unwrap_err()
            } else {
                stream_all(&mut c, req.clone()).await.unwrap_err()
            };
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(
                status.message().starts_with(field),
                "{field}: {}",
                status.message()
            );
        }
    }
    let status = c
        .detokenize(pb::DetokenizeRequest {
            ids: vec![0, 600],
            skip_special_tokens: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("ids[1]"),
        "{}",
        status.message()
    );
    // A valid conversation for a model without a chat template: FAILED_PRECONDITION.
    let status = c.generate(chat(vec![("user", "Hi")])).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("no chat template"),
        "{}",
        status.message()
    );
    // The server is still healthy and serving.
    assert_eq!(c.generate(ok()).await.unwrap().into_inner().tokens.len(), 4);
    server.shutdown().await;
}

/// A `messages` request of (role, content) pairs.
fn chat(messages: Vec<(&str, &str)>) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(Input::Messages(pb::ChatMessages {
            messages: messages
                .into_iter()
                .map(|(role, content)| pb::ChatMessage {
                    role: role.into(),
                    content: content.into(),
                })
                .collect(),
        })),
        max_new_tokens: 4,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_end_streams_and_fail_unary_calls() {
    // One request at a time, so that the deadline requests wait behind ten others: their
    // deadline (three times one request's measured duration) passes while they wait, whatever
    // the machine's speed. (Deadlines in the middle of decoding:
    // `a_deadline_mid_generation_keeps_the_tokens_so_far`.)
    let batching = Batching {
        max_running: 1,
        ..Batching::default()
    };
    let server = Server::start_full(BIG_VOCAB, Limits::default(), None, None, batching).await;
    let mut c = server.client().await;
    // 120 steps, each with a pass over 50257 log-probabilities.
    let slow = || pb::GenerateRequest {
        logprobs: 20,
        ..text_request("Hello", 120)
    };
    let t = Instant::now();
    c.generate(slow()).await.unwrap();
    let timeout = (t.elapsed() * 3).max(Duration::from_millis(100));
    let mut load = Vec::new();
    for _ in 0..10 {
        let mut c = c.clone();
        let req = slow();
        load.push(tokio::spawn(async move { stream_all(&mut c, req).await }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut req = Request::new(slow());
    req.set_timeout(timeout);
    let unary = {
        let mut c = c.clone();
        tokio::spawn(async move { c.generate(req).await })
    };
    let mut req = Request::new(slow());
    req.set_timeout(timeout);
    let msgs = stream_all(&mut c, req).await.unwrap();
    let last = msgs.last().unwrap();
    assert_eq!(
        last.finish_reason,
        FinishReason::Deadline as i32,
        "timeout {timeout:?}"
    );
    let n = last.usage.unwrap().generated_tokens;
    assert!(n < 120, "{n} tokens");
    let streamed: usize = msgs.iter().map(|m| m.tokens.len()).sum();
    assert_eq!(
        streamed, n as usize,
        "the tokens made before the deadline are kept"
    );

    let status = unary.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    for l in load {
        let msgs = l.await.unwrap().unwrap();
        assert_eq!(
            msgs.last().unwrap().finish_reason,
            FinishReason::Length as i32
        );
    }

    // A generous deadline changes nothing.
    let mut req = Request::new(text_request("Hello", 8));
    req.set_timeout(Duration::from_secs(60));
    assert_eq!(c.generate(req).await.unwrap().into_inner().tokens.len(), 8);
    server.shutdown().await;
}

/// A deadline that passes in the middle of decoding stops generation at the next step, with
/// the tokens made so far (the library path the engine runs; each token takes 2 ms here).
#[test]
fn a_deadline_mid_generation_keeps_the_tokens_so_far() {
    use qgpt::generate::{generate, FinishReason, GenerateOptions};
    use qgpt::sampling::SamplingParams;
    let m = qgpt::model::LoadedModel::open(&fixture(SMALL)).unwrap();
    let opts = GenerateOptions {
        ignore_eos: true,
        deadline: Some(Instant::now() + Duration::from_millis(30)),
        ..GenerateOptions::new(100, SamplingParams::greedy())
    };
    let g = generate(&m.model, &m.tokenizer, &[1, 2, 3], &opts, |_| {
        std::thread::sleep(Duration::from_millis(2));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Deadline);
    assert!(
        !g.ids.is_empty() && g.ids.len() < 100,
        "{} tokens",
        g.ids.len()
    );
}

/// The cancellation check stops generation before the next forward call: at once when it is
/// already set, after the tokens made so far when it becomes set mid-way.
#[test]
fn a_cancel_check_stops_before_the_next_forward_call() {
    use qgpt::generate::{generate, CancelCheck, FinishReason, GenerateOptions};
    use qgpt::sampling::SamplingParams;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let m = qgpt::model::LoadedModel::open(&fixture(SMALL)).unwrap();
    let run = |after: usize| {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let opts = GenerateOptions {
            ignore_eos: true,
            cancel: Some(CancelCheck(Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst) >= after
            }))),
            ..GenerateOptions::new(50, SamplingParams::greedy())
        };
        generate(&m.model, &m.tokenizer, &[1, 2, 3], &opts, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
    };
    let g = run(0);
    assert_eq!((g.finish_reason, g.ids.len()), (FinishReason::Cancelled, 0));
    // Checks: before the prompt, before its one chunk, then before each decode step.
    let g = run(7);
    assert_eq!(g.finish_reason, FinishReason::Cancelled);
    assert_eq!(g.ids.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_frees_the_engine_and_overload_is_refused() {
    let limits = Limits {
        max_queued: 1,
        ..Limits::default()
    };
    let batching = Batching {
        max_running: 1,
        ..Batching::default()
    };
    let server = Server::start_full(BIG_VOCAB, limits, None, None, batching).await;
    let mut c = server.client().await;
    // Log-probabilities over 50257 tokens make every step cost a full-vocabulary pass.
    let slow = || pb::GenerateRequest {
        logprobs: 20,
        ..text_request("Hello", 120)
    };
    // Cancel: read one message, drop the stream; the engine must come back idle.
    let mut s = c.generate_stream(slow()).await.unwrap().into_inner();
    s.next().await.unwrap().unwrap();
    drop(s);
    wait_idle(&mut c, 10).await;

    // Overload: one running, one queued, the rest refused at once.
    let mut calls = Vec::new();
    for _ in 0..12 {
        let mut c = c.clone();
        let req = slow();
        calls.push(tokio::spawn(async move { c.generate(req).await }));
    }
    let mut refused = 0;
    let mut done = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().tokens.len(), 120);
                done += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("queue is full"),
                    "{}",
                    status.message()
                );
                // The same facts as structured details.
                use tonic_types::StatusExt;
                let info = status.get_details_error_info().expect("ErrorInfo details");
                assert_eq!(
                    (info.reason.as_str(), info.domain.as_str()),
                    ("QUEUE_FULL", "qgpt")
                );
                let field = |k: &str| -> u64 {
                    info.metadata[k]
                        .parse()
                        .unwrap_or_else(|e| panic!("{k}: {e}"))
                };
                let max_queued = field("max_queued");
                assert!(field("queue_length") <= max_queued, "{info:?}");
                assert!(field("running") <= 1, "{info:?}");
                let wait = status.get_details_retry_info().expect("RetryInfo details");
                let delay = wait.retry_delay.expect("a retry delay");
                assert_eq!(
                    delay.as_millis() as u64,
                    field("estimated_wait_ms"),
                    "{info:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && done >= 1, "refused {refused}, done {done}");
    // And the server still serves.
    assert_still_serves(&mut c).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_running_streams_and_refuses_new_requests() {
    // One request at a time: the six below keep the drain going for about half a second.
    let batching = Batching {
        max_running: 1,
        ..Batching::default()
    };
    let server = Server::start_full(BIG_VOCAB, Limits::default(), None, None, batching).await;
    let mut c = server.client().await;
    // Six requests of about 90 ms each keep the server draining for a while.
    let mut streams = Vec::new();
    for _ in 0..6 {
        let req = pb::GenerateRequest {
            logprobs: 20,
            ..text_request("Hello", 120)
        };
        streams.push(c.generate_stream(req).await.unwrap().into_inner());
    }
    streams[0].next().await.unwrap().unwrap();
    let mut health = HealthClient::new(server.channel().await);
    let Server { addr, stop, task } = server;
    stop.unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let h = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(h.into_inner().status, ServingStatus::NotServing as i32);
    let status = c.generate(text_request("Hi", 2)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Every running and queued stream runs to its end.
    for (i, mut s) in streams.into_iter().enumerate() {
        let mut n = usize::from(i == 0);
        let mut last = None;
        while let Some(m) = s.next().await {
            let m = m.unwrap();
            n += m.tokens.len();
            last = Some(m.finish_reason);
        }
        assert_eq!(n, 120, "stream {i}");
        assert_eq!(last, Some(FinishReason::Length as i32));
    }
    task.await.unwrap().unwrap();
    // Closed: connecting fails.
    let after = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    assert!(after.is_err());
}

/// Until the model is loaded, health says NOT_SERVING and generation calls get UNAVAILABLE. The
/// model path is a FIFO, so loading blocks until the test opens its other end (and then fails:
/// a FIFO cannot be mapped, and the server reports that and stops).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_model_loads() {
    let dir = std::env::temp_dir().join(format!("qgpt-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        model: Some(fifo.clone()),
        addr,
        limits: Limits::default(),
        transport: Transport::default(),
        drain_timeout: Duration::from_secs(1),
        kv_type: Default::default(),
        auth_token: None,
        tls: None,
        batching: Batching::default(),
        metrics_buckets: Vec::new(),
    };
    let task = tokio::spawn(serve_on(listener, None, config, std::future::pending()));
    let server = Server {
        addr,
        stop: None,
        task: tokio::spawn(async { Ok(()) }),
    };
    server.wait_for(ServingStatus::NotServing).await;
    let status = server
        .client()
        .await
        .generate(text_request("Hi", 2))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("loading"), "{status:?}");
    // Unblock the load: write nothing and close.
    let f = fifo.clone();
    tokio::task::spawn_blocking(move || drop(std::fs::OpenOptions::new().write(true).open(f)))
        .await
        .unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("loading the model"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary: SIGTERM turns health NOT_SERVING, lets the running stream finish, refuses new
/// requests with UNAVAILABLE, and exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    use std::process::Command;
    let model = fixture(BIG_VOCAB).display().to_string();
    // One request at a time: the eight below keep the drain going for most of a second.
    let (mut child, port, rx) = spawn_serve(
        &["-m", &model, "--max-running", "1"],
        &[("RUST_LOG", "info")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server {
        addr,
        stop: None,
        task: tokio::spawn(async { Ok(()) }),
    };
    server.wait_for(ServingStatus::Serving).await;
    let mut c = server.client().await;
    // Eight requests of about 90 ms each keep the server draining for most of a second.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let req = pb::GenerateRequest {
            logprobs: 20,
            ..text_request("Hello", 120)
        };
        streams.push(c.generate_stream(req).await.unwrap().into_inner());
    }
    streams[0].next().await.unwrap().unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = c.generate(text_request("Hi", 2)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    for (i, mut s) in streams.into_iter().enumerate() {
        let mut n = usize::from(i == 0);
        let mut last = None;
        while let Some(m) = s.next().await {
            let m = m.unwrap();
            n += m.tokens.len();
            last = Some(m.finish_reason);
        }
        assert_eq!(n, 120, "stream {i} finished");
        assert_eq!(last, Some(FinishReason::Length as i32));
    }
    let code = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(code.success(), "exit status {code:?}");
    let log: Vec<String> = rx.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("draining")), "{log:?}");
}

/// Neither the bearer token nor prompts or generated text reach the log, even at debug level
/// (tonic, hyper and h2 included), whether the token sent is right or wrong.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_prompts_stay_out_of_the_log() {
    const SECRET: &str = "s3cret-TOKEN-4f9a";
    const PROMPT: &str = "CANARY-PROMPT-77 Licensed";
    let model = fixture(SMALL).display().to_string();
    let (mut child, port, rx) = spawn_serve(
        &["-m", &model],
        &[("RUST_LOG", "debug"), ("QGPT_AUTH_TOKEN", SECRET)],
    );
    let server = Server {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        stop: None,
        task: tokio::spawn(async { Ok(()) }),
    };
    server.wait_for(ServingStatus::Serving).await;
    let mut c = server.client().await;
    let mut texts = Vec::new();
    for token in [SECRET, "wrong-s3cret-TOKEN-4f9a", ""] {
        let mut req = Request::new(text_request(PROMPT, 8));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match c.generate(req).await {
            Ok(r) => texts.push(r.into_inner().text_delta),
            Err(s) => assert_eq!(s.code(), Code::Unauthenticated),
        }
    }
    assert_eq!(texts.len(), 1, "only the right token generates");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let code = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(code.success(), "exit status {code:?}");
    let log: Vec<String> = rx.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("request finished")),
        "{log:?}"
    );
    assert!(log.len() > 10, "debug logging was on: {log:?}");
    let generated = texts[0].trim();
    for line in &log {
        assert!(
            !line.contains("s3cret-TOKEN"),
            "the token was logged: {line}"
        );
        assert!(
            !line.contains("CANARY-PROMPT"),
            "the prompt was logged: {line}"
        );
        if generated.len() >= 8 {
            assert!(
                !line.contains(generated),
                "generated text was logged: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_generation_but_not_health() {
    let server = Server::start_with(SMALL, Limits::default(), Some("t0ken")).await;
    let mut c = server.client().await;
    let info = |token: Option<&str>| {
        let mut r = Request::new(pb::GetModelInfoRequest {});
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    for bad in [None, Some("wrong")] {
        let status = c.get_model_info(info(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
    }
    let mut req = Request::new(text_request("Hi", 2));
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.generate(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(c.get_model_info(info(Some("t0ken"))).await.is_ok());
    let mut req = Request::new(text_request("Hi", 2));
    req.metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    assert_eq!(c.generate(req).await.unwrap().into_inner().tokens.len(), 2);
    assert_eq!(server.health("").await, ServingStatus::Serving);
    server.shutdown().await;
}

/// A TLS channel to `addr` trusting the test CA, with the test client certificate when `mtls`.
async fn tls_channel(addr: SocketAddr, mtls: bool) -> Result<Channel, tonic::transport::Error> {
    tls_channel_with(addr, "ca.pem", mtls.then_some("client")).await
}

/// A TLS channel to `addr` trusting `ca`, presenting `client`.pem/.key if given.
async fn tls_channel_with(
    addr: SocketAddr,
    ca: &str,
    client: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let pem = |f: &str| std::fs::read(fixture(&format!("tls/{f}"))).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(ca)))
        .domain_name("localhost");
    if let Some(who) = client {
        tls = tls.identity(Identity::from_pem(
            pem(&format!("{who}.pem")),
            pem(&format!("{who}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let files = |client_ca: bool| TlsFiles {
        cert: fixture("tls/server.pem"),
        key: fixture("tls/server.key"),
        client_ca: client_ca.then(|| fixture("tls/ca.pem")),
    };
    let generate = |ch: Channel| async move {
        TextGenerationClient::new(ch)
            .generate(text_request("Hi", 2))
            .await
    };
    let wait_serving = |addr: SocketAddr, mtls: bool| async move {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = tls_channel(addr, mtls).await {
                let r = HealthClient::new(ch)
                    .check(HealthCheckRequest::default())
                    .await;
                if r.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    return;
                }
            }
            assert!(Instant::now() < end, "TLS server never became SERVING");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    let server = Server::start_full(
        SMALL,
        Limits::default(),
        None,
        Some(files(false)),
        Batching::default(),
    )
    .await;
    wait_serving(server.addr, false).await;
    let ch = tls_channel(server.addr, false).await.unwrap();
    assert_eq!(generate(ch).await.unwrap().into_inner().tokens.len(), 2);
    // A client that does not trust the server's CA refuses it (same CA name, other key).
    match tls_channel_with(server.addr, "rogue-ca.pem", None).await {
        Err(_) => {}
        Ok(ch) => assert!(
            generate(ch).await.is_err(),
            "a server certificate from the wrong CA was accepted"
        ),
    }
    // Plaintext is not spoken.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            generate(ch).await.is_err(),
            "plaintext call succeeded on a TLS port"
        );
    }
    server.shutdown().await;

    let server = Server::start_full(
        SMALL,
        Limits::default(),
        None,
        Some(files(true)),
        Batching::default(),
    )
    .await;
    wait_serving(server.addr, true).await;
    let ch = tls_channel(server.addr, true).await.unwrap();
    assert_eq!(generate(ch).await.unwrap().into_inner().tokens.len(), 2);
    // Without a client certificate, or with one another CA signed (same names), the handshake
    // or the call fails.
    for client in [None, Some("rogue-client")] {
        match tls_channel_with(server.addr, "ca.pem", client).await {
            Err(_) => {}
            Ok(ch) => assert!(
                generate(ch).await.is_err(),
                "a client with {client:?} got in"
            ),
        }
    }
    server.shutdown().await;
}

/// Requests generated together in one batch get the tokens they get alone: identical, or
/// diverging only where the solo run's two best tokens are within 0.02 nats. Batched kernels add
/// in another order (tests/batch.rs bounds one step's logits at 1e-4 relative), and over many
/// steps such a difference can round an activation to the neighbouring int8 value, which moves
/// this random-weight fixture's logits by up to about 1e-2 (measured: a flip at a 0.0025 gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_match_their_solo_runs() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let prompts = [
        "The cat",
        "In the beginning",
        "A",
        "Rust is",
        "Hello, world",
        "zz top",
        "Once",
        "12345",
    ];
    let req = |p: &str| pb::GenerateRequest {
        logprobs: 2,
        ..text_request(p, 40)
    };
    let mut solo = Vec::new();
    for p in prompts {
        solo.push(c.generate(req(p)).await.unwrap().into_inner());
    }
    let mut together = Vec::new();
    for p in prompts {
        let mut c = c.clone();
        let r = req(p);
        together.push(tokio::spawn(async move { c.generate(r).await }));
    }
    for (p, (alone, t)) in prompts.iter().zip(solo.iter().zip(together)) {
        let batched = t.await.unwrap().unwrap().into_inner();
        let a: Vec<u32> = alone.tokens.iter().map(|t| t.id).collect();
        let b: Vec<u32> = batched.tokens.iter().map(|t| t.id).collect();
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            let top = &alone.tokens[i].top_logprobs;
            let gap = top[0].logprob - top[1].logprob;
            assert!(
                gap < 0.02,
                "{p:?}: token {i} differs ({} vs {}) with a gap of {gap}",
                a[i],
                b[i]
            );
        } else {
            assert_eq!(a, b, "{p:?}");
            assert_eq!(alone.text_delta, batched.text_delta, "{p:?}");
        }
    }
    server.shutdown().await;
}

/// A short request still completes (the server is healthy after what a test put it through).
async fn assert_still_serves(c: &mut TextGenerationClient<Channel>) {
    let r = c
        .generate(text_request("Hi", 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.tokens.len(), 3);
}

/// Gaps between a stream's messages after the first (its inter-token latencies), and the time
/// from the first message to the last.
async fn stream_gaps(
    c: &mut TextGenerationClient<Channel>,
    req: pb::GenerateRequest,
) -> (Vec<Duration>, Duration) {
    let mut s = c.generate_stream(req).await.unwrap().into_inner();
    let mut times = Vec::new();
    while let Some(m) = s.next().await {
        m.unwrap();
        times.push(Instant::now());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    (gaps, times[times.len() - 1] - times[0])
}

/// The q-quantile of `v` (sorted in place).
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A client that stops reading fills its stream buffer and is cancelled with RESOURCE_EXHAUSTED;
/// the others go on, their inter-token latencies as they are beside a client that reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cancelled_without_stalling_the_batch() {
    let batching = Batching {
        stream_buffer: 32,
        ..Batching::default()
    };
    let server = Server::start_full(BIG_VOCAB, Limits::default(), None, None, batching).await;
    // A 2 KiB HTTP/2 window: the server can push only a few messages before this client reads.
    let small_window = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(Some(2048))
        .initial_connection_window_size(Some(2048))
        .connect()
        .await
        .unwrap();
    let mut slow_client = TextGenerationClient::new(small_window);
    // Large messages (log-probabilities), so the window fills after a few.
    let heavy = pb::GenerateRequest {
        logprobs: 20,
        ..text_request("Hello", 120)
    };
    let mut c = server.client().await;

    // Baseline: a normal stream (small messages) beside the same heavy request, read.
    let mut c2 = c.clone();
    let req = heavy.clone();
    let companion = tokio::spawn(async move { stream_all(&mut c2, req).await });
    let (mut alone, alone_total) = stream_gaps(&mut c, text_request("Hello", 120)).await;
    assert_eq!(companion.await.unwrap().unwrap().len(), 121);

    // The same beside a client that does not read.
    let mut slow = slow_client
        .generate_stream(heavy.clone())
        .await
        .unwrap()
        .into_inner();
    let (mut beside, beside_total) = stream_gaps(&mut c, text_request("Hello", 120)).await;
    assert_eq!(beside.len(), alone.len());
    // Now read the slow stream: some tokens, then the status.
    let mut n = 0;
    let status = loop {
        match slow.next().await {
            Some(Ok(m)) => {
                assert_eq!(m.finish_reason, 0, "the slow stream ran to its end");
                n += m.tokens.len();
            }
            Some(Err(s)) => break s,
            None => panic!("the slow stream ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("did not read"), "{status:?}");
    assert!(n < 120, "{n} tokens");

    // Within noise: a stalled batch would stretch the gaps until the slow reader's cancellation.
    let margin = Duration::from_millis(2);
    for q in [0.5, 0.9] {
        let (a, b) = (quantile(&mut alone, q), quantile(&mut beside, q));
        assert!(
            b <= a * 3 / 2 + margin,
            "p{}: {b:?} beside a slow reader, {a:?} without",
            q * 100.0
        );
    }
    assert!(
        beside_total <= alone_total * 3 / 2 + Duration::from_millis(100),
        "{beside_total:?} beside a slow reader, {alone_total:?} without"
    );
    server.shutdown().await;
}

/// A thousand requests, each abandoned at a random point or read to its end, at most 48 at a
/// time (16 running, the rest queued: none is refused): afterwards nothing is running or queued
/// and every KV position is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cancellations_leave_nothing_behind() {
    let server = Server::start(SMALL, Limits::default()).await;
    let c = server.client().await;
    let mut rng = qgpt::sampling::Rng::new(42);
    let permits = Arc::new(tokio::sync::Semaphore::new(48));
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let mut c = c.clone();
        let stop_after = (rng.next_u64() % 24) as usize; // 20 and up: read to the end
        let req = pb::GenerateRequest {
            sampling: Some(pb::SamplingParams {
                temperature: Some(1.0),
                seed: Some(i),
                ..Default::default()
            }),
            ..text_request("Once upon a time", 20)
        };
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut s = c.generate_stream(req).await?.into_inner();
            let mut seen = 0;
            while let Some(m) = s.next().await {
                if m?.finish_reason != 0 {
                    return Ok(true); // read to its end
                }
                seen += 1;
                if seen > stop_after {
                    break; // dropping the stream cancels the call
                }
            }
            Ok::<_, tonic::Status>(false)
        }));
    }
    let mut finished = 0;
    for t in tasks {
        finished += usize::from(t.await.unwrap().unwrap());
    }
    assert!(
        finished > 50 && finished < 950,
        "{finished} of 1000 read to the end"
    );
    let mut c = server.client().await;
    let st = wait_idle(&mut c, 20).await;
    assert_eq!(st.kv_cache_tokens_free, st.kv_cache_tokens_total, "{st:?}");
    assert_still_serves(&mut c).await;
    server.shutdown().await;
}

/// `qgpt loadtest --json` against a server: every request succeeds, every token is counted, and
/// the report has the documented fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_reports_what_it_measured() {
    let server = Server::start(SMALL, Limits::default()).await;
    let r = loadtest(
        &server,
        &[
            "--concurrency",
            "4",
            "--requests",
            "12",
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "10",
        ],
    )
    .await;
    assert_eq!(r["concurrency"], 4);
    assert_eq!(
        (r["requests"].as_u64(), r["ok"].as_u64()),
        (Some(12), Some(12))
    );
    assert_eq!(r["generated_tokens"], 120);
    assert!(r["errors"].as_object().unwrap().is_empty());
    assert!(r["generated_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["requests_per_s"].as_f64().unwrap() > 0.0);
    for key in ["ttft_ms", "itl_ms", "e2e_ms"] {
        let p = &r[key];
        let v: Vec<f64> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|k| p[k].as_f64().unwrap())
            .collect();
        assert!(
            v[0] > 0.0 && v.windows(2).all(|w| w[0] <= w[1]),
            "{key}: {v:?}"
        );
    }
    assert!(r["ttft_ms"]["max"].as_f64() <= r["e2e_ms"]["max"].as_f64());
    server.shutdown().await;
}

/// `qgpt loadtest --long-prompt-tokens`: long prompts go beside the streams, every one of them is
/// answered, and they are reported apart (the streams' token count is theirs alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_sends_long_prompts_beside_the_streams() {
    let server = Server::start(SMALL, Limits::default()).await;
    let r = loadtest(
        &server,
        &[
            "-c",
            "2",
            "--duration",
            "1.5",
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "10",
            "--long-prompt-tokens",
            "64",
            "--long-prompt-every",
            "0.3",
        ],
    )
    .await;
    let ok = r["ok"].as_u64().unwrap();
    assert!(ok >= 2 && r["requests"].as_u64() == Some(ok), "{r}");
    assert_eq!(r["generated_tokens"].as_u64(), Some(10 * ok), "{r}");
    let l = &r["long_prompts"];
    assert_eq!(l["prompt_tokens"], 64, "{r}");
    let sent = l["requests"].as_u64().unwrap();
    // One at once, then one every 0.3 s while the 1.5 s of streams (and their last requests) run.
    assert!(sent >= 4, "{r}");
    assert_eq!(l["ok"].as_u64(), Some(sent), "{r}");
    assert!(l["errors"].as_object().unwrap().is_empty(), "{r}");
    assert!(l["ttft_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    // Without the option the report has no such part.
    let r = loadtest(
        &server,
        &[
            "-c",
            "1",
            "--requests",
            "1",
            "--prompt-tokens",
            "4",
            "--max-new-tokens",
            "2",
        ],
    )
    .await;
    assert!(r.get("long_prompts").is_none(), "{r}");
    server.shutdown().await;
}

/// Runs `qgpt loadtest --addr <server> ARGS --json` off the async threads; its report, once it
/// has exited successfully.
async fn loadtest(server: &Server, args: &[&str]) -> serde_json::Value {
    let addr = server.addr.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_qgpt"))
            .args(["loadtest", "--addr", &addr])
            .args(&args)
            .arg("--json")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    json_stdout(&out)
}

/// A codec that sends and receives message bodies as raw bytes, to put what a well-behaved
/// client would never send on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawBytes;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// Protobuf field `field` as a length-delimited value.
fn pb_field(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put_varint = |mut v: u64| loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    };
    put_varint(u64::from(field << 3 | 2));
    put_varint(bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// Hostile requests over real gRPC: each gets its status (undecodable bodies INTERNAL, tonic's
/// answer as grpc-go's), nothing panics, and the server keeps serving ordinary requests in
/// between and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clean_statuses() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    let mut raw = tonic::client::Grpc::new(server.channel().await);
    let generate = http::uri::PathAndQuery::from_static("/qgpt.v1.TextGeneration/Generate");
    let with = |f: &dyn Fn(&mut pb::GenerateRequest)| {
        let mut r = text_request("Hi", 2);
        f(&mut r);
        r
    };
    let long_text = "word ".repeat(20_000);
    let cases: Vec<(&str, pb::GenerateRequest, Code)> = vec![
        (
            "prompt of 20,000 words (context 128)",
            text_request(&long_text, 2),
            Code::InvalidArgument,
        ),
        (
            "100,000 prompt ids",
            with(&|r| {
                r.input = Some(Input::PromptTokenIds(pb::TokenIds {
                    ids: vec![1; 100_000],
                }))
            }),
            Code::InvalidArgument,
        ),
        (
            "1,000 stop strings",
            with(&|r| r.stop = vec!["x".into(); 1_000]),
            Code::InvalidArgument,
        ),
        (
            "a 100 KiB stop string",
            with(&|r| r.stop = vec!["y".repeat(100 << 10)]),
            Code::InvalidArgument,
        ),
        (
            "500,000 stop token ids",
            with(&|r| r.stop_token_ids = vec![1; 500_000]),
            Code::InvalidArgument,
        ),
        (
            "u32::MAX max_new_tokens",
            with(&|r| r.max_new_tokens = u32::MAX),
            Code::InvalidArgument,
        ),
        (
            "u32::MAX logprobs",
            with(&|r| r.logprobs = u32::MAX),
            Code::InvalidArgument,
        ),
        (
            "NaN temperature",
            with(&|r| {
                r.sampling = Some(pb::SamplingParams {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
        ),
        (
            "a 1 MiB request id",
            with(&|r| r.request_id = "z".repeat(1 << 20)),
            Code::InvalidArgument,
        ),
    ];
    let mut table = Vec::new();
    for (what, req, want) in cases {
        let got = c.generate(req).await.map(|_| ()).map_err(|s| s.code());
        table.push(format!("{what}: {got:?}"));
        assert_eq!(got, Err(want), "{what}");
    }
    // Bytes no protobuf encoder would write.
    let raw_cases: Vec<(&str, Vec<u8>, Vec<Code>)> = vec![
        (
            "invalid UTF-8 in the prompt",
            pb_field(1, b"\xff\xfe bad"),
            vec![Code::Internal],
        ),
        (
            "a truncated field",
            pb_field(1, b"Hello")[..4].to_vec(),
            vec![Code::Internal],
        ),
        (
            "a length prefix past the end",
            vec![0x0A, 0xFF, 0xFF, 0xFF, 0x0F, b'a'],
            vec![Code::Internal],
        ),
        (
            "a field nested 100,000 levels",
            {
                let mut b = pb_field(4, &[]);
                for _ in 0..100_000 {
                    b = pb_field(4, &b);
                }
                b
            },
            vec![Code::Internal],
        ),
        (
            "a 5 MiB message (limit 4 MiB)",
            pb_field(1, &vec![b'a'; 5 << 20]),
            vec![Code::OutOfRange],
        ),
    ];
    for (what, body, want) in raw_cases {
        raw.ready().await.unwrap();
        let got = raw
            .unary::<Vec<u8>, Vec<u8>, _>(Request::new(body), generate.clone(), RawCodec)
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        table.push(format!("{what}: {got:?}"));
        assert!(
            got.as_ref().is_err_and(|c| want.contains(c)),
            "{what}: {got:?}, expected one of {want:?}"
        );
        // The server still serves.
        assert_still_serves(&mut c).await;
    }
    // Thousands of connections that never send a byte: health and generation still answer. Both
    // ends live in this process: raise the soft descriptor limit to the hard one first.
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on a valid, owned struct; raising the soft limit up to the hard
    // limit is always allowed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    assert_eq!(server.health("").await, ServingStatus::Serving);
    assert_still_serves(&mut c).await;
    table.push("2,000 idle connections: health SERVING, Generate OK".into());
    drop(idle);
    eprintln!("hostile requests:\n  {}", table.join("\n  "));
    server.shutdown().await;
}

/// A client that stops reading a stream cannot hold the server's exit: once the drain is over,
/// connections get 5 s to close, then they are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_hold_the_exit() {
    let server = Server::start(SMALL, Limits::default()).await;
    let mut c = server.client().await;
    // A 1 KiB HTTP/2 window that is only reopened as the application reads: the server's
    // messages after the first kilobyte wait for a reader that never comes.
    let stingy = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let req = pb::GenerateRequest {
        logprobs: 20,
        ..text_request("Hello", 120)
    };
    let unread = TextGenerationClient::new(stingy)
        .generate_stream(req)
        .await
        .unwrap()
        .into_inner();
    wait_idle(&mut c, 10).await;
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the server's exit was held by a client that does not read");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(15),
        "exit after {took:?}: the stalled connection should be dropped 5 s after the drain"
    );
    drop(unread);
}
