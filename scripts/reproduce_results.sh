#!/usr/bin/env bash
# Reproduce the tutorials' results of docs/results.md on real MNIST (each run's recipe is its
# model's default; see `mnistlab models`). Usage: scripts/reproduce_results.sh [OUT] [MODEL...]
set -euo pipefail
out=${1:-runs/results}
shift || true
models=("${@:-logistic mlp dnn cnn-basic lstm fast best}")
for m in ${models[@]}; do
  case $m in
    dnn) extra=(--set hidden_dims=784,128,128,128) ;;  # the tutorials' 784-128-128-128 with BN + dropout
    *) extra=() ;;
  esac
  echo "== mnistlab train --model $m ${extra[*]} --out $out"
  mnistlab train --model "$m" "${extra[@]}" --out "$out" --name "$m" --quiet
done
