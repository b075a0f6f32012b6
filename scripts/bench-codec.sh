#!/usr/bin/env bash
# Runs the codec benchmark (benches/codec.rs) and prints, per session size, every
# codec and layer with its stored bytes, encode and decode time, each as a ratio to
# the raw-speedy baseline measured in the same run; then each serde format against
# speedy. Extra arguments go to criterion (e.g. a filter such as `medium`, or
# `--measurement-time 5` for steadier figures).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
log="$target/bench-codec.log"

cargo bench --bench codec -- "$@" | tee "$log" | grep -E "^stored |time:"

TARGET="$target" LOG="$log" python3 - <<'PY'
import json, os, pathlib

root = pathlib.Path(os.environ["TARGET"]) / "criterion"
stored = {}
for line in open(os.environ["LOG"]):
    if line.startswith("stored "):
        _, size, codec, layer, count = line.split()
        stored[(size, codec, layer)] = int(count)

def mean_ns(direction, size, name):
    # criterion turns the `/` of group and benchmark names into `_` on disk.
    path = root / f"{direction}_{size}" / name.replace("/", "_") / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]

def us(ns):
    return "-" if ns is None else f"{ns / 1000:.2f}"

def ratio(value, base):
    return "-" if value is None or not base else f"{value / base:.2f}x"

codecs = ["speedy", "json", "msgpack", "postcard"]
layers = ["none", "lz4", "zstd", "aes", "lz4+aes"]
for size in ["small", "medium", "large"]:
    raw_bytes = stored.get((size, "raw_speedy", "none"))
    if raw_bytes is None:
        continue
    raw_enc = mean_ns("encode", size, "raw_speedy")
    raw_dec = mean_ns("decode", size, "raw_speedy")
    print(f"\n{size}: raw speedy baseline {raw_bytes} bytes, encode {us(raw_enc)} µs, decode {us(raw_dec)} µs")
    print(f"| codec | layer | stored bytes | encode µs | decode µs | bytes vs raw | encode vs raw | decode vs raw |")
    print(f"|---|---|---:|---:|---:|---:|---:|---:|")
    for codec in codecs:
        for layer in layers:
            size_bytes = stored.get((size, codec, layer))
            if size_bytes is None:
                continue
            enc = mean_ns("encode", size, f"{codec}/{layer}")
            dec = mean_ns("decode", size, f"{codec}/{layer}")
            print(f"| {codec} | {layer} | {size_bytes} | {us(enc)} | {us(dec)} "
                  f"| {ratio(size_bytes, raw_bytes)} | {ratio(enc, raw_enc)} | {ratio(dec, raw_dec)} |")

print("\nEach serde format against speedy (no layer): its figure / speedy's")
print("| size | codec | bytes | encode | decode |")
print("|---|---|---:|---:|---:|")
for size in ["small", "medium", "large"]:
    base = stored.get((size, "speedy", "none"))
    if base is None:
        continue
    enc = mean_ns("encode", size, "speedy/none")
    dec = mean_ns("decode", size, "speedy/none")
    for codec in codecs[1:]:
        b = stored.get((size, codec, "none"))
        print(f"| {size} | {codec} | {ratio(b, base)} "
              f"| {ratio(mean_ns('encode', size, f'{codec}/none'), enc)} "
              f"| {ratio(mean_ns('decode', size, f'{codec}/none'), dec)} |")
PY
