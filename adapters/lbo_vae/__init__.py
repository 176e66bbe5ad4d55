"""The bundled LBO-VAE trainer: data, model, goal table, objective, step, schedulers, logs.

A convolutional VAE whose latent splits into a core (structure) and a detail
(appearance) half, trained with the LBO log-barrier objective; its KL ceiling
and its ``auto`` scales are scheduled by `constraint_sched` through the PyTorch
adapter, `constraint_sched.adapters.torch`, which it uses as any other program
would. Needs the ``trainer`` extra (``pip install "constraint-sched[trainer]"``);
the command line is ``lbo-vae`` (`main`), also ``python -m
constraint_sched.adapters.lbo_vae``.
"""

from constraint_sched.adapters.lbo_vae._cli import (
    main,
)
from constraint_sched.adapters.lbo_vae._config import (
    SEED_TABLE,
    TrainConfig,
    load_config,
)
from constraint_sched.adapters.lbo_vae._data import (
    digits,
    folder,
)
from constraint_sched.adapters.lbo_vae._data import (
    load as load_images,
)
from constraint_sched.adapters.lbo_vae._data import (
    split as split_images,
)
from constraint_sched.adapters.lbo_vae._disentanglement import (
    DCIScores,
    FactorMatrix,
    dci,
    evaluate_split,
    factor_matrix,
    mig,
    split_scores,
)
from constraint_sched.adapters.lbo_vae._goals import (
    Goal,
    GoalInputs,
    Metric,
    compute,
    default_goals,
    group_tree,
    met_levels,
)
from constraint_sched.adapters.lbo_vae._images import (
    ImageSet,
)
from constraint_sched.adapters.lbo_vae._model import (
    LBOVAE,
    ModelConfig,
    PatchDiscriminator,
    VAEOutput,
    build,
    count_parameters,
)
from constraint_sched.adapters.lbo_vae._schedules import (
    build_schedulers,
)
from constraint_sched.adapters.lbo_vae._shapes import (
    render,
    render_mask,
    shape_recovery,
    shapes,
    swap_scores,
)
from constraint_sched.adapters.lbo_vae._step import (
    Recheck,
    Stepper,
    StepResult,
)
from constraint_sched.adapters.lbo_vae._train import (
    Printer,
    Run,
    evaluate_heldout,
    load_data,
)

__all__ = [
    "DCIScores",
    "FactorMatrix",
    "LBOVAE",
    "SEED_TABLE",
    "Goal",
    "GoalInputs",
    "ImageSet",
    "Metric",
    "ModelConfig",
    "PatchDiscriminator",
    "Printer",
    "Run",
    "StepResult",
    "Recheck",
    "Stepper",
    "TrainConfig",
    "VAEOutput",
    "build",
    "build_schedulers",
    "compute",
    "count_parameters",
    "dci",
    "default_goals",
    "digits",
    "evaluate_heldout",
    "evaluate_split",
    "factor_matrix",
    "folder",
    "group_tree",
    "load_config",
    "load_data",
    "load_images",
    "main",
    "met_levels",
    "mig",
    "render",
    "render_mask",
    "shape_recovery",
    "shapes",
    "split_images",
    "split_scores",
    "swap_scores",
]
