"""Build of the native kernels (quantsearch.kernels._native); everything else is in pyproject.toml.

The extension is plain C11 + pthreads, compiled for the baseline instruction set: the AVX2 and
AVX-512 kernels carry per-function target attributes and are chosen at run time, so one build
runs on any x86-64 CPU (and the portable kernel on any other).

It is ``optional``: without a working C compiler the install still succeeds (setuptools prints a
warning) and quantsearch runs on its numpy kernels, logging a warning at the first search.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup

_SOURCES = [
    "module.c",
    "hamming.c",
    "hamming_x86.c",
    "planes.c",
    "planes_x86.c",
    "nibbles.c",
    "ivf.c",
    "rescore.c",
    "scatter.c",
    "threads.c",
]
_UNIX = sys.platform != "win32"

setup(
    ext_modules=[
        Extension(
            "quantsearch.kernels._native",
            sources=[f"src/quantsearch/kernels/csrc/{name}" for name in _SOURCES],
            depends=["src/quantsearch/kernels/csrc/qs_kernels.h", "src/quantsearch/kernels/csrc/simd_x86.h"],
            extra_compile_args=["-O3", "-std=gnu11", "-pthread", "-fvisibility=hidden", "-ffp-contract=off"] if _UNIX else [],
            extra_link_args=["-pthread"] if _UNIX else [],
            optional=True,
        )
    ]
)
