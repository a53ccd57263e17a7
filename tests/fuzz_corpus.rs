//! The fuzz targets' bodies (tests/fuzz/targets.rs) on their seeds and on every input a fuzzer
//! ever failed on (tests/fixtures/fuzz/TARGET/), in the normal test run: a found crash stays
//! fixed. The fuzzing itself is tests/fuzz/run.sh (cargo-fuzz, nightly).

#[path = "fuzz/targets.rs"]
mod targets;

#[path = "fuzz/seeds.rs"]
mod seeds;

type Target = fn(&[u8]);

fn replay(name: &str, target: Target) {
    let seeds = seeds::seeds(name).expect("known target");
    assert!(!seeds.is_empty());
    for s in &seeds {
        target(s);
    }
    let dir = targets::fixtures().join("fuzz").join(name);
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "md") {
                continue;
            }
            eprintln!("{name}: replaying {}", path.display());
            target(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    eprintln!("{name}: {} seeds, {n} regression inputs", seeds.len());
}

#[test]
fn gguf_load_seeds_and_regressions() {
    // The seeds must be valid models, or the fuzzer starts from nothing.
    for s in seeds::seeds("gguf_load").unwrap() {
        let f = qgpt::gguf::GgufFile::from_bytes(s).unwrap();
        qgpt::model::LoadedModel::from_file(std::sync::Arc::new(f), std::time::Instant::now())
            .unwrap();
    }
    replay("gguf_load", targets::gguf_load);
}

#[test]
fn tokenizer_seeds_and_regressions() {
    replay("tokenizer", targets::tokenizer);
}

#[test]
fn request_seeds_and_regressions() {
    // The seeds must pass validation (the fuzzer should start past the first checks).
    for s in seeds::seeds("request").unwrap() {
        qgpt::server::decode_and_validate(&s, &qgpt::server::Limits::default(), 512, 128).unwrap();
    }
    replay("request", targets::request);
}

#[test]
fn stop_seeds_and_regressions() {
    replay("stop", targets::stop);
}

/// Writes every target's seeds under `$QGPT_FUZZ_SEEDS/TARGET/` for tests/fuzz/run.sh (run
/// explicitly: `cargo test --test fuzz_corpus -- --ignored write_seeds`).
#[test]
#[ignore = "a helper of tests/fuzz/run.sh"]
fn write_seeds() {
    let root = std::path::PathBuf::from(std::env::var("QGPT_FUZZ_SEEDS").expect("QGPT_FUZZ_SEEDS"));
    for name in ["gguf_load", "tokenizer", "request", "stop"] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds::seeds(name).unwrap().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
}
