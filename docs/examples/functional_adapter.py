"""Your own adapter over `constraint_sched.functional`: the term's books and multiplier on arrays.

What `TorchConstraintTerm` and the JAX term do, written for numpy arrays: the
epoch's books and the multiplier's numbers live in the loop's own arrays and
are stepped by the pure functions; the host keeps the counts (`term.plan()`)
and, once per epoch, merges the books into the scheduler and ends the epoch.
A toy model stands in for the training: its KL relaxes towards
``12 / (1 + weight)**0.7`` nats per example, halfway each step.
"""

import array_api_compat
import numpy as np

from constraint_sched import ConstraintTerm, Relative
from constraint_sched import functional as F

xp = array_api_compat.array_namespace(np.zeros(0))  # any array API namespace will do
term = ConstraintTerm("kl", target=Relative(0.5), squeeze_epochs=3)
rng = np.random.default_rng(0)
level, main = 12.0, 3.0

for _epoch in range(6):
    books = F.init(xp, 1)  # one slot: the KL
    state = F.ChanceState(*(np.asarray(v) for v in term.multiplier.state))
    for _step in range(60):
        weight = float(F.weight(xp, state))  # the weight this step applies
        level += (12.0 / (1.0 + weight) ** 0.7 - level) / 2.0
        kl = xp.asarray(rng.normal(level, 0.3, size=32).mean())  # the batch's mean KL
        bound = term.bound  # inf while discovering
        books = F.update(xp, books, xp.reshape(kl, (1,)), above=bound, below=-np.inf)
        state = F.multiplier_step(xp, state, kl, xp.asarray(main), term.plan(), term.settings)
    (tally,), rejects = F.tallies(F.pack(xp, books).tolist(), 1)
    term.scheduler.merge(tally)  # the epoch's books, as if observed one by one
    term.multiplier.set_state(state)  # the numbers, back on the host
    term.epoch_end()  # prints the epoch's line

print(f"phase {term.phase.name}, bound {term.bound:.3g}, last epoch's mean KL {tally.mean:.3g}")
assert term.phase.name == "CONVERGED"
assert tally.mean < term.bound  # the KL was held under the squeezed ceiling
