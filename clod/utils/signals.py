"""Deferring the Python-level signal handlers around code that must not be interrupted.

submitit (and Lightning) stop a job from inside a signal handler, by raising SystemExit in
whatever the main thread is running. Code under a bare ``except:`` swallows it: the first
``copy.deepcopy`` of a class goes through ``copyreg._slotnames``, which caches ``__slotnames__``
in ``try: ... except: pass``. A requeue signal landing there was lost and the job trained on
until SLURM killed it (seen under tests/slurm, at the teacher copy that starts a task).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

# The signals a scheduler uses to stop or warn a job (submitit: USR2 by default, USR1 on
# some setups; TERM on preemption and cancel).
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


@contextlib.contextmanager
def deferred_signals(signums: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Hold back the Python handlers of ``signums`` until the block ends, then deliver them.

    Only handlers installed from Python are deferred (the default and ignore dispositions
    are left alone), and only in the main thread, the one place Python runs handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:  # now the real handlers run, outside the protected code
            signal.raise_signal(signum)
