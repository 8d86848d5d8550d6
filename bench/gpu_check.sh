#!/usr/bin/env bash
# The prepared GPU check (issue 14): run it as it is whenever a GPU is lent; it fits in 10 minutes on one
# H100/H200 (each step has a time limit; the limits add up to under 10 min).
#
#   bench/gpu_check.sh [--out DIR]      # on a GPU: logs in DIR (default gpu_check_out/), figures for docs/benchmarks.md
#   bench/gpu_check.sh --dry-run        # anywhere: checks that every step's command parses (tests run this)
#
# Steps:
#   1. bench/gpu_throughput.py   MSDM paper-preset U-Net at 256², batch 64: images/s and MFU vs the diffusers loop
#                                (no torch.compile: its warm-up alone can take minutes)
#   2. bench/flux_lora_memory.py FLUX.1-dev LoRA rank 64 at 256², batch 1, cached text embeddings: peak memory and
#                                step time with and without gradient checkpointing (random bf16 weights)
#   3. msdm memory               the prediction for the same FLUX setting, to read next to step 2
#   4. bench/gpu_memory_check.py every generator at full depth: measured vs predicted peak memory
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
DRY=""
OUT=gpu_check_out
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=--dry-run ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (use --dry-run or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$DRY" ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA device here; nothing measured (bench/gpu_check.sh --dry-run checks the commands)" >&2
  exit 1
fi
[ -n "$DRY" ] || mkdir -p "$OUT"

step() {  # step NAME TIME_LIMIT_S COMMAND...: run it (dry run: as given; else under a time limit, logged)
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  if [ -n "$DRY" ]; then
    "$@"
  else
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  fi
}

memory_args=(memory configs/flux_lora_kvasir.yaml --batch-size 1 --resolution 256 --rank 64)

step throughput 180 "$PY" bench/gpu_throughput.py --no-compile --steps 10 --warmup 3 $DRY
step flux_lora_memory 150 "$PY" bench/flux_lora_memory.py --rank 64 --batch-size 1 --resolution 256 \
  --configs gc0c1,gc1c1 --steps 3 --warmup 1 $DRY
if [ -n "$DRY" ]; then  # msdm memory has no dry mode (it is the CPU-side prediction): check that its arguments parse
  step msdm_memory 60 "$PY" -c "import sys; from msdm.cli import build_parser; build_parser().parse_args(sys.argv[1:]); print('plan: msdm', *sys.argv[1:])" "${memory_args[@]}"
else
  step msdm_memory 60 "$PY" -m msdm "${memory_args[@]}"
fi
step gpu_memory_check 200 "$PY" bench/gpu_memory_check.py $DRY
if [ -n "$DRY" ]; then echo "gpu_check.sh: every command parses (dry run)"; else echo "gpu_check.sh: done; logs in $OUT/"; fi
