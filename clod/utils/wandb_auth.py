"""Whether W&B credentials are configured (so a run can go online without waiting on a login)."""

from __future__ import annotations

import netrc
import os

WANDB_HOST = "api.wandb.ai"


def wandb_credentials_configured() -> bool:
    """True when an API key is in the environment or in ~/.netrc (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
