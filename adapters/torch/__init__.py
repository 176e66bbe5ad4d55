"""The PyTorch adapter: observe on the device, agree across ranks, score, roll back.

Everything here needs torch (``pip install "constraint-sched[torch]"``); the
scheduling itself is the core's (`constraint_sched.ConstraintScheduler`), which
this adapter feeds.

- `TorchScheduler` wraps a scheduler (or a `constraint_sched.SchedulerCollection`):
  ``observe`` takes tensors on any device without waiting on the host,
  ``advance_epoch`` synchronises once and, under ``torch.distributed``, makes
  every rank agree on the bounds; bounds and score parameters are cached 0-d
  tensors updated in place.
- `LBOObjective` (and `lbo_objective`, `LBOResult`): the LBO log-barrier over
  nested groups of goal scores.
- `RollbackGuard`: snapshot and restore a model and its optimizers, also
  conditionally on a device flag.
- `SameNoise`: replay the random state a model's ``forward`` drew its noise
  from, for a "same batch, same noise" re-evaluation, without perturbing the
  random stream.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a torch-free venv
    raise ImportError(
        "constraint_sched.adapters.torch needs PyTorch, which is not installed; "
        'install it with: pip install "constraint-sched[torch]"'
    ) from error

from constraint_sched.adapters.torch._lbo import (
    LBOObjective,
    LBOResult,
    lbo_objective,
)
from constraint_sched.adapters.torch._noise import (
    SameNoise,
)
from constraint_sched.adapters.torch._rollback import (
    RollbackGuard,
)
from constraint_sched.adapters.torch._scheduler import (
    TorchScheduler,
)
from constraint_sched.adapters.torch._term import (
    TorchConstraintTerm,
)

__all__ = [
    "LBOObjective",
    "LBOResult",
    "RollbackGuard",
    "SameNoise",
    "TorchConstraintTerm",
    "TorchScheduler",
    "lbo_objective",
]
