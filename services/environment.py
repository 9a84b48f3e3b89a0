"""Flags whose defaults come from the environment: the one reader both services and their metrics use."""

from __future__ import annotations

import os


def env_default(name: str, default, kind=str):
    """The variable `name` read as `kind`, or `default` when it is unset or empty; a value `kind`
    refuses stops the program with one line that names the variable."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a valid {kind.__name__}") from None
