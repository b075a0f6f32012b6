#!/usr/bin/env bash
# Runs the codec benchmark (benches/codec.rs) and prints (benches/tools/codec_report.py),
# per session size, every codec and layer with its stored bytes, encode and decode
# time, each as a ratio to the raw-speedy baseline measured in the same run; then each
# serde format against speedy. Extra arguments go to criterion (e.g. a filter such as
# `medium`, or `--measurement-time 5` for steadier figures). Output goes under
# $CARGO_TARGET_DIR (target/ without it).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
log="$target/bench-codec.log"

cargo bench --bench codec -- "$@" | tee "$log" | grep -E "^stored |time:"

python3 benches/tools/codec_report.py "$target/criterion" "$log"
