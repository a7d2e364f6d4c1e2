#!/usr/bin/env bash
# One-command comparison: sentence-transformers (PyTorch, CPU) vs `tierline bench encoder`.
#
# Usage:
#   benches/compare/run.sh [--bf16] [--onnx] [--threads N] [-- EXTRA_TIERLINE_BENCH_ARGS...]
#
#   --bf16   also PyTorch under bf16 autocast
#   --onnx   also onnxruntime on the same weights exported to ONNX (installs onnxruntime + onnx)
#
# Environment:
#   BS=1,8,32,64        batch sizes
#   SECS=5              minimum timed seconds per batch size
#   WARMUP=2            untimed warmup batches per batch size (PyTorch side)
#   THREADS=            torch.set_num_threads for the PyTorch run (default: torch's default)
#   TIERLINE_BIN=target/release/tierline
#   MODEL_DIR=          model folder (default: `$TIERLINE_BIN models path encoder`)
#   PYTHON=python3      interpreter used to create the venv
#   SENTENCES=benches/sentences.txt
#   PRECISIONS=f32      tierline precisions, each a run (f32,int8: both, one after the other)
#
# Examples:
#   benches/compare/run.sh
#   BS=1,32 SECS=10 benches/compare/run.sh --bf16
#   PRECISIONS=f32,int8 benches/compare/run.sh --bf16 --onnx
#
# The runs happen one after another, never concurrently, so they do not
# compete for cores. Raw JSON goes to benches/compare/results/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

BS="${BS:-1,8,32,64}"
SECS="${SECS:-5}"
WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-}"
PYTHON="${PYTHON:-python3}"
SENTENCES="${SENTENCES:-benches/sentences.txt}"
PRECISIONS="${PRECISIONS:-f32}"
VENV="$SCRIPT_DIR/.venv"
RESULTS="$SCRIPT_DIR/results"

RUN_BF16=0
RUN_ONNX=0
TIERLINE_EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bf16) RUN_BF16=1; shift ;;
    --onnx) RUN_ONNX=1; shift ;;
    --threads) THREADS="$2"; shift 2 ;;
    --threads=*) THREADS="${1#*=}"; shift ;;
    -h|--help) sed -n '2,24p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; TIERLINE_EXTRA=("$@"); break ;;
    *) echo "run.sh: unknown argument: $1 (extra tierline args go after --)" >&2; exit 2 ;;
  esac
done

