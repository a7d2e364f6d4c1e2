#!/usr/bin/env bash
# The API fuzz command: drives a live tierline server with schemathesis, generated from the
# server's own /openapi.json, twice: without keys (loopback, open) and with an admin key. Every
# check is on; any 5xx or contract failure fails the run. Not part of the default test run.
#
#   bash tests/fuzz/run.sh                  # ~100 cases per operation and run
#   EXAMPLES=200 bash tests/fuzz/run.sh     # more
#
# Needs python3 with venv (schemathesis comes from PyPI into target/fuzz-venv) and the encoder
# (pulled like every other command). Reports land in target/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/../.."

EXAMPLES=${EXAMPLES:-100}
SCHEMATHESIS=${SCHEMATHESIS:-schemathesis==4.32.5}
VENV=target/fuzz-venv
OUT=target/fuzz
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$SCHEMATHESIS"
fi
cargo build --quiet --bin tierline
BIN=target/debug/tierline

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TIERLINE_SUPPORT__DATABASE="$work/tierline.db" TIERLINE_KB__INDEX_DIR="$work/kb"
export TIERLINE_MODELS__HEAD_VERSIONS="$work/heads" TIERLINE_SERVER__PORT="$port"
"$BIN" serve -v > "$OUT/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break
  kill -0 $server 2>/dev/null || { echo "the server stopped: see $OUT/serve.log" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$port/ready" > /dev/null || { echo "the server did not get ready in 120 s" >&2; exit 1; }

fuzz() {
  name=$1; shift
  echo "== fuzz: $name"
  # The event stream never ends by design: it is documented, and left out of the fuzzing.
  "$VENV/bin/schemathesis" --config-file tests/fuzz/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --checks all --max-examples "$EXAMPLES" --workers 2 --no-shrink --seed "${SEED:-1}" \
    --exclude-path /v1/events --request-timeout 60 \
    --report junit,json --report-dir "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.txt"
}

status=0
fuzz open || status=1
key=$("$BIN" keys create --name fuzz --scope admin | grep -o 'tl_[A-Za-z0-9_]*' | head -1)
[ -n "$key" ] || { echo "could not create an admin key" >&2; exit 1; }
fuzz keys -H "Authorization: Bearer $key" || status=1
grep -h "generated" "$OUT/open.txt" "$OUT/keys.txt" || true
[ $status = 0 ] && echo "fuzz: no failures" || echo "fuzz: failures above (reports in $OUT)"
exit $status
