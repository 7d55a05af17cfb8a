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


class RunInterrupted(BaseException):
    """A run was stopped by a signal (Ctrl-C, ``kill``, ``scancel``): resumable, not failed.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way swallows it;
    Lightning, which turns a KeyboardInterrupt into ``sys.exit(1)``, lets it through.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "ended by signal N"


@contextlib.contextmanager
def interrupt_on_stop_signals(
    signums: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[list[int]]:
    """Within the block, ``signums`` raise :class:`RunInterrupted` in the main thread.

    A handler someone else installed (submitit's, which requeues on its own signals and
    ignores SIGTERM while SLURM preempts) is left in place. Yields the list of signals
    received, so a caller can tell an error caused by the stop (a data worker killed by the
    same signal) from a real failure.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise RunInterrupted(signum)

    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_DFL, signal.default_int_handler, None):
            previous[signum] = handler
            signal.signal(signum, interrupt)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
