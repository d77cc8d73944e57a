"""`--amp bf16` against `--amp off` for the `fast` default, side by side, beside this machine's ceiling.

    MNISTLAB_DATA=../shared/data python benchmarks/bench_amp.py [--rounds 5] [--model fast]

What `--amp auto` should pick on a CPU depends on the CPU: with AMX, bf16 matmul ran 5.8x fp32
(docs/benchmarks.md); with AVX512_BF16 alone it ran at about half of fp32. Each round trains the
model once in each precision (whole `mnistlab train` processes, alternating which goes first), and
the table gives the median train_seconds, the bf16/fp32 ratio, the test accuracies, and the
2048x2048 matmul rates measured at the start of the run (benchmarks/common.py `ceiling`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ceiling  # noqa: E402


def one_run(model: str, amp: str, out: Path, threads: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "mnistlab", "train", "--model", model, "--amp", amp, "--out", str(out), "--name",
           "run", "--no-plots", "--quiet", "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "run" / "summary.json").read_text())
    return {"train_seconds": summary["train_seconds"], "accuracy": summary["accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("MNISTLAB_DATA"):
        print("set MNISTLAB_DATA to the folder holding mnist/ (e.g. ../shared/data)", file=sys.stderr)
        return 2
    import torch

    from mnistlab.training.hardware import bf16_pays, has_amx

    torch.set_num_threads(args.threads)
    rates = ceiling("cpu")
    runs: dict[str, list[dict[str, float]]] = {"bf16": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for amp in (["bf16", "off"] if r % 2 == 0 else ["off", "bf16"]):
                runs[amp].append(one_run(args.model, amp, Path(tmp) / f"{amp}-{r}", args.threads))
    med = {amp: statistics.median(x["train_seconds"] for x in rs) for amp, rs in runs.items()}
    print(f"ceiling: fp32 {rates['fp32']:.0f} / bf16 {rates['bf16']:.0f} GFLOP/s; AMX: {has_amx()}; "
          f"--amp auto picks bf16 here: {bf16_pays(torch.device('cpu'))}")
    print(f"| `{args.model}`, {args.rounds} rounds | train_seconds (median) | test accuracy (each round) |")
    print("| --- | ---: | --- |")
    for amp, label in (("bf16", "--amp bf16"), ("off", "--amp off (fp32)")):
        accs = " ".join(f"{x['accuracy']:.4f}" for x in runs[amp])
        print(f"| {label} | {med[amp]:.3f} s | {accs} |")
    print(f"bf16 / fp32 time: {med['bf16'] / med['off']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
