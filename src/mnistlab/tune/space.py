"""The search space of `mnistlab tune`: `--param NAME=KIND:ARGS` specs, checked before any trial runs.

    lr=log:1e-4:1e-1              a float on a log scale
    set.dropout_ratio=float:0:0.5 a float (optionally float:LOW:HIGH:STEP)
    batch_size=int:32:256:log     a whole number (int:LOW:HIGH, int:LOW:HIGH:STEP or int:LOW:HIGH:log)
    optimizer=cat:adam,sgd,adamw  one of the values (`;` separates values that hold commas)

NAME is a TrainConfig field (`lr`, `batch_size`, ...) or `set.NAME` for a model option. A trial's
config is built exactly as a sweep's grid point is (mnistlab.sweep.plan_sweep), so a value means
the same in `--param` as in `--grid`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from mnistlab.errors import UsageError

KINDS = ("log", "float", "int", "cat")
# Settings that say where and how a trial runs, not what it trains: the study owns them, or they
# are the same for every trial by nature (hardware, output).
NOT_TUNABLE = {
    "out", "name", "resume", "progress", "model_options", "threads", "device", "data_dir", "plots",
    "tensorboard", "mlflow", "mlflow_checkpoints",
}
# Interactions between ranges are checked on every combination of their ends up to this many.
MAX_CHECKED_COMBINATIONS = 256
_FORMS = "log:LOW:HIGH, float:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP|log] or cat:A,B,..."


@dataclass(frozen=True)
class ParamSpec:
    """One `--param`: its Optuna name (`lr`, `set.dropout_ratio`), the setting it sets and its distribution."""

    text: str
    name: str
    key: str  # the TrainConfig field or model option
    kind: str
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.kind == "cat":
            return trial.suggest_categorical(self.name, list(self.choices))
        high = self.ends()[-1]  # a HIGH the steps do not reach exactly: Optuna would warn on every trial
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, float(high), step=self.step, log=self.log)

    def ends(self) -> list[Any]:
        """The values at the edges of the range (every value of a `cat`): what validation tries."""
        if self.kind == "cat":
            return list(self.choices)
        high = self.high
        if self.step:  # the largest value the steps reach
            high = self.low + self.step * math.floor((self.high - self.low) / self.step + 1e-9)
        if self.kind == "int":
            return list(dict.fromkeys([int(self.low), int(high)]))
        return list(dict.fromkeys([self.low, high]))

    def probes(self) -> list[Any]:
        """What validation tries: the ends, and for a float range a value inside it (a float range on a
        whole-number setting is refused although its ends may be whole)."""
        ends = self.ends()
        if self.kind == "float" and not self.step and self.high > self.low:
            return [*ends, self.low + (self.high - self.low) * 0.381966]
        return ends

    def canonical(self) -> str:
        """What makes two specs the same search dimension (a study refuses a rerun that changes it)."""
        return json.dumps([self.name, self.kind, self.low, self.high, self.step, self.log, list(self.choices)])


def value_text(value: Any) -> str:
    """A value as a config string that YAML reads back as the same number (1e-05 -> 1.0e-05)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return str(value)


def _number(text: str, spec: str, whole: bool) -> float:
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise UsageError(f"bad --param {spec!r}: {text.strip()!r} is not {kind}") from None
    if not math.isfinite(value):
        raise UsageError(f"bad --param {spec!r}: {text.strip()!r} is not a finite number")
    return value


def _target(name: str, spec: str) -> tuple[str, str]:
    """(Optuna name, setting) of a --param NAME: a TrainConfig field, or set.OPTION for a model option."""
    from mnistlab.config import check_keys, field_names

    if name.startswith("set."):
        option = name[4:].strip().replace("-", "_")
        if not option:
            raise UsageError(f"bad --param {spec!r}: set. needs a model option name, e.g. set.dropout_ratio")
        if option in field_names():
            raise UsageError(f"bad --param {spec!r}: {option} is a train setting, not a model option; "
                             f"write --param {option}=...")
        return f"set.{option}", option
    key = name.replace("-", "_")
    try:
        check_keys({key: None}, "--param")
    except UsageError as exc:
        reason = str(exc).replace(" in --param.", ".")
        raise UsageError(f"bad --param {spec!r}: {reason} (model options are given as set.NAME)") from None
    if key in NOT_TUNABLE:
        raise UsageError(f"bad --param {spec!r}: {key} is not a search setting (give it as a fixed flag)")
    return key, key


