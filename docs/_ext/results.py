"""The figures the pages state, read from the committed benchmark results: one source.

Every figure a page gives from a benchmark (a share of steps over a bound, a
step's cost, a training time, a held-out error, a whole table) is computed
here from ``benchmarks/results/``, the files the benchmarks in
``benchmarks/`` write. A page names a figure with a placeholder,
``{{ peers.cost.chance }}``, and this module, a mkdocs hook
(``hooks:`` in ``mkdocs.yml``), replaces it when the site is built; an
unknown name stops the build. The README is not built: ``tests/test_readme.py``
checks its figures against the same `figures`. Rerunning a benchmark and
rebuilding updates every page at once.

Names:

- ``peers.cost.ARM``: a step's wall time over a plain step's (``1.12x``).
- ``peers.over.lagrangian``: the range of the shares of steps over the bound
  of cooper's Lagrangian, nuPI and the augmented Lagrangian, tuned or with
  their defaults, at every target; ``peers.over.lagrangian_m``: the same
  aimed at 0.95 of the bound; ``peers.over.geco``: the GECO-style
  multiplier, tuned; ``peers.over.chance`` and ``peers.over.chance_max``:
  the term's range and largest share.
- ``peers.under.chance``: how far under the target the term's test KL ends,
  a range; ``peers.mse_gap.chance``: its test MSE at the target against the
  best tuned peer's, a range.
- ``peers.over.aimed`` / ``peers.under.aimed``: the Lagrangian peers and
  GECO aimed at 0.95 of the bound, tuned: their steps over it and how far
  under the target they end; ``peers.ARM.over.t20``,
  ``peers.ARM.kl_error.t20``, ``peers.ARM.mse_gap.t20``: one of ours
  (``chance``, ``lbo``) at one target; ``peers.minutes``, ``peers.arms``,
  ``peers.seeds``, ``peers.trials``, ``peers.steps``, ``peers.targets``: the
  benchmark's wall time and settings.
- ``term_scale.train_under`` / ``term_scale.test_under``: how far under the
  target the training KL and the held-out KL settle with the default
  ``alpha``; ``term_scale.worst``: the largest share of an epoch's steps over
  the ceiling, from epoch 2 on, over every case and seed;
  ``term_scale.rise_c``, ``term_scale.mean_patch_ratio``,
  ``term_scale.minutes``: case (c)'s rise, case (b)'s mean patch against the
  model, the benchmark's wall time.
- ``trainer.minutes``: the default run's training time; ``trainer.final_mse``,
  ``trainer.mean_mse``: its last held-out MSE and that of the mean image;
  ``trainer.max_over``: its largest share of an epoch's steps over the
  ceiling. ``lr_sweep.*``: the sweep's time per run, its hard-coded ceiling
  and that arm against the discovered one; ``trainer_quality.*``: the
  trainer against a KL-matched beta-VAE.
- ``table.*``: the Markdown tables of the README (``table.peers``,
  ``table.lr_sweep``, ``table.trainer_quality``, ``table.trainer_default``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

# A placeholder: two braces, a dotted name, two braces.
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+(?:\.[a-z0-9_]+)+)\s*\}\}")

# The Lagrangian peers of the peers benchmark (cooper's SGD multiplier, nuPI, the
# augmented Lagrangian) and their margin variants, aimed at 0.95 of the bound.
LAGRANGIAN = ("cooper", "nupi", "auglag")
LAGRANGIAN_M = tuple(f"{arm}_m" for arm in LAGRANGIAN)
# The same and GECO aimed at 0.95 of the bound, tuned: the README's "aimed at 0.95 T".
AIMED = (*LAGRANGIAN_M, "geco_m")
# The package's arms: the chance-constrained term and the LBO barrier.
OURS = ("chance", "lbo")
# The lr sweep's run at the trainer's default learning rate is the default run.
DEFAULT_LR = 0.003


def _load(name: str, results: Path) -> Any:
    return json.loads((results / name).read_text(encoding="utf-8"))


def _pct(fraction: float, digits: int = 1, *, sign: bool = False) -> str:
    """A fraction as a percentage, halves rounded up (shares of steps are often exact halves)."""
    exact = Decimal(repr(round(100 * fraction, 9)))
    rounded = exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    rounded = abs(rounded) if rounded == 0 else rounded
    return f"{rounded:+f}%" if sign else f"{rounded:f}%"


def _percent_range(values: Iterable[float], digits: int = 0) -> str:
    """``46-73%`` from fractions: the smallest and largest, as percentages."""
    ordered = sorted(values)
    low, high = _pct(ordered[0], digits)[:-1], _pct(ordered[-1], digits)[:-1]
    return f"{low}%" if low == high else f"{low}-{high}%"


def _and(words: list[str]) -> str:
    """``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _steps(count: int, total: int) -> str:
    """``one step in 64``."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    number = words[count] if count < len(words) else str(count)
    return f"{number} step{'' if count == 1 else 's'} in {total}"


def _md_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header's first cell is ``first_header``."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            if cells[0] == first_header:
                header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the alignment row
        rows.append(dict(zip(header, cells, strict=True)))
    if not rows:
        raise ValueError(f"no table headed {first_header!r}")
    return rows


# -- peers ------------------------------------------------------------------------------------


def _peers_mse_gaps(text: str) -> dict[str, dict[str, float]]:
    """``{arm: {target: MSE at T / the best tuned peer's - 1}}``, from "Reading the table"."""
    gaps: dict[str, dict[str, float]] = {}
    fraction = None
    for line in text.split("## Reading the table", 1)[1].splitlines():
        target = re.match(r"\*\*Target (\d+)%", line)
        if target:
            fraction = f"{int(target.group(1)) / 100:g}"
        arm = re.match(r"- \*\*(\w+)\*\*", line)
        gap = re.search(r"test MSE at T within 2% of the best peer's \(([-+]\d+\.\d)%", line)
        if arm and gap and fraction is not None:
            gaps.setdefault(arm.group(1), {})[fraction] = float(gap.group(1)) / 100
    return gaps


def _peers(results: Path) -> dict[str, str]:
    record = _load("peers.json", results)
    gaps = _peers_mse_gaps((results / "peers.md").read_text(encoding="utf-8"))
    rows = record["results"]

    def shares(arms: Iterable[str], columns: Iterable[str] = ("summary",)) -> list[float]:
        return [
            rows[target][arm][column]["above_bound"]["mean"]
            for target in rows
            for arm in arms
            for column in columns
        ]

    chance_error = [rows[target]["chance"]["summary"]["kl_error"]["mean"] for target in rows]
    out = {f"peers.cost.{arm}": f"{cost:.2f}x" for arm, cost in record["step_cost"].items()}
    out |= {
        "peers.over.lagrangian": _percent_range(shares(LAGRANGIAN, ("summary", "default"))),
        "peers.over.lagrangian_m": _percent_range(shares(LAGRANGIAN_M, ("summary", "default"))),
        "peers.over.geco": _percent_range(shares(["geco"])),
        "peers.over.chance": _percent_range(shares(["chance"]), 1),
        "peers.over.chance_max": _pct(max(shares(["chance"])), 1),
        "peers.under.chance": _percent_range(-e for e in chance_error),
        "peers.mse_gap.chance": _percent_range(gaps["chance"].values(), 1),
        "peers.over.aimed": _percent_range(shares(AIMED)),
        "peers.under.aimed": _percent_range(
            -rows[target][arm]["summary"]["kl_error"]["mean"] for target in rows for arm in AIMED
        ),
        "peers.minutes": f"{record['seconds'] / 60:.0f}",
        "peers.arms": str(len(record["arms"])),
        "peers.seeds": str(record["settings"]["seeds"]),
        "peers.trials": str(record["settings"]["trials"]),
        "peers.steps": f"{record['steps_per_run']:,}",
        "peers.targets": _and([_pct(f, 0) for f in record["settings"]["targets"]]),
        "table.peers": _peers_table(record, gaps),
    }
    # Per target, ours: peers.ARM.over.t20 (steps over), .kl_error.t20, .mse_gap.t20.
    for fraction in record["settings"]["targets"]:
        key, name = f"{fraction:g}", f"t{round(fraction * 100)}"
        for arm in OURS:
            summary = rows[key][arm]["summary"]
            out[f"peers.{arm}.over.{name}"] = _pct(summary["above_bound"]["mean"])
            out[f"peers.{arm}.kl_error.{name}"] = _pct(summary["kl_error"]["mean"], sign=True)
            out[f"peers.{arm}.mse_gap.{name}"] = _pct(gaps[arm][key], sign=True)
    return out


def _peers_table(record: Mapping[str, Any], gaps: Mapping[str, Mapping[str, float]]) -> str:
    """The README's table: per target, the shares over the bound, the final KL, the MSE at T."""
    lines = [
        "| target | steps over: chance | LBO | cooper / nuPI / aug. Lagrangian / GECO (tuned) "
        "| the same aimed at 0.95 T | final KL: chance | LBO | peers | MSE at T: chance | LBO |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peers = (*LAGRANGIAN, "geco")
    for fraction, kl in zip(record["settings"]["targets"], record["target_kls"], strict=True):
        rows = record["results"][f"{fraction:g}"]

        def stat(arm: str, name: str, rows: Mapping[str, Any] = rows) -> float:
            return float(rows[arm]["summary"][name]["mean"])

        errors = sorted(stat(arm, "kl_error") for arm in peers)
        cells = [
            f"{_pct(fraction, 0)} ({kl:.2f} nats)",
            _pct(stat("chance", "above_bound"), 1),
            _pct(stat("lbo", "above_bound"), 1),
            " / ".join(_pct(stat(arm, "above_bound"), 0) for arm in peers),
            " / ".join(_pct(stat(f"{arm}_m", "above_bound"), 0) for arm in peers),
            _pct(stat("chance", "kl_error"), 1, sign=True),
            _pct(stat("lbo", "kl_error"), 1, sign=True),
            f"{_pct(errors[0], 1, sign=True)} to {_pct(errors[-1], 1, sign=True)}",
            _pct(gaps["chance"][f"{fraction:g}"], 1, sign=True),
            _pct(gaps["lbo"][f"{fraction:g}"], 1, sign=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- term_scale -------------------------------------------------------------------------------


def _term_scale(results: Path) -> dict[str, str]:
    record = _load("term_scale.json", results)
    settle = _md_rows((results / "term_scale_settle.md").read_text(encoding="utf-8"), "case")
    summary = _md_rows((results / "term_scale_summary.md").read_text(encoding="utf-8"), "case")
    if not summary[-1]["case"].startswith("(c)"):
        raise ValueError("term_scale_summary.md: the last row is not case (c)")
    default = [row for row in settle if float(row["alpha"]) == 0.05]
    train = [float(row["training KL / T at the target"]) for row in default]
    test = [float(row["final test KL / T (seeds)"].split()[0]) for row in default]
    worst = max(case["max_share"] for case in record["summary"].values())
    conv_mse = record["summary"]["b F.mse_loss"]["test_mse"]["mean"]
    return {
        "term_scale.train_under": _percent_range(1 - r for r in train),
        "term_scale.test_under": _percent_range(1 - r for r in test),
        "term_scale.worst": _pct(worst, 1),
        "term_scale.minutes": f"{record['seconds'] / 60:.0f}",
        # (b): predicting every test patch by the mean training patch, against the model.
        "term_scale.mean_patch_ratio": f"{record['mean_image_mse'] / conv_mse:.0f}",
        "term_scale.rise_c": summary[-1]["rise of the free KL after discovery"],
    }


# -- the trainer ------------------------------------------------------------------------------


def _lr_sweep_records(results: Path) -> list[dict[str, Any]]:
    records = [
        record
        for name in ("lr_sweep_discovered.json", "lr_sweep_fixed.json")
        for record in _load(name, results)["records"]
    ]
    return sorted(records, key=lambda r: (r["lr"], r["arm"] != "discovered"))


def default_run(results: Path = RESULTS) -> dict[str, Any]:
    """The default run (``lbo-vae train``): the lr sweep's discovered run at the default lr."""
    (record,) = [
        r for r in _lr_sweep_records(results) if r["lr"] == DEFAULT_LR and r["arm"] == "discovered"
    ]
    return record


def summary_line(row: Mapping[str, Any]) -> str:
    """The trainer's summary line of one epoch's metrics row, without its time."""
    ceiling = row["kl_ceiling"]
    return (
        f"epoch {row['epoch']:>2}  KL {row['kl_phase']:<9} ceiling "
        f"{'none' if ceiling is None else f'{ceiling:,.1f}':>9}  "
        f"kl_core {row['kl_core']:.1f}  kl_detail {row['kl_detail']:.1f}  "
        f"loss {row['loss']:.3f}  min group {row['min_group']:.3f}  "
        f"rejected {row['rejects']}/{row['steps']} ({row['reject_rate']:.1%})  "
        f"held-out mse {row['heldout_mse']:.4f} (mean {row['heldout_mean_mse']:.4f}) "
        f"ssim {row['heldout_ssim']:.2f} "
        f"swap {row['swap_structure']:.2f}/{row['swap_appearance']:.2f}  "
        f"over ceiling {row['steps_over_ceiling']:.1%}"
    )


def _trainer(results: Path) -> dict[str, str]:
    run = default_run(results)
    rows = run["rows"]
    table = [
        "| epoch | phase | ceiling | KL core | KL detail | steps over ceiling | rejected "
        "| min group | held-out MSE | SSIM | swap structure / appearance |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ceiling = row["kl_ceiling"]
        table.append(
            f"| {row['epoch']} | {row['kl_phase'].lower()} "
            f"| {'none' if ceiling is None else f'{ceiling:.1f}'} "
            f"| {row['kl_core']:.1f} | {row['kl_detail']:.1f} "
            f"| {_pct(row['steps_over_ceiling'], 1)} | {_pct(row['reject_rate'], 1)} "
            f"| {row['min_group']:.3f} | {row['heldout_mse']:.4f} | {row['heldout_ssim']:.2f} "
            f"| {row['swap_structure']:.2f} / {row['swap_appearance']:.2f} |"
        )
    return {
        "trainer.minutes": f"{run['seconds'] / 60:.1f}",
        "trainer.final_mse": f"{rows[-1]['heldout_mse']:.4f}",
        "trainer.mean_mse": f"{rows[-1]['heldout_mean_mse']:.3f}",
        "trainer.max_over": _pct(max(row["steps_over_ceiling"] for row in rows), 1),
        "table.trainer_default": "\n".join(table),
        **_lr_sweep(_lr_sweep_records(results)),
    }


def _lr_sweep(records: list[dict[str, Any]]) -> dict[str, str]:
    """The sweep's table and what the README reads from it: the fixed arm against the other."""
    discovered = {r["lr"]: r for r in records if r["arm"] == "discovered"}
    fixed = {r["lr"]: r for r in records if r["arm"] == "fixed"}
    (ceiling,) = {r["ceiling_epoch_2"] for r in fixed.values()}
    # The fixed ceiling is what the discovered arm found at one rate; compare at the others.
    others = [lr for lr in fixed if discovered[lr]["ceiling_epoch_2"] != ceiling]
    ratios = [
        fixed[lr]["rows"][-1]["heldout_mse"] / discovered[lr]["rows"][-1]["heldout_mse"]
        for lr in others
    ]
    highest = max(fixed)
    (tuned,) = [lr for lr in fixed if lr not in others]
    return {
        "lr_sweep.minutes": f"{sum(r['seconds'] for r in records) / len(records) / 60:.1f}",
        "lr_sweep.fixed_ceiling": f"{ceiling:.1f}",
        "lr_sweep.tuned_mse": (
            f"{fixed[tuned]['rows'][-1]['heldout_mse']:.4f} "
            f"and {discovered[tuned]['rows'][-1]['heldout_mse']:.4f}"
        ),
        "lr_sweep.mse_ratio": f"{min(ratios):.1f}x to {max(ratios):.1f}x",
        "lr_sweep.epoch1_ratio": f"{fixed[highest]['kl_max_epoch_1'] / ceiling:.1f}x",
        "lr_sweep.epoch1": f"{fixed[highest]['kl_max_epoch_1']:.1f} against {ceiling:.1f}",
        "table.lr_sweep": _lr_sweep_table(records),
    }


def _lr_sweep_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| LR | ceiling | max KL, epoch 1 | ceiling, epoch 2 | mean KL / ceiling, epochs 1-2 "
        "| rejects, epoch 1 | final mean KL / target | max rejects (epoch) "
        "| held-out MSE (mean image {mean}) | steps over the ceiling, worst epoch from 2 |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines[0] = lines[0].format(mean=f"{records[0]['rows'][-1]['heldout_mean_mse']:.3f}")
    for r in records:
        rows = r["rows"]
        worst = max(row["steps_over_ceiling"] for row in rows if row["epoch"] >= 2)
        lines.append(
            f"| {r['lr']:g} | {r['arm']} | {r['kl_max_epoch_1']:.1f} | {r['ceiling_epoch_2']:.1f} "
            f"| {r['kl_over_ceiling_epochs_1_2']:.2f} | {_pct(r['reject_rate_epoch_1'], 1)} "
            f"| {r['final_kl']:.1f} / {r['kl_target']:g} ({r['final_kl_over_target']:.2f}x) "
            f"| {_pct(r['max_reject_rate'], 1)} ({r['epoch_of_max_reject_rate']}) "
            f"| {rows[-1]['heldout_mse']:.4f} | {_pct(worst, 1)} |"
        )
    return "\n".join(lines)


def _trainer_quality_split(
    lbo: Mapping[str, Any], beta: Mapping[str, Any], timed: Mapping[str, Any] | None
) -> dict[str, str]:
    """The split's figures, the shapes drawn right and the equal-time arm's, where measured."""
    out: dict[str, str] = {}

    def pair(key: str, digits: int = 3) -> str:
        return f"{lbo[key]['mean']:.{digits}f} against {beta[key]['mean']:.{digits}f}"

    if "dci_disentanglement" in lbo:
        out["trainer_quality.dci"] = pair("dci_disentanglement")
        out["trainer_quality.split_structure"] = pair("split_structure_core")
        out["trainer_quality.split_appearance"] = pair("split_appearance_detail")
    if "heldout_shape" in lbo:
        out["trainer_quality.shape"] = pair("heldout_shape", 2)
    if timed is not None:
        ratio = lbo["heldout_mse"]["mean"] / timed["heldout_mse"]["mean"]
        out["trainer_quality.equal_time_mse"] = f"{timed['heldout_mse']['mean']:.4f}"
        out["trainer_quality.equal_time_ratio"] = f"{ratio:.1f}x"
        out["trainer_quality.equal_time_steps"] = f"{timed['steps']['mean']:,.0f}"
    return out


def _trainer_quality(results: Path) -> dict[str, str]:
    record = _load("trainer_quality.json", results)
    summary = record["summary"]
    lbo, beta, mean = (summary[arm] for arm in ("lbo-vae", "beta-vae", "mean-image"))
    timed = summary.get("beta-vae (equal time)")
    epochs = record["config"]["epochs"]
    (steps,) = {seed["steps_per_epoch"] for seed in record["per_seed"]}
    over = max(seed["arms"]["lbo-vae"]["steps_over_ceiling_max"] for seed in record["per_seed"])

    def cell(stat: Mapping[str, float] | None, digits: int) -> str:
        if stat is None:
            return "-"
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"

    def row(label: str, key: str, digits: int, *, mean_image: bool = False) -> str:
        cells = [cell(arm.get(key), digits) for arm in (lbo, beta)]
        if timed is not None:
            cells.append(cell(timed.get(key), digits))
        cells.append(cell(mean.get(key), digits) if mean_image else "-")
        return f"| {label} | " + " | ".join(cells) + " |"

    arms = ["LBO-VAE", "KL-matched beta-VAE"] + (["beta-VAE, equal time"] if timed else [])
    blank = " | -" * (len(arms))
    table = [
        "| | " + " | ".join([*arms, "mean image"]) + " |",
        "|:---|" + "---:|" * (len(arms) + 1),
        row("held-out MSE", "heldout_mse", 4, mean_image=True),
        row("held-out SSIM", "heldout_ssim", 3, mean_image=True),
        row("swap structure", "swap_structure", 3),
        row("swap appearance", "swap_appearance", 3),
        row("shapes drawn right", "heldout_shape", 2, mean_image=True),
        row("KL core + detail", "heldout_kl", 1),
    ]
    if "dci_disentanglement" in lbo:
        table += [
            row("DCI disentanglement", "dci_disentanglement", 3),
            row("DCI completeness", "dci_completeness", 3),
            row("DCI informativeness", "dci_informativeness", 3),
            row("MIG", "mig", 3),
            row("structure importance on the core half", "split_structure_core", 3),
            row("appearance importance on the detail half", "split_appearance_detail", 3),
        ]
    table += [
        f"| steps over the ceiling, epochs 2-{epochs} (largest epoch) | {_pct(over, 1)}{blank} |",
        f"| min group, epoch 2 -> {epochs} | {lbo['min_group_epoch_2']['mean']:.3f} -> "
        f"{lbo['min_group_last']['mean']:.3f}{blank} |",
    ]
    per_seed = [seed["ratios"]["mse"] for seed in record["per_seed"]]
    seconds = lbo["seconds"]["mean"], beta["seconds"]["mean"]
    return {
        "trainer_quality.mse_ratio": f"{record['ratios']['mse']:.2f}x",
        "trainer_quality.mse_ratios": ", ".join(f"{r:.2f}x" for r in per_seed[:-1])
        + f" and {per_seed[-1]:.2f}x",
        "trainer_quality.step_ratio": f"{seconds[0] / seconds[1]:.1f}x",
        "trainer_quality.seconds": f"{seconds[0]:.0f} s against {seconds[1]:.0f} s",
        # The largest share of an epoch's steps over the ceiling, as steps of an epoch.
        "trainer_quality.max_over": (
            f"at most {_steps(round(over * steps), steps)}" if over > 0 else "no step"
        ),
        "table.trainer_quality": "\n".join(table),
        **_trainer_quality_split(lbo, beta, timed),
    }


@cache
def _figures(results: Path) -> dict[str, str]:
    return {
        **_peers(results),
        **_term_scale(results),
        **_trainer(results),
        **_trainer_quality(results),
    }


def figures(results: Path = RESULTS) -> dict[str, str]:
    """Every named figure, as the pages print it, from the results files in ``results``."""
    return dict(_figures(results))


def substitute(markdown: str, where: str, results: Path = RESULTS) -> str:
    """``markdown`` with every placeholder replaced by its figure.

    Raises:
        KeyError: A placeholder names no figure.
    """
    known = _figures(results)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in known:
            raise KeyError(
                f"{where}: no figure {name!r} in the benchmark results (docs/_ext/results.py)"
            )
        return known[name]

    return PLACEHOLDER.sub(replace, markdown)


# -- the mkdocs hook --------------------------------------------------------------------------


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Read the results afresh at each build (``mkdocs serve`` rebuilds after a rerun)."""
    _figures.cache_clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """The page with its figures filled in from the results."""
    from mkdocs.exceptions import PluginError

    try:
        return substitute(markdown, page.file.src_uri)
    except KeyError as error:
        raise PluginError(str(error.args[0])) from None
