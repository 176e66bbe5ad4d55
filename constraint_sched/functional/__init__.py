"""The per-step and per-epoch maths, as pure functions over a namespace.

Everything the stateful classes (`constraint_sched.ConstraintScheduler`,
`constraint_sched.ConstraintTerm`) and the adapters compute per step or per
epoch is here, written once against the array API (numpy, torch and JAX
arrays through ``array_namespace``) or `host`, the namespace of Python
floats:

- **the epoch's books**: `SCHEMA` declares each statistic once (its name,
  its reduction across steps and ranks, its empty value); `init`,
  `update`, `reject`, `merge`, `pack`, `unpack`, `reduce_packed`,
  `tallies`, `to_state` and `from_state` are derived from it;
- **the sample** for median and quantile discovery: `sampler`, `offer`,
  `write`, `merged`, `combine`, `quantile` (Algorithm L, its random state
  an explicit integer), and `decisions`, a full sample's next decisions made
  at once (those `offer` makes, for a holder that takes many values);
- **the chance multiplier**: `plan_step`, `discovery_step`, `chance_step`,
  `multiplier_step`, `weight` and `glide` over `ChanceState`.

An adapter holds the state (on its device, in its pytree) and calls these;
it never needs a private module.

Examples:
    >>> import numpy as np
    >>> from constraint_sched import functional as F
    >>> books = F.init(np, 1)
    >>> for kl in [12.0, float("nan"), 15.0]:
    ...     books = F.update(np, books, np.array([kl]), above=14.0, below=-np.inf)
    >>> [t.count for t in F.tallies(F.pack(np, books).tolist(), 1)[0]]
    [3]
"""

from constraint_sched._accumulator import HostBooks, Keep
from constraint_sched._counts import check_count
from constraint_sched._inputs import (
    REQUIRED,
    array_main,
    array_value,
    main_loss,
    per_example_mean,
    real_number,
)
from constraint_sched._reservoir import Reservoir
from constraint_sched._tally import Tally
from constraint_sched.functional._array_books import ArrayBooks
from constraint_sched.functional._books import (
    SCHEMA,
    Books,
    Reduction,
    Statistic,
    forget_nonfinite,
    from_state,
    init,
    layout,
    merge,
    pack,
    reduce_packed,
    reject,
    row_samples,
    tallies,
    to_state,
    unpack,
    update,
)
from constraint_sched.functional._chance import (
    MIN_SHARE,
    SPREAD_CLIP,
    ChanceState,
    Clock,
    StepPlan,
    chance_step,
    discovery_step,
    glide,
    initial_state,
    multiplier_step,
    plan_step,
    weight,
)
from constraint_sched.functional._namespace import (
    HostNamespace,
    host,
    namespace,
    ndtri,
    register_ndtri,
)
from constraint_sched.functional._sampler import (
    Decisions,
    Sampler,
    combine,
    decisions,
    merged,
    offer,
    quantile,
    sampler,
    seed_for,
    skip,
    splitmix64,
    write,
)

__all__ = [
    "MIN_SHARE",
    "REQUIRED",
    "SCHEMA",
    "SPREAD_CLIP",
    "ArrayBooks",
    "Books",
    "Decisions",
    "ChanceState",
    "Clock",
    "HostBooks",
    "HostNamespace",
    "Keep",
    "Reduction",
    "Reservoir",
    "Sampler",
    "Statistic",
    "StepPlan",
    "Tally",
    "array_main",
    "array_value",
    "chance_step",
    "check_count",
    "combine",
    "decisions",
    "discovery_step",
    "forget_nonfinite",
    "from_state",
    "glide",
    "host",
    "init",
    "initial_state",
    "layout",
    "main_loss",
    "merge",
    "merged",
    "multiplier_step",
    "namespace",
    "ndtri",
    "offer",
    "pack",
    "per_example_mean",
    "plan_step",
    "quantile",
    "real_number",
    "reduce_packed",
    "register_ndtri",
    "reject",
    "row_samples",
    "sampler",
    "seed_for",
    "skip",
    "splitmix64",
    "tallies",
    "to_state",
    "unpack",
    "update",
    "weight",
    "write",
]
