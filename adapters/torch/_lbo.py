"""The LBO log-barrier: goal scores -> geometric-mean groups -> ``-log(min group)``."""

from __future__ import annotations

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

    def __call__(self, scores: Mapping[str, torch.Tensor]) -> LBOResult:
        """Apply the objective to one step's goal scores.

        Args:
            scores: Every goal's score, a 0-d tensor in ``[0, 1]`` (with grad).

        Returns:
            The loss, the group scores, the bottleneck and the reject flag.

        Raises:
            KeyError: A goal of the groups is missing from ``scores``.
        """
        missing = self.goals.difference(scores)
        if missing:
            raise KeyError(f"LBOObjective: no score for goals {sorted(missing)}")
        groups = torch.stack([self._group(member, scores) for member in self._tree.values()])
        smallest, bottleneck = torch.min(groups, dim=0)
        loss = -torch.log(smallest)
        reject = ~torch.isfinite(loss) | (smallest <= 0)
        return LBOResult(loss, groups, bottleneck, reject, self.names)

    def _group(self, node: object, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(node, tuple):
            members = [scores[name].reshape(()) for name in node]
        else:
            assert isinstance(node, dict)
            members = [self._group(child, scores) for child in node.values()]
        stacked = torch.stack(members).clamp_min(self._floor)
        return torch.exp(torch.log(stacked).mean())

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
