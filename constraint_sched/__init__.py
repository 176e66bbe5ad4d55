"""Schedule the bounds of training constraints from what the run observes.

Discover a bound from the data, hold it, squeeze it towards a target, and back
off when a squeeze hurts: one state machine driven by ``observe`` and
``advance_epoch``, usable from any optimizer that can read a bound.
"""

from constraint_sched._chance import (
    ChanceConstraint,
    ChanceMultiplier,
)
from constraint_sched._collection import (
    SchedulerCollection,
)
from constraint_sched._events import (
    BackedOff,
    Converged,
    Discovered,
    DiscoveryExtended,
    EpochStats,
    Event,
    Held,
    Idle,
    Settled,
    Squeezed,
)
from constraint_sched._feed import (
    Agreement,
    EpochFeed,
)
from constraint_sched._inputs import (
    Reduction,
)
from constraint_sched._phases import (
    Backoff,
    BackoffMetric,
    DiscoveryPhase,
    DiscoveryStatistic,
    HoldPhase,
    Phase,
)
from constraint_sched._readings import (
    Readings,
)
from constraint_sched._scheduler import (
    Callback,
    ConstraintScheduler,
    Count,
    NonFinite,
)
from constraint_sched._schedules import (
    Relative,
    ScheduleKind,
    SqueezeSchedule,
    Target,
)
from constraint_sched._spec import (
    Bound,
    ConstraintKind,
    ConstraintSpec,
    Side,
)
from constraint_sched._state import (
    FORMAT_VERSION,
)
from constraint_sched._tally import (
    Tally,
)
from constraint_sched._term import (
    ConstraintTerm,
    Echo,
    TermReadings,
)

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "Agreement",
    "BackedOff",
    "Backoff",
    "BackoffMetric",
    "Bound",
    "Callback",
    "ChanceConstraint",
    "ChanceMultiplier",
    "ConstraintKind",
    "ConstraintScheduler",
    "ConstraintSpec",
    "ConstraintTerm",
    "Converged",
    "Count",
    "Discovered",
    "DiscoveryExtended",
    "DiscoveryPhase",
    "DiscoveryStatistic",
    "Echo",
    "EpochFeed",
    "EpochStats",
    "Event",
    "Held",
    "Idle",
    "HoldPhase",
    "NonFinite",
    "Phase",
    "Readings",
    "Reduction",
    "Relative",
    "ScheduleKind",
    "SchedulerCollection",
    "Settled",
    "Side",
    "SqueezeSchedule",
    "Squeezed",
    "Tally",
    "Target",
    "TermReadings",
]
