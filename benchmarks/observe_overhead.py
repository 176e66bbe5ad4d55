"""Per-observation cost and memory of ConstraintScheduler.observe() against a list of values.

The baseline is how the original training script recorded a metric: for each
value, ``np.isnan(v)`` / ``np.isinf(v)`` checks, every valid value appended to
a Python list, and ``max(list)`` (or ``np.median(list)``) at the end of the
epoch. The scheduler does the same job in O(1) memory: ``observe()`` per
value, ``advance_epoch()`` at the end of the epoch. Both sides see the same
Python floats, a small share of them NaN or infinite, and each timing includes
the epoch-end step.

Usage:
    python benchmarks/observe_overhead.py [--n N] [--repeats R] [--quick] [--json PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/observe_overhead.py``
from the repository root, or with the package installed. ``--quick`` runs in a
couple of seconds with smaller sizes (a smoke test, not a measurement).

Times are wall-clock ``time.perf_counter_ns`` over the whole loop, with the
garbage collector off as ``timeit`` does, baseline and ours taking turns in
each repeat; the table shows the best of the repeats and, in brackets, their
median. The ratio is baseline / ours from the best times (from the medians in
brackets): above 1 means the scheduler is faster. Memory is the peak that
``tracemalloc`` sees from a clean start, each side measured on its own, with
values made one at a time (as ``tensor.item()`` would) so that the list keeps
what a training loop would keep. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import _machine
import numpy as np

from constraint_sched import ConstraintScheduler, ConstraintSpec, DiscoveryPhase

SPEED_GOAL = 4.0
"""How many times faster than the baseline observe() should be (informational)."""

NONFINITE_SHARE = 0.001
"""The share of observations that are NaN or infinite."""

NAMES = ("kl_core", "kl_detail")

Run = Callable[[], Any]
"""One timed epoch: observe every value, then end the epoch."""


# -- the observations ---------------------------------------------------------


def make_values(n: int, seed: int) -> np.ndarray:
    """KL-like positive values with a share of NaN, +inf and -inf at random places.

    Args:
        n: How many values.
        seed: The random seed.

    Returns:
        A float64 array of ``n`` values.
    """
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=math.log(20000.0), sigma=0.4, size=n)
    bad = rng.choice(n, size=max(1, round(n * NONFINITE_SHARE)), replace=False)
    values[bad] = rng.choice([math.nan, math.inf, -math.inf], size=bad.size)
    return values


def make_spec(name: str) -> ConstraintSpec:
    """The seed's KL goal: a box with floor 100, healthy 3000, and no real ceiling yet."""
    return ConstraintSpec(name, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)


def make_scheduler(names: Sequence[str], statistic: str) -> ConstraintScheduler:
    """A scheduler in discovery whose first `advance_epoch` finds the bound."""
    return ConstraintScheduler(
        [make_spec(n) for n in names], discovery=DiscoveryPhase(statistic=statistic)
    )


# -- the timed epochs: baseline and ours, each built fresh per repeat -----------


def baseline_one(values: list[float], reduce: Callable[[list[float]], float]) -> Run:
    """The original's bookkeeping for one metric: check, append, reduce at epoch end."""
    history: list[float] = []

    def run() -> float:
        for v in values:
            if np.isnan(v) or np.isinf(v):
                continue
            history.append(v)
        return reduce(history)

    return run


def ours_one(values: list[float], statistic: str) -> Run:
    """The scheduler with one spec: observe(value), advance_epoch() at epoch end."""
    sched = make_scheduler(NAMES[:1], statistic)

    def run() -> float:
        for v in values:
            sched.observe(v)
        sched.advance_epoch()
        return sched.bound

    return run


def baseline_two(pairs: list[tuple[float, float]]) -> Run:
    """The original's bookkeeping for two metrics sharing one ceiling: two lists."""
    core: list[float] = []
    detail: list[float] = []

    def run() -> float:
        for a, b in pairs:
            if not (np.isnan(a) or np.isinf(a)):
                core.append(a)
            if not (np.isnan(b) or np.isinf(b)):
                detail.append(b)
        return max(max(core), max(detail))

    return run


def ours_two(pairs: list[tuple[float, float]]) -> Run:
    """The scheduler with two shared specs: observe({name: value, ...}) per step."""
    sched = make_scheduler(NAMES, "max")

    def run() -> float:
        for a, b in pairs:
            sched.observe({"kl_core": a, "kl_detail": b})
        sched.advance_epoch()
        return sched.bound

    return run


def list_max(history: list[float]) -> float:
    """The original's epoch-end step for a ceiling."""
    return max(history)


def list_median(history: list[float]) -> float:
    """The list-based epoch-end step for a median."""
    return float(np.median(history))


