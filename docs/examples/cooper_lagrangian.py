"""A VAE on scikit-learn's digits under a KL ceiling: cooper's Lagrangian, a scheduled ceiling.

cooper solves ``min reconstruction s.t. KL <= ceiling`` by gradient descent on
the model and projected gradient ascent on one Lagrange multiplier. The
ceiling comes from a constraint_sched scheduler: epoch 1 trains without one
and records the largest KL, epoch 2 holds it, a geometric schedule squeezes it
to 40 nats in three epochs. The same problem runs three times, with three
signals for the multiplier's update: the relative gap ``(KL - ceiling) /
ceiling`` (the recommended one), the gap in nats, and the clipped
``spec.violation`` divided by the ceiling.
"""

from __future__ import annotations

import itertools
from typing import Literal

import cooper
import torch
from cooper.multipliers import DenseMultiplier
from cooper.optim import SimultaneousOptimizer
from sklearn.datasets import load_digits
from torch import nn

from constraint_sched import ConstraintScheduler, ConstraintSpec, Phase, SqueezeSchedule
from constraint_sched.adapters.torch import TorchScheduler

torch.set_num_threads(1)

KL_TARGET = 40.0  # nats per image: where the ceiling ends
EPOCHS = 9
BATCH = 64
LATENT = 64
SIGMA = 0.1  # the decoder's pixel noise: the reconstruction loss is in nats too
DUAL_LR = 0.05

X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1797 images, 8x8, in [0, 1]
N, D = X.shape

DualSignal = Literal["relative", "nats", "clipped"]


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction loss and KL, both in nats per image, as 0-d tensors."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        rec = (((self.decoder(z) - x) ** 2).sum(dim=-1) / (2 * SIGMA**2)).mean()
        kl = (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)).mean()
        return rec, kl


class CappedKL(cooper.ConstrainedMinimizationProblem):
    """Minimise the reconstruction loss subject to KL <= the scheduler's ceiling."""

    def __init__(self, sched: TorchScheduler, signal: DualSignal) -> None:
        super().__init__()
        self.sched = sched
        self.signal = signal
        self.kl_cap = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(num_constraints=1)
        )

    def compute_cmp_state(
        self, model: VAE, x: torch.Tensor, noise: torch.Tensor
    ) -> cooper.CMPState:
        rec, kl = model(x, noise)
        misc = {"kl": kl.detach()}
        if self.sched.phase_of("kl") is Phase.DISCOVERY:
            return cooper.CMPState(loss=rec, misc=misc)  # no ceiling yet: nothing to enforce
        ceiling = self.sched.bound_tensor("kl")  # a 0-d tensor, updated in place by advance_epoch
        gap = kl - ceiling  # signed, in nats, differentiable: what the model's step sees
        if self.signal == "relative":
            dual = gap.detach() / ceiling  # what the multiplier's step sees
        elif self.signal == "nats":
            dual = gap.detach()
        else:
            dual = self.sched.violation("kl", kl.detach()) / ceiling  # 0 under the ceiling
        state = cooper.ConstraintState(violation=gap, strict_violation=dual)
        return cooper.CMPState(loss=rec, observed_constraints={self.kl_cap: state}, misc=misc)


def build(signal: DualSignal) -> tuple[VAE, TorchScheduler, CappedKL, SimultaneousOptimizer]:
    torch.manual_seed(0)
    model = VAE()
    sched = TorchScheduler(
        ConstraintScheduler(
            ConstraintSpec("kl", "upper", margin=1e9),  # no ceiling (1e9) until discovery
            squeeze=SqueezeSchedule.geometric(target=KL_TARGET, epochs=3),
        )
    )
    cmp = CappedKL(sched, signal)
    optimizer = SimultaneousOptimizer(
        cmp,
        primal_optimizers=torch.optim.Adam(model.parameters(), lr=1e-2),
        # The multiplier ascends the Lagrangian: cooper refuses a dual optimizer without it.
        dual_optimizers=torch.optim.SGD(cmp.dual_parameters(), lr=DUAL_LR, maximize=True),
    )
    return model, sched, cmp, optimizer


