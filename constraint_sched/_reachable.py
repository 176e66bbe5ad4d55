"""What a run can reach: the checks a loaded scheduler state must pass.

Each field of `State` (and of `EpochStats`, the last epoch's record) has
its rule here, keyed by the field's name; the tables are checked against
the classes' fields when this module is imported, so a field cannot be
added to the state without the rule that says which values a run gives it.
A rule reads the configuration and the whole state (fields constrain each
other: a held bound is the discovered one) and returns what is wrong, or
None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from constraint_sched._events import EpochStats
from constraint_sched._phases import Phase
from constraint_sched._state import Reader
from constraint_sched._transitions import Config, State

Rule = Callable[[Config, State], "str | None"]
"""``rule(cfg, st)``: what is wrong with one field of ``st``, or None."""

_D, _H, _S, _C = Phase.DISCOVERY, Phase.HOLD, Phase.SQUEEZE, Phase.CONVERGED


def _word(cfg: Config) -> str:
    return {"upper": "ceiling", "lower": "floor"}.get(cfg.side, "half-width")


def _valid(cfg: Config, value: float) -> bool:
    low, high = cfg.valid_range
    return math.isfinite(value) and low <= value <= high


def _outside(cfg: Config, value: float) -> str:
    low, high = cfg.valid_range
    return (
        f"{value!r} lies outside [{low!r}, {high!r}], the {cfg.side} bounds that leave every "
        f"spec of {cfg.name!r} valid"
    )


def _between(cfg: Config, value: float, tight: float, loose: float) -> bool:
    """Whether ``value`` is no tighter than ``tight`` and no looser than ``loose``."""
    return cfg.at_or_past(value, loose) and cfg.at_or_past(tight, value)


def _epoch(cfg: Config, st: State) -> str | None:
    if st.epoch < 1:
        return f"expected an int >= 1, got {st.epoch}"
    # Discovery reads at most one epoch of data per epoch (the current one is still open).
    if st.epoch < st.data_epochs + (st.phase is _D):
        return f"epoch {st.epoch} is too early for data_epochs = {st.data_epochs} (one per epoch)"
    return None


def _phase(cfg: Config, st: State) -> str | None:
    if cfg.squeeze is None and st.phase is _S:
        return "a scheduler without a squeeze schedule is never in phase SQUEEZE"
    return None


def _bound(cfg: Config, st: State) -> str | None:
    if st.phase is _D:
        if st.bound != cfg.start:
            return (
                f"in phase DISCOVERY the bound is the specs' own {_word(cfg)}, {cfg.start!r}, "
                f"got {st.bound!r}"
            )
        return None
    if not math.isfinite(st.bound):
        return f"a {st.phase.name} bound must be finite, got {st.bound!r}"
    if not _valid(cfg, st.bound):
        return _outside(cfg, st.bound)
    found = st.discovered
    if found is None:
        return None  # `discovered` says what is wrong
    target = cfg.target(found)
    if st.phase is _H and st.settle_to is None and st.bound != found:
        return f"in phase HOLD the bound is the discovered {_word(cfg)} {found!r}, got {st.bound!r}"
    if st.phase is _H and st.settle_to is not None and not cfg.at_or_past(found, st.bound):
        return (
            f"in phase HOLD with settle_to set, the bound is the discovered {_word(cfg)} "
            f"{found!r} or looser, got {st.bound!r}"
        )
    if st.phase is _S and target is not None and not _between(cfg, st.bound, target, found):
        return (
            f"in phase SQUEEZE the bound lies between the target {target!r} and the discovered "
            f"{_word(cfg)} {found!r}, got {st.bound!r}"
        )
    if st.phase is _C:
        final = found if target is None else target
        if st.bound != final:
            what = "the discovered bound" if target is None else "the squeeze's target"
            return f"in phase CONVERGED the bound is {what} {final!r}, got {st.bound!r}"
    return None


def _discovered(cfg: Config, st: State) -> str | None:
    if st.phase is _D:
        if st.discovered is not None:
            return f"in phase DISCOVERY nothing is discovered yet, got {st.discovered!r}"
        return None
    if st.discovered is None:
        return f"in phase {st.phase.name} a bound was discovered, got None"
    if not _valid(cfg, st.discovered):
        return _outside(cfg, st.discovered)
    return None


def _data_epochs(cfg: Config, st: State) -> str | None:
    d = cfg.discovery
    most = max(d.epochs, d.max_epochs or 0)
    if st.phase is _D and not st.data_epochs < most:
        return (
            f"in phase DISCOVERY (at most {most} data epochs) fewer were read, got {st.data_epochs}"
        )
    if st.phase is not _D and st.data_epochs < 1:
        return f"in phase {st.phase.name} at least one data epoch was read, got {st.data_epochs}"
    return None


def _previous_statistic(cfg: Config, st: State) -> str | None:
    value = st.previous_statistic
    if value is not None and not math.isfinite(value):
        return f"a statistic of observations is finite, got {value!r}"
    return None


def _hold_left(cfg: Config, st: State) -> str | None:
    most = cfg.hold.epochs + 1  # a steps discovery holds the rest of its epoch too
    if st.phase is _H and not 1 <= st.hold_left <= most:
        return f"in phase HOLD ({cfg.hold.epochs} epochs) 1 to {most} are left, got {st.hold_left}"
    if st.phase is not _H and st.hold_left != 0:
        return f"only phase HOLD has epochs left, got {st.hold_left} in phase {st.phase.name}"
    return None


def _step(cfg: Config, st: State) -> str | None:
    if st.phase in (_D, _H) and st.step != 0:
        return f"no squeeze step is taken before SQUEEZE, got {st.step} in phase {st.phase.name}"
    if st.step > st.epoch:
        return f"at most one squeeze step per epoch (epoch = {st.epoch}), got {st.step}"
    return None


def _wait(cfg: Config, st: State) -> str | None:
    cooldown = cfg.backoff.cooldown if cfg.backoff is not None else 0
    if st.wait > cooldown:
        return f"at most the backoff's cooldown ({cooldown}) epochs, got {st.wait}"
    if st.wait and st.phase is not _S:
        return f"only phase SQUEEZE waits out a cooldown, got {st.wait} in phase {st.phase.name}"
    return None


def _before_squeeze(cfg: Config, st: State) -> str | None:
    before = st.before_squeeze
    if before is None:
        return None
    if st.phase in (_D, _H):
        return f"no squeeze step is taken before SQUEEZE, got {before!r} in phase {st.phase.name}"
    if not _valid(cfg, before):
        return _outside(cfg, before)
    if st.discovered is not None and not _between(cfg, before, st.bound, st.discovered):
        return (
            f"the bound before a squeeze step lies between the bound {st.bound!r} and "
            f"discovered = {st.discovered!r}, got {before!r}"
        )
    return None


def _fresh_squeeze(cfg: Config, st: State) -> str | None:
    if st.fresh_squeeze and (st.phase is not _S or st.before_squeeze is None):
        return f"only a SQUEEZE after a step (before_squeeze set) is fresh, not {st.phase.name}"
    return None


def _settle_to(cfg: Config, st: State) -> str | None:
    if st.settle_to is None:
        return None
    if st.phase is not _H:
        return f"only phase HOLD settles a bound, got {st.settle_to!r} in phase {st.phase.name}"
    if not _valid(cfg, st.settle_to):
        return _outside(cfg, st.settle_to)
    if st.settle_to != st.discovered:
        return (
            f"a provisional bound settles to discovered = {st.discovered!r}, got {st.settle_to!r}"
        )
    return None


STATE_RULES: Mapping[str, Rule] = {
    "epoch": _epoch,
    "phase": _phase,
    "discovered": _discovered,
    "bound": _bound,
    "data_epochs": _data_epochs,
    "previous_statistic": _previous_statistic,
    "hold_left": _hold_left,
    "step": _step,
    "wait": _wait,
    "before_squeeze": _before_squeeze,
    "fresh_squeeze": _fresh_squeeze,
    "settle_to": _settle_to,
}
"""Every `State` field's rule, in the order they are checked (the fields others read first)."""