def time_once(run: Run) -> int:
    """Nanoseconds that one call of ``run`` takes, with the garbage collector off."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        return time.perf_counter_ns() - start
    finally:
        if enabled:
            gc.enable()


def time_epochs(makers: Sequence[Callable[[], Run]], n: int, repeats: int) -> list[list[float]]:
    """Time ``repeats`` fresh epochs of each maker, interleaved, in ns per observation.

    The sides take turns within each repeat, so that a slow spell of a busy
    machine falls on all of them rather than on one.

    Args:
        makers: Each builds a fresh epoch (untimed); the epoch itself is timed.
        n: The observations (observe() calls) in one epoch.
        repeats: How many epochs to time per maker.

    Returns:
        For each maker, nanoseconds per observation, one per repeat.
    """
    for make in makers:
        make()()  # warm-up: first calls, caches, allocator
    times: list[list[float]] = [[] for _ in makers]
    for _ in range(repeats):
        for make, row in zip(makers, times, strict=True):
            row.append(time_once(make()) / n)
    return times


def summarise(times: list[float]) -> dict[str, float]:
    """Best and median of the per-repeat times."""
    return {"best_ns": min(times), "median_ns": statistics.median(times)}


def time_cases(n: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    """Time the three cases, baseline and ours, on the same values.

    Args:
        n: Observations (steps) per epoch.
        repeats: Epochs timed per side.
        seed: The random seed for the values.

    Returns:
        One record per case with the per-side figures and the ratio.
    """
    values = make_values(n, seed).tolist()
    second = make_values(n, seed + 1).tolist()
    pairs = list(zip(values, second, strict=True))
    cases: list[tuple[str, str, Callable[[], Run], Callable[[], Run]]] = [
        (
            "one spec, max",
            "observe(v) vs isnan/isinf + list.append, max(list)",
            lambda: baseline_one(values, list_max),
            lambda: ours_one(values, "max"),
        ),
        (
            "two shared specs, max",
            "observe({a: v, b: w}) per step vs two lists, max of both",
            lambda: baseline_two(pairs),
            lambda: ours_two(pairs),
        ),
        (
            "one spec, median",
            "DiscoveryPhase(statistic='median') vs list + np.median",
            lambda: baseline_one(values, list_median),
            lambda: ours_one(values, "median"),
        ),
    ]
    records = []
    for name, what, make_baseline, make_ours in cases:
        base_times, ours_times = time_epochs([make_baseline, make_ours], n, repeats)
        base, ours = summarise(base_times), summarise(ours_times)
        records.append(
            {
                "case": name,
                "what": what,
                "observations": n,
                "baseline": base,
                "ours": ours,
                "ratio_best": base["best_ns"] / ours["best_ns"],
                "ratio_median": base["median_ns"] / ours["median_ns"],
            }
        )
    return records


def loop_floor_ns(values: list[float], repeats: int) -> float:
    """The cost of the bare ``for v in values`` loop both sides pay, per value."""

    def make() -> Run:
        def run() -> None:
            for _ in values:
                pass

        return run

    return min(time_epochs([make], len(values), repeats)[0])


# -- memory -----------------------------------------------------------------------


def peak_baseline(source: np.ndarray, reduce: Callable[[list[float]], float]) -> tuple[int, int]:
    """Peak and retained bytes of the list-based bookkeeping over ``source``."""
    history: list[float] = []
    for i in range(source.size):
        v = source.item(i)  # a fresh Python float per step, as tensor.item() gives
        if np.isnan(v) or np.isinf(v):
            continue
        history.append(v)
    reduce(history)
    current, peak = tracemalloc.get_traced_memory()
    return peak, current


def peak_ours(source: np.ndarray, statistic: str) -> tuple[int, int]:
    """Peak and retained bytes of a scheduler observing ``source``, then ending the epoch."""
    sched = make_scheduler(NAMES[:1], statistic)
    for i in range(source.size):
        sched.observe(source.item(i))
    sched.advance_epoch()
    current, peak = tracemalloc.get_traced_memory()
    return peak, current


def traced(measure: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """Run ``measure`` under tracemalloc from a clean start; its (peak, retained) bytes."""
    gc.collect()
    tracemalloc.start()
    try:
        return measure()
    finally:
        tracemalloc.stop()


def memory_cases(sizes: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Peak memory of both sides, for max and median, at each size.

    Args:
        sizes: Numbers of observations.
        seed: The random seed for the values.

    Returns:
        One record per statistic and size.
    """
    records = []
    for statistic, reduce in (("max", list_max), ("median", list_median)):
        for n in sizes:
            source = make_values(n, seed)
            base_peak, base_kept = traced(lambda s=source, r=reduce: peak_baseline(s, r))
            ours_peak, ours_kept = traced(lambda s=source, st=statistic: peak_ours(s, st))
            records.append(
                {
                    "case": f"one spec, {statistic}",
                    "observations": n,
                    "baseline_peak_bytes": base_peak,
                    "baseline_retained_bytes": base_kept,
                    "ours_peak_bytes": ours_peak,
                    "ours_retained_bytes": ours_kept,
                }
            )
    return records


# -- reporting ----------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """Bytes as B, KiB or MiB, whichever reads best."""
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.2f} MiB"


