//! Corrupted copies of a fixture: each gives a clean error that names what is wrong — from the
//! library, and from the CLI as one line on stderr with exit code 2 — never a panic, never an
//! allocation sized by the file's claims.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use common::fixture;
use proptest::prelude::*;
use qgpt::gguf::GgufFile;
use qgpt::model::LoadedModel;

const BASE: &str = "models/small-q8_0.gguf";

fn base() -> Vec<u8> {
    std::fs::read(fixture(BASE)).unwrap()
}

fn find(bytes: &[u8], pat: &[u8]) -> usize {
    bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(pat)))
}

/// Offset of the n_dims field of tensor `name`'s info (right after its name).
fn tensor_info(bytes: &[u8], name: &str) -> usize {
    find(bytes, name.as_bytes()) + name.len()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Loads `bytes` as a model and returns the error message.
fn load_error(bytes: Vec<u8>) -> String {
    let result = GgufFile::from_bytes(bytes)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            LoadedModel::from_file(Arc::new(f), Instant::now()).map_err(|e| e.to_string())
        });
    match result {
        Ok(_) => panic!("corrupted file loaded"),
        Err(e) => e,
    }
}

/// Runs `qgpt inspect` on `bytes` written to a temp file; returns stderr after checking the exit code.
fn cli_error(case: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("qgpt-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{case}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qgpt"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{case}: exit code; stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{case}: one line of error, got {stderr:?}"
    );
    assert!(stderr.starts_with("error: "), "{case}: {stderr:?}");
    stderr
}

fn check(case: &str, bytes: Vec<u8>, needles: &[&str]) {
    let lib = load_error(bytes.clone());
    let cli = cli_error(case, &bytes);
    for n in needles {
        assert!(lib.contains(n), "{case}: library error {lib:?} lacks {n:?}");
        assert!(cli.contains(n), "{case}: CLI error {cli:?} lacks {n:?}");
    }
}

#[test]
fn truncated_in_the_header() {
    let mut b = base();
    b.truncate(find(&b, b"tokenizer.ggml.merges") + 10);
    check("truncated-key", b, &["truncated", "key of metadata pair"]);
    let mut b = base();
    b.truncate(find(&b, b"tokenizer.ggml.merges") + 40);
    check("truncated-value", b, &["tokenizer.ggml.merges"]);
}

#[test]
fn truncated_in_the_tensor_data() {
    let mut b = base();
    b.truncate(b.len() - 1000);
    check("truncated-data", b, &["outside the file"]);
}

#[test]
fn wrong_magic() {
    let mut b = base();
    b[..4].copy_from_slice(b"GGML");
    check("magic", b, &["magic", "GGUF"]);
}

#[test]
fn unsupported_version() {
    let mut b = base();
    put_u32(&mut b, 4, 1);
    check("version", b, &["version 1"]);
}

#[test]
fn tensor_past_the_end_of_the_file() {
    let mut b = base();
    let at = tensor_info(&b, "blk.1.ffn_down.weight");
    // n_dims (u32) = 2, two u64 dims, type (u32), then the offset.
    put_u64(&mut b, at + 4 + 16 + 4, 1 << 40);
    check("offset", b, &["blk.1.ffn_down.weight", "outside the file"]);
}

#[test]
fn unknown_tensor_type() {
    let mut b = base();
    let at = tensor_info(&b, "blk.0.attn_qkv.weight");
    put_u32(&mut b, at + 4 + 16, 99);
    check(
        "type",
        b,
        &["blk.0.attn_qkv.weight", "unknown ggml type id 99"],
    );
}

#[test]
fn missing_tensor() {
    let mut b = base();
    let at = find(&b, b"blk.1.ffn_up.weight");
    b[at + 10] = b'q'; // blk.1.ffn_uq.weight
    check("missing", b, &["blk.1.ffn_up.weight", "missing"]);
}

#[test]
fn wrong_shape() {
    let mut b = base();
    let at = tensor_info(&b, "position_embd.weight");
    put_u64(&mut b, at + 4 + 8, 64); // [256, 128] → [256, 64]
    check(
        "shape",
        b,
        &[
            "position_embd.weight",
            "expected shape [256, 128]",
            "found [256, 64]",
        ],
    );
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    let mut b = base();
    let at = tensor_info(&b, "blk.0.ffn_up.weight");
    put_u64(&mut b, at + 4, 250);
    check(
        "partial-block",
        b,
        &[
            "blk.0.ffn_up.weight",
            "not a multiple of the Q8_0 block size 32",
        ],
    );
}

