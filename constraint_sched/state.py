"""Reading and writing state dicts: strict-JSON numbers and checked reads that name the path.

For adapters that save their own state beside the core's, in the same
format: non-finite floats as ``"inf"``, ``"-inf"`` and ``"nan"``, a
``format``/``version`` header, and a `Reader` whose every read raises a
``ValueError`` naming the field it could not accept.

Examples:
    >>> from constraint_sched.state import Reader, encode_float
    >>> encode_float(float("inf")), Reader({"epoch": 3}, "state").integer("epoch", least=1)
    ('inf', 3)
"""

from constraint_sched._state import (
    FORMAT_VERSION,
    Reader,
    check_header,
    decode_float,
    encode_float,
    first_difference,
    to_plain,
)

__all__ = [
    "FORMAT_VERSION",
    "Reader",
    "check_header",
    "decode_float",
    "encode_float",
    "first_difference",
    "to_plain",
]
