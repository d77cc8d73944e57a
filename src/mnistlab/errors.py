"""Errors a user can cause. The CLI turns them into one line on stderr and an exit code."""

from __future__ import annotations


class MnistlabError(Exception):
    """An error with a message meant for the user (exit code 1, no traceback).

    The message should say what went wrong, name the file or value involved,
    and say how to fix it.
    """

    exit_code = 1


class UsageError(MnistlabError):
    """A bad flag, option or value on the command line or in a config file (exit code 2)."""

    exit_code = 2


class DataError(MnistlabError):
    """Missing, corrupt or unreadable data (IDX, image folders, CSV, downloads)."""


class CheckpointError(MnistlabError):
    """A checkpoint that cannot be loaded safely or does not match the model."""


class TrainingDiverged(MnistlabError):
    """The loss became NaN or infinite; the run is stopped and marked failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during training (`timeout`, a sweep stopping its runs, a scheduler): handled like Ctrl-C,
    so the run keeps its checkpoint and says how to resume; the CLI exits 143 (128 + SIGTERM)."""

    exit_code = 143
