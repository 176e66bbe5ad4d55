"""A VAE on scikit-learn's digits, its KL weight a multiplicative multiplier, its ceiling scheduled.

Plain PyTorch, no constrained-optimization library. The loss is
``reconstruction + lam * KL``; after each step the weight is multiplied by
``exp(RATE * (KL - ceiling) / ceiling)``: it grows while the KL is above the
ceiling and shrinks while it is below, as GECO's multiplier does. The ceiling
comes from a constraint_sched scheduler: epoch 1 trains on the reconstruction
alone and records the largest KL, epoch 2 holds it, a geometric schedule
squeezes it to 40 nats in three epochs. A second run reacts ten times faster.
"""

from __future__ import annotations

import itertools

import torch
from sklearn.datasets import load_digits
from torch import nn

from constraint_sched import ConstraintScheduler, ConstraintSpec, EpochStats, Phase, SqueezeSchedule
from constraint_sched.adapters.torch import TorchScheduler

torch.set_num_threads(1)

KL_TARGET = 40.0  # nats per image: where the ceiling ends
EPOCHS = 9
BATCH = 64
LATENT = 64
SIGMA = 0.1  # the decoder's pixel noise: the reconstruction loss is in nats too
RATE = 0.1  # how fast the weight reacts to a relative excess
FAST_RATE = 1.0  # ten times faster, for comparison
LAM_INIT, LAM_MIN, LAM_MAX = 0.1, 1e-3, 100.0  # the KL's weight: start, floor, cap

History = list[tuple[EpochStats, float, list[float]]]  # per epoch: stats, mean KL, weights

X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1797 images, 8x8, in [0, 1]
N, D = X.shape


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


def train(rate: float, *, verbose: bool) -> tuple[History, float]:
    """Train once; return each epoch's stats, mean KL and weights, and the discovered ceiling."""
    torch.manual_seed(0)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = TorchScheduler(
        ConstraintScheduler(
            ConstraintSpec("kl", "upper", margin=1e9),  # no ceiling (1e9) until discovery
            squeeze=SqueezeSchedule.geometric(target=KL_TARGET, epochs=3),
        )
    )
    ceiling = sched.bound_tensor("kl")  # a 0-d tensor, updated in place by advance_epoch
    lam = torch.tensor(LAM_INIT)  # a tensor: the loop never reads it to train
    data = torch.Generator().manual_seed(1)
    history: History = []
    for _ in range(EPOCHS):
        phase = sched.phase_of("kl")  # a host value; it only changes in advance_epoch
        weights = []
        for batch in torch.randperm(N, generator=data).split(BATCH):
            rec, kl = model(X[batch], torch.randn(len(batch), LATENT, generator=data))
            # No ceiling during discovery: the reconstruction alone.
            loss = rec if phase is Phase.DISCOVERY else rec + lam * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if phase is not Phase.DISCOVERY:
                with torch.no_grad():  # the multiplicative update, on the relative excess
                    excess = (kl.detach() - ceiling) / ceiling
                    lam = (lam * torch.exp(rate * excess)).clamp(LAM_MIN, LAM_MAX)
            sched.observe("kl", kl)  # also counted as beyond the ceiling in force, or not
            weights.append(float(lam))  # read on the host for the printout; a GPU loop would not

        events = sched.advance_epoch()
        seen = sched.core.last_epoch  # the epoch's phase, bound, steps and violations
        mean, top = sched.last_means["kl"], sched.last_tallies["kl"].maximum
        history.append((seen, mean, weights))
        if verbose:
            print(
                f"epoch {seen.epoch}  {seen.phase.name:9s} ceiling {seen.bound:8.3g}"
                f"  kl mean {mean:5.1f} max {top:5.1f}  beyond {seen.violations:2d}/{seen.steps}"
                f"  weight {min(weights):.3f}..{max(weights):.3f}"
            )
            for event in events:
                print("   ", event.message)
    assert float(ceiling) == KL_TARGET  # the same tensor, squeezed in place
    return history, sched.core.discovered


history, discovered = train(RATE, verbose=True)
fast, _ = train(FAST_RATE, verbose=False)


def at_target(run: History) -> str:
    means = ", ".join(f"{mean:.1f}" for seen, mean, _ in run if seen.phase is Phase.CONVERGED)
    weights = [w for seen, _, ws in run if seen.phase is Phase.CONVERGED for w in ws]
    return f"mean kl by epoch {means}; weight {min(weights):.3f}..{max(weights):.2f}"


print(f"\nat the {KL_TARGET:g}-nat ceiling (epochs 5-9), rate {RATE}: {at_target(history)}")
print(f"at the {KL_TARGET:g}-nat ceiling (epochs 5-9), rate {FAST_RATE}: {at_target(fast)}")

phases = [seen.phase for seen, _, _ in history]
assert phases == [Phase.DISCOVERY, Phase.HOLD, Phase.SQUEEZE, Phase.SQUEEZE] + [Phase.CONVERGED] * 5
assert discovered > 2 * KL_TARGET  # found from the data, not guessed
# The KL follows the ceiling down, an epoch behind: most steps of each squeezed epoch
# are beyond the new ceiling; from the second epoch at the target, each epoch's mean KL
# is within 5% of it.
for seen, _, _ in history[2:4]:
    assert seen.violations > 0.8 * seen.steps
for seen, mean, _ in history[5:]:
    assert abs(mean / seen.bound - 1.0) < 0.05
# The weight rose from its start to hold the KL back, and came down again once it had.
weights = history[-1][2]
assert max(w for _, _, ws in history for w in ws) > 4 * LAM_INIT
assert any(b < a for a, b in itertools.pairwise(weights))
# Ten times the rate compounds: the weight swings over three orders of magnitude and
# some epoch at the target ends far under the ceiling.
fast_weights = [w for seen, _, ws in fast if seen.phase is Phase.CONVERGED for w in ws]
assert max(fast_weights) > 1000 * min(fast_weights)
assert min(mean for seen, mean, _ in fast if seen.phase is Phase.CONVERGED) < 0.25 * KL_TARGET
