"""The package itself: public names, no heavy imports at import time, typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import quantsearch

SRC = Path(__file__).resolve().parents[1] / "src"


def test_public_names_resolve() -> None:
    for name in quantsearch.__all__:
        assert getattr(quantsearch, name) is not None, name


def test_import_has_no_heavy_dependencies() -> None:
    heavy = "('torch', 'sentence_transformers', 'transformers', 'tqdm')"
    code = f"import sys, quantsearch, quantsearch.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC)})  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_ships_py_typed() -> None:
    assert (Path(quantsearch.__file__).parent / "py.typed").is_file()
