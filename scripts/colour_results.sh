#!/usr/bin/env bash
# The colour section of docs/results.md: a made RGB image folder (no download), cnn-bn on it in
# colour with --augment (random crops + flips), in colour without, and the same folder read as gray.
# Usage: scripts/colour_results.sh [OUT]   (then: mnistlab compare OUT/* --format markdown)
set -euo pipefail
out=${1:-runs/colour}
data=${COLOUR_DATA:-$out-data}
python - "$data" <<'PY'
import sys
from mnistlab.data.synthetic import write_colour_folder

write_colour_folder(sys.argv[1], n_train=2000, n_test=1000)  # the same files every time
PY
common=(--dataset "folder:$data" --model cnn-bn --out "$out" --quiet)
mnistlab train "${common[@]}" --augment --name colour-augment
mnistlab train "${common[@]}" --no-augment --name colour
mnistlab train "${common[@]}" --channels 1 --image-size 32 --name gray  # same size, no colour
