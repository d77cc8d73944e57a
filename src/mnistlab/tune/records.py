"""What a study leaves in its folder and prints: trials.csv, best.json, the trials table and the plot.

Both files are rebuilt from the storage (all trials, from every process and machine) after each
trial, and written atomically, so several processes may rewrite them in turn.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Sequence

BASE_COLUMNS = ["trial", "state", "value"]
END_COLUMNS = ["stop_reason", "epochs", "seconds", "host", "run_folder"]


def param_names(study: Any) -> list[str]:
    """The parameters of the study's trials, in the order they were first suggested."""
    names: dict[str, None] = {}
    for t in study.get_trials(deepcopy=False):
        names.update(dict.fromkeys(t.params))
    return list(names)


def stop_reason(trial: Any) -> str:
    """Why a trial ended (or what it is doing), in one phrase."""
    attrs = trial.user_attrs
    if trial.state.name == "FAIL":
        return str(attrs.get("lost") or attrs.get("error") or "lost: no heartbeat from its process")
    if trial.state.name == "WAITING":
        retry = trial.system_attrs.get("retry_of")
        return f"queued (retry of trial {retry})" if retry is not None else "queued"
    return str(attrs.get("stop_reason") or ("running" if trial.state.name == "RUNNING" else ""))


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial, by number: trial, state, value, each parameter, stop_reason, epochs, seconds, host,
    run_folder."""
    names = param_names(study)
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     **{n: t.params.get(n) for n in names}, "stop_reason": stop_reason(t),
                     "epochs": a.get("epochs"), "seconds": a.get("seconds"), "host": a.get("host"),
                     "run_folder": a.get("run_folder")})
    return rows


def best_trial(study: Any) -> Any:
    """The best COMPLETE trial, or None before there is one."""
    try:
        return study.best_trial
    except ValueError:
        return None


def best_record(study: Any, metric: str) -> dict[str, Any] | None:
    """best.json: trial, value, params, run_folder (and host, metric, direction, study, the state counts)."""
    best = best_trial(study)
    if best is None:
        return None
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return {"study": study.study_name, "metric": metric, "direction": study.direction.name.lower(),
            "trial": best.number, "value": best.value, "params": dict(best.params),
            "run_folder": best.user_attrs.get("run_folder"), "host": best.user_attrs.get("host"), "trials": states}


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else [*BASE_COLUMNS, *END_COLUMNS]


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_table(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned text table (the run folder column last, unpadded)."""
    cols = columns(rows)
    cells = [cols] + [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells) + "\n"


def write_records(study: Any, folder: Path, metric: str) -> dict[str, Any] | None:
    """Rewrite folder/trials.csv and folder/best.json (once a trial completed); returns the best record."""
    from mnistlab.runs import _atomic_text, write_json

    folder.mkdir(parents=True, exist_ok=True)
    _atomic_text(folder / "trials.csv", to_csv(trial_rows(study)))
    best = best_record(study, metric)
    if best is not None:
        write_json(folder / "best.json", best)
    return best


def best_line(best: dict[str, Any] | None) -> str:
    """`best trial 7: valid_loss 0.0712 (lr=0.0031, batch_size=64)` and the run folder on a second line."""
    if best is None:
        return "no trial has completed yet"
    params = ", ".join(f"{k}={_cell(v)}" for k, v in best["params"].items())
    where = best.get("run_folder") or "?"
    if best.get("host"):
        where += f" (on {best['host']})"
    return f"best trial {best['trial']}: {best['metric']} {best['value']:.6g} ({params})\nrun folder: {where}"


def plot_study(study: Any, path: str | Path) -> Path:
    """FILE.png: Optuna's optimisation history and parameter importances side by side (matplotlib backend)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import optuna.visualization.matplotlib as ovm
    from PIL import Image

    out = Path(path)
    images = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's plots are "experimental"
        for draw in (ovm.plot_optimization_history, ovm.plot_param_importances):
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances need two completed trials
                print(f"warning: {draw.__name__}: {exc}", file=sys.stderr)
                continue
            fig = ax.figure
            fig.set_size_inches(7, 5)
            fig.tight_layout()
            fig.canvas.draw()
            images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB"))
            plt.close(fig)
    if not images:
        from mnistlab.errors import MnistlabError

        raise MnistlabError(f"nothing to plot in study {study.study_name} yet (no completed trial)")
    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
