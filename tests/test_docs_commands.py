"""Every `mnistlab ...` command in README.md, CONTRIBUTING.md and docs/*.md, checked as written.

Commands are taken from shell code blocks and from inline code, in the forms `mnistlab ...`,
`python -m mnistlab ...` and `torchrun ... -m mnistlab ...`. Each one must parse with the real
argument parser, and its names must exist: `--model` a registered model, `--set` and `--grid`
keys options of that model, every setting a valid value (the config is resolved as `train` and
`sweep` resolve it). Usage lines such as `mnistlab export RUN --format onnx|torchscript [--out FILE]`
are checked for each alternative. The quick ones (listing models, a layer table, the default
`train` and the `evaluate` of its run) also run, on made data. The flag lists of the docs name only
flags that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnistlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
# From a "Defects found and fixed" heading to the next heading.
_DEFECTS = re.compile(r"^## Defects found and fixed\n.*?(?=^## |\Z)", re.S | re.M)
# Commands that cannot run without arguments: named alone in prose, they are names.
_NEED_ARGUMENTS = {"summary", "serve", "predict", "export", "evaluate", "compare", "sweep", "tune"}
# A placeholder the reader fills in (`RUN`, `FILE.csv`, `runs/<name>/...`): not a real path.
_PLACEHOLDER = re.compile(r"<[^>]+>|\b[A-Z][A-Z_]+\b")

# Flags that the docs already name and the engine developer is adding (hardening issue, pending):
# (command, flag) -> why. Each is an expected failure until the flag exists, then the xfail turns
# strict-pass and must be removed from here.
PENDING_FLAGS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class DocCommand:
    """One command of a doc: where it is, its text and the mnistlab argv."""

    where: str
    text: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _mnistlab_argv(tokens: list[str]) -> list[str] | None:
    """The argv after `mnistlab`, `python -m mnistlab` or `torchrun ... -m mnistlab`; None otherwise."""
    if tokens[:1] == ["mnistlab"]:
        return tokens[1:]
    if len(tokens) >= 3 and re.fullmatch(r"(.*/)?python3?", tokens[0]) and tokens[1:3] == ["-m", "mnistlab"]:
        return tokens[3:]
    if tokens[:1] == ["torchrun"]:
        for i in range(1, len(tokens) - 1):
            if tokens[i:i + 2] == ["-m", "mnistlab"]:
                return tokens[i + 2:]
    return None


def _commands_in(line: str) -> list[list[str]]:
    """The mnistlab argvs of one shell line (`$ ` prompts, `# comments`, `&&`/`;`/`|` chains)."""
    line = re.sub(r"^\$\s+", "", line.strip())
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    found = []
    for is_op, group in itertools.groupby(tokens, key=lambda t: t in ("&&", "||", ";", "|")):
        argv = None if is_op else _mnistlab_argv(list(group))
        if argv is not None:
            found.append(argv)
    return found


def doc_commands() -> list[DocCommand]:
    """Every mnistlab command in the docs, in order: shell blocks first, then inline code, per file."""
    commands: list[DocCommand] = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(ROOT).as_posix()
        for block in _FENCE.finditer(text):
            if block.group(1).lower() not in SHELL_BLOCKS:
                continue
            first = text.count("\n", 0, block.start(2)) + 1
            # Continuation lines join their command; the line number is the command's first.
            joined, start = "", None
            for offset, raw in enumerate(block.group(2).splitlines()):
                start = first + offset if start is None else start
                if raw.rstrip().endswith("\\"):
                    joined += raw.rstrip()[:-1] + " "
                    continue
                for argv in _commands_in(joined + raw):
                    commands.append(DocCommand(f"{name}:{start}", (joined + raw).strip(), tuple(argv)))
                joined, start = "", None
        prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        # The defects table quotes the commands that failed before their fix: those are not to be run.
        prose = _DEFECTS.sub(lambda m: "\n" * m.group(0).count("\n"), prose)
        for match in _INLINE.finditer(prose):
            line = prose.count("\n", 0, match.start()) + 1
            for argv in _commands_in(match.group(1)):
                if len(argv) == 1 and argv[0] in _NEED_ARGUMENTS:
                    continue  # `mnistlab summary` in a sentence names the command; it is no command line
                commands.append(DocCommand(f"{name}:{line}", match.group(1), tuple(argv)))
    return commands


def _expand_usage(argv: tuple[str, ...]) -> list[list[str]]:
    """A usage line as the commands it stands for: `[--out FILE]` kept, `a|b` as each alternative, `X...` as X."""
    words = [w.strip("[]") for w in argv]
    words = [w[:-3] if w.endswith("...") else w for w in words if w.strip("[]")]
    choices = [w.split("|") if "|" in w and not w.startswith("|") else [w] for w in words]
    return [list(c) for c in itertools.product(*choices)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its sub-commands here and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_parser(path: list[str]) -> argparse.ArgumentParser:
    """The parser of `mnistlab <path...>`, e.g. ["text", "train"]."""
    parser = build_parser()
    for word in path:
        parser = _subparsers(parser)[word]
    return parser


def _is_command_name(argv: list[str]) -> bool:
    """`mnistlab evaluate` in prose names a command: every word a sub-command, no arguments."""
    parser = build_parser()
    for word in argv:
        subs = _subparsers(parser)
        if word not in subs:
            return False
        parser = subs[word]
    return True


def _parse(argv: list[str], usage: bool = False) -> argparse.Namespace | None:
    """Parse as `mnistlab` would; None for `--help`/`--version` (exit 0). A parse error fails the test,
    except, in a usage line, a typed value's placeholder (`[--top-k K]`) once the rest parsed."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:
            return None
        message = err.getvalue().strip()
        if usage and re.search(r"invalid \w+ value: '[A-Z][A-Z_]*'", message):
            return None
        pytest.fail(f"does not parse: {message}")


