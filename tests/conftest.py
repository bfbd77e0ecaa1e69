"""Strict JAX for every test: rank promotion raises, so silent broadcasting bugs fail loudly; no
persistent compilation cache."""

import logging
import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# the CLI turns on a persistent compilation cache in ~/.cache; tests stay hermetic without it
os.environ["INITJAX_CACHE_DIR"] = ""


@pytest.fixture
def key():
    """A fixed PRNG key: statistical tests use fixed keys so they never flake."""
    return jax.random.key(0)


def _compiles(fn) -> list[str]:
    """The 'Compiling ...' messages jax logs while ``fn()`` runs."""

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(handler)
    return [m for m in handler.messages if m.startswith("Compiling")]


@pytest.fixture
def compiles():
    """``compiles(fn)``: the compile messages jax logs while ``fn()`` runs (empty: no compile)."""
    return _compiles
