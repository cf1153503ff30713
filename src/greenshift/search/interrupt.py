"""Ctrl-C during a search: the first stops asking for trials, a second abandons the running ones."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def graceful_ctrl_c(stop: Callable[[], None], stopping: Callable[[], bool]) -> Iterator[None]:
    """Within the block, SIGINT calls ``stop()``, or raises ``KeyboardInterrupt`` once ``stopping()``.

    Python sets signal handlers in the main thread only, so elsewhere (a search started in a thread)
    the block runs with the handler the process has. The previous handler is restored when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stopping():
            raise KeyboardInterrupt
        stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