def _check_names(args: argparse.Namespace, workdir: Path) -> None:
    """The names a parsed command uses exist: models, their options, every setting's value."""
    from mnistlab.config import resolve_config
    from mnistlab.models import get_model_info, resolve_options
    from mnistlab.models.registry import parse_set_flags

    from mnistlab.models.usercode import is_file_model, load_user_model, resolve_user_options

    command = getattr(args, "command", None)
    if command == "summary" and is_file_model(args.model):
        with contextlib.chdir(workdir):  # a model file a code block of the docs defines
            resolve_user_options(load_user_model(args.model), parse_set_flags(args.set))
    elif command == "summary":
        get_model_info(args.model)
        resolve_options(args.model, parse_set_flags(args.set))
    if command not in ("train", "sweep") or getattr(args, "resume", None):
        return  # a resumed run's settings are its own; other commands take only paths
    config = getattr(args, "config", None)
    if config and not (workdir / config).is_file():
        if _PLACEHOLDER.search(config):
            args.config = None  # `--config runs/<name>/config.yaml`: check the other flags
        else:
            pytest.fail(f"--config {config}: no such file, and no code block of the docs defines it")
    from mnistlab.cli.common import config_from_args
    from mnistlab.sweep import base_config_from_args, parse_grid, plan_sweep

    with contextlib.chdir(workdir):
        if command == "sweep":
            plan_sweep(base_config_from_args(args), parse_grid(args.grid))
        else:
            resolve_config(config_from_args(args), load_code=True)


def doc_files(tmp: Path) -> Path:
    """The files the docs define in code blocks (a yaml or python block starting `# NAME.yaml` /
    `# NAME.py`), written to tmp."""
    for doc in DOCS:
        if doc.is_file():
            for block in _FENCE.finditer(doc.read_text(encoding="utf-8")):
                m = re.match(r"#\s*([\w.-]+\.(?:ya?ml|py))\b", block.group(2))
                if block.group(1) in ("yaml", "yml", "python") and m:
                    (tmp / m.group(1)).write_text(block.group(2), encoding="utf-8")
    return tmp


COMMANDS = doc_commands()


def test_the_docs_hold_the_commands_this_test_checks() -> None:
    # The extraction itself: the forms it must find (a broken regex would check nothing).
    texts = {c.text for c in COMMANDS}
    assert len(COMMANDS) > 60
    assert "mnistlab train --config dnn.yaml --epochs 30" in texts
    assert any(c.argv[:1] == ("train",) and "torchrun" in c.text for c in COMMANDS)
    assert any(c.argv[:1] == ("sweep",) and "\\" not in c.text and "--epochs 10" in c.text for c in COMMANDS)
    assert any(c.argv == ("text",) for c in COMMANDS)  # inline code naming a command
    assert any(c.text.startswith("mnistlab export RUN --format onnx|torchscript") for c in COMMANDS)


