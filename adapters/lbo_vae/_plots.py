"""The plots of an LBO-VAE run: what `lbo-vae train` writes to ``--out``, `lbo-vae report` redraws.

From ``metrics.jsonl`` (one row per epoch):

- ``kl.png``: the mean KL of each latent half and the max KL of the epoch,
  against the shared ceiling (a step line), the KL phases shaded behind;
- ``reject_rate.png``: the rejected share of the steps, with the seed's 5% line;
- ``groups.png``: every group's mean score, and the min group.

From the model (the finished `Run`, or rebuilt from ``checkpoint.pt``):

- ``reconstructions.png``: inputs over their reconstructions (from ``mu``);
- ``swaps.png``: core of one image with the detail of another, every pair;
- ``traversals.png``: one latent coordinate at a time, from -2.5 to +2.5
  standard deviations of its batch distribution, for the most active
  coordinates of each half.

matplotlib (the ``trainer`` extra) is imported only when drawing, without
pyplot: no global figure state, no backend to select, nothing left open.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from constraint_sched.adapters.lbo_vae._config import TrainConfig
from constraint_sched.adapters.lbo_vae._files import CHECKPOINT, CHECKPOINT_FORMAT, METRICS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from constraint_sched.adapters.lbo_vae._images import ImageSet
    from constraint_sched.adapters.lbo_vae._model import LBOVAE
    from constraint_sched.adapters.lbo_vae._train import Run

METRIC_PLOTS = ("kl.png", "reject_rate.png", "groups.png")
"""The plots drawn from ``metrics.jsonl`` alone."""

MODEL_PLOTS = ("reconstructions.png", "swaps.png", "traversals.png")
"""The plots that need the model: the given run's, or the checkpoint's."""

REJECT_LINE = 0.05
"""The seed's checklist: the reject rate stays below 5% in every epoch."""

DPI = 100

_PHASES = {  # the KL phase -> (legend label, band colour)
    "DISCOVERY": ("discovery", "#9ecae1"),
    "HOLD": ("hold", "#fdd0a2"),
    "SQUEEZE": ("squeeze", "#c7e9c0"),
    "CONVERGED": ("converged", "#dadaeb"),
}
_LOG_RANGE = 30.0
"""The KL plot switches to a log scale when its largest value exceeds its smallest this much."""

_TRAVERSAL = 2.5
_TRAVERSAL_STEPS = 9
_TRAVERSAL_DIMS = 4
_EXAMPLES = 8
_SWAPS = 6
_BATCH = 256


def draw(out: str | Path, *, run: Run | None = None) -> list[Path]:
    """Draw the plots of the run in ``out`` into ``out``; returns the paths written.

    The metric plots (`METRIC_PLOTS`) come from ``out/metrics.jsonl``. The
    model plots (`MODEL_PLOTS`) show held-out images, which training never
    saw: ``run``'s model and held-out images when given, otherwise the model
    of ``out/checkpoint.pt`` and the held-out images of its configuration;
    without a checkpoint they are skipped (with a warning when the
    checkpoint's images cannot be loaded again, e.g. a moved folder).

    Args:
        out: A run's output folder.
        run: The run that wrote it, when still in memory (`lbo-vae train`).

    Returns:
        The PNG files written, metric plots first.

    Raises:
        FileNotFoundError: ``out`` holds no ``metrics.jsonl``.
        ValueError: ``metrics.jsonl`` holds no epoch, or the checkpoint is
            not a readable lbo-vae checkpoint.
        ImportError: matplotlib is not installed.
    """
    folder = Path(out)
    rows = _read_metrics(folder)
    _matplotlib()  # fail before writing anything
    config: TrainConfig | None = run.config if run is not None else None
    state: dict[str, Any] | None = None
    if run is None and (folder / CHECKPOINT).is_file():
        state = _read_checkpoint(folder / CHECKPOINT)
        config = TrainConfig(**state["config"])
    written = [
        _save(_kl_figure(rows, config), folder / "kl.png"),
        _save(_reject_figure(rows), folder / "reject_rate.png"),
        _save(_groups_figure(rows), folder / "groups.png"),
    ]
    model: tuple[LBOVAE, ImageSet] | None = None
    if run is not None:
        model = run.vae, run.heldout
    elif state is not None and config is not None:
        model = _rebuild(state, config, folder / CHECKPOINT)
    if model is not None:
        vae, data = model
        batch = _batch(vae, data)
        written += [
            _save(_reconstruction_figure(batch), folder / "reconstructions.png"),
            _save(_swap_figure(batch), folder / "swaps.png"),
            _save(_traversal_figure(batch), folder / "traversals.png"),
        ]
    return written


