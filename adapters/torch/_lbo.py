"""The LBO log-barrier: goal scores -> geometric-mean groups -> ``-log(min group)``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Union

import torch

GroupTree = Mapping[str, Union[Sequence[str], "GroupTree"]]
"""Groups by name: each a sequence of goal names, or a mapping of sub-groups (nested)."""


class LBOResult(NamedTuple):
    """What the LBO objective computed for one step; every tensor stays on the device.

    Attributes:
        loss: ``-log(min group)``, a 0-d tensor to call ``backward`` on.
        groups: The top-level group scores, shape ``(len(names),)``.
        bottleneck: The index (in ``names``) of the smallest group, a 0-d long tensor.
        reject: A 0-d bool tensor: the step must be rejected (the loss is not
            finite, or the smallest group is ``<= 0``).
        names: The top-level group names, in order (plain strings).
    """

    loss: torch.Tensor
    groups: torch.Tensor
    bottleneck: torch.Tensor
    reject: torch.Tensor
    names: tuple[str, ...]


class LBOObjective:
    """The LBO objective over a fixed tree of groups, checked once, applied every step.

    A group's score is the geometric mean of its members' scores, each clamped
    below at ``floor`` first; a member is a goal (a key of the scores) or a
    nested group. The loss is ``-log`` of the smallest top-level group: only
    the bottleneck gets gradient, with no softmin and no epsilon in the log.
    Nothing is read back to the host.

    Args:
        groups: ``{group: [goal, ...]}`` or ``{group: {subgroup: [goal, ...], ...}}``,
            nested to any depth.
        floor: The clamp of each member before the geometric mean; with the
            default ``1e-10`` a group is never 0, so ``reject`` is raised by
            non-finite scores; with ``floor=0.0`` a member at 0 also rejects.

    Raises:
        ValueError: An empty group, or an invalid ``floor``.
        TypeError: A group that is neither a sequence of names nor a mapping.

    Examples:
        >>> objective = LBOObjective({"recon": ["pixel", "edge"],
        ...                           "latent": {"kl": ["kl_core"], "health": ["var"]}})
        >>> scores = {"pixel": torch.tensor(0.9), "edge": torch.tensor(0.4),
        ...           "kl_core": torch.tensor(0.5), "var": torch.tensor(0.8)}
        >>> result = objective(scores)
        >>> result.names, result.names[int(result.bottleneck)]
        (('recon', 'latent'), 'recon')
        >>> round(float(result.loss), 4), bool(result.reject)  # -log(sqrt(0.9 * 0.4))
        (0.5108, False)
    """

    def __init__(self, groups: GroupTree, *, floor: float = 1e-10) -> None:
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
            raise ValueError(f"LBOObjective: floor must be a number in [0, 1), got {floor!r}")
        self._floor = float(floor)
        self._tree = _check_tree(groups, "groups")
        self.names: tuple[str, ...] = tuple(groups)
        self.goals: frozenset[str] = frozenset(_leaves(self._tree))

    def __call__(self, scores: Mapping[str, torch.Tensor], *, log: bool = False) -> LBOResult:
        """Apply the objective to one step's goal scores.

        With ``log=True`` the values are log scores
        (`constraint_sched.ConstraintSpec.log_score`) and the objective works
        in log space: the same loss, groups and bottleneck where no score
        underflows, but a member below ``floor`` still pulls back. Its value
        counts as ``floor``, as always, while its gradient is that of its own
        log score, which never vanishes, however far past its bound the
        metric has gone. (With plain scores a clamped member has no gradient.)

        Args:
            scores: Every goal's score, a 0-d (or one-element) tensor in
                ``[0, 1]`` (with grad), or its log score with ``log=True``.
            log: Whether ``scores`` holds log scores.

        Returns:
            The loss, the group scores, the bottleneck and the reject flag.

        Raises:
            KeyError: A goal of the groups is missing from ``scores``.
            TypeError: A goal's score is not a tensor.
            ValueError: A goal's score holds more than one element (per-sample
                scores: reduce them first, e.g. with ``.mean()``) or none.

        Examples:
            >>> objective = LBOObjective({"g": ["kl", "mse"]})
            >>> kl = torch.tensor(-80.0, requires_grad=True)  # a score of e^-80, far past
            >>> result = objective({"kl": kl, "mse": torch.tensor(0.0)}, log=True)
            >>> (grad,) = torch.autograd.grad(result.loss, kl)
            >>> round(result.loss.detach().item(), 3), grad.item()
            (11.513, -0.5)
        """
        missing = self.goals.difference(scores)
        if missing:
            raise KeyError(f"LBOObjective: no score for goals {sorted(missing)}")
        logs = [self._log_group(member, scores, log) for member in self._tree.values()]
        log_groups = torch.stack(logs)
        smallest_log, bottleneck = torch.min(log_groups, dim=0)
        loss = -smallest_log
        reject = ~torch.isfinite(loss) | (torch.exp(smallest_log) <= 0)
        groups = torch.exp(log_groups)
        return LBOResult(loss, groups, bottleneck, reject, self.names)

    def group_loss(
        self, scores: Mapping[str, torch.Tensor], index: int, *, log: bool = False
    ) -> torch.Tensor:
        """``-log`` of top-level group ``index``'s score, computed through that group alone.

        With ``index`` the bottleneck (`LBOResult.bottleneck`), this is the
        loss: the same value, and the same gradient, since ``min`` passes
        gradient to the bottleneck only. But its backward pass runs through
        the bottleneck's goals alone, where the full loss's runs through every
        group (the others with zero gradients). Reading the index is a host
        read: worth it where that costs nothing (on the CPU).

        Examples:
            >>> objective = LBOObjective({"recon": ["pixel"], "latent": ["kl"]})
            >>> pixel = torch.tensor(0.4, requires_grad=True)
            >>> scores = {"pixel": pixel, "kl": torch.tensor(0.9, requires_grad=True)}
            >>> index = int(objective(scores).bottleneck)
            >>> loss = objective.group_loss(scores, index)
            >>> full = objective(scores).loss
            >>> bool(loss.detach() == full.detach()), index
            (True, 0)
        """
        names = self.names
        if not 0 <= index < len(names):
            raise IndexError(f"LBOObjective.group_loss: index {index} of {len(names)} groups")
        return -self._log_group(self._tree[names[index]], scores, log)

    def _log_group(
        self, node: object, scores: Mapping[str, torch.Tensor], log: bool
    ) -> torch.Tensor:
        """The log of a group's score: the mean of its members' clamped log scores."""
        if isinstance(node, tuple):
            stacked = torch.stack([_one(name, scores[name]) for name in node])
            clamped = self._floor_log if log else self._floor_plain
            members = clamped(stacked)
        else:
            assert isinstance(node, dict)
            members = torch.stack([self._log_group(c, scores, log) for c in node.values()])
        return members.mean()

    def _floor_plain(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores clamped at ``floor``, then their logs (no gradient below the floor)."""
        return torch.log(scores.clamp_min(self._floor))

    def _floor_log(self, logs: torch.Tensor) -> torch.Tensor:
        """Log scores below ``log(floor)`` take its value and keep their own gradient."""
        if self._floor == 0.0:
            return logs
        floor = math.log(self._floor)
        below = logs < floor
        # floor + (x - x.detach()): the value of the floor, the gradient of x. A -inf
        # log score (a margin crossed) has no gradient to keep: it is the plain floor.
        kept = floor + (logs - logs.detach())
        plain = torch.full_like(logs, floor)
        return torch.where(below, torch.where(torch.isneginf(logs), plain, kept), logs)

    def __repr__(self) -> str:
        return f"LBOObjective({self._tree!r}, floor={self._floor!r})"


