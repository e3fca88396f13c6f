"""Persistent tiered index: storage layout, SQLite catalog, search pipeline."""

from __future__ import annotations

from .index import DEFAULT_OVERSAMPLING, Index

__all__ = ["DEFAULT_OVERSAMPLING", "Index"]