log() { printf '\n==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Python side
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
if ! "$VPY" -c 'import torch, sentence_transformers' >/dev/null 2>&1; then
  log "installing torch and sentence-transformers into the venv (large download, ~3 GB)"
  "$VPY" -m pip install --upgrade pip >&2
  "$VPY" -m pip install torch 'sentence-transformers>=5,<6' >&2
fi

if [[ "$RUN_ONNX" == 1 ]] && ! "$VPY" -c 'import onnxruntime, onnx' >/dev/null 2>&1; then
  log "installing onnxruntime and onnx into the venv"
  "$VPY" -m pip install onnxruntime onnx >&2
fi

# ---------------------------------------------------------------- Rust side
TIERLINE_BIN="${TIERLINE_BIN:-target/release/tierline}"
if [[ ! -x "$TIERLINE_BIN" ]]; then
  if [[ "$TIERLINE_BIN" == "target/release/tierline" ]]; then
    log "building tierline (cargo build --release)"
    cargo build --release
  else
    echo "run.sh: TIERLINE_BIN=$TIERLINE_BIN is not an executable" >&2
    exit 1
  fi
fi

if [[ -z "${MODEL_DIR:-}" ]]; then
  MODEL_DIR="$("$TIERLINE_BIN" models path encoder)"
fi
if [[ ! -d "$MODEL_DIR" ]]; then
  echo "run.sh: model folder not found: '$MODEL_DIR'" >&2
  exit 1
fi

mkdir -p "$RESULTS"
if [[ ! -f "$RESULTS/.gitignore" ]]; then
  printf '*.json\n' > "$RESULTS/.gitignore"
fi

# ---------------------------------------------------------------- machine info
CPU_MODEL="$( (lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1) || true)"
if [[ -z "$CPU_MODEL" ]]; then
  CPU_MODEL="$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n1 || true)"
fi
NPROC="$(nproc 2>/dev/null || echo '?')"
VERSIONS="$("$VPY" -c 'import torch, sentence_transformers as st; print(torch.__version__, st.__version__)')"
TORCH_VERSION="${VERSIONS%% *}"
ST_VERSION="${VERSIONS##* }"
TIERLINE_VERSION="$("$TIERLINE_BIN" --version 2>/dev/null | head -n1 || echo unknown)"

CPU_MODEL="$CPU_MODEL" NPROC="$NPROC" TORCH_VERSION="$TORCH_VERSION" ST_VERSION="$ST_VERSION" \
TIERLINE_VERSION="$TIERLINE_VERSION" MODEL_DIR="$MODEL_DIR" BS="$BS" SECS="$SECS" \
"$VPY" - > "$RESULTS/machine.json" <<'PY'
import json, os, platform, datetime
print(json.dumps({"machine": {
    "cpu_model": os.environ["CPU_MODEL"] or "unknown",
    "nproc": os.environ["NPROC"],
    "kernel": platform.release(),
    "torch": os.environ["TORCH_VERSION"],
    "sentence_transformers": os.environ["ST_VERSION"],
    "tierline": os.environ["TIERLINE_VERSION"],
    "model_dir": os.environ["MODEL_DIR"],
    "batch_sizes": os.environ["BS"],
    "min_seconds": os.environ["SECS"],
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}}))
PY

log "machine: $CPU_MODEL, nproc=$NPROC; torch $TORCH_VERSION, sentence-transformers $ST_VERSION"
log "model: $MODEL_DIR; batch sizes $BS; min seconds $SECS"

REF_ARGS=(--model-dir "$MODEL_DIR" --sentences "$SENTENCES" --batch-sizes "$BS"
          --min-seconds "$SECS" --warmup "$WARMUP" --json)
if [[ -n "$THREADS" ]]; then
  REF_ARGS+=(--threads "$THREADS")
fi

FILES=("$RESULTS/machine.json")

# ---------------------------------------------------------------- runs (sequential)
log "pytorch f32"
"$VPY" "$SCRIPT_DIR/reference.py" "${REF_ARGS[@]}" > "$RESULTS/pytorch-f32.json"
FILES+=("$RESULTS/pytorch-f32.json")

if [[ "$RUN_BF16" == 1 ]]; then
  log "pytorch bf16 (autocast)"
  "$VPY" "$SCRIPT_DIR/reference.py" "${REF_ARGS[@]}" --bf16 > "$RESULTS/pytorch-bf16.json"
  FILES+=("$RESULTS/pytorch-bf16.json")
fi

if [[ "$RUN_ONNX" == 1 ]]; then
  log "onnxruntime f32"
  ORT_ARGS=(--model-dir "$MODEL_DIR" --sentences "$SENTENCES" --batch-sizes "$BS"
            --min-seconds "$SECS" --warmup "$WARMUP" --json)
  if [[ -n "$THREADS" ]]; then
    ORT_ARGS+=(--threads "$THREADS")
  fi
  "$VPY" "$SCRIPT_DIR/onnx_reference.py" "${ORT_ARGS[@]}" > "$RESULTS/onnxruntime-f32.json"
  FILES+=("$RESULTS/onnxruntime-f32.json")
fi

SUFFIX=""
if [[ ${#TIERLINE_EXTRA[@]} -gt 0 ]]; then
  SUFFIX="-$(printf '%s-' "${TIERLINE_EXTRA[@]}" | tr -c 'A-Za-z0-9_.=-' '-' | tr -s '-' | sed 's/^-*//; s/-*$//')"
fi
IFS=',' read -r -a PRECISION_LIST <<< "$PRECISIONS"
for PRECISION in "${PRECISION_LIST[@]}"; do
  TL_OUT="$RESULTS/tierline-${PRECISION}${SUFFIX}.json"
  log "tierline bench encoder --precision $PRECISION ${TIERLINE_EXTRA[*]:-}"
  "$TIERLINE_BIN" bench encoder --sentences "$SENTENCES" --batch-sizes "$BS" \
    --min-seconds "$SECS" --precision "$PRECISION" --json "${TIERLINE_EXTRA[@]}" > "$TL_OUT"
  FILES+=("$TL_OUT")
done

# ---------------------------------------------------------------- report
echo
"$VPY" "$SCRIPT_DIR/report.py" "${FILES[@]}"
echo
echo "raw results: ${FILES[*]}"
echo "markdown:    $VPY $SCRIPT_DIR/report.py --markdown ${FILES[*]}"
