"""Strict JAX for every test: rank promotion raises, so silent broadcasting bugs fail loudly; no
persistent compilation cache."""

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