StatsRule = Callable[[EpochStats], "str | None"]

EPOCH_STATS_RULES: Mapping[str, StatsRule] = {
    "epoch": lambda e: None if e.epoch >= 1 else f"an epoch is >= 1, got {e.epoch}",
    "phase": lambda e: None,
    "bound": lambda e: None if not math.isnan(e.bound) else "a bound is a number, got nan",
    "steps": lambda e: None if e.steps >= 0 else f"a count is >= 0, got {e.steps}",
    "rejects": lambda e: None if e.rejects >= 0 else f"a count is >= 0, got {e.rejects}",
    "observations": lambda e: (
        None
        if e.observations >= 0 and e.observations + e.nonfinite >= e.steps
        else f"{e.observations} valid and {e.nonfinite} non-finite observations cannot make "
        f"{e.steps} steps"
    ),
    "nonfinite": lambda e: None if e.nonfinite >= 0 else f"a count is >= 0, got {e.nonfinite}",
    "violations": lambda e: (
        None
        if 0 <= e.violations <= e.observations
        else f"violations are valid observations: 0 to {e.observations}, got {e.violations}"
    ),
}
"""Every `EpochStats` field's rule (the last epoch's record)."""


def _same_fields(cls: type, rules: Mapping[str, Any]) -> None:
    fields = [f.name for f in attrs.fields(cls)]
    if sorted(fields) != sorted(rules):
        raise RuntimeError(f"{cls.__name__}: fields {fields} but rules for {list(rules)}")