def lbo_objective(
    scores: Mapping[str, torch.Tensor], groups: GroupTree, *, floor: float = 1e-10
) -> LBOResult:
    """The LBO objective of one step: ``LBOObjective(groups, floor=floor)(scores)``.

    Build an `LBOObjective` once instead when the groups do not change.

    Examples:
        >>> r = lbo_objective({"a": torch.tensor(0.25), "b": torch.tensor(1.0)},
        ...                   {"only": ["a", "b"]})
        >>> round(float(r.groups[0]), 4)  # sqrt(0.25 * 1.0)
        0.5
    """
    return LBOObjective(groups, floor=floor)(scores)


def _one(goal: str, score: object) -> torch.Tensor:
    """A goal's score as a 0-d tensor; an error naming the goal for anything else."""
    if not isinstance(score, torch.Tensor):
        raise TypeError(
            f"LBOObjective: the score of goal {goal!r} must be a tensor, got "
            f"{type(score).__name__} {score!r}"
        )
    if score.numel() != 1:
        raise ValueError(
            f"LBOObjective: the score of goal {goal!r} must be one number, got a tensor of "
            f"shape {tuple(score.shape)}; reduce per-sample scores first (e.g. with .mean()) "
            "or pass a 0-d score"
        )
    return score.reshape(())


def _check_tree(node: object, path: str) -> dict[str, object]:
    if not isinstance(node, Mapping) or not node:
        raise ValueError(
            f"LBOObjective: {path} must be a non-empty mapping of groups, got {node!r}"
        )
    out: dict[str, object] = {}
    for name, member in node.items():
        where = f"{path}[{name!r}]"
        if isinstance(member, Mapping):
            out[name] = _check_tree(member, where)
        elif isinstance(member, Sequence) and not isinstance(member, str):
            if not member or not all(isinstance(g, str) for g in member):
                raise ValueError(
                    f"LBOObjective: {where} must be a non-empty sequence of goal names, "
                    f"got {member!r}"
                )
            out[name] = tuple(member)
        else:
            raise TypeError(
                f"LBOObjective: {where} must be a sequence of goal names or a mapping of "
                f"sub-groups, got {member!r}"
            )
    return out


def _leaves(tree: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for member in tree.values():
        out += list(member) if isinstance(member, tuple) else _leaves(member)  # type: ignore[arg-type]
    return out
