"""A Lightning VAE whose KL ceiling is discovered, held and squeezed by ConstraintCallback.

The module logs its KL with ``self.log`` and reads the ceiling in force from
the callback, which it builds itself and hands to Lightning through
``configure_callbacks``. Epoch 1 discovers the ceiling (the largest KL), epoch
2 holds it, a geometric schedule squeezes it to the target in two epochs. A
second run stops after epoch 2, resumes from Lightning's checkpoint and ends
exactly where the uninterrupted run ended.
"""

import logging
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from constraint_sched import ConstraintScheduler, ConstraintSpec, Phase, SqueezeSchedule
from constraint_sched.adapters.lightning import ConstraintCallback

# Not this example's concern: Lightning 2.6 warns about its own use of an API that recent
# torch deprecates, and about loaders without worker processes; its banner is quietened.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

KL_TARGET = 2.0  # nats per sample: where the ceiling ends
EPOCHS = 4

# Synthetic data: 512 points in 16 dimensions near a 4-dimensional manifold, and the
# reparameterisation noise of each point, drawn once: a resumed run sees the same values.
torch.manual_seed(0)
N, D, LATENT = 512, 16, 4
X = torch.tanh(torch.randn(N, LATENT) @ torch.randn(LATENT, D)) + 0.05 * torch.randn(N, D)
DATA = DataLoader(TensorDataset(X, torch.randn(N, LATENT)), batch_size=32)


class VAE(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 32), nn.ReLU(), nn.Linear(32, D))
        # The module builds its callback: training_step reaches it as self.constraints.
        self.constraints = ConstraintCallback(
            ConstraintScheduler(
                # A floor of 0.05 nats, 1.0 is healthy, no ceiling (1e9) until discovery sets one.
                ConstraintSpec("kl", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9),
                squeeze=SqueezeSchedule.geometric(target=KL_TARGET, epochs=2),
            )
        )
        self.history = []  # (epoch, phase, ceiling) after each epoch end, for the printout

    def configure_callbacks(self):
        return [self.constraints]  # Lightning adds it to the trainer's callbacks

    def training_step(self, batch, batch_idx):
        x, noise = batch
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        mse = ((self.decoder(z) - x) ** 2).mean()
        kl = (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)).mean()
        self.log("kl", kl)  # what the callback observes (on the device, no host read)
        self.log("mse", mse)
        ceiling = self.constraints.bound_tensor("kl")  # a cached tensor on this module's device
        return mse + 0.01 * kl + 10.0 * torch.relu(kl - ceiling)

    def on_train_epoch_end(self):
        # Lightning calls the module's hook after the callbacks': the bound has moved.
        for event in self.constraints.last_events:
            print("   ", event.message)
        epoch = self.constraints.scheduler.epoch - 1
        kl = self.constraints.scheduler.last_means["kl"]
        phase, ceiling = self.constraints.phase_of("kl"), self.constraints.spec("kl").upper
        print(f"epoch {epoch}  mean kl {kl:5.2f}  ->  {phase.name:9} ceiling {ceiling:8.3g}")
        self.history.append((epoch, phase, ceiling))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def fit(epochs, checkpoints, ckpt_path=None):
    """A fresh model trained to ``epochs``, saving last.ckpt in ``checkpoints`` at every epoch."""
    torch.manual_seed(1)  # the same initial weights for every run
    model = VAE()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True)],
    )
    trainer.fit(model, DATA, ckpt_path=ckpt_path)
    return model


with tempfile.TemporaryDirectory() as tmp:
    print("uninterrupted:")
    full = fit(EPOCHS, Path(tmp, "full"))
    print("stopped after epoch 2:")
    fit(2, Path(tmp, "parts"))
    print("resumed from its last checkpoint:")
    resumed = fit(EPOCHS, Path(tmp, "parts"), ckpt_path=Path(tmp, "parts", "last.ckpt"))

phases = [phase for _, phase, _ in full.history]
assert phases == [Phase.HOLD, Phase.SQUEEZE, Phase.CONVERGED, Phase.CONVERGED]
discovered = full.constraints.scheduler.core.discovered
assert discovered > KL_TARGET  # found from the data, not guessed
assert full.constraints.spec("kl").upper == KL_TARGET
assert full.constraints.bound_tensor("kl").item() == KL_TARGET  # the tensor training_step reads
# The resumed run went through epochs 3 and 4 only, and ended where the full run did.
assert resumed.history == full.history[2:]
assert resumed.constraints.state_dict() == full.constraints.state_dict()