_same_fields(State, STATE_RULES)
_same_fields(EpochStats, EPOCH_STATS_RULES)


_READERS: Mapping[str, Callable[[Reader, str], Any]] = {
    "int": lambda r, key: r.integer(key),
    "float": lambda r, key: r.number(key),
    "float | None": lambda r, key: r.optional_number(key),
    "bool": lambda r, key: r.flag(key),
    "Phase": lambda r, key: r.member(key, Phase),
}
"""How a field is read back, by its declared type (as `State` and `EpochStats` declare them)."""


def read_fields(cls: type, reader: Reader, *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every field of the attrs class ``cls`` read from ``reader`` by its declared type.

    Args:
        cls: `State` or `EpochStats`.
        reader: The saved mapping.
        optional: Fields that older states lack (their default is used then).

    Returns:
        The keyword arguments that build ``cls``.
    """
    out: dict[str, Any] = {}
    for f in attrs.fields(cls):
        if f.name in optional and f.name not in reader.data:
            continue
        out[f.name] = _READERS[str(f.type)](reader, f.name)
    return out


for _cls in (State, EpochStats):
    for _f in attrs.fields(_cls):
        if str(_f.type) not in _READERS:
            raise RuntimeError(f"{_cls.__name__}.{_f.name}: no reader for type {_f.type}")


def check_reachable(cfg: Config, st: State, path: str) -> None:
    """A ValueError naming the field (under ``path``) if no run reaches ``st``."""
    for name, rule in STATE_RULES.items():
        problem = rule(cfg, st)
        if problem is not None:
            raise ValueError(f"{path}.{name}: {problem}")


def check_epoch_stats(stats: EpochStats, path: str) -> None:
    """A ValueError naming the field (under ``path``) of an impossible epoch record."""
    for name, rule in EPOCH_STATS_RULES.items():
        problem = rule(stats)
        if problem is not None:
            raise ValueError(f"{path}.{name}: {problem}")
