#!/usr/bin/env python3
"""Prints the codec benchmark's figures (benches/codec.rs) as markdown tables, for
scripts/bench-codec.sh: per session size, every codec and layer with its stored
bytes, encode and decode time, each as a ratio to the raw-speedy baseline measured
in the same run; then each serde format against speedy.

    codec_report.py CRITERION_DIR BENCH_LOG

CRITERION_DIR is the target directory's `criterion`; BENCH_LOG the output of
`cargo bench --bench codec`, whose `stored SIZE CODEC LAYER BYTES` lines give the
stored sizes.
"""

import json
import pathlib
import sys

if len(sys.argv) != 3:
    sys.exit("usage: codec_report.py CRITERION_DIR BENCH_LOG")
root = pathlib.Path(sys.argv[1])
stored = {}
for line in open(sys.argv[2]):
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
