#!/usr/bin/env python3
"""Side-by-side table of encoder benchmark results.

Usage:
    report.py [--markdown] [--baseline ENGINE] FILE.json [FILE.json ...]

Each FILE is the JSON printed by `reference.py --json` or by
`tierline bench encoder --json`:

    {"engine": "pytorch-f32", "precision": "f32", "threads": 2,
     "results": [{"batch_size": 1, "sentences_per_sec": 102.3,
                  "p50_ms": 9.7, "p99_ms": 12.1}, ...]}

A file whose top level has a "machine" object (written by run.sh) is shown as
machine information instead of as an engine.

Rows are batch sizes; for every engine the table shows sentences/s and p50 ms.
For every engine other than the baseline (pytorch-f32 by default) two ratios
are added:
    tput x = engine sentences/s / baseline sentences/s   (>1: engine faster)
    p50 x  = baseline p50 ms    / engine p50 ms          (>1: engine faster)
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import sys


def load(paths: list[str]) -> tuple[dict | None, list[dict]]:
    machine = None
    engines = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        if not text:
            raise SystemExit(f"report.py: {path} is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            # tolerate stray lines around the object: use the last line that parses
            data = None
            for line in reversed(text.splitlines()):
                line = line.strip()
                if line.startswith("{"):
                    try:
                        data = json.loads(line)
                        break
                    except json.JSONDecodeError:
                        continue
            if data is None:
                raise SystemExit(f"report.py: {path} holds no JSON object")
        if isinstance(data, dict) and "machine" in data:
            machine = data["machine"]
            continue
        if not isinstance(data, dict) or "results" not in data:
            raise SystemExit(f"report.py: {path} has no 'results'")
        data["_label"] = label_of(data)
        data["_path"] = path
        engines.append(data)
    # make labels unique if the same engine/precision appears twice
    seen: dict[str, int] = {}
    for e in engines:
        n = seen.get(e["_label"], 0)
        seen[e["_label"]] = n + 1
        if n:
            e["_label"] = f"{e['_label']}#{n + 1}"
    return machine, engines


def label_of(data: dict) -> str:
    engine = str(data.get("engine", "?"))
    precision = data.get("precision")
    if precision and not engine.endswith(str(precision)):
        return f"{engine}-{precision}"
    return engine


def fmt_num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def build(engines: list[dict], baseline_name: str) -> tuple[list[str], list[list[str]], dict | None]:
    baseline = next((e for e in engines if e.get("engine") == baseline_name), None)
    if baseline is None:
        baseline = next((e for e in engines if e["_label"] == baseline_name), None)
    by_bs = []
    for e in engines:
        by_bs.append({int(r["batch_size"]): r for r in e["results"]})
    base_by_bs = by_bs[engines.index(baseline)] if baseline is not None else {}
    batch_sizes = sorted({bs for m in by_bs for bs in m})

    header = ["batch"]
    for e in engines:
        header += [f"{e['_label']} sent/s", f"{e['_label']} p50 ms"]
        if baseline is not None and e is not baseline:
            header += [f"{e['_label']} tput x", f"{e['_label']} p50 x"]

    rows = []
    for bs in batch_sizes:
        row = [str(bs)]
        base = base_by_bs.get(bs)
        for e, m in zip(engines, by_bs):
            r = m.get(bs)
            sps = float(r["sentences_per_sec"]) if r else None
            p50 = float(r["p50_ms"]) if r else None
            row += [fmt_num(sps, 1), fmt_num(p50, 2)]
            if baseline is not None and e is not baseline:
                tput = p50x = None
                if r and base:
                    b_sps = float(base["sentences_per_sec"])
                    b_p50 = float(base["p50_ms"])
                    tput = sps / b_sps if b_sps > 0 else None
                    p50x = b_p50 / p50 if p50 and p50 > 0 else None
                row += [fmt_ratio(tput), fmt_ratio(p50x)]
        rows.append(row)
    return header, rows, baseline


def engine_notes(engines: list[dict]) -> list[str]:
    notes = []
    for e in engines:
        bits = [f"threads={e.get('threads', '?')}"]
        versions = e.get("versions") or {}
        for k, v in versions.items():
            bits.append(f"{k} {v}")
        cosine = e.get("cosine_to_f32")
        if cosine:
            bits.append(f"cosine to f32 min {cosine['min']:.4f} mean {cosine['mean']:.4f}")
        notes.append(f"{e['_label']}: " + ", ".join(bits))
    return notes


def machine_lines(machine: dict | None) -> list[str]:
    if not machine:
        return []
    lines = [f"CPU: {machine.get('cpu_model', '?')} (nproc {machine.get('nproc', '?')})"]
    ver = []
    for key, name in (("torch", "torch"), ("sentence_transformers", "sentence-transformers"),
                      ("tierline", "tierline")):
        value = str(machine.get(key) or "")
        if value and value != "unknown":
            ver.append(value if value.startswith(name) else f"{name} {value}")
    if ver:
        lines.append("Versions: " + ", ".join(ver))
    extra = []
    if machine.get("batch_sizes"):
        extra.append(f"batch sizes {machine['batch_sizes']}")
    if machine.get("min_seconds"):
        extra.append(f"min {machine['min_seconds']} s per batch size")
    if machine.get("date"):
        extra.append(machine["date"])
    if extra:
        lines.append("Run: " + ", ".join(extra))
    return lines


def print_plain(header, rows, notes, machine) -> None:
    for line in machine_lines(machine):
        print(line)
    for line in notes:
        print(line)
    if machine or notes:
        print()
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def print_markdown(header, rows, notes, machine) -> None:
    for line in machine_lines(machine):
        print(f"- {line}")
    for line in notes:
        print(f"- {line}")
    if machine or notes:
        print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare encoder benchmark JSON files.")
    p.add_argument("files", nargs="+", help="JSON files from reference.py / tierline bench encoder")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--baseline", default="pytorch-f32",
                   help="engine the ratios are computed against (default: pytorch-f32)")
    args = p.parse_args(argv)

    machine, engines = load(args.files)
    if not engines:
        raise SystemExit("report.py: no engine results given")
    header, rows, baseline = build(engines, args.baseline)
    notes = engine_notes(engines)
    if args.markdown:
        print_markdown(header, rows, notes, machine)
    else:
        print_plain(header, rows, notes, machine)
    if baseline is None:
        print(f"\n(no '{args.baseline}' results given: ratios omitted)", file=sys.stderr)
    else:
        print("\ntput x = sentences/s vs " + baseline["_label"]
              + "; p50 x = " + baseline["_label"] + " p50 / engine p50 (>1 = faster than baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
