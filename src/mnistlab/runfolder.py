"""What makes a folder a run folder, and where its checkpoints are.

The part of `mnistlab.runs` that inference needs without the Run class: `mnistlab.predict` finds a
run's checkpoint with it, so that a Run can itself predict (runs -> predict, never back).
"""

from __future__ import annotations

from pathlib import Path

from mnistlab.errors import MnistlabError


def check_run_folder(path: str | Path) -> Path:
    """`path` as a Path, with a clear error when it is not a run folder (none, or no config.yaml)."""
    p = Path(path)
    if not p.is_dir():
        raise MnistlabError(f"run folder {p} does not exist")
    if not (p / "config.yaml").is_file():
        raise MnistlabError(f"{p} is not an mnistlab run folder (no config.yaml)")
    return p


def checkpoint_file(folder: Path, which: str = "best") -> Path:
    """A run folder's checkpoints/<which>.pt (which may not exist)."""
    return folder / "checkpoints" / f"{which}.pt"
