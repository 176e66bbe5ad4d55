"""A plain numpy loop: least squares whose weights' squared norm is held under a scheduled ceiling.

``loss = mse + term(norm2, main=mse)`` at every step and ``term.epoch_end()``
at every epoch. The squared norm is one number per step, not a per-example
value, so the term is built with ``reduction="mean"``. Its gradient is
``term.weight`` times the norm's: the loop adds it to the data's gradient
itself. The weight is relative to the main loss (``mse`` here), so no number
in the loop depends on the data's units.
"""

from __future__ import annotations

import numpy as np

from constraint_sched import ConstraintTerm, Phase

rng = np.random.default_rng(0)
X = rng.normal(size=(512, 10))
y = X @ rng.normal(size=10) + 0.1 * rng.normal(size=512)  # the true weights' norm2 is about 10

TARGET = 2.0  # the squared norm the weights must end under
term = ConstraintTerm("norm2", target=TARGET, squeeze_epochs=3, reduction="mean", echo=print)
w = np.zeros(10)
for _epoch in range(10):
    norms = []
    for batch in np.array_split(rng.permutation(len(X)), 16):
        residual = X[batch] @ w - y[batch]
        norm2 = float(w @ w)
        norms.append(norm2)
        mse = float(residual @ residual) / len(batch)
        loss = mse + term(norm2, main=mse)  # the whole use, per step
        grad = 2 * X[batch].T @ residual / len(batch) + term.weight * 2 * w
        w -= 0.05 * grad
    term.epoch_end()  # per epoch: the bound moves, one line is printed

assert term.phase is Phase.CONVERGED
assert term.bound == TARGET
assert term.scheduler.discovered > 1.5 * TARGET  # found from the data: least squares alone
# SGD on batches of 32 makes the norm swing from step to step: the term aims it under the
# ceiling by about two of those swings, so that at most 5% of an epoch's steps cross it.
last = term.last_epoch
assert last is not None
assert last.violation_rate <= 0.1
assert 0.5 * TARGET < float(np.mean(norms)) < TARGET
