"""A norm ceiling for least squares, discovered, held and squeezed in a plain numpy loop.

Minibatch gradient descent on a linear least-squares model. The weight norm
is a constraint whose ceiling nobody guesses: epoch 1 watches where the norm
goes, epoch 2 holds it there, then a geometric schedule squeezes it to 2.0.
The ceiling enters the loss as a barrier, ``-log(spec.score(norm))``, and a
step that would leave the ceiling (or move further past it) is rolled back
and counted with ``reject()``.
"""

import numpy as np

from constraint_sched import Backoff, ConstraintScheduler, ConstraintSpec, Phase, SqueezeSchedule

TARGET = 2.0  # the norm ceiling we want in the end
EPOCHS = 10
BATCH = 50
LR = 0.02
MU = 1.5  # weight of the barrier against the data term

rng = np.random.default_rng(0)
n, d = 1000, 20
X = rng.normal(size=(n, d))
w_true = 1.5 * rng.normal(size=d)  # norm about 6.6: the unconstrained fit is far outside
y = X @ w_true + 0.5 * rng.normal(size=n)

sched = ConstraintScheduler(
    # A norm cannot be negative (lower=0); 0.25 scores 1; no ceiling yet (1e9).
    ConstraintSpec("weight_norm", "box_asymmetric", lower=0.0, healthy=0.25, upper=1e9),
    squeeze=SqueezeSchedule.geometric(target=TARGET, epochs=4),
    backoff=Backoff(max_reject_rate=0.15),
)


def mse(w):
    return float(np.mean((X @ w - y) ** 2))


def barrier_slope(spec, r, h=1e-6):
    """d/dr of -log(spec.score(r)), by a central difference on the one-dimensional score."""
    lo, hi = spec.score(np.array([r - h, r + h]))
    return -(np.log(hi) - np.log(lo)) / (2 * h)


w = 0.1 * rng.normal(size=d)
for _ in range(EPOCHS):
    spec = sched.spec()  # the bound only moves in advance_epoch: one spec per epoch
    for batch in np.split(rng.permutation(n), n // BATCH):
        Xb, yb = X[batch], y[batch]
        r = np.linalg.norm(w)
        grad = 2 * Xb.T @ (Xb @ w - yb) / len(batch)
        grad += MU * barrier_slope(spec, r) * w / r
        proposal = w - LR * grad
        r_new = np.linalg.norm(proposal)
        if spec.violation(r_new) > spec.violation(r):  # would leave the ceiling: roll back
            sched.reject()
            continue
        w = proposal
        sched.observe(r_new)

    seen = sched.current_epoch
    events = sched.advance_epoch()
    print(
        f"epoch {seen.epoch:2d} {seen.phase.name:9s} ceiling {seen.bound:10.4g}  "
        f"norm {np.linalg.norm(w):.3f}  mse {mse(w):6.2f}  "
        f"rejected {seen.rejects:2d}/{seen.steps + seen.rejects}  "
        f"beyond ceiling {seen.violations:2d}"
    )
    for event in events:
        print("   ", event.message)

# The best any weight vector of norm <= TARGET can do: ridge regression whose
# penalty is tuned (by bisection) so that the solution's norm is TARGET.
lo, hi = 0.0, 1e6
for _ in range(200):
    lam = 0.5 * (lo + hi)
    w_ridge = np.linalg.solve(X.T @ X / n + lam * np.eye(d), X.T @ y / n)
    lo, hi = (lam, hi) if np.linalg.norm(w_ridge) > TARGET else (lo, lam)
print(f"final norm {np.linalg.norm(w):.3f}, mse {mse(w):.2f}")
print(f"best mse of any weights with norm <= {TARGET}: {mse(w_ridge):.2f}")

assert sched.discovered > TARGET  # found from the data, not guessed
assert sched.phase is Phase.CONVERGED
assert sched.bound == TARGET
assert np.linalg.norm(w) <= TARGET  # the metric ends within the target
assert sched.last_epoch.violations == 0  # no accepted step beyond the ceiling
assert mse(w) < 1.15 * mse(w_ridge)  # and close to the best the constraint allows