def print_header(info: dict[str, Any], n: int, repeats: int, quick: bool) -> None:
    """Where and how the figures were taken."""
    print("ConstraintScheduler.observe() overhead")
    print(
        f"  {info['implementation']} {info['python']}, numpy {info['numpy']}, "
        f"constraint_sched {info['constraint_sched']}"
    )
    _machine.print_machine(info)
    mode = " (--quick: a smoke test, not a measurement)" if quick else ""
    print(
        f"  {n} observations per epoch, {NONFINITE_SHARE:.1%} NaN/inf, {repeats} repeats, "
        f"gc off while timing{mode}"
    )
    print()


def print_times(records: list[dict[str, Any]], repeats: int, floor: float) -> None:
    """The timing table: ns per observation and the ratio."""
    print(f"Time per observation, ns: best of {repeats} [median], epoch-end step included")
    print(f"  {'case':<24}{'baseline':>20}{'ours':>20}   ratio (baseline / ours)")
    for r in records:
        b, o = r["baseline"], r["ours"]
        print(
            f"  {r['case']:<24}"
            f"{b['best_ns']:>10.1f} [{b['median_ns']:>7.1f}]"
            f"{o['best_ns']:>10.1f} [{o['median_ns']:>7.1f}]"
            f"   {r['ratio_best']:.2f}x [{r['ratio_median']:.2f}x]"
        )
    for r in records:
        print(f"    {r['case']}: {r['what']}")
    print("    (two shared specs: one observation = one step of two values)")
    print(f"    bare 'for v in values' loop, included on both sides: {floor:.1f} ns")
    print()


def print_memory(records: list[dict[str, Any]]) -> None:
    """The memory table, then how ours grows with the number of observations."""
    print("Peak memory (tracemalloc, each side from a clean start), retained after in [ ]")
    print(f"  {'case':<20}{'observations':>14}{'baseline':>26}{'ours':>26}")
    for r in records:
        base = f"{fmt_bytes(r['baseline_peak_bytes'])} [{fmt_bytes(r['baseline_retained_bytes'])}]"
        ours = f"{fmt_bytes(r['ours_peak_bytes'])} [{fmt_bytes(r['ours_retained_bytes'])}]"
        print(f"  {r['case']:<20}{r['observations']:>14}{base:>26}{ours:>26}")
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    for case, rows in by_case.items():
        small, large = rows[0], rows[-1]
        factor = large["observations"] / small["observations"]
        print(
            f"  memory growth, {case}, {small['observations']} -> {large['observations']} "
            f"observations ({factor:g}x): baseline "
            f"{fmt_bytes(small['baseline_peak_bytes'])} -> "
            f"{fmt_bytes(large['baseline_peak_bytes'])}, ours "
            f"{fmt_bytes(small['ours_peak_bytes'])} -> {fmt_bytes(large['ours_peak_bytes'])} "
            f"({large['ours_peak_bytes'] - small['ours_peak_bytes']:+d} B)"
        )
    print()


def print_goal(times: list[dict[str, Any]], memory: list[dict[str, Any]]) -> None:
    """The spec's goal, against the figures (informational: nothing fails)."""
    print(f"Goal: observe() at least {SPEED_GOAL:g}x faster; memory not growing with observations")
    for r in times:
        verdict = "met" if r["ratio_best"] >= SPEED_GOAL else "NOT met"
        print(f"  speed, {r['case']}: {r['ratio_best']:.2f}x ({verdict})")
    by_case: dict[str, list[int]] = {}
    for r in memory:
        by_case.setdefault(r["case"], []).append(r["ours_peak_bytes"])
    for case, peaks in by_case.items():
        # Constant up to allocator noise: a few hundred bytes, not a share of the input.
        flat = max(peaks) - min(peaks) <= 4096
        verdict = "met" if flat else "NOT met"
        span = f"{fmt_bytes(min(peaks))} .. {fmt_bytes(max(peaks))}"
        print(f"  memory, {case}: peak {span} ({verdict})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="observations per timed epoch (default 200000)")
    parser.add_argument("--repeats", type=int, help="timed epochs per side (default 7)")
    _machine.add_quick_and_json(parser, "small sizes: a smoke test")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the values")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (10_000 if args.quick else 200_000)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    sizes = (5_000, 50_000) if args.quick else (100_000, 1_000_000)
    if n < 1 or repeats < 1:
        parser.error("--n and --repeats must be at least 1")

    info = _machine.describe()
    print_header(info, n, repeats, args.quick)
    times = time_cases(n, repeats, args.seed)
    floor = loop_floor_ns(make_values(n, args.seed).tolist(), repeats)
    print_times(times, repeats, floor)
    memory = memory_cases(sizes, args.seed)
    print_memory(memory)
    print_goal(times, memory)

    if args.json is not None:
        figures = {
            "machine": info,
            "settings": {
                "observations": n,
                "repeats": repeats,
                "memory_sizes": list(sizes),
                "nonfinite_share": NONFINITE_SHARE,
                "seed": args.seed,
                "quick": args.quick,
            },
            "loop_floor_ns": floor,
            "timing": times,
            "memory": memory,
        }
        _machine.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
