#!/usr/bin/env python3
"""PyTorch / sentence-transformers reference benchmark for the tierline encoder.

Encodes the same sentences with the same model files as `tierline bench encoder`
and reports throughput and per-batch latency in the same JSON shape, so that
report.py can put both side by side.

Methodology (mirrored by `tierline bench encoder`):
  * sentences are read one per line (blank lines skipped);
  * for batch size B, batch i is sentences[i*B : i*B + B], wrapping around the
    end of the list (the list is cycled), so every batch has exactly B items;
  * `--warmup` batches are run first and not timed;
  * timed calls continue until at least `--min-seconds` have elapsed AND at
    least one full pass over all sentences has been made (ceil(N / B) calls;
    for B = 1 that requirement is capped at 512 calls);
  * each call is timed with time.perf_counter();
  * sentences_per_sec = (calls * B) / (sum of per-call times);
  * p50_ms / p99_ms are nearest-rank percentiles of the per-call latencies.

Only the JSON (with --json) or the table goes to stdout; logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

CHECK_QUERY = "How do I reset my password?"
CHECK_PARAPHRASE = "I forgot my password, how can I change it?"
CHECK_UNRELATED = "What is your refund policy?"

BS1_FULL_PASS_CAP = 512


def log(msg: str) -> None:
    print(f"[reference] {msg}", file=sys.stderr, flush=True)


def parse_batch_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value = int(part)
        if value < 1:
            raise argparse.ArgumentTypeError(f"batch size must be >= 1, got {value}")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("no batch sizes given")
    return sizes


def default_sentences_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sentences.txt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark sentence-transformers (PyTorch, CPU) as a reference for tierline.",
    )
    p.add_argument("--model-dir", required=True,
                   help="local sentence-transformers model folder (same files tierline loads)")
    p.add_argument("--sentences", default=default_sentences_path(),
                   help="file with one sentence per line (default: benches/sentences.txt)")
    p.add_argument("--batch-sizes", type=parse_batch_sizes, default=parse_batch_sizes("1,8,32,64"),
                   help="comma-separated batch sizes (default: 1,8,32,64)")
    p.add_argument("--min-seconds", type=float, default=5.0,
                   help="minimum timed seconds per batch size (default: 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed warmup batches per batch size (default: 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N); default: leave torch's default")
    p.add_argument("--bf16", action="store_true",
                   help="run under torch.autocast('cpu', dtype=torch.bfloat16)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of a table")
    p.add_argument("--check", action="store_true",
                   help="print embedding/cosine sanity values as JSON and exit")
    return p.parse_args(argv)


def load_sentences(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        sentences = [line.strip() for line in f]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise SystemExit(f"no sentences in {path}")
    return sentences


def batch_at(sentences: list[str], index: int, bs: int) -> list[str]:
    n = len(sentences)
    start = index * bs
    return [sentences[(start + j) % n] for j in range(bs)]


def percentile_nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def load_model(model_dir: str):
    from sentence_transformers import SentenceTransformer

    log(f"loading {model_dir}")
    return SentenceTransformer(model_dir, device="cpu")


def autocast_ctx(torch, bf16: bool):
    if bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def run_check(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)
    texts = [CHECK_QUERY, CHECK_PARAPHRASE, CHECK_UNRELATED]
    with autocast_ctx(torch, args.bf16):
        # Plain encode(): applies whatever modules the model config lists
        # (pooling, and Normalize for all-MiniLM-L6-v2).
        emb = model.encode(texts, convert_to_numpy=True)
    emb = emb.astype("float64")

    def cos(a, b):
        return float((a @ b) / (math.sqrt(a @ a) * math.sqrt(b @ b)))

    out = {
        "engine": "pytorch-bf16" if args.bf16 else "pytorch-f32",
        "model_dir": os.path.abspath(args.model_dir),
        "sentence": CHECK_QUERY,
        "dim": int(emb.shape[1]),
        "norm": round(math.sqrt(float(emb[0] @ emb[0])), 6),
        "first5": [round(float(x), 6) for x in emb[0][:5]],
        "cosine": {
            CHECK_PARAPHRASE: round(cos(emb[0], emb[1]), 4),
            CHECK_UNRELATED: round(cos(emb[0], emb[2]), 4),
        },
    }
    print(json.dumps(out, indent=2))
    return 0


def bench_batch_size(model, torch, sentences: list[str], bs: int, args: argparse.Namespace) -> dict:
    def encode(batch):
        with autocast_ctx(torch, args.bf16):
            return model.encode(
                batch,
                batch_size=bs,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )

    return timed_calls(encode, sentences, bs, args.warmup, args.min_seconds)


def timed_calls(encode, sentences: list[str], bs: int, warmup: int, min_seconds: float) -> dict:
    """Times `encode` on batches of `bs` per the methodology above; shared by every reference."""
    n = len(sentences)
    required_calls = math.ceil(n / bs)
    if bs == 1:
        required_calls = min(required_calls, BS1_FULL_PASS_CAP)

    for i in range(warmup):
        encode(batch_at(sentences, i, bs))

    latencies: list[float] = []
    wall_start = time.perf_counter()
    index = 0
    while True:
        batch = batch_at(sentences, index, bs)
        t0 = time.perf_counter()
        encode(batch)
        latencies.append(time.perf_counter() - t0)
        index += 1
        elapsed = time.perf_counter() - wall_start
        if elapsed >= min_seconds and index >= required_calls:
            break

    total = sum(latencies)
    calls = len(latencies)
    result = {
        "batch_size": bs,
        "sentences_per_sec": round(calls * bs / total, 2),
        "p50_ms": round(percentile_nearest_rank(latencies, 50) * 1000.0, 3),
        "p99_ms": round(percentile_nearest_rank(latencies, 99) * 1000.0, 3),
        "calls": calls,
        "sentences": calls * bs,
        "total_s": round(total, 3),
    }
    log(
        f"bs={bs:>4}  {result['sentences_per_sec']:>9.1f} sent/s  "
        f"p50 {result['p50_ms']:>8.2f} ms  p99 {result['p99_ms']:>8.2f} ms  ({calls} calls)"
    )
    return result


def print_table(report: dict) -> None:
    print(f"engine: {report['engine']}  threads: {report['threads']}  "
          f"sentences: {report['num_sentences']}")
    header = f"{'batch':>6}  {'sent/s':>10}  {'p50 ms':>9}  {'p99 ms':>9}  {'calls':>6}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(f"{r['batch_size']:>6}  {r['sentences_per_sec']:>10.1f}  {r['p50_ms']:>9.2f}  "
              f"{r['p99_ms']:>9.2f}  {r['calls']:>6}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return run_check(args)

    import torch
    import sentence_transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sentences = load_sentences(args.sentences)
    model = load_model(args.model_dir)
    engine = "pytorch-bf16" if args.bf16 else "pytorch-f32"
    log(f"{engine}: torch {torch.__version__}, sentence-transformers "
        f"{sentence_transformers.__version__}, {threads} threads, {len(sentences)} sentences")

    results = [bench_batch_size(model, torch, sentences, bs, args) for bs in args.batch_sizes]
    report = {
        "engine": engine,
        "precision": "bf16" if args.bf16 else "f32",
        "threads": threads,
        "results": results,
        "model_dir": os.path.abspath(args.model_dir),
        "num_sentences": len(sentences),
        "min_seconds": args.min_seconds,
        "warmup": args.warmup,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