/// A row length whose byte size does not fit in 64 bits (found by the mutation proptest: the
/// size computation overflowed and panicked before it was checked).
#[test]
fn row_size_overflow() {
    let mut b = base();
    let at = tensor_info(&b, "blk.0.ffn_up.weight");
    // 2^63 values of Q8_0: 2^58 blocks of 34 bytes.
    put_u64(&mut b, at + 4, 1 << 63);
    check("row-overflow", b, &["blk.0.ffn_up.weight", "overflows"]);
}

#[test]
fn absurd_metadata_array_length() {
    let mut b = base();
    // key, then value type (u32 = 9, array), element type (u32 = 8, string), count (u64).
    let at = find(&b, b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len();
    put_u64(&mut b, at + 8, 1 << 60);
    check(
        "array-length",
        b,
        &["tokenizer.ggml.tokens", "1152921504606846976"],
    );
}

#[test]
fn absurd_tensor_count() {
    let mut b = base();
    put_u64(&mut b, 8, u64::MAX);
    check("tensor-count", b, &["tensor count"]);
}

#[test]
fn wrong_architecture() {
    let mut b = base();
    // key, value type (u32 = 8, string), length (u64 = 4), then the bytes "gpt2".
    let at = find(&b, b"general.architecture") + "general.architecture".len() + 4 + 8;
    b[at..at + 4].copy_from_slice(b"gptj");
    check("architecture", b, &["general.architecture", "gptj"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Truncating anywhere or flipping header bytes yields Ok or a clean error, never a panic.
    #[test]
    fn mutations_never_panic(cut in 0usize..1_000_000, flips in proptest::collection::vec((0usize..20_000, any::<u8>()), 0..8)) {
        let mut b = base();
        let header_end = 20_000.min(b.len());
        for (at, v) in flips {
            b[at % header_end] ^= v;
        }
        b.truncate(cut.min(b.len()));
        if let Ok(f) = GgufFile::from_bytes(b) {
            let _ = LoadedModel::from_file(Arc::new(f), Instant::now());
        }
    }

    /// Structured mutations: grown or shrunk counts, tensor offsets moved, dims, dim counts and
    /// types changed, string lengths bent: Ok or a clean error, never a panic or an allocation
    /// sized by the lie.
    #[test]
    fn structured_mutations_never_panic(
        edits in proptest::collection::vec((0usize..7, 0usize..28, any::<u64>(), 0u64..4), 1..4)
    ) {
        let mut b = base();
        let names: Vec<String> = GgufFile::from_bytes(b.clone()).unwrap().tensors().iter().map(|t| t.name.clone()).collect();
        for (field, tensor, raw, style) in edits {
            // A value near the original as often as a wild one: small shifts find off-by-ones.
            let at_info = tensor_info(&b, &names[tensor % names.len()]);
            let n_dims = u32::from_le_bytes(b[at_info..at_info + 4].try_into().unwrap()).min(4) as usize;
            let (at, width) = match field {
                0 => (8, 8),                                   // tensor count
                1 => (16, 8),                                  // metadata count
                2 => (at_info, 4),                             // n_dims
                3 => (at_info + 4 + 8 * (raw as usize % n_dims.max(1)), 8), // one dim
                4 => (at_info + 4 + 8 * n_dims, 4),            // type
                5 => (at_info + 8 + 8 * n_dims, 8),            // data offset
                _ => (at_info - names[tensor % names.len()].len() - 8, 8), // name length
            };
            let old = if width == 8 {
                u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
            } else {
                u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
            };
            let v = match style {
                0 => raw,
                1 => old.wrapping_add(raw % 64),
                2 => old.wrapping_sub(raw % 64),
                _ => old.wrapping_mul(1 + raw % 4096),
            };
            if width == 8 { put_u64(&mut b, at, v) } else { put_u32(&mut b, at, v as u32) }
        }
        if let Ok(f) = GgufFile::from_bytes(b) {
            let _ = LoadedModel::from_file(Arc::new(f), Instant::now());
        }
    }
}

#[test]
fn big_endian_files_are_named_as_such() {
    let mut b = base();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    check("big-endian", b, &["big-endian"]);
}

#[test]
fn version_2_files_load_too() {
    // GGUF v2 and v3 share the layout (v3 only allows big-endian files, which qgpt does not read).
    let mut b = base();
    put_u32(&mut b, 4, 2);
    let f = GgufFile::from_bytes(b).unwrap();
    assert_eq!(f.version(), 2);
    LoadedModel::from_file(Arc::new(f), Instant::now()).unwrap();
}
