"""Joint training on every class of the scenario at once: the upper bound (docs/strategies.md §2).

One task holds every image with a box of any scenario class, keeping all their boxes.
"""

from __future__ import annotations

from clod.strategies.base import Strategy


class Joint(Strategy):
    name = "joint"
    joint = True

    def __init__(
        self, name: str | None = None, joint: bool | None = None, epochs: int | None = None
    ) -> None:
        super().__init__(name, joint)
        self.epochs = epochs  # read by the engine from the config (strategy.epochs)

    def base_training_signature(self) -> None:
        return None  # its only task is the joint one, not a scenario's base task
