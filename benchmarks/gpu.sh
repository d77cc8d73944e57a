#!/usr/bin/env bash
# Everything a GPU machine should measure, in one script (meant to finish in under 8 minutes on a
# fresh machine), its tables written to a folder:
#
#   benchmarks/gpu.sh [OUT]               # on a machine with CUDA; OUT defaults to gpu-results/<UTC time>
#   benchmarks/gpu.sh --update-doc [OUT]  # also write the tables into the "gpu" section of docs/benchmarks.md
#   benchmarks/gpu.sh --dry-run [OUT]     # the same steps on the CPU with tiny settings (made-up data,
#                                         # 1 repetition): tests/test_benchmarks.py runs it so it cannot rot
#
# 1. install: a venv at $GPU_VENV (default .venv-gpu) with torch as the project pins it and mnistlab
#    (editable). --system-site-packages: where the machine's Python already holds that torch (a GPU
#    image's CUDA build), pip keeps it instead of downloading another. A venv that already imports
#    this checkout's mnistlab and the pinned torch is used as it is.
# 2. data: MNIST from $MNISTLAB_DATA, default ../shared/data (beside the checkout), loaded once as a check.
# 3. one run of benchmarks/run.py --device cuda, so that every ratio and the ceiling (the fp32/bf16
#    matmul rate, measured at its start and end) come from the same run: the suite (pipeline,
#    throughput, latency, limit), the `fast` default over 5 seeds (time_to_99: `mnistlab train`
#    processes, whose train_seconds waits for the GPU with torch.cuda.synchronize), and the peer
#    jobs on CUDA (their venv built on first use, also with the system's site packages).
#
# Writes OUT/tables.md, OUT/tables.json and OUT/run.log. Exit status: 0 done, 1 failed, 2 usage.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUDGET_S=480
usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu.sh: $1" >&2; exit "${2:-1}"; }

DRY=0 UPDATE=0 OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --update-doc) UPDATE=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" 2 ;;
        *) [ -z "$OUT" ] || die "one output folder only, got $OUT and $1" 2; OUT="$1" ;;
    esac
    shift
done
[ "$DRY" = 1 ] && [ "$UPDATE" = 1 ] && die "--dry-run measures nothing worth a doc: drop --update-doc" 2
OUT="${OUT:-$REPO/gpu-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT" || die "cannot create the output folder $OUT"
OUT="$(cd "$OUT" && pwd)"
VENV="${GPU_VENV:-$REPO/.venv-gpu}"
PY="$VENV/bin/python"
TORCH_PIN="$(grep -m1 '^torch==' "$REPO/benchmarks/peers-requirements.txt")"  # the project's pin, one place
if [ "$DRY" = 1 ]; then DEVICE=cpu QUICK=(--quick); else DEVICE=cuda QUICK=(); fi
cd "$REPO"

step() { echo "gpu.sh: [$((SECONDS))s] $*" >&2; }

# 1. install
venv_ready() {
    [ -x "$PY" ] && "$PY" - "$REPO" "${TORCH_PIN#torch==}" 2>/dev/null <<'PY'
import sys
from pathlib import Path

import mnistlab
import torch

here = Path(mnistlab.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve())
sys.exit(0 if here and torch.__version__.split("+")[0] == sys.argv[2] else 1)
PY
}
if venv_ready; then
    step "install: $VENV already imports this checkout's mnistlab and $TORCH_PIN"
else
    step "install: creating $VENV ($TORCH_PIN, then mnistlab)"
    python3 -m venv --system-site-packages "$VENV" || die "could not create the venv $VENV"
    "$PY" -m pip install -q "$TORCH_PIN" || die "pip could not install $TORCH_PIN"
    "$PY" -m pip install -q -e "$REPO" || die "pip could not install mnistlab from $REPO"
    venv_ready || die "$VENV does not import this checkout's mnistlab with $TORCH_PIN after installing"
fi
step "torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
if [ "$DRY" = 0 ]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "this torch sees no CUDA device (run --dry-run on a CPU machine, or install a CUDA build of $TORCH_PIN)"
    step "gpu $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
fi

# 2. data
export MNISTLAB_DATA="${MNISTLAB_DATA:-$REPO/../shared/data}"
[ -d "$MNISTLAB_DATA/mnist" ] || die "no MNIST at $MNISTLAB_DATA/mnist (set MNISTLAB_DATA to a root holding mnist/)"
"$PY" -W ignore -c 'import os, sys
from mnistlab.data import load_dataset
d = load_dataset("mnist", os.environ["MNISTLAB_DATA"])
print(f"gpu.sh: data: {len(d.train_labels):,} training and {len(d.test_labels):,} test images", file=sys.stderr)' \
    || die "could not load MNIST from $MNISTLAB_DATA"

# 3. one run: the suite, the `fast` default over 5 seeds, the peers
export MNISTLAB_PEERS_SYSTEM_SITE=1
DOC_ARGS=()
[ "$UPDATE" = 1 ] && DOC_ARGS=(--update-doc gpu)
step "run: benchmarks/run.py --device $DEVICE ${QUICK[*]} (tables in $OUT)"
"$PY" benchmarks/run.py --device "$DEVICE" ${QUICK[@]+"${QUICK[@]}"} -v \
    --only pipeline,time_to_99,throughput,latency,limit,peers \
    --json "$OUT/tables.json" --markdown "$OUT/tables.md" ${DOC_ARGS[@]+"${DOC_ARGS[@]}"} 2>&1 | tee "$OUT/run.log" >&2 \
    || die "benchmarks/run.py failed (see $OUT/run.log)"
step "done in ${SECONDS} s (budget ${BUDGET_S} s): $OUT/tables.md"
[ "$DRY" = 1 ] || [ "$SECONDS" -le "$BUDGET_S" ] || echo "gpu.sh: over the ${BUDGET_S} s budget" >&2
