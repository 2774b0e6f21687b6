"""Waiting for an event in tests: poll with a deadline instead of sleeping a fixed time."""

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.05) -> object:
    """Poll until predicate() returns something true and return it; fail at the deadline,
    naming what did not happen and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(interval)
