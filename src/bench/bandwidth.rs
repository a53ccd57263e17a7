//! Streaming-read bandwidth: the roofline for batch-1 decode.

use rayon::prelude::*;

use std::time::Instant;

/// Reads a `bytes`-sized buffer (make it far larger than the last-level cache) with every thread
/// of the rayon pool on disjoint ranges; returns the best GB/s (10⁹ bytes per second) of `reps`
/// runs. The best run is the roofline: on a shared machine slower runs measure the neighbours.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let n = bytes / 8;
    // Written once so that every page is really backed before timing.
    let buf: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(rayon::current_num_threads() * 8).max(1024);
    let mut sink = 0u64;
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) + 1 {
        let t = Instant::now();
        sink = sink.wrapping_add(
            buf.par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                .reduce(|| 0, u64::wrapping_add),
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    (n * 8) as f64 / best / 1e9
}
