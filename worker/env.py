"""Settings dataclasses from environment variables, converted by field type."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")


def from_env(cls: type[T], variables: Mapping[str, str], env: Mapping[str, str] | None = None) -> T:
    """``cls(**fields)`` where each field named in ``variables`` is read from the environment
    variable it maps to, if set, and converted to the field's declared type. Raises
    ValueError naming the variable when a number does not parse."""
    env = os.environ if env is None else env
    fields: dict[str, Any] = getattr(cls, "__dataclass_fields__")  # noqa: B009
    kwargs: dict[str, object] = {}
    for name, variable in variables.items():
        value = env.get(variable)
        if value is None:
            continue
        kind = fields[name].type
        if kind in ("int", "float"):
            try:
                kwargs[name] = int(value) if kind == "int" else float(value)
            except ValueError:
                what = "a whole number" if kind == "int" else "a number"
                raise ValueError(f"{variable} must be {what}, got {value!r}") from None
        elif kind == "bool":
            kwargs[name] = value.strip().lower() in _TRUE
        else:
            kwargs[name] = value
    return cls(**kwargs)
