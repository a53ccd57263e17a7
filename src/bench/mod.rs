//! Benchmarks that `qgpt bench` runs: a model end to end (llama-bench's method), and memory read
//! bandwidth, int8 peak and the matmul kernels on GPT-2 124M's matrix shapes.

mod bandwidth;
mod kernels;
mod model;
mod peak;

pub use bandwidth::read_bandwidth;
pub use kernels::{bench_matmul, KernelResult, SHAPES, TYPES};
pub use model::{rfc3339, run_test, ModelInfo, TestResult, MAX_BATCH};
pub use peak::int8_peak_gop_s;

use std::time::{Duration, Instant};

/// Median wall time of `reps` runs of `f` after one warm-up run.
pub fn median_time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
