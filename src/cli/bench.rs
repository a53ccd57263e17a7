//! `qgpt bench --kernels`.

use std::fmt::Write as _;

use super::{init_threads, print_flush, CliError};
use qgpt::bench::{bench_matmul, int8_peak_gop_s, read_bandwidth, SHAPES, TYPES};
use qgpt::kernels;

/// Arguments of `qgpt bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Benchmark the matmul kernels on GPT-2 124M's shapes (the only mode so far; end-to-end
    /// model benchmarks come with the batched forward pass).
    #[arg(long, required = true)]
    kernels: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Last-level cache size in MiB: batch-1 runs cycle through twice this much weight data.
    #[arg(long, default_value_t = 32)]
    llc_mib: usize,
    /// Skip the batch-512 runs (they take most of the time).
    #[arg(long)]
    no_512: bool,
    /// Only these weight types, comma-separated (e.g. q8_0,q4_0).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the kernel benchmark and prints the table.
pub fn run(args: Args) -> Result<(), CliError> {
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
