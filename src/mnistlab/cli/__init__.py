"""The `mnistlab` command: parsing and dispatch only; the work happens in the library.

Each sub-command lives in its own module here with `register(subparsers)`; the
modules import torch only inside their handlers, so `mnistlab --help` stays fast.
Exit codes: 0 success, 1 an error (one line on stderr), 2 a usage error, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM during training).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# Sub-command modules, in the order `mnistlab --help` lists them.
COMMAND_MODULES = ["data", "models", "train", "lrfind", "evaluate", "results", "tune", "inference", "text"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the full usage is one `--help` away).

    A sub-command whose parser has `intermixed = True` takes its positionals around its options
    (`predict RUN --top-k 3 a.png b.png`), which argparse refuses once a positional may be empty (nargs="*").
    """

    intermixed = False
    _intermixing = False

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        if not self.intermixed or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back here: those calls are plain
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    from mnistlab import __version__

    parser = _Parser(
        prog="mnistlab",
        description="Train, evaluate and compare classic neural networks on MNIST-family data.",
        epilog=(
            "examples:\n"
            "  mnistlab train                          # the fast CNN on MNIST, ~99% in seconds\n"
            "  mnistlab train --model dnn --set hidden_dims=784,128,128,128\n"
            "  mnistlab evaluate runs/fast --json\n"
            "  mnistlab models                         # every model and its recipe\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mnistlab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mnistlab.cli.{name}":
                continue  # a command group not built yet
            raise
        module.register(sub)
    return parser


def _one_line_warnings() -> None:
    """Show warnings as `warning: ...` lines, not Python's two-line file:line format."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mnistlab` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2 if args.command is None else 0
    from mnistlab.errors import MnistlabError

    _one_line_warnings()
    try:
        code = args.handler(args)
        sys.stdout.flush()
        return int(code or 0)
    except MnistlabError as exc:
        if args.debug:
            raise
        print(f"mnistlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM during training (errors.Terminated): 143
        print(f"\nmnistlab: {str(exc) or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except BrokenPipeError:
        # `mnistlab ... | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"mnistlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last guard: one line, not a traceback
        if args.debug:
            raise
        print(
            f"mnistlab: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
