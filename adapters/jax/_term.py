"""`JaxConstraintTerm`: the core's `ConstraintTerm` as a pytree state and a jittable update."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import array_api_compat
import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from constraint_sched import (
    ConstraintTerm,
    Event,
    Phase,
    Relative,
    Tally,
    TermReadings,
)
from constraint_sched import functional as F

_OWNER = "JaxConstraintTerm"

# The array API has no special functions: the multiplier's normal quantile is JAX's.
F.register_ndtri(array_api_compat.array_namespace(jnp.zeros(0)).__name__, jax.scipy.special.ndtri)


class JaxTermState(NamedTuple):
    """A `JaxConstraintTerm`'s state between two epoch ends: a pytree of small arrays.

    Made by `JaxConstraintTerm.init` (and returned by every `JaxConstraintTerm.update`
    and `JaxConstraintTerm.epoch_end`); pass it through your jitted step as
    you pass an optimizer's state. Its numbers are in JAX's default float
    dtype: float32, or float64 with ``jax_enable_x64``.

    Examples:
        >>> import jax
        >>> state = JaxConstraintTerm("kl", target=5.0, echo=False).init()
        >>> float(state.bound), state.bound.dtype.name, len(jax.tree_util.tree_leaves(state))
        (inf, 'float32', 26)
    """

    chance: F.ChanceState[jax.Array]
    """The multiplier's numbers (its weight for the next step among them)."""
    books: dict[str, jax.Array]
    """The value's statistics since the last sync (`constraint_sched.functional.SCHEMA`)."""
    clock: F.Clock
    """The epoch's step counts and the last aim, from which each step's plan is made."""
    bound: jax.Array
    """The bound in force (``inf``, ``-inf`` for a floor, while it is discovered)."""
    upcoming: jax.Array
    """The bound the next epoch holds (the aim glides towards it during this one)."""
    limit: jax.Array
    """The scheduler's bound, beyond which the books count a violation (as the core's do)."""
    epoch: jax.Array
    """The term's epoch when this state was made (`JaxConstraintTerm.epoch_end` checks it)."""


