"""Deprecated: the LBO-VAE trainer moved to `constraint_sched.adapters.lbo_vae`.

This old import path re-exports the new package's public names and warns
(`DeprecationWarning`) once, when it is first imported; it will be removed in
a later release. Import the trainer from `constraint_sched.adapters.lbo_vae`.
"""

import warnings

warnings.warn(
    "constraint_sched.adapters.torch.lbo_vae is deprecated: the LBO-VAE trainer moved to "
    "constraint_sched.adapters.lbo_vae; import it from there",
    DeprecationWarning,
    stacklevel=2,
)

from constraint_sched.adapters.lbo_vae import *  # noqa: E402, F403
from constraint_sched.adapters.lbo_vae import __all__ as __all__  # noqa: E402
