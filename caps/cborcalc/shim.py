"""cborcalc: small calculations over CBOR values, done in C by the cborcalc cap.

This shim travels inside the cap's component (custom section ``pylon:shim``).
The guest runs it as a module in which ``cap`` is bound to the resolved cap;
``cap.call(method, arg)`` CBOR-encodes ``arg`` and decodes the reply.

    import pylon_guest.caps.cborcalc as calc
    calc.stats([1, 2, 3.5])  # {'count': 3, 'mean': 2.1666..., 'min': 1, 'max': 3.5}
"""

from typing import Any

cap = globals()["cap"]  # bound by the loader before this runs

__all__ = ["echo", "sum", "stats", "upper", "describe", "merge"]

Number = int | float


def echo(value: Any) -> Any:
    """``value`` after a round trip through the cap's CBOR decoder and encoder."""
    return cap.call("echo", value)


def sum(numbers: list[Number]) -> Number:  # noqa: A001 - the method's name
    """Sum of ``numbers``: exact for ints, a float if any term is a float."""
    return cap.call("sum", list(numbers))


def stats(numbers: list[Number]) -> dict[str, Any]:
    """``{"count", "mean", "min", "max"}`` of ``numbers`` (None when empty)."""
    return cap.call("stats", list(numbers))


def upper(text: str) -> str:
    """``text`` with ASCII letters upper-cased."""
    return cap.call("upper", text)


def describe(value: Any) -> dict[str, Any]:
    """The shape of ``value``: type names, lengths, nested descriptions."""
    return cap.call("describe", value)


def merge(*maps: dict) -> dict:
    """One dict from ``maps``; a later map's value wins for a repeated key."""
    return cap.call("merge", list(maps))
