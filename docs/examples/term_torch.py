"""A VAE on scikit-learn's digits whose KL is held under a scheduled ceiling by one line.

``loss = reconstruction + term(kl)`` at every step and ``term.epoch_end()`` at
every epoch: the term discovers the KL's natural ceiling in epoch 1 (while it
weighs the KL by 1, the plain ELBO), holds it in epoch 2, squeezes it
geometrically to 8 nats in three epochs, and sets the KL's weight each step
so that at most 5% of the steps see the KL over the ceiling in force. No
other number is chosen: no healthy point, no floor, no rate for the weight.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from constraint_sched import Phase
from constraint_sched.adapters.torch import TorchConstraintTerm

torch.set_num_threads(1)

KL_TARGET = 8.0  # nats per image: where the ceiling ends (the plain ELBO's KL is about 20)
EPOCHS, BATCH, LATENT, SIGMA = 9, 64, 64, 0.1

X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1797 images, 8x8, in [0, 1]
N, D = X.shape


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's reconstruction loss (nats per image) and each image's KL, shape (batch,)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        rec = (((self.decoder(z) - x) ** 2).sum(dim=-1) / (2 * SIGMA**2)).mean()
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)  # per image
        return rec, kl


torch.manual_seed(0)
model = VAE()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
term = TorchConstraintTerm("kl", target=KL_TARGET, squeeze_epochs=3, echo=print)
data = torch.Generator().manual_seed(1)
for _epoch in range(EPOCHS):
    for batch in torch.randperm(N, generator=data).split(BATCH):
        rec, kl = model(X[batch], torch.randn(len(batch), LATENT, generator=data))
        loss = rec + term(kl)  # the whole use, per step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    term.epoch_end()  # per epoch: the bound moves, one line is printed

# The ceiling was found from the data and walked to the target.
assert term.phase is Phase.CONVERGED
assert term.bound == KL_TARGET
assert term.scheduler.discovered > 2 * KL_TARGET
# At the target the KL is held under the ceiling on (nearly) every step. Its margin is
# 1.645 times the KL's spread over the last ~50 steps: with 29 steps an epoch, that
# spread still holds some of the squeeze, so the KL sits lower than in a long run.
last = term.last_epoch
assert last is not None
assert last.violation_rate <= 0.1
assert 0.75 * KL_TARGET < term.torch_scheduler.last_means["kl"] < KL_TARGET
assert term.weight > 1.0  # the constraint only ever adds weight to the plain ELBO
