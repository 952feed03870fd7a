"""SIGTERM as an exception, so a `stock-assets` command stops cleanly when asked to.

Dagster maps SIGTERM to its SIGINT handler whenever it has executed a run in this process (its
`setup_interrupt_handlers`), so a terminated command would report "interrupted". Code that waits
outside a run (the demo waiting for a pool slot) re-installs this handler for its wait.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so `finally` blocks and clean-up run."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
