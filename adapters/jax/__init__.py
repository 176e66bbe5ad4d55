"""The JAX adapter: the one-line term as a pytree state and a pure update, usable in ``jax.jit``.

Everything here needs JAX (``pip install "constraint-sched[jax]"``); the
scheduling and the multiplier's maths are the core's
(`constraint_sched.ConstraintTerm`, `constraint_sched.functional`), which this
adapter runs on JAX arrays.

- `JaxConstraintTerm`: ``penalty, state = term.update(state, kl, recon)``
  inside a jitted step, ``state, events = term.epoch_end(state)`` once per
  epoch on the host.
- `JaxTermState`: the term's state, a pytree of small arrays.
"""

try:
    import jax as _jax  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a jax-free venv
    raise ImportError(
        "constraint_sched.adapters.jax needs JAX, which is not installed; "
        'install it with: pip install "constraint-sched[jax]"'
    ) from error

from constraint_sched.adapters.jax._term import (
    JaxConstraintTerm,
    JaxTermState,
)

__all__ = [
    "JaxConstraintTerm",
    "JaxTermState",
]