def train(signal: DualSignal, *, verbose: bool) -> dict[str, float]:
    """Train once; return what the epochs at the target ceiling saw."""
    model, sched, cmp, optimizer = build(signal)
    data = torch.Generator().manual_seed(1)
    ratios: list[float] = []  # KL / ceiling of each step at the target
    multipliers: list[float] = []  # after each step
    for _ in range(EPOCHS):
        epoch, phase, ceiling = sched.epoch, sched.phase_of("kl"), sched.spec("kl").margin
        kls, recs, over = [], [], 0
        for batch in torch.randperm(N, generator=data).split(BATCH):
            noise = torch.randn(len(batch), LATENT, generator=data)
            rollout = optimizer.roll({"model": model, "x": X[batch], "noise": noise})
            kl = rollout.cmp_state.misc["kl"]
            sched.observe("kl", kl)
            kls.append(float(kl))  # read on the host for the printout; a GPU loop would not
            recs.append(float(rollout.loss.detach()))
            over += kls[-1] > ceiling
            multipliers.append(float(cmp.kl_cap.multiplier.weight.detach()[0]))
            if phase is Phase.CONVERGED:
                ratios.append(kls[-1] / ceiling)
        events = sched.advance_epoch()
        if verbose:
            print(
                f"epoch {epoch}  {phase.name:9s} ceiling {ceiling:8.3g}"
                f"  kl mean {sum(kls) / len(kls):5.1f} max {max(kls):5.1f}"
                f"  beyond {over:2d}/{len(kls)}  rec {sum(recs) / len(recs):6.1f}"
                f"  multiplier {multipliers[-1]:.2f}"
            )
            for event in events:
                print("   ", event.message)
    return {
        "discovered": sched.core.discovered,
        "final_ceiling": sched.spec("kl").margin,
        "steps": len(ratios),
        "over": sum(r > 1.0 for r in ratios),
        "over_5pct": sum(r > 1.05 for r in ratios),
        "max_ratio": max(ratios),
        "mean_ratio": sum(ratios) / len(ratios),
        "min_ratio": min(ratios),
        "max_multiplier": max(multipliers),
        "multiplier_fell": sum(b < a for a, b in itertools.pairwise(multipliers)),
        "last_rec": sum(recs) / len(recs),  # the last epoch's mean
    }


def summary(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:8s} beyond {r['over']:2.0f}/{r['steps']:.0f} (>5%: {r['over_5pct']:2.0f})"
        f"  kl/ceiling {r['min_ratio']:.2f}..{r['max_ratio']:.2f}, mean {r['mean_ratio']:.2f}"
        f"  multiplier max {r['max_multiplier']:4.2f}, fell {r['multiplier_fell']:3.0f}x"
        f"  rec {r['last_rec']:5.1f}"
    )


# Two mistakes cooper refuses: a dual optimizer that descends, a violation that is a float.
demo_model, _, demo_cmp, _ = build("relative")
descending = torch.optim.SGD(demo_cmp.dual_parameters(), lr=DUAL_LR)  # maximize=False
try:
    SimultaneousOptimizer(demo_cmp, torch.optim.Adam(demo_model.parameters()), descending)
except ValueError as error:
    print(f"dual SGD without maximize=True -> ValueError: {error}")
rec, kl = demo_model(X[:BATCH], torch.zeros(BATCH, LATENT))
as_float = cooper.ConstraintState(violation=kl.item() - 100.0)  # a Python float, not a tensor
try:
    cooper.CMPState(
        loss=rec, observed_constraints={demo_cmp.kl_cap: as_float}
    ).compute_primal_lagrangian()
except AttributeError as error:
    print(f"a float violation -> AttributeError: {error}")

print()
results = {"relative": train("relative", verbose=True)}
print()
results["nats"] = train("nats", verbose=False)
results["clipped"] = train("clipped", verbose=False)
print("at the target ceiling (epochs 5-9), by what the multiplier's update reads:")
for name, r in results.items():
    summary(name, r)

rel, nats, clipped = results["relative"], results["nats"], results["clipped"]
# The scheduler discovered a ceiling above the target and squeezed it there.
assert rel["discovered"] > 2 * KL_TARGET
assert rel["final_ceiling"] == KL_TARGET
# The relative gap holds the KL at the ceiling on average, within 5%...
assert abs(rel["mean_ratio"] - 1.0) < 0.05
assert rel["max_ratio"] < 1.4
# ...but it overshoots on many steps: a Lagrangian enforces the bound on average, not per step.
assert rel["over"] > rel["steps"] / 4
# The gap in nats, with the same learning rate, moves the multiplier tens of times further
# per step: it overreacts, pushes the KL far under the ceiling and reconstructs worse.
assert nats["max_multiplier"] > 3 * rel["max_multiplier"]
assert nats["min_ratio"] < 0.6 < rel["min_ratio"]
assert nats["last_rec"] > rel["last_rec"]
# The clipped violation is never negative: the multiplier can rise, never fall.
assert clipped["multiplier_fell"] == 0 < rel["multiplier_fell"]
