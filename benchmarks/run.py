"""mnistlab's benchmark suite: one command, one table.

    python benchmarks/run.py                      # everything, real MNIST ($MNISTLAB_DATA), ~5 minutes
    python benchmarks/run.py --only pipeline      # one benchmark (repeatable, or comma-separated)
    python benchmarks/run.py --quick              # tiny made-up data, 1 repetition: a smoke test
    python benchmarks/run.py --update-doc         # also rewrite the results section of docs/benchmarks.md
    python benchmarks/run.py --omp-passive        # OMP_WAIT_POLICY=PASSIVE: for a shared, busy machine
    python benchmarks/run.py --only peers         # against plain PyTorch, Lightning and Keras (own venv)
    python benchmarks/run.py --only all -v --update-doc all   # everything, every table of docs/benchmarks.md

Benchmarks: pipeline (1), time_to_99 (2), throughput (3), latency (4), limit (5), predict (6,
needs pandas for its reference side); see each module's docstring. Not in the default run: `--only changes` retraces what each tuning step
of the `fast` default bought; `--only peers` (7) runs mnistlab against the tools a user would
pick instead, in a virtual environment of their own (created on first use). Every comparison
is measured side by side in this one process (or in processes this script starts back to
back), interleaved repetition by repetition, and reported as a median over --reps
repetitions plus a ratio. Every report also gives the machine's ceiling, the fp32 and bf16
2048x2048 matmul rate measured at the start and at the end of the same run, so that an
absolute time can be scaled to another machine. On a machine with CUDA every benchmark also
runs on the GPU (--device all, the default).
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

from common import (  # noqa: E402
    COLUMNS, MATMUL_N, REPO, Context, Row, available_devices, ceiling, fmt, machine, write_made_mnist,
)

BENCHMARKS = ("pipeline", "time_to_99", "throughput", "latency", "limit", "predict")
OPTIONAL = ("changes", "peers")  # slow (changes: 6 configurations x 5 seeds; peers: 24 processes)
DOC = REPO / "docs" / "benchmarks.md"
# The generated sections of docs/benchmarks.md and the benchmarks each holds (--update-doc all);
# "targets" holds every row with a target, from whichever benchmarks ran.
SECTIONS = {"results": ("pipeline", "throughput", "latency", "limit"), "changes": ("changes", "time_to_99"),
            "peers": ("peers",)}


def markers(section: str) -> tuple[str, str]:
    """The comment pair around one generated section of docs/benchmarks.md."""
    return (f"<!-- {section}:start (written by benchmarks/run.py --update-doc {section}) -->", f"<!-- {section}:end -->")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def measure_ceiling(devices: list[str], reps: int) -> dict[str, dict[str, float]]:
    """{device: {"fp32": GFLOP/s, "bf16": GFLOP/s}}: the 2048x2048 matmul rate, measured now."""
    return {device: ceiling(device, reps) for device in devices}


def ceiling_line(start: dict[str, dict[str, float]], end: dict[str, dict[str, float]]) -> str:
    parts = [f"{d}: fp32 {fmt(start[d]['fp32'])} / bf16 {fmt(start[d]['bf16'])} GFLOP/s at the start, "
             f"{fmt(end[d]['fp32'])} / {fmt(end[d]['bf16'])} at the end" for d in start]
    return f"Ceiling of this run (torch.mm {MATMUL_N}x{MATMUL_N}, fp32 / bf16): {'; '.join(parts)}."


def report(rows: list[Row], info: dict, command: str, seconds: float) -> str:
    facts = ", ".join(f"{k} {v}" for k, v in info.items() if k != "ceiling")
    peak = f"{ceiling_line(info['ceiling']['start'], info['ceiling']['end'])}\n\n" if "ceiling" in info else ""
    return (
        f"Measured with `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} in {seconds:.0f} s.\n\n"
        f"Machine: {facts}.\n\n{peak}{table(rows)}\n"
    )


def doc_sections(section: str, by_name: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """The rows each section of the doc gets: all of them in `section`, or, for "all", by SECTIONS."""
    rows = [r for name_rows in by_name.values() for r in name_rows]
    if section != "all":
        return {section: rows}
    out = {sec: [r for n in names if n in by_name for r in by_name[n]] for sec, names in SECTIONS.items()}
    out = {sec: sec_rows for sec, sec_rows in out.items() if sec_rows}
    out["targets"] = [r for r in rows if r.target]
    return out


def update_doc(text: str, section: str = "results", doc: Path = DOC) -> None:
    """Replace one generated section of docs/benchmarks.md (between its markers), keeping the prose."""
    START, END = markers(section)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in old or END not in old:
        old = old.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The parsed flags and the benchmarks to run, in order; usage errors exit 2."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny made-up data and 1 repetition (a smoke test)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these benchmarks ({', '.join(BENCHMARKS + OPTIONAL)}, or all); repeatable or "
                        "comma-separated")
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                   help="all (cpu, plus cuda where present), cpu or cuda")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    p.add_argument("--data-dir", default=None, help="data root holding mnist/ (default $MNISTLAB_DATA)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report as Markdown here")
    p.add_argument("--update-doc", nargs="?", const="results", default=None, metavar="SECTION",
                   help=f"rewrite a generated section of the doc (default: results); all: each of "
                        f"{', '.join(SECTIONS)} that this run covers, and targets")
    p.add_argument("--doc", type=Path, default=DOC, help=f"the doc --update-doc rewrites (default {DOC.relative_to(REPO)})")
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
    if "all" in names:
        names = list(BENCHMARKS + OPTIONAL)
    unknown = [n for n in names if n not in BENCHMARKS + OPTIONAL]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS + OPTIONAL)} or all")
    if args.reps is not None and args.reps < 1:
        p.error(f"--reps must be at least 1, got {args.reps}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available here (use --device all or cpu)")
    if not args.quick and not (args.data_dir or os.environ.get("MNISTLAB_DATA")):
        p.error("set MNISTLAB_DATA (or --data-dir) to a root holding mnist/, or use --quick")
    return args, list(dict.fromkeys(names))  # each benchmark once, in the order given


def run_all(args: argparse.Namespace, names: list[str]) -> tuple[dict[str, list[Row]], dict, float]:
    """({benchmark: rows}, machine facts, seconds) of one run of `names`. The facts include the
    run's ceiling, {"start"/"end": {device: {"fp32"/"bf16": GFLOP/s}}}: measured before the
    first benchmark and after the last, so that drift during the run shows."""
    reps = args.reps or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-") as tmp:
        work = Path(tmp)
        data_dir = str(write_made_mnist(work / "data")) if args.quick else args.data_dir or os.environ["MNISTLAB_DATA"]
        ctx = Context(quick=args.quick, devices=available_devices(args.device), reps=reps, data_dir=data_dir,
                      work=work, log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else (lambda m: None))
        info = machine()
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
        start = measure_ceiling(ctx.devices, 1 if args.quick else 3)
        by_name: dict[str, list[Row]] = {}
        t0 = time.perf_counter()
        for name in names:
            module = __import__(f"bench_{name}")
            print(f"running {name} ...", file=sys.stderr, flush=True)
            by_name[name] = module.run(ctx)
        seconds = time.perf_counter() - t0
        info["ceiling"] = {"start": start, "end": measure_ceiling(ctx.devices, 1 if args.quick else 3)}
    return by_name, info, seconds


def main(argv: list[str] | None = None) -> int:
    from mnistlab.errors import MnistlabError

    args, names = parse_args(argv)
    try:
        by_name, info, seconds = run_all(args, names)
    except MnistlabError as e:  # missing or bad data: one line, as mnistlab itself reports it
        print(f"run.py: {e}", file=sys.stderr)
        return 1
    rows = [r for name_rows in by_name.values() for r in name_rows]
    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    text = report(rows, info, command, seconds)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": command,
                                         "rows": [dict(zip(COLUMNS, r.cells())) for r in rows]}, indent=2))
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.update_doc:
        for section, section_rows in doc_sections(args.update_doc, by_name).items():
            update_doc(report(section_rows, info, command, seconds), section, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
