//! `qgpt inspect`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{print_flush, CliError};
use qgpt::gguf::{file_type_name, GgufFile, Value};
use qgpt::memory::Resident;
use qgpt::model::LoadedModel;

/// Arguments of `qgpt inspect`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["file", "demo"]))]
pub struct Args {
    /// GGUF file.
    file: Option<PathBuf>,
    /// Show the demo model embedded in the binary instead of a file.
    #[arg(long)]
    demo: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints the file's structure; exits with an error if it is not a servable GPT-2 model.
pub fn run(args: Args) -> Result<(), CliError> {
    let start = Instant::now();
    let (file, shown) = match &args.file {
        Some(path) => (GgufFile::open(path)?, path.display().to_string()),
        None => (qgpt::demo::file()?, qgpt::demo::NAME.to_owned()),
    };
    let file = Arc::new(file);
    let mut s = String::new();
    writeln!(
        s,
        "file: {} ({} bytes, {:.2} MiB), GGUF v{}, alignment {}, {} metadata keys, {} tensors",
        shown,
        file.len(),
        mib(file.len()),
        file.version(),
        file.alignment(),
        file.metadata().len(),
        file.tensors().len()
    )?;
    if let Some(arch) = file.get("general.architecture").and_then(Value::as_str) {
        writeln!(s, "architecture: {arch}")?;
    }
    if let Some(ft) = file.get("general.file_type").and_then(Value::as_u64) {
        writeln!(s, "file type: {} ({ft})", file_type_name(ft))?;
    }

    writeln!(s, "metadata:")?;
    for (k, v) in file.metadata() {
        writeln!(s, "  {k} = {v}")?;
    }

    writeln!(s, "tensors:")?;
    let name_w = file
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4);
    writeln!(
        s,
        "  {:name_w$}  {:7}  {:>18}  {:>12}",
        "name", "type", "shape", "bytes"
    )?;
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut total = 0u64;
    for t in file.tensors() {
        writeln!(
            s,
            "  {:name_w$}  {:7}  {:>18}  {:>12}",
            t.name,
            t.ty.name(),
            t.shape_string(),
            t.n_bytes
        )?;
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        total += t.n_bytes;
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(ty, (n, b))| format!("{ty} ×{n} ({:.2} MiB)", mib(*b)))
        .collect();
    writeln!(
        s,
        "total: {} tensors, {total} bytes ({:.2} MiB): {}",
        file.tensors().len(),
        mib(total),
        types.join(", ")
    )?;
    print_flush(&s)?;

    let loaded = LoadedModel::from_file(file, start)?;
    let c = loaded.model.config();
    let t = &loaded.tokenizer;
    let name = |id: Option<u32>| match id {
        Some(id) => format!("{id} {:?}", t.decode(&[id])),
        None => "none".into(),
    };
    let mut s = String::new();
    writeln!(
        s,
        "hyperparameters: n_vocab={} n_ctx={} n_embd={} n_ff={} n_head={} n_head_kv={} \
         n_layer={} eps={:e}",
        c.n_vocab, c.n_ctx, c.n_embd, c.n_ff, c.n_head, c.n_head_kv, c.n_layer, c.eps
    )?;
    if let Some(r) = &c.rope {
        writeln!(
            s,
            "rope: base {} over {} of {} dimensions per head, position scale {}",
            r.base,
            r.dims,
            c.head_dim(),
            r.pos_scale
        )?;
    }
    writeln!(
        s,
        "chat template: {}",
        match &loaded.chat {
            Ok(_) => "yes".to_owned(),
            Err(e) => e.to_string(),
        }
    )?;
    writeln!(
        s,
        "output head: {}",
        if loaded.model.weights().tied_output {
            "tied to token_embd.weight"
        } else {
            "output.weight"
        }
    )?;
    writeln!(
        s,
        "tokenizer: gpt2 byte-level BPE (pre '{}'), {} tokens, {} merges, bos={}, eos={}",
        t.pre(),
        t.vocab_size(),
        t.n_merges(),
        name(t.bos()),
        name(t.eos())
    )?;
    write!(
        s,
        "model check: ok (loaded in {:.1} ms",
        loaded.load_time.as_secs_f64() * 1e3
    )?;
    if let Some(r) = Resident::now() {
        write!(s, "; {r}")?;
    }
    writeln!(s, ")")?;
    print_flush(&s)
}
