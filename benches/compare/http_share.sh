#!/usr/bin/env bash
# The HTTP path's share of the engine: the same batches through `tierline bench encoder`
# in-process and as `POST /v1/embed` requests to a running `tierline serve` (float and base64
# responses), one after the other in one run, on both sentence sets. Prints the ratios.
#
#   benches/compare/http_share.sh                       # the debug build (cargo build)
#   TIERLINE_BIN=target/release/tierline benches/compare/http_share.sh
#
# Environment: BS=1,32  SECS=8  SETS="benches/sentences.txt benches/short_messages.txt"
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIERLINE_BIN:-target/debug/tierline}
BS=${BS:-1,32}
SECS=${SECS:-8}
SETS=${SETS:-benches/sentences.txt benches/short_messages.txt}
OUT=benches/compare/results
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --quiet --bin tierline

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TIERLINE_SUPPORT__DATABASE="$work/tierline.db" TIERLINE_KB__INDEX_DIR="$work/kb" TIERLINE_SERVER__PORT="$port" \
  TIERLINE_ENGINE__DEVICE=cpu "$BIN" serve > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break; sleep 1; done

stamp=$(date +%Y%m%dT%H%M%S)
for set in $SETS; do
  name=$(basename "$set" .txt)
  "$BIN" bench encoder --sentences "$set" --batch-sizes "$BS" --min-seconds "$SECS" --json > "$OUT/http-share-$stamp-$name-engine.json"
  for encoding in float base64; do
    "$BIN" bench encoder --sentences "$set" --batch-sizes "$BS" --min-seconds "$SECS" --json \
      --url "http://127.0.0.1:$port" --encoding "$encoding" > "$OUT/http-share-$stamp-$name-$encoding.json"
  done
  python3 - "$OUT/http-share-$stamp-$name" "$name" <<'PY'
import json, sys
prefix, name = sys.argv[1], sys.argv[2]
engine = {r["batch_size"]: r for r in json.load(open(prefix + "-engine.json"))["results"]}
print(f"\n{name}: batch | in-process sent/s (p50 ms) | HTTP float sent/s (p50 ms, share) | HTTP base64 sent/s (p50 ms, share)")
rows = {enc: {r["batch_size"]: r for r in json.load(open(f"{prefix}-{enc}.json"))["results"]} for enc in ("float", "base64")}
for bs, e in sorted(engine.items()):
    cells = [f"{e['sentences_per_sec']:.1f} ({e['p50_ms']:.1f})"]
    for enc in ("float", "base64"):
        h = rows[enc][bs]
        cells.append(f"{h['sentences_per_sec']:.1f} ({h['p50_ms']:.1f}, {h['sentences_per_sec'] / e['sentences_per_sec']:.0%})")
    print(f"  {bs:>3} | " + " | ".join(cells))
PY
done
