"""Where quantsearch keeps downloads and computed artefacts between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$QUANTSEARCH_CACHE`` when set, else ``~/.cache/quantsearch``."""
    root = os.environ.get("QUANTSEARCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "quantsearch"
