"""``python -m constraint_sched.adapters.lbo_vae``: the ``lbo-vae`` command."""

from constraint_sched.adapters.lbo_vae._cli import main

raise SystemExit(main())
