"""Stop signals during the teacher copy reach their handler after the copy, not inside it."""

from __future__ import annotations

import copy
import signal

import pytest
from torch import nn

from clod.strategies.distillation import frozen_copy
from clod.utils.signals import deferred_signals


class SignalsWhileCopied(nn.Module):
    """A module that receives SIGUSR2 in the middle of being deep-copied."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.events = events

    def __deepcopy__(self, memo: dict) -> SignalsWhileCopied:
        signal.raise_signal(signal.SIGUSR2)
        twin = SignalsWhileCopied(self.events)
        twin.layer.load_state_dict(copy.deepcopy(self.layer.state_dict(), memo))
        self.events.append("copied")
        return twin


def test_a_stop_signal_during_the_teacher_copy_is_delivered_after_it() -> None:
    events: list[str] = []

    def stop(signum: int, frame: object) -> None:  # what submitit's handler does: exit
        events.append("handler")
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, stop)
    try:
        with pytest.raises(SystemExit):
            frozen_copy(SignalsWhileCopied(events))
        assert events == ["copied", "handler"]  # without the deferral: ["handler"] only
        assert signal.getsignal(signal.SIGUSR2) is stop  # the real handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_default_dispositions_are_left_alone() -> None:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with deferred_signals([signal.SIGUSR1]):
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
            signal.raise_signal(signal.SIGUSR1)  # ignored, as without the block
    finally:
        signal.signal(signal.SIGUSR1, previous)
