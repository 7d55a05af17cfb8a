"""Fine-tuning on each new task: the lower bound (docs/strategies.md §1).

Old objects in new images are background, so forgetting is catastrophic. Nothing
differs from plain training.
"""

from __future__ import annotations

from typing import Any

from clod.strategies.base import Strategy


class Naive(Strategy):
    name = "naive"

    def base_training_signature(self) -> dict[str, Any]:
        return {}  # plain training at every task
