"""Stopping long work early: a cancelled call stops at its next checkpoint, wherever it is.

Work that can take long (the fit, the quantiser-step search, fitting the prior, the sampler) calls
`checkpoint()` in its loops. A caller that may want to stop it (a service whose client went away
or whose deadline passed) runs the work inside `scope(should_stop)`; `checkpoint()` then raises
`Cancelled` as soon as `should_stop()` is true. Scopes are per thread, so concurrent calls in one
process never stop each other, and code that runs outside any scope pays one attribute lookup.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from vov.errors import VovError

_local = threading.local()


class Cancelled(VovError):
    """The caller stopped the work (a client went away or its deadline passed)."""


@contextmanager
def scope(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Within this block, `checkpoint()` in this thread raises Cancelled once `should_stop()` is true."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(should_stop)
    try:
        yield
    finally:
        stack.pop()


def checkpoint() -> None:
    """Raise Cancelled if any enclosing scope of this thread wants the work to stop."""
    for should_stop in getattr(_local, "stack", ()):
        if should_stop():
            raise Cancelled("the work was cancelled")
