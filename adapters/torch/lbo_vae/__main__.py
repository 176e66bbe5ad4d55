"""Deprecated ``python -m constraint_sched.adapters.torch.lbo_vae``: the ``lbo-vae`` command."""

import warnings

from constraint_sched.adapters.lbo_vae._cli import main

warnings.warn(
    "python -m constraint_sched.adapters.torch.lbo_vae is deprecated: "
    "run python -m constraint_sched.adapters.lbo_vae (or lbo-vae) instead",
    DeprecationWarning,
    stacklevel=1,
)

raise SystemExit(main())
