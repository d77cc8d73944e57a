"""A study's storage shared by every `mnistlab tune` process, and the bookkeeping that makes
`--trials N` mean exactly N trials however many processes (and machines) work on it.

How N stays exact: the trials of a study are tickets. Under a lock held in the database itself
(a lock study, created and deleted atomically: any RDB Optuna takes has unique study names),
a process tops the study up to N counted trials with WAITING tickets (Optuna's queue), and
takes one by moving it to RUNNING. A trial counts unless it was lost: a trial whose process died
(seen at once on its own machine, through its pid; elsewhere through Optuna's heartbeat) or was
interrupted is marked FAIL with user attr `lost` and re-queued once with the same parameters; a
trial that failed by its own error (divergence, bad data) counts.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from mnistlab.errors import MnistlabError, UsageError

LOCK_PREFIX = "mnistlab-lock:"
LOCK_STALE_SECONDS = 60  # a lock older than this was left by a process that died holding it
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # a RUNNING trial without a heartbeat for this long is lost


def host() -> str:
    return socket.gethostname()


def storage_url(url: str | None, out: str | Path, study: str) -> str:
    """`--storage URL` as Optuna takes it; default: SQLite in `out/<study>/study.db`.

    A bare `postgresql://` uses psycopg 3 (the driver the `tune` extra installs).
    """
    if not url:
        return f"sqlite:///{(Path(out) / study / 'study.db').resolve()}"
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise UsageError(f"bad --storage {url!r}: expected a database URL such as sqlite:///study.db "
                         "or postgresql://user:password@host:5432/db")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401 - the optional extra
    except ImportError:
        raise UsageError("mnistlab tune needs Optuna: pip install 'mnistlab[tune]' (or pip install optuna)") from None


def open_storage(url: str) -> Any:
    """An Optuna RDBStorage with heartbeats; retried a few times when several processes create its
    tables at the same moment. Raises MnistlabError naming the (password-free) URL when it cannot connect."""
    import optuna
    from sqlalchemy import exc as sa_exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the command prints its own lines
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna's words
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=retry_once,
                )
        except ImportError as exc:
            raise UsageError(f"--storage {shown_url(url)}: its database driver is missing ({exc})") from None
        except sa_exc.ArgumentError as exc:
            raise UsageError(f"bad --storage {shown_url(url)}: {exc}") from None
        except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Several processes creating the tables at once, or a database still starting: try again.
            last = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        time.sleep(0.2 + random.random() * attempt)
    raise MnistlabError(f"cannot open the study storage {shown_url(url)}: {last}")


@contextlib.contextmanager
def study_lock(storage: Any, study: str) -> Iterator[None]:
    """Hold the study's lock (shared by every process on every machine using this storage)."""
    import optuna
    from optuna.study import StudyDirection

    name, first_seen = LOCK_PREFIX + study, time.time()
    while True:
        try:
            lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
            break
        except optuna.exceptions.DuplicatedStudyError:
            if time.time() - first_seen > LOCK_STALE_SECONDS:  # its holder died between taking and freeing it
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(name))
                first_seen = time.time()
            time.sleep(0.05 + random.random() * 0.2)
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


def study_id(storage: Any, study: Any) -> int:
    return int(storage.get_study_id_from_name(study.study_name))


def counts(trial: Any) -> bool:
    """Whether a trial is one of the study's N: every trial but a lost one."""
    from optuna.trial import TrialState

    return trial.state != TrialState.FAIL or "error" in trial.user_attrs


def retry_once(study: Any, trial: Any) -> None:
    """Queue a lost trial again with the same parameters, unless it was itself a retry.

    Also Optuna's heartbeat callback. The retry is a new trial (a new number and run folder);
    `retry_of` names the lost one.
    """
    import optuna

    if "retry_of" in trial.system_attrs:
        return
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={"retry_of": trial.number},
    ))


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or no pid recorded: leave it to the heartbeat
    return True


def mark_lost(storage: Any, study: Any, trial: Any, reason: str) -> bool:
    """FAIL a RUNNING trial as lost (`lost` = reason) and queue its retry; False if it had finished meanwhile."""
    import optuna
    from optuna.trial import TrialState

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id(storage, study), trial.number)
    try:
        storage.set_trial_user_attr(trial_id, "lost", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    retry_once(study, storage.get_trial(trial_id))
    _mark_folder(trial.user_attrs.get("run_folder") if trial.user_attrs.get("host") == host() else None, reason)
    return True


def _mark_folder(folder: str | None, reason: str) -> None:
    """A lost trial's run folder says so (it stays resumable with `mnistlab train --resume`)."""
    import json

    from mnistlab.runs import write_json

    path = Path(folder) / "summary.json" if folder else None
    try:
        summary = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError):
        return
    if summary and summary.get("status") == "running":
        write_json(path, {**summary, "status": "interrupted", "stop_reason": reason})


def fail_lost(storage: Any, study: Any) -> None:
    """Mark lost the RUNNING trials whose process is gone: on this machine by pid, elsewhere by heartbeat.
    Call under the study lock."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host() and not _alive(t.user_attrs.get("pid")):
            mark_lost(storage, study, t, f"lost: the process running trial {t.number} died")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def top_up(study: Any, trials: int) -> int:
    """Queue tickets until the study has `trials` counted trials; returns how many were added. Under the lock."""
    have = sum(counts(t) for t in study.get_trials(deepcopy=False))
    for _ in range(trials - have):
        study.enqueue_trial({})
    return max(0, trials - have)


def take_ticket(storage: Any, study: Any) -> Any:
    """Move one WAITING trial to RUNNING for this process: an optuna Trial, or None when there is none.
    Under the lock (SQLite has no row locks, so two processes could otherwise take the same one)."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id(storage, study), t.number)
        try:
            # Owner and first heartbeat before RUNNING: a RUNNING trial must always be one that a
            # process can be found dead for (Optuna never calls a trial without a heartbeat stale).
            storage.set_trial_user_attr(trial_id, "host", host())
            storage.set_trial_user_attr(trial_id, "pid", os.getpid())
            storage.record_heartbeat(trial_id)
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return optuna.trial.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None
