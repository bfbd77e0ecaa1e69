"""Theory beside measurement: `theory.predict(config)` against `propagate(config)` on sampled
networks, with tolerances from the sampling error over seeds (5 standard errors of the seed mean)
plus a 1% allowance for the O(1/width) finite-width bias at width 1024."""

import math

import numpy as np
import pytest

from initjax import NetworkConfig, propagate
from initjax.theory import batchnorm_gradient_rate, predict

WIDTH, SEEDS = 1024, 8


def _agree(measured, predicted, name, rel=0.01, atol=0.0):
    m = np.asarray(measured, dtype=np.float64)
    mean = m.mean(axis=0)
    se = m.std(axis=0, ddof=1) / math.sqrt(m.shape[0])
    tol = 5 * se + rel * np.abs(predicted) + atol
    bad = np.abs(mean - predicted) > tol
    assert not bad.any(), f"{name}: measured {mean[bad]} vs predicted {predicted[bad]} (tolerance {tol[bad]})"


# (init, activation, bias): tanh, ReLU, SELU (Klambauer: lecun normal), erf, and tanh near the
# edge of chaos (sigma_w2 = 1.76 at sigma_b2 = 0.05, where chi_1 ~ 1)
CASES = [
    ("xavier_normal", "tanh", "zeros"),
    ("he_normal", "relu", "zeros"),
    ("lecun_normal", "selu", "zeros"),
    (f"normal:stddev={math.sqrt(2.0 / WIDTH)}", "erf", "normal:stddev=0.3"),
    (f"normal:stddev={math.sqrt(1.76 / WIDTH)}", "tanh", f"normal:stddev={math.sqrt(0.05)}"),
]


@pytest.mark.parametrize("init,activation,bias", CASES, ids=["tanh", "relu", "selu", "erf", "tanh-critical"])
def test_measured_variance_cosine_and_gradients_match_prediction(init, activation, bias):
    config = NetworkConfig(depth=6, width=WIDTH, batch=16, init=init, activation=activation, bias_init=bias,
                           input_correlation=0.3)
    p = predict(config)
    st = propagate(config, seeds=SEEDS).stats
    _agree(st.preact_second_moment, p.preact_second_moment, "q^l")
    _agree(st.out_second_moment, p.out_second_moment, "E[phi^2]")
    _agree(st.cosine, p.cosine, "c^l", atol=0.01)
    _agree(st.grad_preact_var, p.grad_preact_var, "Var[dL/dh]", rel=0.03)


def test_prediction_of_the_papers_special_cases():
    """He et al. 2015: ReLU with He keeps q at 2 v; Xavier halves it. SELU's (0, 1) fixed point."""
    he = predict(NetworkConfig(depth=5, width=64, init="he_normal", activation="relu"))
    np.testing.assert_allclose(he.preact_second_moment, 2.0, rtol=1e-6)
    np.testing.assert_allclose(he.sigma_w2, 2.0, rtol=1e-12)
    xavier = predict(NetworkConfig(depth=5, width=64, init="xavier_normal", activation="relu"))
    np.testing.assert_allclose(xavier.preact_second_moment, 0.5 ** np.arange(5), rtol=1e-6)
    selu = predict(NetworkConfig(depth=5, width=64, init="lecun_normal", activation="selu"))
    np.testing.assert_allclose(selu.preact_second_moment, 1.0, atol=1e-6)
    # ragged widths: fan-in aware backward factor n_l / n_{l-1}
    ragged = predict(NetworkConfig(depth=2, width=(64, 16), in_width=32, init="he_normal", activation="relu"))
    assert ragged.grad_act_var[0] == pytest.approx(2.0 * 16 / 64 * ragged.grad_preact_var[1])