def check_command(cmd: DocCommand, workdir: Path) -> None:
    """Fail the test (pytest.fail) unless `cmd` parses and every name it uses exists."""
    if _is_command_name(list(cmd.argv)):
        return
    for variant in _expand_usage(cmd.argv):
        args = _parse(variant, usage="[" in cmd.text)
        if args is not None:
            try:
                _check_names(args, workdir)
            except Exception as exc:  # noqa: BLE001 - the doc's command is what failed: say which and why
                pytest.fail(f"{' '.join(variant)}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_doc_command_parses_and_names_what_exists(cmd: DocCommand, tmp_path: Path) -> None:
    check_command(cmd, doc_files(tmp_path))


@pytest.mark.parametrize("text", [
    "mnistlab sweep --model cnn --grid lr=0.01,0.003",          # unknown model (docs/distributed.md had it)
    "mnistlab train --model dnn --set hiden_dims=784,10",        # unknown model option
    "mnistlab sweep --model dnn --grid batchnrom=true,false",    # unknown grid key
    "mnistlab train --optimizer adamm",                          # unknown choice
    "mnistlab summary dnn --set nope=1",
    "mnistlab text train --model transformer",
    "mnistlab train --resume",                                   # a flag without its value
    "mnistlab sweep --workers N",                                # a placeholder outside a usage line
    "mnistlab train --config missing.yaml",                      # a file no code block defines
    "python -m mnistlab evaluate --json",                        # RUN missing
    "torchrun --nproc_per_node=2 -m mnistlab train --model nope",
])
def test_the_check_fails_bad_commands(text: str, tmp_path: Path) -> None:
    [argv] = _commands_in(text)
    with pytest.raises(pytest.fail.Exception):
        check_command(DocCommand("example", text, tuple(argv)), tmp_path)


# Quick commands, run as written (in doc order) in one folder, on the made MNIST.
def _is_quick(argv: tuple[str, ...]) -> bool:
    return (argv[:1] in (("models",), ("summary",), ("--help",)) or argv == ("train",)
            or argv[:2] in (("evaluate", "runs/fast"), ("compare", "runs/*")))


def test_quick_doc_commands_run(tmp_path: Path, fake_mnist_root: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(fake_mnist_root))
    monkeypatch.chdir(doc_files(tmp_path))
    quick = list(dict.fromkeys(c.argv for c in COMMANDS if _is_quick(c.argv)))
    assert ("train",) in quick and ("evaluate", "runs/fast", "--json") in quick and len(quick) >= 6
    quick.sort(key=lambda argv: argv[0] != "train")  # the run that `evaluate runs/fast` reads comes first
    for argv in quick:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # --help exits from inside the parser
            code = exc.code
        out, err = capsys.readouterr()
        assert code == 0, f"mnistlab {' '.join(argv)} exited {code}: {err.strip()[-500:]}"
        assert out.strip(), f"mnistlab {' '.join(argv)} printed nothing"


# The docs' lists of a command's flags: (doc, the line that starts the list, what ends it, command).
FLAG_LISTS = [
    ("README.md", "Main flags:", "\n\n", "train"),
    ("docs/text.md", "## Flags", "\n## ", "text train"),
]


def _listed_flags() -> list[object]:
    params = []
    for doc, start, end, command in FLAG_LISTS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        section = text[text.index(start):]
        section = section[:section.find(end, len(start)) if end in section[len(start):] else None]
        flags = dict.fromkeys(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", section))
        assert len(flags) >= 10, (doc, start)  # the list was found
        for flag in flags:
            reason = PENDING_FLAGS.get((command, flag))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(doc, command, flag, marks=marks, id=f"{doc}:{command} {flag}"))
    return params


@pytest.mark.parametrize(("doc", "command", "flag"), _listed_flags())
def test_flags_listed_in_the_docs_exist(doc: str, command: str, flag: str) -> None:
    parser = command_parser(command.split())
    known = {s for action in parser._actions for s in action.option_strings}
    assert flag in known, f"{doc} lists {flag} for `mnistlab {command}`, which has no such flag"
