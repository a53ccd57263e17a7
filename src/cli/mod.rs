//! Subcommands of the `qgpt` binary. Each returns a one-line error; main prints it and exits 2.

pub mod bench;
pub mod convert;
pub mod generate;
pub mod inspect;
pub mod loadtest;
pub mod perplexity;
pub mod serve;
pub mod tokenize;

use std::io::Write;

/// `--kv-type`: the element type of the KV cache.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KvTypeArg {
    /// Half precision (the default): half the memory of f32.
    F16,
    /// Single precision.
    F32,
}

impl From<KvTypeArg> for qgpt::model::KvType {
    fn from(a: KvTypeArg) -> Self {
        match a {
            KvTypeArg::F16 => qgpt::model::KvType::F16,
            KvTypeArg::F32 => qgpt::model::KvType::F32,
        }
    }
}

/// A failed command: the message is printed as `error: ...`.
pub type CliError = Box<dyn std::error::Error>;

/// Writes `s` to stdout and flushes; a closed pipe (`qgpt ... | head`) is not an error.
pub fn print_flush(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Sizes the rayon pool: `threads`, or every CPU the process may use (cgroup-aware).
pub fn init_threads(threads: Option<usize>) -> Result<usize, CliError> {
    let n = match threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()?;
    Ok(n)
}
