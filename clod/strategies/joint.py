"""Joint training on every class of the scenario at once: the upper bound (docs/strategies.md §2).

One task holds every image with a box of any scenario class, keeping all their boxes. With
``cumulative``, one model per step instead: task t trains from scratch (the initial weights
again) on every image and box of the classes seen after step t, the per-step upper bound of
multi-step scenarios.
"""

from __future__ import annotations

from clod.strategies.base import Strategy


class Joint(Strategy):
    name = "joint"
    joint = True

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        epochs: int | None = None,
        cumulative: bool = False,
    ) -> None:
        super().__init__(name, joint)
        self.epochs = epochs  # read by the engine from the config (strategy.epochs)
        self.cumulative = bool(cumulative)
        self.from_scratch = self.cumulative  # the engine restores the initial weights per task

    def base_training_signature(self) -> None:
        return None  # its only task is the joint one, not a scenario's base task
