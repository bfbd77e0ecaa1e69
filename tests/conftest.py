"""Strict JAX for every test: rank promotion raises, so silent broadcasting bugs fail loudly."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fixed PRNG key: statistical tests use fixed keys so they never flake."""
    return jax.random.key(0)
