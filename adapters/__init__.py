"""Framework adapters for constraint_sched, installed as ``constraint_sched.adapters``.

Each adapter lives in a subpackage named for its framework and imports that
framework; the core package never does. The PyTorch adapter arrives as
``constraint_sched.adapters.torch``.
"""
