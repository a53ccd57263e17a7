#!/usr/bin/env bash
# Fuzzes one of qgpt's targets with libFuzzer (cargo-fuzz on the nightly toolchain):
#   tests/fuzz/run.sh TARGET SECONDS        TARGET: gguf_load | tokenizer | request | stop
# Seeds come from tests/fuzz/seeds.rs and every regression input from tests/fixtures/fuzz/TARGET/;
# the corpus grows under target/fuzz/corpus/TARGET and a crash lands in target/fuzz/artifacts/.
# A crash found is fixed, and its input is committed to tests/fixtures/fuzz/TARGET/, which
# `cargo test` (tests/fuzz_corpus.rs) replays from then on.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?target} secs=${2:?seconds}
root=$PWD/target/fuzz
mkdir -p "$root/corpus" "$root/artifacts/$target" "tests/fixtures/fuzz/$target"
QGPT_FUZZ_SEEDS=$root/corpus cargo test --quiet --test fuzz_corpus -- --ignored write_seeds >/dev/null
# Inputs bigger than a tiny model are slow to mutate and add nothing the parser has not seen.
case $target in
  gguf_load) max_len=65536 ;;
  *) max_len=4096 ;;
esac
cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" "$root/corpus/$target" \
  "tests/fixtures/fuzz/$target" -- -max_total_time="$secs" -max_len="$max_len" \
  -artifact_prefix="$root/artifacts/$target/" -print_final_stats=1 -rss_limit_mb=4096