# -- inputs ----------------------------------------------------------------------------


def _matplotlib() -> None:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "lbo-vae plots need matplotlib: pip install matplotlib "
            "(or pip install 'constraint-sched[trainer]')"
        ) from error


def _read_metrics(folder: Path) -> list[dict[str, Any]]:
    metrics = folder / METRICS
    if not metrics.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no {METRICS}: not an lbo-vae run folder (nothing to plot)"
        )
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(metrics)!r}, line {number}: not JSON ({error})") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{str(metrics)!r}, line {number}: not a row of epoch metrics")
        rows.append(_nan_for_null(row))
    if not rows:
        raise ValueError(f"{str(metrics)!r} holds no epoch yet: nothing to plot")
    return rows


def _nan_for_null(row: dict[str, Any]) -> dict[str, Any]:
    """A mean written as null (an epoch with no accepted step) plots as a gap (NaN).

    ``kl_ceiling`` keeps its null: it means "no ceiling" (discovery).
    """
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            value = {k: math.nan if v is None else v for k, v in value.items()}
        elif value is None and key != "kl_ceiling":
            value = math.nan
        out[key] = value
    return out


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a corrupt file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an lbo-vae checkpoint")
    return state


def _rebuild(
    state: dict[str, Any], config: TrainConfig, path: Path
) -> tuple[LBOVAE, ImageSet] | None:
    """The checkpoint's model (on the CPU) and its run's held-out images; None without them.

    Not through `Run`: making one truncates ``metrics.jsonl``.
    """
    from constraint_sched.adapters.lbo_vae._model import LBOVAE
    from constraint_sched.adapters.lbo_vae._train import load_data, model_config

    try:
        _, data = load_data(config)
    except (OSError, ValueError, ImportError) as error:
        warnings.warn(
            f"model plots skipped: the images of {str(path)!r} cannot be loaded again: {error}",
            stacklevel=3,
        )
        return None
    vae = LBOVAE(model_config(config, int(data.images.shape[1])))
    vae.load_state_dict(state["vae"])
    return vae, data


class _Batch:
    """What the model plots need, computed once: images, ``mu`` and decoders, on the CPU."""

    def __init__(self, vae: LBOVAE, images: torch.Tensor) -> None:
        self.vae = vae
        self.device = next(vae.parameters()).device
        self.images = images
        self.mu = self.encode(images)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(x.to(self.device))
        return mu.float().cpu()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        out: torch.Tensor = self.vae.decode(z.to(device=self.device, dtype=param.dtype))
        return out.float().cpu().clamp(0.0, 1.0)


def _batch(vae: LBOVAE, data: ImageSet) -> _Batch:
    k = min(_BATCH, len(data.images))
    return _Batch(vae, data.images[:k].float())


# -- the metric plots --------------------------------------------------------------------


