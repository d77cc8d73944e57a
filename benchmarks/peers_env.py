"""The peers' own virtual environment: created on first use from benchmarks/peers-requirements.txt.

The peers (PyTorch Lightning, Keras) are never dependencies of mnistlab, so they live in a
venv of their own: `.venv-peers/` beside the repository's files, or $MNISTLAB_PEERS_VENV.
It is (re)built when missing, half-built, or built from other requirements (a stamp file
holds the requirements' hash and the Python version), under a file lock so that two runs
at once build it once. The peers must train on the torch build mnistlab runs on: `ensure`
refuses to go on when the venv's torch differs from this process's.

MNISTLAB_PEERS_SYSTEM_SITE=1 builds it with --system-site-packages, for a machine whose
system Python already holds the torch to use (benchmarks/gpu.sh sets it, so a GPU image's
CUDA build of torch 2.13.0 satisfies the pin without a download).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from common import REPO

REQUIREMENTS = REPO / "benchmarks" / "peers-requirements.txt"
DEFAULT_VENV = REPO / ".venv-peers"
STAMP = ".peers-requirements.sha256"
PIP_LOG = "pip-install.log"


class PeersEnvError(SystemExit):
    """The peers' venv cannot be made or used: one line for the user, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"run.py: peers: {message}")


def venv_dir() -> Path:
    return Path(os.environ.get("MNISTLAB_PEERS_VENV") or DEFAULT_VENV).absolute()


def _stamp_text() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    return f"{digest} python {platform.python_version()}\n"


def _build(venv: Path, lock_fd: int, log: Callable[[str], None]) -> None:
    """Make the venv afresh and pip-install the requirements into it (pip's output kept in PIP_LOG).

    venv and pip inherit the lock: if this process is killed while they run, the lock stays
    held until they finish, so the next run never deletes a venv that pip is still writing.
    """
    if venv.exists():
        if any(venv.iterdir()) and not (venv / "pyvenv.cfg").is_file():
            raise PeersEnvError(f"{venv} exists and is not a virtual environment; refusing to replace it")
        shutil.rmtree(venv)
    log(f"  peers: creating {venv} from {REQUIREMENTS.relative_to(REPO)} (first use; about a minute)")
    venv_args = ["--system-site-packages"] if os.environ.get("MNISTLAB_PEERS_SYSTEM_SITE") == "1" else []
    made = subprocess.run([sys.executable, "-m", "venv", *venv_args, str(venv)], capture_output=True, text=True,
                          check=False, pass_fds=(lock_fd,))
    if made.returncode != 0:
        raise PeersEnvError(f"python -m venv {venv} failed: {made.stderr.strip().splitlines()[-1:]}")
    with open(venv / PIP_LOG, "w", encoding="utf-8") as out:
        pip = subprocess.run([str(python_of(venv)), "-m", "pip", "install", "-r", str(REQUIREMENTS)],
                             stdout=out, stderr=subprocess.STDOUT, check=False, pass_fds=(lock_fd,))
    if pip.returncode != 0:
        raise PeersEnvError(f"pip could not install {REQUIREMENTS.name} (see {venv / PIP_LOG})")
    log(f"  peers: pip: {installed_torch(venv / PIP_LOG)}")


def installed_torch(pip_log: Path) -> str:
    """The torch that pip's output says it installed ("torch-2.13.0+cpu"), or what it found already there."""
    text = pip_log.read_text(encoding="utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith("Successfully installed"):
            found = [w for w in line.split() if w.startswith("torch-")]
            if found:
                return f"installed {found[0]}"
        if line.startswith("Requirement already satisfied: torch=="):
            return line.strip()
    return "no torch line in pip's output"


def python_of(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure(log: Callable[[str], None] = print) -> tuple[Path, str]:
    """(the peers' python, its torch version), building the venv first where needed."""
    import torch

    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits here, then finds the venv built
        stamp = venv / STAMP
        if not (python_of(venv).is_file() and stamp.is_file() and stamp.read_text() == _stamp_text()):
            _build(venv, lock.fileno(), log)
            stamp.write_text(_stamp_text())  # last: a venv killed half-built has no stamp and is rebuilt
    probe = subprocess.run([str(python_of(venv)), "-c", "import json, torch; print(json.dumps(torch.__version__))"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise PeersEnvError(f"the peers' python cannot import torch (delete {venv} to rebuild it)")
    theirs = json.loads(probe.stdout)
    if theirs != torch.__version__:
        raise PeersEnvError(f"the peers' venv has torch {theirs} but mnistlab runs torch {torch.__version__}: "
                            f"side by side they must train on the same build (delete {venv} to rebuild it)")
    return python_of(venv), theirs
