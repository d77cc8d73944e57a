"""mnistlab's benchmark suite: one command, one table.

    python benchmarks/run.py                      # everything, real MNIST ($MNISTLAB_DATA), ~5 minutes
    python benchmarks/run.py --only pipeline      # one benchmark (repeatable, or comma-separated)
    python benchmarks/run.py --quick              # tiny made-up data, 1 repetition: a smoke test
    python benchmarks/run.py --update-doc         # also rewrite the results section of docs/benchmarks.md
    python benchmarks/run.py --omp-passive        # OMP_WAIT_POLICY=PASSIVE: for a shared, busy machine

Benchmarks: pipeline (1), time_to_99 (2), throughput (3), latency (4), limit (5), predict (6,
needs pandas for its reference side); see each module's docstring. `--only changes` (not in the default run) retraces what each tuning step
of the `fast` default bought. Every comparison is measured side by side in this one process (or in
processes this script starts back to back), interleaved repetition by repetition, and
reported as a median over --reps repetitions plus a ratio. On a machine with CUDA every
benchmark also runs on the GPU (--device all, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import COLUMNS, REPO, Context, Row, available_devices, machine, write_made_mnist  # noqa: E402

BENCHMARKS = ("pipeline", "time_to_99", "throughput", "latency", "limit", "predict")
OPTIONAL = ("changes",)  # slow (6 configurations x 5 seeds); run with --only changes
DOC = REPO / "docs" / "benchmarks.md"
def markers(section: str) -> tuple[str, str]:
    """The comment pair around one generated section of docs/benchmarks.md."""
    return (f"<!-- {section}:start (written by benchmarks/run.py --update-doc {section}) -->", f"<!-- {section}:end -->")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def report(rows: list[Row], info: dict, command: str, seconds: float) -> str:
    facts = ", ".join(f"{k} {v}" for k, v in info.items())
    return (
        f"Measured with `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} in {seconds:.0f} s.\n\n"
        f"Machine: {facts}.\n\n{table(rows)}\n"
    )


def update_doc(text: str, section: str = "results", doc: Path = DOC) -> None:
    """Replace one generated section of docs/benchmarks.md (between its markers), keeping the prose."""
    START, END = markers(section)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in old or END not in old:
        old = old.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny made-up data and 1 repetition (a smoke test)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these benchmarks ({', '.join(BENCHMARKS + OPTIONAL)}); repeatable or comma-separated")
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                   help="all (cpu, plus cuda where present), cpu or cuda")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    p.add_argument("--data-dir", default=None, help="data root holding mnist/ (default $MNISTLAB_DATA)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report as Markdown here")
    p.add_argument("--update-doc", nargs="?", const="results", default=None, metavar="SECTION",
                   help=f"rewrite a generated section of {DOC.relative_to(REPO)} (default: results)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every repetition as it runs")
    p.add_argument("--omp-passive", action="store_true",
                   help="set OMP_WAIT_POLICY=PASSIVE for this run and every command it starts (for a shared, "
                        "oversubscribed machine, where spinning OpenMP threads stall each other)")
    args = p.parse_args(argv)
    if args.omp_passive:
        # Must be in the environment before torch (and its OpenMP runtime) is first imported.
        if "torch" in sys.modules:
            p.error("--omp-passive must be set before torch is imported")
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    names = [n.strip().replace("-", "_") for item in args.only for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS + OPTIONAL]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS + OPTIONAL)}")
    reps = args.reps or (1 if args.quick else 3)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available here (use --device all or cpu)")

    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-") as tmp:
        work = Path(tmp)
        if args.quick:
            data_dir = str(write_made_mnist(work / "data"))
        else:
            data_dir = args.data_dir or os.environ.get("MNISTLAB_DATA") or ""
            if not data_dir:
                p.error("set MNISTLAB_DATA (or --data-dir) to a root holding mnist/, or use --quick")
        ctx = Context(quick=args.quick, devices=available_devices(args.device), reps=reps, data_dir=data_dir,
                      work=work, log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else (lambda m: None))
        info = machine()
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
        rows: list[Row] = []
        t0 = time.perf_counter()
        for name in names:
            module = __import__(f"bench_{name}")
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += module.run(ctx)
        seconds = time.perf_counter() - t0

    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    text = report(rows, info, command, seconds)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": command,
                                         "rows": [dict(zip(COLUMNS, r.cells())) for r in rows]}, indent=2))
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.update_doc:
        update_doc(text, args.update_doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