class JaxConstraintTerm(TermReadings):
    """The core's `constraint_sched.ConstraintTerm` for JAX: a pytree state and a pure update.

    The same discovery, hold, squeeze and `constraint_sched.ChanceMultiplier`
    as the core's term, which it holds (`core`), in the explicit-state style
    of optax: `init` gives a `JaxTermState`, and `update` is a pure function
    of that state, the step's per-example values and its main loss, which
    returns the penalty to add to the loss and the next state. `update` runs
    inside ``jax.jit`` with no host callback: the multiplier's step
    (`constraint_sched.functional.multiplier_step`) and the epoch's books
    (`constraint_sched.functional.update`) are computed on the arrays of the
    state. Once per epoch, on the host, `epoch_end` reads the state (one
    transfer), merges its books into the core's scheduler, hands the
    multiplier's numbers to the core term, ends the core's epoch there (the
    bound moves, the epoch's line is printed) and returns a fresh state.

    The penalty is ``weight * mean(value)`` (negated for a floor) with the
    weight from the state before the step, under ``jax.lax.stop_gradient``:
    its gradient is the weight times the value's. ``main`` is read under
    ``stop_gradient`` too. A value or main loss that is not finite is counted
    in the books (as the scheduler counts it) and leaves the multiplier's
    numbers as they were.

    The term object is static: close over it in the jitted function (its
    settings are Python constants); only the state is traced, so a new epoch
    does not compile the step again. Discoveries that need the values
    themselves (``statistic="median"`` or ``"quantile"``) or that end within
    an epoch (``steps=``) are refused: they cannot run inside ``jax.jit``.

    Args:
        name: The value's name, for messages ("kl").
        target: The final ceiling (floor, with ``side="lower"``), per example:
            a number, or a `constraint_sched.Relative` fraction of what
            discovery finds.
        **options: The core term's other arguments, as for
            `constraint_sched.ConstraintTerm`: ``side``, ``squeeze_epochs``,
            ``alpha``, ``settings``, ``discovery`` (neither a median or
            quantile nor ``steps=``: they cannot run under ``jax.jit``),
            ``hold``, ``backoff``, ``reduction``, ``echo``.

    Raises:
        ValueError: A discovery that cannot run under ``jax.jit``, naming the
            argument; or what `constraint_sched.ConstraintTerm` refuses.
        TypeError: What `constraint_sched.ConstraintTerm` refuses.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> term = JaxConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
        >>> step = jax.jit(term.update)  # the term is static: closed over
        >>> state = term.init()
        >>> for i in range(20):
        ...     kl = jnp.full((32,), 12.0 + 0.1 * (i % 3))  # per example: shape (32,)
        ...     penalty, state = step(state, kl, 3.0)
        >>> float(penalty)  # discovery: the KL weighs nothing yet
        0.0
        >>> state, events = term.epoch_end(state)  # once per epoch, on the host
        >>> term.phase.name, round(term.bound, 3), [type(e).__name__ for e in events]
        ('HOLD', 12.2, ['Discovered', 'Held'])
    """

    def __init__(
        self,
        name: str = "kl",
        *,
        target: float | Relative,
        **options: Any,
    ) -> None:
        self.core = ConstraintTerm(name, target=target, **options)
        """The core term: the scheduler, the multiplier on the host, the epoch's lines."""
        found = self.core.scheduler.discovery
        if found.statistic in ("median", "quantile"):
            raise ValueError(
                f"{_OWNER}: discovery=DiscoveryPhase(statistic={found.statistic!r}) cannot run "
                "under jax.jit (it keeps a sample of the values on the host); use "
                "statistic='max' (the default) or 'min' for a floor, with headroom= or "
                "epochs= for a value that spikes early"
            )
        if found.steps is not None:
            raise ValueError(
                f"{_OWNER}: discovery=DiscoveryPhase(steps={found.steps!r}) cannot run under "
                "jax.jit (it ends discovery inside an epoch, which needs the host at that "
                "step); leave steps=None: discovery ends at an epoch end"
            )
        self._upper = self.core.multiplier.side == "upper"
        self._last_tally: Tally | None = None
        self._epoch_tally: Tally | None = None

    @property
    def weight(self) -> float:
        """The weight the next step applies, as of the last `epoch_end` or `sync` (a host float).

        0 while the bound is discovered. Inside a jitted step, read
        `weight_of` of the state instead.
        """
        return self.core.weight

    @property
    def last_tally(self) -> Tally | None:
        """The value's statistics over the last completed epoch (``last_tally.mean``), or None.

        Counted from the states this object's `sync` and `epoch_end` read (a
        state dict does not carry them).
        """
        return self._last_tally

    # -- the state ---------------------------------------------------------------

    def init(self) -> JaxTermState:
        """The state now: the core's multiplier numbers, step counts and bounds, as arrays.

        Returns:
            A `JaxTermState` in JAX's default float dtype (float32, or float64
            with ``jax_enable_x64``) with empty books.
        """
        core = self.core
        dtype = jnp.result_type(float)

        largest = float(np.finfo(dtype).max)

        def number(v: float) -> jax.Array:
            x = float(v)  # beyond the dtype's range (the spec's 1e300 in float32): infinite
            return jnp.asarray(math.copysign(math.inf, x) if abs(x) > largest else x, dtype=dtype)

        bound = core.bound
        upcoming = core.scheduler.upcoming_bound if math.isfinite(bound) else bound
        return JaxTermState(
            chance=F.ChanceState(*(number(v) for v in core.multiplier.state)),
            books=F.init(jnp, 1, dtype=dtype),
            clock=F.Clock(*(number(v) for v in core.clock)),
            bound=number(bound),
            upcoming=number(upcoming),
            limit=number(core.scheduler.bound),
            epoch=jnp.asarray(core.epoch, dtype=jnp.int32),
        )

    def weight_of(self, state: JaxTermState) -> jax.Array:
        """The weight the next `update` applies, a 0-d array (usable under ``jax.jit``).

        Args:
            state: The term's state.

        Returns:
            The weight, 0 while the bound is discovered.
        """
        return F.weight(jnp, state.chance)  # type: ignore[no-any-return]

    # -- the step ----------------------------------------------------------------

    def update(
        self, state: JaxTermState, value: Any, main: Any = F.REQUIRED
    ) -> tuple[jax.Array, JaxTermState]:
        """This step's penalty and the state after it; pure, for use inside ``jax.jit``.

        Args:
            state: The state before the step (from `init`, the last `update`
                or `epoch_end`).
            value: Per-example values, shape ``(batch,)`` (their mean is taken),
                or their mean (0-d) with ``reduction="mean"``.
            main: The step's main loss (the rest of the loss the penalty is
                added to): 0-d, or per-example losses (their mean is taken).
                Its level during discovery sets the weight's unit; it is not
                differentiated.

        Returns:
            The penalty to add to the loss, ``weight * mean(value)``
            (negated for a floor) in the value's dtype, and the next state.

        Raises:
            ValueError: A value or main loss of the wrong shape (at trace time).
            TypeError: No ``main``, or a value or main loss that is not real.
        """
        x = self._value(value)
        dtype = state.bound.dtype
        seen = jax.lax.stop_gradient(x).astype(dtype)
        loss = jax.lax.stop_gradient(self._main(main)).astype(dtype)
        sign = self.core.multiplier.sign
        weight = jax.lax.stop_gradient(F.weight(jnp, state.chance)).astype(x.dtype)
        plan, clock = F.plan_step(
            jnp, state.clock, state.bound, state.upcoming, sign, self.core.settings.glide
        )
        above, below = (state.limit, -math.inf) if self._upper else (math.inf, state.limit)
        books = F.update(jnp, state.books, jnp.reshape(seen, (1,)), above=above, below=below)
        chance = F.multiplier_step(jnp, state.chance, seen, loss, plan, self.core.settings)
        return sign * weight * x, state._replace(chance=chance, books=books, clock=clock)

    def _value(self, value: Any) -> jax.Array:
        """The step's value per example as a 0-d array (the mean of per-example values)."""
        owner = f"{_OWNER} {self.core.name!r}"
        x: jax.Array = F.array_value(_real(value, owner, "the value"), self.core.reduction, owner)
        return x

    def _main(self, main: Any) -> jax.Array:
        """The step's main loss as a 0-d array (the mean of per-example losses)."""
        owner = f"{_OWNER} {self.core.name!r}"
        if main is F.REQUIRED:
            F.main_loss(main, owner)  # raises the core's message
        m: jax.Array = F.array_main(_real(main, owner, "main"), owner)
        return m

    # -- the host, once per epoch ------------------------------------------------

    def sync(self, state: JaxTermState) -> JaxTermState:
        """Hand the steps a state holds to the core term, on the host; return the state to go on.

        The state's books are merged into the scheduler and the multiplier's
        numbers and step counts handed to `core` (one transfer), so that
        `state_dict` and `weight` see every step so far. Go on with the state
        returned (the books it held are now the scheduler's); the run goes on
        exactly as without the call. `epoch_end` does this itself.

        Args:
            state: The state from the last `update` (or `init`).

        Returns:
            The state to pass to the next `update`.

        Raises:
            ValueError: ``state`` was not made from this term's current state
                (an older one, or one already synced).
        """
        self._absorb(state)
        return self.init()

    def _absorb(self, state: JaxTermState) -> None:
        chance, clock, packed, epoch = jax.device_get(
            (state.chance, state.clock, F.pack(jnp, state.books), state.epoch)
        )
        core = self.core
        steps = round(float(clock.epoch_steps)) - int(core.clock.epoch_steps)
        if int(epoch) != core.epoch or steps < 0:
            raise ValueError(
                f"{_OWNER} {core.name!r}: state is from epoch {int(epoch)} after "
                f"{round(float(clock.epoch_steps))} steps, but the term is at epoch {core.epoch} "
                f"after {core.clock.epoch_steps}: pass the state the last update returned, and "
                "go on with the one epoch_end or sync returns"
            )
        (tally,), _ = F.tallies([float(v) for v in packed], 1)
        if tally.count != steps:
            raise ValueError(
                f"{_OWNER} {core.name!r}: state holds {tally.count} observations for {steps} "
                "steps: it was not made by this term's init, update, sync or epoch_end"
            )
        core.scheduler.merge(core.name, tally)
        numbers = F.ChanceState(*(float(v) for v in chance))
        core.absorb(numbers, steps=steps, last_aim=float(clock.last_aim))
        self._epoch_tally = tally if self._epoch_tally is None else self._epoch_tally + tally

    def epoch_end(self, state: JaxTermState) -> tuple[JaxTermState, list[Event]]:
        """End the epoch on the host: the bound moves, the budget resets, a line is printed.

        Reads the state once (`sync`), ends the core term's epoch
        (`constraint_sched.ConstraintTerm.epoch_end`) and starts the next.

        Args:
            state: The state from the epoch's last `update`.

        Returns:
            The state for the next epoch's first `update`, and the scheduler's
            events (also printed, with ``echo``).

        Raises:
            ValueError: ``state`` is not this term's current state (see
                `sync`), or the main loss's level at the end of discovery is
                not positive (the weight unit cannot be set).
        """
        self._absorb(state)
        events = self.core.epoch_end(advance=self._advance)
        self._last_tally, self._epoch_tally = self._epoch_tally, None
        return self.init(), events

    def _advance(self, *, log: bool) -> list[Event]:
        core = self.core
        events = core.scheduler.advance_epoch(log=log)
        if core.phase is not Phase.DISCOVERY and core.multiplier.state.seen:
            # The jitted steps set (or are about to set) the unit unchecked: check it once, here.
            owner = f"{_OWNER} {core.name!r}"
            core.multiplier.check_unit(math.isfinite(core.aim), math.nan, owner)
        return events

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The core term's state (plain data), as of the last `epoch_end` or `sync`.

        Save it right after `epoch_end`, or `sync` the current state first:
        steps run since then live only in the `JaxTermState`.
        """
        return self.core.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; on an error nothing changes. Then call `init` for the state.

        Raises:
            TypeError: Not a mapping.
            KeyError: A missing entry, named.
            ValueError: An invalid entry, named.
        """
        self.core.load_state_dict(state)
        self._epoch_tally = None

    def __repr__(self) -> str:
        return repr(self.core).replace("ConstraintTerm", _OWNER, 1)


def _real(value: Any, owner: str, what: str) -> jax.Array:
    """``value`` as a real floating array (integers in the default float dtype)."""
    try:
        x = jnp.asarray(value)
    except TypeError:
        x = None
    if x is None or not (
        jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
    ):
        kind = type(value).__name__ if x is None else str(x.dtype)
        raise TypeError(
            f"{owner}: {what} must be a real number or an array of real numbers, got {kind} "
            f"({value!r:.60})"
        )
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))
