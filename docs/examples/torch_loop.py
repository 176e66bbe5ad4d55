"""A small VAE trained by the LBO objective, its KL ceiling and MSE scale set by schedulers.

Epoch 1 trains on plain MSE and watches two metrics: the median MSE becomes
the scale of the reconstruction goal, the largest KL the ceiling of the latent
goal. From epoch 2 the loss is LBO's ``-log(min group)`` over both goals, the
ceiling is held, then squeezed to its target in two epochs. Every step is
checked after it is taken and rolled back if it broke the objective. The end
saves a checkpoint and loads it back with ``weights_only=True``.
"""

import os
import tempfile

import torch
from torch import nn

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import LBOObjective, RollbackGuard, TorchScheduler

KL_TARGET = 3.0  # nats per sample: where the ceiling ends
EPOCHS = 4
BATCH = 32

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)

# Synthetic data: 512 points in 16 dimensions that lie near a 4-dimensional manifold.
N, D, LATENT = 512, 16, 4
X = (torch.tanh(torch.randn(N, LATENT) @ torch.randn(LATENT, D)) + 0.05 * torch.randn(N, D)).to(
    device
)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, x, noise):
        """The batch's two metrics, as 0-d tensors: reconstruction MSE and KL per sample."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        mse = ((self.decoder(z) - x) ** 2).mean()
        kl = (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)).mean()
        return mse, kl


def build():
    """The model, its optimizer and the schedulers, as every (re)start of training builds them."""
    model = VAE().to(device)
    # fused=True keeps Adam's step counter on the parameters' device: on a GPU,
    # RollbackGuard.restore_if can then undo a step without reading the flag.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    kl_ceiling = ConstraintScheduler(
        # A floor of 0.05 nats, 1.0 scores 1, no ceiling (1e9) until discovery sets one.
        ConstraintSpec("kl", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9),
        squeeze=SqueezeSchedule.geometric(target=KL_TARGET, epochs=2),
    )
    mse_scale = ConstraintScheduler(
        # score = exp(-mse / scale); the scale is the median MSE of epoch 1.
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="median"),
    )
    sched = TorchScheduler(SchedulerCollection([kl_ceiling, mse_scale]))
    return model, optimizer, sched


model, optimizer, sched = build()
guard = RollbackGuard(model, optimizer)
lbo = LBOObjective({"reconstruction": ["mse"], "latent": ["kl"]})


def objective(mse, kl):
    """The step's loss and reject flag, both 0-d tensors on the device."""
    if sched.phase_of("mse") is Phase.DISCOVERY:
        # The MSE scale is still being discovered: train on plain MSE meanwhile.
        return mse, ~torch.isfinite(mse)
    # Goal scores from the cached bound tensors: a moved bound needs no recompile.
    result = lbo({"mse": sched.score("mse", mse), "kl": sched.score("kl", kl)})
    return result.loss, result.reject


ceiling = sched.bound_tensor("kl", device=device)  # a 0-d tensor, updated in place every epoch
history = []
for _ in range(EPOCHS):
    # Read on the host: the spec with the bound in force (reading `ceiling` would sync).
    seen = (sched.epoch, sched.phase_of("kl"), sched.phase_of("mse"), sched.spec("kl").upper)
    for batch in torch.randperm(N, device=device).split(BATCH):
        x, noise = X[batch], torch.randn(len(batch), LATENT, device=device)
        guard.snapshot()
        loss, _ = objective(*model(x, noise))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the updated model, again on the same batch and noise
            mse, kl = model(x, noise)
            _, reject = objective(mse, kl)
        guard.restore_if(reject)  # undo the step where reject is True, on the device
        sched.observe({"mse": mse, "kl": kl}, accepted=~reject)
        sched.reject(reject)

    events = sched.advance_epoch()  # the epoch's one synchronisation
    history.append(seen)
    epoch, kl_phase, mse_phase, kl_bound = seen
    means, rejected = sched.last_means, sched.core["kl"].last_epoch.rejects
    print(
        f"epoch {epoch}  kl {kl_phase.name:9s} ceiling {kl_bound:8.3g}  mean kl {means['kl']:5.2f}"
        f"  |  mse {mse_phase.name:9s} mean {means['mse']:.3f}  |  rejected {rejected}"
    )
    for event in events:
        print("   ", event.message)

# The phases moved as configured: discover, hold, squeeze, converge.
kl_phases, mse_phases = [seen[1] for seen in history], [seen[2] for seen in history]
assert kl_phases == [Phase.DISCOVERY, Phase.HOLD, Phase.SQUEEZE, Phase.CONVERGED]
assert mse_phases == [Phase.DISCOVERY, Phase.HOLD, Phase.CONVERGED, Phase.CONVERGED]
discovered = sched.core["kl"].discovered
assert discovered > KL_TARGET  # found from the data, not guessed
assert history[1][3] == discovered  # epoch 2 held the ceiling discovery found
assert KL_TARGET < history[2][3] < discovered  # epoch 3 squeezed it
assert history[3][3] == KL_TARGET == float(ceiling)  # the same tensor, updated in place
assert sched.spec("mse").scale == sched.core["mse"].discovered  # the median MSE of epoch 1
assert sched.last_means["kl"] < KL_TARGET  # the last epoch's KL kept under the target

# A checkpoint at the epoch boundary: plain tensors and plain data only.
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "checkpoint.pt")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "constraints": sched.state_dict(),
        },
        path,
    )
    checkpoint = torch.load(path, weights_only=True, map_location=device)

model2, optimizer2, sched2 = build()  # built as before, then given the saved state
model2.load_state_dict(checkpoint["model"])
optimizer2.load_state_dict(checkpoint["optimizer"])
sched2.load_state_dict(checkpoint["constraints"])
assert sched2.state_dict() == sched.state_dict()
assert (sched2.epoch, sched2.phase_of("kl"), sched2.bound_of("kl")) == (5, Phase.CONVERGED, 3.0)
resumed = f"kl ceiling {sched2.spec('kl').upper:g}, mse scale {sched2.spec('mse').scale:.3f}"
print(f"resumed at epoch {sched2.epoch}: {resumed}")
