"""The score of each constraint kind, its continuity at a box's bounds, and violation().

Prints each kind's score at a few values, then compares the box score near a
bound with the original, discontinuous one, and checks the properties the
scores promise.
"""

import math

import numpy as np

from constraint_sched import ConstraintSpec

specs = [
    ConstraintSpec("upper", "upper", margin=10.0),
    ConstraintSpec("lower", "lower", margin=10.0),
    ConstraintSpec("box", "box", lower=0.0, upper=10.0),
    ConstraintSpec("asym", "box_asymmetric", lower=0.0, healthy=2.0, upper=10.0),
    ConstraintSpec("soft", "minimize_soft", scale=10.0),
    ConstraintSpec("hard", "minimize_hard", scale=10.0),
]
xs = np.array([-1.0, 0.0, 2.0, 5.0, 9.0, 10.0, 11.0, 20.0])
print("x:      " + " ".join(f"{x:7.1f}" for x in xs))
for spec in specs:
    print(f"{spec.name:7s} " + " ".join(f"{s:7.4f}" for s in spec.score(xs)))


def original_box_score(x, lower, upper, k=20.0):
    """The original BOX score: 1 - d inside, exp(-k (d - 1)) outside."""
    d = abs(x - (lower + upper) / 2) / ((upper - lower) / 2)
    return 1.0 - d if d <= 1 else math.exp(-k * (d - 1))


box = specs[2]
k = box.steepness
eps = 1e-9
print("\nnear the upper bound of BOX [0, 10]:")
print(f"{'x':>14s} {'original':>10s} {'score':>10s}")
for x in (10.0 - 1e-3, 10.0 - eps, 10.0 + eps, 10.0 + 1e-3):
    print(f"{x:14.9f} {original_box_score(x, 0.0, 10.0):10.6f} {box.score(x):10.6f}")

# The original jumps from 0 to 1 at the bound: one step past it scores best.
assert original_box_score(10.0 - eps, 0.0, 10.0) < 1e-6
assert original_box_score(10.0 + eps, 0.0, 10.0) > 1 - 1e-6
# Ours is 1 / (1 + k) on the bound, continuous, and has the same slope on both sides.
edge = 1.0 / (1.0 + k)
assert math.isclose(box.score(10.0), edge)
assert abs(box.score(10.0 + eps) - box.score(10.0 - eps)) < 1e-8
h = 1e-4
left = (box.score(10.0) - box.score(10.0 - h)) / h
right = (box.score(10.0 + h) - box.score(10.0)) / h
print(
    f"\nslope just inside {left:.6f}, just outside {right:.6f}, -k/(1+k)/5 = {-k / (1 + k) / 5:.6f}"
)
assert math.isclose(left, right, rel_tol=1e-2)
# Strictly decreasing away from the healthy point, on both sides of the bound.
outward = box.score(np.linspace(5.0, 12.0, 200))
assert np.all(np.diff(outward) < 0)

# Scores keep the type and shape of their input.
grid = np.linspace(-5.0, 15.0, 12).reshape(3, 4)
assert box.score(grid).shape == (3, 4)
assert isinstance(box.score(3.0), float)

# violation(): 0 inside the bounds, the distance outside; the g(x) <= 0 form.
asym = specs[3]
print("\nviolation of BOX_ASYMMETRIC [0, 10]:", asym.violation(np.array([-2.0, 5.0, 12.5])))
assert list(asym.violation(np.array([-2.0, 5.0, 12.5]))) == [2.0, 0.0, 2.5]
assert specs[0].violation(12.0) == 2.0  # UPPER: beyond the margin
assert specs[4].violation(4.0) == 0.0  # MINIMIZE_SOFT: below the scale
