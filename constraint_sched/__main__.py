"""``python -m constraint_sched``: the seed's walk-through on a simulated model."""

from constraint_sched._demo import main

raise SystemExit(main())