def _values(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray[Any, Any]:
    """A per-epoch column as floats; a missing or null value is NaN (a gap in the line)."""
    return np.array(
        [math.nan if row.get(key) is None else float(row[key]) for row in rows], dtype=float
    )


def _epochs(rows: Sequence[dict[str, Any]]) -> np.ndarray[Any, Any]:
    return np.array([int(row["epoch"]) for row in rows], dtype=float)


def _figure(width: float = 8.0, height: float = 4.5) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _epoch_axis(ax: Axes, epochs: np.ndarray[Any, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def _kl_figure(rows: Sequence[dict[str, Any]], config: TrainConfig | None) -> Figure:
    from matplotlib.patches import Patch

    epochs = _epochs(rows)
    core, detail = _values(rows, "kl_core"), _values(rows, "kl_detail")
    peak, ceiling = _values(rows, "kl_max"), _values(rows, "kl_ceiling")
    fig = _figure(9.0, 4.5)
    ax = fig.add_subplot()
    # the phases, one band per epoch (the phase during that epoch)
    phases: list[str] = []
    for epoch, row in zip(epochs, rows, strict=True):
        phase = str(row.get("kl_phase", "?"))
        _, colour = _PHASES.get(phase, (phase.lower(), "#eeeeee"))
        ax.axvspan(epoch - 0.5, epoch + 0.5, color=colour, alpha=0.6, lw=0, zorder=0)
        if phase not in phases:
            phases.append(phase)
    lines = [
        ax.plot(epochs, core, "o-", color="tab:blue", label="kl_core (mean)")[0],
        ax.plot(epochs, detail, "s-", color="tab:orange", label="kl_detail (mean)")[0],
        ax.plot(epochs, peak, "^:", color="tab:gray", label="kl_max (both halves)")[0],
        # the ceiling holds for a whole epoch: a step across the epoch's band (none: a gap)
        ax.plot(
            np.stack([epochs - 0.5, epochs + 0.5], axis=1).ravel(),
            np.repeat(ceiling, 2),
            color="tab:red",
            lw=2,
            label="ceiling",
        )[0],
    ]
    if config is not None and config.kl_table is None:
        lines.append(ax.axhline(config.kl_target, color="tab:red", ls="--", lw=1, label="target"))
    elif config is not None and config.kl_table:
        target = min(config.kl_table.values())
        lines.append(ax.axhline(target, color="tab:red", ls="--", lw=1, label="target"))
    values = np.concatenate([core, detail, peak, ceiling])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > _LOG_RANGE:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    _epoch_axis(ax, epochs)
    ax.set_ylabel("KL (nats)")
    ax.set_title("KL of both latent halves against the shared ceiling")
    bands = [
        Patch(color=_PHASES.get(p, (p, "#eeeeee"))[1], alpha=0.6, label=f"{_phase_label(p)} phase")
        for p in phases
    ]
    ax.legend(
        handles=[*lines, *bands],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize="small",
    )
    return fig


def _phase_label(phase: str) -> str:
    return _PHASES[phase][0] if phase in _PHASES else phase.lower()


def _reject_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    from matplotlib.ticker import PercentFormatter

    epochs = _epochs(rows)
    rate = _values(rows, "reject_rate")
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    over = np.nan_to_num(rate) >= REJECT_LINE
    ax.bar(epochs, rate, width=0.6, color=np.where(over, "tab:red", "tab:blue"), label="rejected")
    ax.axhline(REJECT_LINE, color="black", ls="--", lw=1, label="5% (the seed's checklist)")
    for epoch, value, row in zip(epochs, rate, rows, strict=True):
        if math.isfinite(value) and row.get("steps"):
            ax.annotate(
                f"{int(row.get('rejects', 0))}/{int(row['steps'])}",
                (epoch, value),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize="x-small",
            )
    top = np.nanmax(rate) if np.isfinite(rate).any() else 0.0
    ax.set_ylim(0, max(2 * REJECT_LINE, 1.15 * top))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _epoch_axis(ax, epochs)
    ax.set_ylabel("rejected steps")
    ax.set_title("Reject rate per epoch (rolled-back steps / steps)")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _groups_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    epochs = _epochs(rows)
    names: list[str] = []
    for row in rows:
        names += [g for g in row.get("groups") or {} if g not in names]
    fig = _figure()
    ax = fig.add_subplot()
    for name in names:
        scores = [(row.get("groups") or {}).get(name) for row in rows]
        ax.plot(
            epochs,
            [math.nan if s is None else float(s) for s in scores],
            "o-",
            ms=3,
            lw=1.2,
            label=name,
        )
    ax.plot(epochs, _values(rows, "min_group"), "k--", lw=2.2, label="min group")
    ax.set_ylim(0, 1.02)
    _epoch_axis(ax, epochs)
    ax.set_ylabel("mean score (1 = satisfied)")
    ax.set_title("Group scores per epoch (the loss is -log of the min group)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return fig


# -- the model plots ---------------------------------------------------------------------


def _grid(cells: Sequence[Sequence[torch.Tensor | None]], pad: int = 2) -> np.ndarray[Any, Any]:
    """One image of a table of ``(3, H, W)`` images (None: a white cell), ``pad`` apart."""
    first = next(c for row in cells for c in row if c is not None)
    h, w = int(first.shape[-2]), int(first.shape[-1])
    n_rows, n_cols = len(cells), max(len(row) for row in cells)
    grid = np.ones((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), dtype=np.float32)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell is None:
                continue
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = cell.permute(1, 2, 0).clamp(0, 1).numpy()
    return grid


def _centres(count: int, side: int, pad: int = 2) -> list[float]:
    return [pad + i * (side + pad) + (side - 1) / 2 for i in range(count)]


def _gap(cells: int, side: int, pad: int = 2) -> float:
    """The image coordinate of the middle of the gap after the first ``cells`` cells."""
    return cells * (side + pad) + (pad - 1) / 2


def _show(ax: Axes, grid: np.ndarray[Any, Any]) -> None:
    ax.imshow(grid, interpolation="nearest")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _reconstruction_figure(batch: _Batch) -> Figure:
    k = min(_EXAMPLES, len(batch.images))
    x = batch.images[:k]
    recon = batch.decode(batch.mu[:k])
    side = int(x.shape[-1])
    fig = _figure(1.1 * k + 1.5, 3.2)
    ax = fig.add_subplot()
    _show(ax, _grid([list(x), list(recon)]))
    ax.set_xticks(_centres(k, side), [str(i) for i in range(k)])
    ax.set_yticks(_centres(2, side), ["input", "reconstruction\n(decoded mu)"])
    ax.set_xlabel("image")
    ax.set_title("Reconstructions: inputs over their reconstructions from mu")
    return fig


def _swap_figure(batch: _Batch) -> Figure:
    vae = batch.vae
    k = min(_SWAPS, len(batch.images))
    x = batch.images[:k]
    core, detail = vae.split(batch.mu[:k])
    # cell (i, j): the appearance (detail) of image i on the structure (core) of image j
    z = vae.join(
        core.unsqueeze(0).expand(k, k, -1).reshape(k * k, -1),
        detail.unsqueeze(1).expand(k, k, -1).reshape(k * k, -1),
    )
    swapped = batch.decode(z).reshape(k, k, *x.shape[1:])
    cells: list[list[torch.Tensor | None]] = [[None, *x]]
    cells += [[x[i], *swapped[i]] for i in range(k)]
    side = int(x.shape[-1])
    fig = _figure(1.0 * (k + 1) + 1.5, 1.0 * (k + 1) + 1.2)
    ax = fig.add_subplot()
    grid = _grid(cells)
    _show(ax, grid)
    ax.axhline(_gap(1, side), color="black", lw=1.5)
    ax.axvline(_gap(1, side), color="black", lw=1.5)
    centres = _centres(k + 1, side)
    ax.set_xticks(centres, ["", *(f"x1 #{j}" for j in range(k))])
    ax.set_yticks(centres, ["", *(f"x2 #{i}" for i in range(k))])
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("structure source x1: its core (top row)")
    ax.set_ylabel("appearance source x2: its detail (left column)")
    fig.suptitle("Swaps: decode(join(core(mu(x1)), detail(mu(x2))))")
    return fig


def _traversal_figure(batch: _Batch) -> Figure:
    vae = batch.vae
    mu = batch.mu
    mean = mu.mean(dim=0)
    std = mu.std(dim=0) if len(mu) > 1 else torch.ones_like(mean)
    std = torch.where(torch.isfinite(std), std, torch.zeros_like(std))
    # the most active coordinates of each half (largest spread across the batch)
    core_std, detail_std = vae.split(std)
    dims = [
        ("core", int(d))
        for d in torch.argsort(core_std, descending=True)[: min(_TRAVERSAL_DIMS, vae.core_dims)]
    ] + [
        ("detail", int(d))
        for d in torch.argsort(detail_std, descending=True)[: min(_TRAVERSAL_DIMS, vae.detail_dims)]
    ]
    steps = torch.linspace(-_TRAVERSAL, _TRAVERSAL, _TRAVERSAL_STEPS)
    base = mu[0]
    rows: list[list[torch.Tensor | None]] = []
    labels: list[str] = []
    for half, d in dims:
        index = d if half == "core" else vae.core_dims + d
        z = base.repeat(len(steps), 1)
        z[:, index] = mean[index] + steps * std[index]
        rows.append([batch.images[0], *batch.decode(z)])
        labels.append(f"{half} {d}\n(std {float(std[index]):.2g})")
    side = int(batch.images.shape[-1])
    fig = _figure(1.0 * (len(steps) + 1) + 1.8, 0.95 * len(rows) + 1.4)
    ax = fig.add_subplot()
    _show(ax, _grid(rows))
    sigma = "\N{GREEK SMALL LETTER SIGMA}"
    ticks = ["input", *(f"{float(t):+.1f}{sigma}" for t in steps)]
    ax.set_xticks(_centres(len(steps) + 1, side), ticks)
    ax.axvline(_gap(1, side), color="black", lw=1.5)
    ax.set_yticks(_centres(len(rows), side), labels, fontsize="small")
    n_core = sum(1 for half, _ in dims if half == "core")
    if 0 < n_core < len(rows):
        ax.axhline(_gap(n_core, side), color="black", lw=1.5)
    ax.set_xlabel("the coordinate set to its batch mean + t x its batch std; the others: image 0's")
    ax.set_title("Latent traversals of image 0: core (structure) and detail (appearance) dims")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG and let it go (no pyplot: nothing global keeps it open)."""
    try:
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        fig.clear()
    return path