def parse_param(spec: str) -> ParamSpec:
    """`lr=log:1e-4:1e-1` -> ParamSpec. Raises UsageError naming the spec for anything malformed."""
    name, sep, rest = spec.partition("=")
    kind, _, args = rest.partition(":")
    kind = kind.strip().lower()
    if not sep or not name.strip() or not args.strip():
        raise UsageError(f"--param expects NAME=KIND:ARGS, e.g. lr=log:1e-4:1e-1; got {spec!r} (KIND: {_FORMS})")
    if kind not in KINDS:
        raise UsageError(f"bad --param {spec!r}: unknown kind {kind!r}; use {_FORMS}")
    opt_name, key = _target(name.strip(), spec)
    if kind == "cat":
        choices = [v.strip() for v in args.split(";" if ";" in args else ",")]
        if any(not v for v in choices) or len(set(choices)) != len(choices):
            raise UsageError(f"bad --param {spec!r}: the values must be non-empty and different")
        return ParamSpec(spec, opt_name, key, kind, choices=tuple(choices))
    parts = [p.strip() for p in args.split(":")]
    extra = parts[2:]
    if len(parts) < 2 or len(extra) > (0 if kind == "log" else 1):
        raise UsageError(f"bad --param {spec!r}: expected {kind}:LOW:HIGH{'' if kind == 'log' else '[:STEP]'}"
                         + ("[|log]" if kind == "int" else ""))
    whole = kind == "int"
    low, high = _number(parts[0], spec, whole), _number(parts[1], spec, whole)
    log = kind == "log" or extra == ["log"]
    step = None if log or not extra else _number(extra[0], spec, whole)
    if low > high:
        raise UsageError(f"bad --param {spec!r}: LOW {parts[0]} is above HIGH {parts[1]}")
    if log and low <= 0:
        raise UsageError(f"bad --param {spec!r}: a log range must be above 0 (LOW {parts[0]} touches 0)")
    if step is not None and step <= 0:
        raise UsageError(f"bad --param {spec!r}: STEP must be above 0")
    return ParamSpec(spec, opt_name, key, "float" if kind == "log" else kind, low, high, step, log)


def trial_config(base: dict[str, Any], specs: Sequence[ParamSpec], values: dict[str, Any]) -> dict[str, Any]:
    """The config of one trial: `base` with each spec's value (by its Optuna name), built and validated
    as a sweep builds a grid point. Raises UsageError (with the setting's own message) for a bad value."""
    from mnistlab.sweep import plan_sweep

    grid = [(s.key, [value_text(values[s.name])]) for s in specs]
    try:
        return plan_sweep(base, grid)[0].config
    except UsageError as exc:
        reason = str(exc)
        reason = reason.split(": ", 1)[1] if reason.startswith("grid point ") and ": " in reason else reason
        reason = reason.replace(" in --grid ", " in --param ")  # the sweep's words for the same check
        raise UsageError(reason) from None


def check_space(base: dict[str, Any], specs: Sequence[ParamSpec]) -> None:
    """Refuse, before any trial, a search space with a value the settings reject.

    Each range's ends (every value of a `cat`, and a value inside a float range) are tried alone, then, when there are few enough, all
    combinations of them, so that values that only clash together (e.g. a model option another
    `--param model=` lacks) are caught as well.
    """
    names = [s.name for s in specs]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            raise UsageError(f"--param {name} is given twice; give each parameter once")
    for s in specs:
        for value in s.probes():
            try:
                trial_config(base, [s], {s.name: value})
            except UsageError as exc:
                raise UsageError(f"bad --param {s.text!r}: {s.name}={value_text(value)}: {exc}") from None
    ends = [s.ends() for s in specs]
    if math.prod(len(e) for e in ends) > MAX_CHECKED_COMBINATIONS:
        return
    for combo in itertools.product(*ends):
        values = dict(zip(names, combo))
        try:
            trial_config(base, specs, values)
        except UsageError as exc:
            shown = ", ".join(f"{k}={value_text(v)}" for k, v in values.items())
            raise UsageError(f"the --param values {shown} do not go together: {exc}") from None
