//! `qgpt bench -m FILE` (end to end, llama-bench's method and output) and `qgpt bench --kernels`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{init_threads, print_flush, CliError, KvTypeArg};
use qgpt::bench::{
    bench_matmul, int8_peak_gop_s, read_bandwidth, rfc3339, run_test, ModelInfo, MAX_BATCH, SHAPES,
    TYPES,
};
use qgpt::kernels;
use qgpt::model::LoadedModel;

/// Arguments of `qgpt bench`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["model", "kernels"])))]
pub struct Args {
    /// GGUF model file to benchmark end to end.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Prompt-processing tests: tokens per test, comma-separated (0 skips).
    #[arg(short = 'p', long, value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Generation tests: tokens per test, comma-separated (0 skips).
    #[arg(short = 'n', long, value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Model: sequences run together in each test, comma-separated (8: eight sequences, each
    /// step advancing all of them; t/s counts every sequence's tokens).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seqs: Vec<usize>,
    /// Model: element type of the KV cache.
    #[arg(long, value_enum, default_value = "f16")]
    kv_type: KvTypeArg,
    /// Benchmark the matmul kernels on GPT-2 124M's shapes instead of a model.
    #[arg(long)]
    kernels: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Timed repetitions per test (model: mean ± sd; kernels: the median).
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Kernels: last-level cache size in MiB; batch-1 runs cycle through twice this much weight
    /// data.
    #[arg(long, default_value_t = 32, requires = "kernels")]
    llc_mib: usize,
    /// Kernels: skip the batch-512 runs (they take most of the time).
    #[arg(long, requires = "kernels")]
    no_512: bool,
    /// Kernels: only these weight types, comma-separated (e.g. q8_0,q4_0).
    #[arg(long, value_delimiter = ',', requires = "kernels")]
    types: Vec<String>,
    /// One JSON object per line (model: llama-bench's jsonl fields) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the model or the kernel benchmark.
pub fn run(args: Args) -> Result<(), CliError> {
    match args.model.clone() {
        Some(path) => run_model(&path, args),
        None => run_kernels(args),
    }
}

/// llama-bench's table or jsonl for one model.
fn run_model(path: &Path, args: Args) -> Result<(), CliError> {
    let threads = init_threads(args.threads)?;
    let k = kernels::init()?;
    let mut m = LoadedModel::open(path)?;
    m.model.set_kv_type(args.kv_type.into());
    let kv = m.model.kv_type().name();
    let info = ModelInfo::new(path, m.model.file());
    let n_ctx = m.model.config().n_ctx;
    if args.seqs.contains(&0) {
        return Err("--seqs must be at least 1".into());
    }
    let tests: Vec<(usize, usize, usize)> = args
        .seqs
        .iter()
        .flat_map(|&s| {
            (args
                .n_prompt
                .iter()
                .filter(|&&p| p > 0)
                .map(move |&p| (p, 0, s)))
            .chain(
                args.n_gen
                    .iter()
                    .filter(|&&g| g > 0)
                    .map(move |&g| (0, g, s)),
            )
        })
        .collect();
    if tests.is_empty() {
        return Err("nothing to run: every -p and -n value is 0".into());
    }
    if let Some(&(p, g, _)) = tests.iter().find(|&&(p, g, _)| p + g > n_ctx) {
        let name = if p > 0 {
            format!("pp{p}")
        } else {
            format!("tg{g}")
        };
        return Err(format!("{name} needs {} positions; the model has {n_ctx}", p + g).into());
    }
    let mut s = String::new();
    if !args.json {
        writeln!(s, "| model | size | params | isa | threads | test | t/s |")?;
        writeln!(s, "| --- | ---: | ---: | --- | ---: | ---: | ---: |")?;
        print_flush(&std::mem::take(&mut s))?;
    }
    // How the kernel backs the weights' map decides how fast decode reads them: measured after
    // the first test, which touched them all.
    let mut huge_page_bytes = None;
    for (n_prompt, n_gen, n_seq) in tests {
        let r = run_test(&m.model, n_prompt, n_gen, n_seq, args.reps)?;
        let huge = *huge_page_bytes.get_or_insert_with(|| m.model.file().huge_page_bytes());
        if args.json {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let line = serde_json::json!({
                "build_commit": env!("QGPT_GIT_SHA"),
                "cpu_info": k.isa.name(),
                "backends": "CPU",
                "model_filename": info.filename,
                "model_type": info.model_type,
                "model_size": info.size,
                "model_n_params": info.n_params,
                "n_batch": MAX_BATCH,
                "n_ubatch": MAX_BATCH,
                "n_threads": threads,
                "type_k": kv,
                "type_v": kv,
                "use_mmap": true,
                "huge_page_bytes": huge,
                "n_prompt": r.n_prompt,
                "n_gen": r.n_gen,
                "n_seq": r.n_seq,
                "n_depth": 0,
                "test_time": rfc3339(now),
                "avg_ns": r.avg_ns().round() as u64,
                "stddev_ns": r.stddev_ns().round() as u64,
                "avg_ts": r.avg_ts(),
                "stddev_ts": r.stddev_ts(),
                "samples_ns": r.samples_ns,
                "samples_ts": r.samples_ts(),
            });
            writeln!(s, "{line}")?;
        } else {
            writeln!(
                s,
                "| {} | {:.2} MiB | {:.2} M | {} | {threads} | {} | {:.2} ± {:.2} |",
                info.model_type,
                info.size as f64 / (1 << 20) as f64,
                info.n_params as f64 / 1e6,
                k.isa,
                r.name(),
                r.avg_ts(),
                r.stddev_ts(),
            )?;
        }
        print_flush(&std::mem::take(&mut s))?;
    }
    if let (false, Some(Some(huge))) = (args.json, huge_page_bytes) {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        writeln!(
            s,
            "\nweights: {:.0} MiB mapped, {:.0} MiB of it on 2 MiB pages",
            mib(m.model.file().len()),
            mib(huge)
        )?;
    }
    print_flush(&s)
}

/// Runs the kernel benchmark and prints the table.
fn run_kernels(args: Args) -> Result<(), CliError> {
    let threads = init_threads(args.threads)?;
    let k = kernels::init()?;
    let llc = args.llc_mib << 20;
    // The roofline is the best of 10 reads, before and after the kernels: on a shared machine
    // either moment may be the busy one.
    let bw_size = (8 * llc).max(256 << 20);
    let bw_before = read_bandwidth(bw_size, 10);
    let wanted = |ty: &qgpt::quant::GgmlType| {
        args.types.is_empty() || args.types.iter().any(|t| t.eq_ignore_ascii_case(ty.name()))
    };
    let mut results = Vec::new();
    for ty in TYPES.into_iter().filter(wanted) {
        for shape in SHAPES {
            results.push(bench_matmul(k, ty, shape, llc, args.reps, !args.no_512));
        }
    }
    let bw = bw_before.max(read_bandwidth(bw_size, 10));
    let peak = int8_peak_gop_s(k.isa, 5);
    let pct_peak = |gop: f64| peak.map_or("-".to_string(), |p| format!("{:.0} %", 100.0 * gop / p));

    let mut s = String::new();
    if args.json {
        let line = serde_json::json!({"test": "read_bandwidth", "threads": threads, "gb_s": bw});
        writeln!(s, "{line}")?;
        let line = serde_json::json!({"test": "int8_peak", "threads": threads, "gop_s": peak});
        writeln!(s, "{line}")?;
        for r in &results {
            let mut v = serde_json::to_value(r)?;
            v["isa"] = k.isa.name().into();
            v["threads"] = threads.into();
            v["read_bw_gb_s"] = bw.into();
            v["int8_peak_gop_s"] = peak.into();
            writeln!(s, "{v}")?;
        }
        return print_flush(&s);
    }
    let peak_text = peak.map_or("not measured for this level".to_string(), |p| {
        format!("{p:.0} GOP/s (512-bit vpdpbusd, best of 5)")
    });
    writeln!(
        s,
        "isa: {}, threads: {threads}, read bandwidth: {bw:.1} GB/s (best of 10, twice); \
         int8 peak: {peak_text}; kernels: median of {}",
        k.isa, args.reps
    )?;
    writeln!(s)?;
    writeln!(
        s,
        "| type | shape (in × out) | MiB | batch 1 GB/s | % of read bw | batch 8 GOP/s | \
         batch 512 GOP/s | % of int8 peak |"
    )?;
    writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for r in &results {
        let (b512, p512) = if args.no_512 {
            ("-".to_string(), "-".to_string())
        } else {
            // Float types are not held to the integer peak.
            let int = !matches!(r.ty.as_str(), "F16" | "F32");
            let pct = if int {
                pct_peak(r.batch512_gop_s)
            } else {
                "-".to_string()
            };
            (format!("{:.1}", r.batch512_gop_s), pct)
        };
        writeln!(
            s,
            "| {} | {} × {} | {:.2} | {:.1} | {:.0} % | {:.1} | {b512} | {p512} |",
            r.ty,
            r.n_in,
            r.n_out,
            r.bytes as f64 / (1 << 20) as f64,
            r.batch1_gb_s,
            100.0 * r.batch1_gb_s / bw,
            r.batch8_gop_s,
        )?;
    }
    print_flush(&s)
}
