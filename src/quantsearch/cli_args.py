"""Argument helpers shared by the command modules (``cli`` and each package's ``commands``)."""

from __future__ import annotations

import argparse

__all__ = ["add_backend_option"]


def add_backend_option(p: argparse.ArgumentParser, default_help: str) -> None:
    """``--backend``: the embedding backend of a command that embeds text."""
    from .embedding import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=f"embedding backend ({default_help}); auto: the fastest agreeing with torch on the corpus",
    )
