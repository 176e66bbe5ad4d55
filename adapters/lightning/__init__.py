"""The PyTorch Lightning adapter: schedule bounds from the values a LightningModule logs.

Everything here needs Lightning (``pip install "constraint-sched[lightning]"``);
the scheduling itself is the core's, fed through
`constraint_sched.adapters.torch.TorchScheduler`.

- `ConstraintCallback`: a ``lightning.pytorch.Callback`` that observes the
  logged training-step values without waiting on the device, advances the
  schedulers at the end of each training epoch (in agreement across DDP
  ranks), hands the bounds to the module as cached tensors, and rides in
  Lightning's checkpoints.
"""

try:
    import lightning.pytorch as _pl  # noqa: F401
except ImportError as error:
    raise ImportError(
        "constraint_sched.adapters.lightning needs PyTorch Lightning (the `lightning` "
        "package), which is not installed; install it with: "
        'pip install "constraint-sched[lightning]"'
    ) from error

from constraint_sched.adapters.lightning._callback import (
    ConstraintCallback,
)

__all__ = [
    "ConstraintCallback",
]
