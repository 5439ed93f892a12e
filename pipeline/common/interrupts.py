"""Ctrl-C that always stops the pipeline, cleanly (why: docs/design.md §5).

Under a library's C++ frames :func:`interrupts_deferred` only records Ctrl-C and raises KeyboardInterrupt when its
block ends; around finalizers, which swallow it, :func:`interrupts_remembered` also remembers it, for
:func:`raise_if_interrupted` to raise again where the caller checks (the stage runner, before it records a stage as
done).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)

_interrupted = False


def _raise_and_remember(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _python_default_handler() -> bool:
    """Whether SIGINT does what Python does by default (ours only adds remembering): else the caller chose."""
    return signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _raise_and_remember)


@contextlib.contextmanager
def interrupts_remembered() -> Iterator[None]:
    """Ctrl-C in the block raises KeyboardInterrupt as usual and is remembered for :func:`raise_if_interrupted`."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread() or not _python_default_handler():
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_and_remember)
    _interrupted = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came inside :func:`interrupts_remembered` and Python swallowed it."""
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_deferred(activity: str, on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Defer Ctrl-C to the end of the block; ``on_interrupt`` (e.g. asking the library to stop early) runs at once.

    An exception the block raises after an interrupt (the library stopping on request) is replaced by the
    KeyboardInterrupt. Signal handlers can only be installed from the main thread, and a caller's own SIGINT
    handler is left alone: in both cases the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or not _python_default_handler():
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

    previous = signal.signal(signal.SIGINT, record)
    try:
        yield
    except Exception:
        if not received:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
