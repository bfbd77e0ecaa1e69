"""Issue 14's criterion: residual networks measured by the block engine against the mean-field
recursions (initjax.theory.residual), width 1024, 8 seeds, ReLU / tanh / linear branches, with and
without batch norm.

Tolerance per block: 4 standard errors of the mean over the seeds (the seeds' own spread) plus a
finite-size allowance: 3% for the forward moments (finite width, and with batch norm the finite
batch: the theory feeds a BN output to the activation as a Gaussian, O(1/B)), 6% for the gradient
second moments (gradient independence; with batch norm, per-block 1/sigma^2 factors multiplied as
if independent). Measured on the development machine, the largest departures were 2.6% (tanh, BN,
stream) and 5.4% (ReLU, BN, gradient at the input); the cosine is compared in absolute terms
(0.02 + 4 SE), as it can be near 0.
"""

import jax
import numpy as np
import pytest

from initjax.engine.blocks import propagate_blocks
from initjax.network import Network
from initjax.theory.residual import predict_residual

N, SEEDS, L = 1024, 8, 8

CASES = {
    "relu": dict(init="he_normal", activation="relu", branch_scale="1/sqrt(depth)"),
    "tanh": dict(init="xavier_normal", activation="tanh"),
    "linear": dict(init="lecun_normal", activation="identity", branch_scale=0.5),
    "relu, BN": dict(init="he_normal", activation="relu", norm="batch"),
    "tanh, BN": dict(init="xavier_normal", activation="tanh", norm="batch"),
    "linear, BN": dict(init="lecun_normal", activation="identity", norm="batch"),
    "tanh, post-LN": dict(init="xavier_normal", activation="tanh", norm="layer", norm_position="post"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    net = Network.residual_mlp(L, N, batch=16, input_correlation=0.3, **CASES[request.param])
    with jax.default_matmul_precision("highest"):
        stats = propagate_blocks(net, seeds=SEEDS, key=7).stats
    return request.param, stats, predict_residual(net)


@pytest.mark.parametrize("field, predicted, rel", [
    ("act_second_moment", "q", 0.03),
    ("branch_var", "branch_var", 0.03),
    ("grad_second_moment", "grad", 0.06),
])
def test_measured_moments_match_the_recursions(case, field, predicted, rel):
    name, stats, pred = case
    v = np.asarray(getattr(stats, field), np.float64)
    mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(SEEDS)
    truth = getattr(pred, predicted)
    bad = np.abs(mean - truth) > 4 * se + rel * np.abs(truth)
    assert not bad.any(), (f"{name}, {field}: blocks {np.flatnonzero(bad) + 1}: measured {mean[bad]} "
                           f"+- {se[bad]}, predicted {truth[bad]}")


def test_measured_cosine_matches_the_recursion(case):
    name, stats, pred = case
    v = np.asarray(stats.cosine, np.float64)
    mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(SEEDS)
    bad = np.abs(mean - pred.cosine) > 4 * se + 0.02
    assert not bad.any(), f"{name}: blocks {np.flatnonzero(bad) + 1}: {mean[bad]} vs {pred.cosine[bad]}"