def test_batchnorm_gradient_rate_matches_engine():
    """Yang et al. 2019: with batch norm in training mode, Var[dL/dh] grows by a fixed factor per
    layer going backwards, set by the batch size. Measured in the middle layers (away from the
    output and from the input transient) against the toolkit's rate."""
    batch, depth = 16, 14
    config = NetworkConfig(depth=depth, width=WIDTH, batch=batch, init="he_normal", activation="relu", norm="batch")
    g = np.asarray(propagate(config, seeds=SEEDS).stats.grad_preact_var, dtype=np.float64)
    lo, hi = 3, depth - 3  # layers 4 .. 11
    per_seed = np.log(g[:, lo] / g[:, hi]) / (hi - lo)
    rate = float(np.exp(per_seed.mean()))
    se = per_seed.std(ddof=1) / math.sqrt(SEEDS)
    predicted = batchnorm_gradient_rate(batch, "relu")
    assert predicted == pytest.approx(1.58995, rel=1e-4)  # the derivation's value (see theory.py)
    assert abs(math.log(rate) - math.log(predicted)) < 5 * se + 0.02, (rate, predicted, se)


def test_predict_rejects_what_it_cannot_predict():
    with pytest.raises(ValueError, match="predict covers norm='none'"):
        predict(NetworkConfig(depth=2, width=8, norm="batch"))
    import jax

    with pytest.raises(ValueError, match="user function"):
        predict(NetworkConfig(depth=2, width=8, init=jax.nn.initializers.normal(0.1)))
    with pytest.raises(TypeError, match="NetworkConfig"):
        predict({"depth": 2})


def test_theory_cli_json(capsys):
    import json

    from initjax.cli import main

    assert main(["theory", "--activation", "relu", "--sigma-w2", "2", "--depth", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"q_star", "c_star", "chi_1", "xi_q", "xi_c", "q"} <= set(out)
    assert out["chi_1"] == pytest.approx(1.0, abs=1e-5)  # He's sigma_w^2 = 2 is ReLU's critical point
    np.testing.assert_allclose(out["q"], 2.0, rtol=1e-6)
    assert main(["theory", "--activation", "tanh", "--sigma-w2", "-1"]) == 2
    assert "--sigma-w2 must be >= 0.0, got -1.0" in capsys.readouterr().err


def test_propagate_cli_with_theory(capsys):
    import json

    from initjax.cli import main

    argv = ["propagate", "--init", "he_normal", "--activation", "relu", "--depth", "3", "--width", "64",
            "--batch", "4", "--seeds", "1", "--json", "--quiet", "--theory"]
    assert main(argv) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [row["preact_second_moment_pred"] for row in layers] == pytest.approx([2.0, 2.0, 2.0], rel=1e-6)
    assert layers[0]["cosine_pred"] == pytest.approx(0.0, abs=1e-12)


def test_phase_diagram_quick(tmp_path):
    from initjax import reproductions

    report = reproductions.run("phase-diagram", tmp_path, quick=True)
    assert report["status"] == "done"
    assert [c["check"] for c in report["checks"] if not c["pass"]] == []
    for name in ("phase-diagram.png", "depth-scales.pdf", "correlations.png", "grid.npz", "report.md"):
        assert (tmp_path / name).exists(), name


def test_a_plain_network_description_is_predicted_as_its_config():
    """One description, two views: the Network a NetworkConfig constructs is predicted exactly as
    the config; a residual description goes to the residual theory (initjax.theory.residual)."""
    from initjax.network import Dense, Network, Repeat, Residual

    config = NetworkConfig(depth=4, width=(64, 16, 16, 16), in_width=32, init="he_normal",
                           activation="tanh", bias_init="normal:stddev=0.1")
    by_config, by_network = predict(config), predict(config.network)
    for field in by_config._fields:
        np.testing.assert_array_equal(getattr(by_network, field), getattr(by_config, field))
    residual = Network(8, (Repeat(Residual((Dense(8),)), 3),))
    from initjax.theory.residual import ResidualPrediction

    assert isinstance(predict(residual), ResidualPrediction)
