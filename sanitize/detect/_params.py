"""Hyper-parameter constraints, checked when a detector is fitted (scikit-learn's ``_parameter_constraints``).

Each detector class maps every ``__init__`` parameter to a list of constraints; a value is valid when
it meets at least one. A small version of scikit-learn's ``sklearn.utils._param_validation``, whose
private API the package does not import: numbers in an :class:`Interval`, ``None``, ``bool``, strings
matching a :class:`Pattern`, and tuples of one kind (:class:`TupleOf`). A bool is never taken for a
number, though Python counts it as one: ``k=True`` is a mistake, not 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A number of ``type`` (``Integral`` or ``Real``) between ``low`` and ``high`` (None: unbounded),
    ``closed`` on the ``left``, the ``right``, ``both`` sides or ``neither``."""

    type: type
    low: float | None
    high: float | None
    closed: Literal["left", "right", "both", "neither"]

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool | np.bool_) or not isinstance(value, self.type):
            return False
        number: Any = value
        if number != number:  # NaN
            return False
        if self.low is not None and (number < self.low or (number == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (
            number > self.high or (number == self.high and self.closed in ("left", "neither"))
        ):
            return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.type is Integral else "a float"
        if self.low is None and self.high is None:
            return kind
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{kind} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Pattern:
    """A string that matches ``regex`` whole."""

    regex: str

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None

    def __str__(self) -> str:
        return f"a str matching {self.regex!r}"


@dataclass(frozen=True)
class TupleOf:
    """A tuple whose every item meets ``item``."""

    item: Interval

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, tuple) and all(self.item.is_satisfied_by(v) for v in value)

    def __str__(self) -> str:
        return f"a tuple whose items are each {self.item}"


#: One constraint: ``None`` (the value may be None), ``bool`` (a bool), or one of the classes above.
Constraint = Interval | Pattern | TupleOf | type[bool] | None


def satisfies(constraint: Constraint, value: Any) -> bool:
    if constraint is None:
        return value is None
    if constraint is bool:
        return isinstance(value, bool | np.bool_)
    return constraint.is_satisfied_by(value)


def describe(constraints: Sequence[Constraint]) -> str:
    words = ["None" if c is None else "a bool" if c is bool else str(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Sequence[Constraint]]) -> None:
    """Raise ``ValueError`` naming ``owner``, the parameter and its value, for the first parameter
    that meets none of its constraints; a parameter without constraints is a programming error."""
    for name, value in params.items():
        if name not in constraints:
            raise TypeError(f"{owner} declares no constraints for its parameter {name!r}")
        allowed = constraints[name]
        if not any(satisfies(c, value) for c in allowed):
            raise ValueError(f"The {name!r} parameter of {owner} must be {describe(allowed)}. Got {value!r} instead.")
