"""A VAE on scikit-learn's digits whose KL is held under a scheduled ceiling by one line.

``loss = reconstruction + term(kl, main=reconstruction)`` at every step and
``term.epoch_end()`` at every epoch. The reconstruction is a per-pixel mean
squared error, as most image-VAE code writes it: the term weighs the KL
relative to it, so a per-image sum (64 times larger) or any other scale gives
the same run. The term discovers the KL's natural ceiling in epoch 1 (while
it weighs the KL by 0: the model trains on its reconstruction alone), holds
it in epoch 2, squeezes it geometrically to a quarter of what it found in
three epochs, and sets the KL's weight each step so that at most 5% of each
epoch's steps see the KL over the ceiling in force. No other number is
chosen: no starting weight, no healthy point, no rate for the weight.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from constraint_sched import Phase, Relative
from constraint_sched.adapters.torch import TorchConstraintTerm

torch.set_num_threads(1)

EPOCHS, BATCH, LATENT = 9, 32, 16

X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1797 images, 8x8, in [0, 1]
N, D = X.shape


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's per-pixel mean squared error and each image's KL, shape (batch,)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        recon = F.mse_loss(self.decoder(z), x)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)  # nats per image
        return recon, kl


torch.manual_seed(0)
model = VAE()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
term = TorchConstraintTerm("kl", target=Relative(0.25), squeeze_epochs=3, echo=print)
data = torch.Generator().manual_seed(1)
for _epoch in range(EPOCHS):
    for batch in torch.randperm(N, generator=data).split(BATCH):
        recon, kl = model(X[batch], torch.randn(len(batch), LATENT, generator=data))
        loss = recon + term(kl, main=recon)  # the whole use, per step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    term.epoch_end()  # per epoch: the bound moves, one line is printed

# The ceiling was found from the data and walked to a quarter of it.
found = term.scheduler.discovered
assert found is not None
assert term.phase is Phase.CONVERGED
assert term.bound == 0.25 * found
# In every epoch after discovery, at most 5% of the steps saw the KL over the ceiling, and at
# the target the KL sits under it by the margin the chance constraint needs.
last = term.last_epoch
assert last is not None
assert last.violation_rate <= 0.05
assert 0.75 * term.bound < term.torch_scheduler.last_means["kl"] < term.bound
