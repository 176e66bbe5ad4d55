"""The home page's quick start: a plain VAE loop, and the lines that add the term.

A small VAE on scikit-learn's digits (bundled with scikit-learn: nothing is
downloaded) with a per-pixel mean squared error, as most image-VAE code
writes it. The plain loop adds ``beta * kl.mean()`` with a beta someone has
to guess; with the term, the KL's ceiling is found in epoch 1, held in epoch
2 and squeezed to a quarter of what was found over three epochs, and the
KL's weight follows from the reconstruction's own size. Needs
``pip install "constraint-sched[torch,digits]"``.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from constraint_sched import Relative
from constraint_sched.adapters.torch import TorchConstraintTerm

torch.manual_seed(0)
torch.set_num_threads(1)
X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1797 images of 8x8 in [0, 1]


class VAE(nn.Module):
    """An MLP VAE: the batch's per-pixel MSE and each image's KL (shape ``(batch,)``)."""

    def __init__(self, pixels: int = 64, latent: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, pixels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = F.mse_loss(self.decoder(z), x)  # a per-pixel mean
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)  # nats per image
        return recon, kl


model = VAE()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
term = TorchConstraintTerm("kl", target=Relative(0.25), squeeze_epochs=3)
for _epoch in range(7):
    for batch in torch.randperm(len(X)).split(32):
        recon, kl = model(X[batch])
        loss = recon + term(kl, main=recon)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    term.epoch_end()

print(f"ceiling {term.bound:.3g} = a quarter of the {term.scheduler.discovered:.3g} found")
