"""Ctrl-C for code that calls back into Python from C++.

Python runs a signal handler at the next bytecode. When that bytecode is in a Python callback under a library's
C++ frames (onnxruntime's Python custom op, torch.export's dispatch callbacks), the KeyboardInterrupt cannot cross
them and the process aborts: ``terminate called after throwing an instance of 'pybind11::error_already_set'`` or
``'python_error'``, exit 134. Inside :func:`interrupts_deferred` Ctrl-C is only recorded, and raised as
KeyboardInterrupt when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)


@contextlib.contextmanager
def interrupts_deferred(activity: str, on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Defer Ctrl-C to the end of the block; ``on_interrupt`` (e.g. asking the library to stop early) runs at once.

    An exception the block raises after an interrupt (the library stopping on request) is replaced by the
    KeyboardInterrupt. Signal handlers can only be installed from the main thread, and a caller's own SIGINT
    handler is left alone: in both cases the block runs unchanged.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = False

    def record(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if not received:
            log.warning("interrupt: stopping when %s returns", activity)
            if on_interrupt is not None:
                on_interrupt()
        received = True

    signal.signal(signal.SIGINT, record)
    try:
        yield
    except Exception:
        if not received:
            raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt
