"""The checkout's stand-in for ``constraint_sched.adapters``: the top-level ``adapters/`` folder.

The adapters live in ``adapters/`` at the top of the source tree, and a built
wheel installs that folder here as ``constraint_sched.adapters`` (PyPI's
``adapters`` distribution owns the top-level name); the wheel never ships this
file. In a checkout on ``sys.path`` or an editable install (``pip install -e
.``) this file is what Python finds: it points the package's ``__path__`` at
``adapters/`` and runs that folder's ``__init__.py`` in its place, so that
``constraint_sched.adapters.torch`` and the rest import from the source tree
with no link to make by hand.
"""

import os as _os

_INIT = _os.path.join(
    _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))),
    "adapters",
    "__init__.py",
)

if _os.path.isfile(_INIT):
    __path__[:] = [_os.path.dirname(_INIT)]
    __file__ = _INIT
    with open(_INIT, encoding="utf-8") as _source:
        exec(compile(_source.read(), _INIT, "exec"))
    del _source
del _os, _INIT
