"""Coordinate checks: the slope fitter against closed forms, the statistics against a float64
numpy forward (and backward, for the updates) of the same weights, the ``initjax coord-check``
contract at its exact settings (issue 16's "Done when"), SGD checks derived from the theory,
non-finite reporting, compile reuse and bad input.

The theory behind the width checks (TP5, Yang et al. 2021, https://arxiv.org/abs/2203.03466):
after one update a layer's output changes by ``Delta W x``; with Adam every weight entry moves by
about the learning rate, so a layer with ``n`` correlated inputs moves by ``~ lr n`` (SP: readout
and hidden slopes -> 1, muP divides the hidden/readout learning rates by ``n / base``: flat);
with SGD the readout's change is ``-lr/B sum_b (p_b - y_b) x_b . x ~ lr n`` (SP slope -> 1),
while the input layer, whose fan-in is the data's, moves by ``O(n^-1/2)`` (flat).
"""

import argparse
import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import coordcheck, data, modules, parametrization
from initjax._keys import as_key
from initjax.network import Dense, Network, Residual

CONTRACT_WIDTHS = "64,128,256,512,1024"
SGD_WIDTHS = (64, 256, 1024)
SGD_LR = 0.5


def _cli(argv):
    """``initjax coord-check ARGS`` through the module's own parser and entry point (the lines
    that ``initjax.cli`` wires in)."""
    parser = argparse.ArgumentParser(prog="initjax")
    coordcheck.add_parser(parser.add_subparsers(dest="command"))
    return coordcheck.main(parser.parse_args(["coord-check", *argv]))


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    """The CLI's JSON at the contract's exact settings, muP and SP (SP also with --out)."""
    out = tmp_path_factory.mktemp("coord-check-sp")
    results = {}
    for par, extra in (("mup", ()), ("sp", ("--out", str(out)))):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert _cli(["--parametrization", par, "--widths", CONTRACT_WIDTHS, "--depth", "3",
                         "--optimizer", "adam", "--lr", "0.01", "--steps", "4", "--seeds", "4",
                         "--json", *extra]) == 0
        results[par] = json.loads(buf.getvalue())
    return results, out


# -- the slope fitter ----------------------------------------------------------------------------
def test_fit_slope_is_exact_on_power_laws():
    widths = np.array([64, 128, 256, 512, 1024])
    p = np.array([[-0.5, 0.0, 1.0], [0.25, 2.0, -1.5]])  # (step, layer) exponents
    c = np.array([[3.0, 0.2, 1e-3], [7.0, 1.0, 50.0]])
    values = c[None] * widths[:, None, None].astype(float) ** p[None]
    np.testing.assert_allclose(coordcheck.fit_slope(widths, values), p, rtol=0, atol=1e-12)


def test_fit_slope_matches_polyfit_and_reports_bad_columns():
    rng = np.random.default_rng(0)
    widths = np.array([8, 32, 64, 1000])
    values = np.exp(rng.normal(size=(4, 5)))
    expected = [np.polyfit(np.log2(widths), np.log2(values[:, j]), 1)[0] for j in range(5)]
    np.testing.assert_allclose(coordcheck.fit_slope(widths, values), expected, rtol=1e-10)
    values[2, 1], values[0, 3], values[1, 4] = np.nan, 0.0, np.inf
    got = coordcheck.fit_slope(widths, values)
    assert np.isnan(got[[1, 3, 4]]).all() and np.isfinite(got[[0, 2]]).all()
    with pytest.raises(ValueError, match="at least two distinct widths"):
        coordcheck.fit_slope([64, 64], np.ones(2))
    with pytest.raises(ValueError, match="leading axis of len\\(widths\\) = 3"):
        coordcheck.fit_slope([1, 2, 4], np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite and > 0"):
        coordcheck.fit_slope([0, 2], np.ones(2))


# -- the statistic against a float64 numpy forward and backward ----------------------------------
TINY_IN, TINY_OUT, TINY_BATCH = 8, 3, 5


def _tiny(width):
    return Network(TINY_IN, (
        Dense(width, "he_normal", "relu", bias_init="normal:stddev=0.1", multiplier=0.7,
              lr_multiplier=2.0, bias_lr_multiplier=0.5),
        Dense(width, "lecun_normal", "tanh", bias_init="normal:stddev=0.1", lr_multiplier=0.5),
        Dense(TINY_OUT, "lecun_normal", "identity", multiplier=0.5, lr_multiplier=0.25),
    ))


def _tiny_data():
    rng = np.random.default_rng(1)
    return (rng.normal(size=(TINY_BATCH, TINY_IN)).astype(np.float32),
            np.array([0, 1, 2, 1, 0], np.int32))


def _weights(net, seed):
    model = modules.build(net, None, rngs=nnx.Rngs(jax.random.fold_in(as_key(0), seed)))
    return [(np.asarray(b.kernel[...], np.float64), np.asarray(b.bias[...], np.float64))
            for b in model.blocks]


_ACT = {"relu": (lambda h: np.maximum(h, 0), lambda h: (h > 0).astype(float)),
        "tanh": (np.tanh, lambda h: 1 - np.tanh(h) ** 2),
        "identity": (lambda h: h, lambda h: np.ones_like(h))}


def _np_forward(net, weights, x):
    """float64: per layer (h, phi(h)) and the output."""
    a, taps = x.astype(np.float64), []
    for layer, (w, b) in zip(net.dense_layers, weights, strict=True):
        h = layer.multiplier * a @ w + b
        a = _ACT[layer.activation.name][0](h)
        taps.append((h, a))
    return taps


def _np_grads(net, weights, x, y):
    """float64 gradients of the mean softmax cross-entropy."""
    taps = _np_forward(net, weights, x)
    f = taps[-1][1]
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(f.shape[1])[y]) / len(y)  # dL/df
    grads = [None] * len(weights)
    for i in reversed(range(len(weights))):
        layer = net.dense_layers[i]
        h = taps[i][0]
        dh = delta * _ACT[layer.activation.name][1](h)
        a_in = x.astype(np.float64) if i == 0 else taps[i - 1][1]
        grads[i] = (layer.multiplier * a_in.T @ dh, dh.sum(0))
        delta = layer.multiplier * dh @ weights[i][0].T
    return grads


def _np_stat(v, name):
    return {"l1": np.mean(np.abs(v)), "l2": np.sqrt(np.mean(v**2)), "std": np.std(v)}[name]


def _np_coord_check(net, x, y, seed, steps, optimizer, lr):
    """(step, layer) statistics of layer_names(activations=True), float64 numpy throughout."""
    weights = _weights(net, seed)
    out = {s: [] for s in coordcheck.STATISTICS}
    for _ in range(steps):
        taps = _np_forward(net, weights, x)
        for s in out:
            row = []
            for h, a in taps[:-1]:
                row += [_np_stat(h, s), _np_stat(a, s)]
            out[s].append(row + [_np_stat(taps[-1][0], s)])
        new = []
        for layer, (w, b), (gw, gb) in zip(net.dense_layers, weights,
                                           _np_grads(net, weights, x, y), strict=True):
            bias_lr = layer.lr_multiplier if layer.bias_lr_multiplier is None \
                else layer.bias_lr_multiplier
            if optimizer == "adam":  # the first Adam step: m_hat = g, v_hat = g^2
                gw, gb = gw / (np.abs(gw) + 1e-8), gb / (np.abs(gb) + 1e-8)
            new.append((w - lr * layer.lr_multiplier * gw, b - lr * bias_lr * gb))
        weights = new
    return {s: np.array(v) for s, v in out.items()}


@pytest.mark.parametrize("statistic", coordcheck.STATISTICS)
def test_statistics_and_sgd_updates_match_float64_numpy(statistic):
    x, y = _tiny_data()
    nets = {16: _tiny(16), 32: _tiny(32)}
    cc = coordcheck.coord_check(nets, (x, y), steps=3, seeds=2, optimizer="sgd", lr=0.3,
                                statistic=statistic, key=0, activations=True)
    assert cc.layers == ("hidden1", "hidden1/act", "hidden2", "hidden2/act", "readout")
    assert cc.values.shape == (2, 2, 3, 5) and cc.steps == (1, 2, 3)
    for i, net in enumerate(nets.values()):
        for s in range(2):
            ref = _np_coord_check(net, x, y, s, 3, "sgd", 0.3)[statistic]
            np.testing.assert_allclose(cc.values[i, s], ref, rtol=2e-5)
    np.testing.assert_allclose(cc.stat, cc.values.mean(axis=1), rtol=1e-12)


def test_first_adam_update_matches_float64_numpy():
    # the first Adam step is lr * g / (|g| + eps): an entry whose float32 gradient is within
    # rounding of 0 could flip, so the check is after one update (t = 2) only
    x, y = _tiny_data()
    nets = {16: _tiny(16), 32: _tiny(32)}
    cc = coordcheck.coord_check(nets, (x, y), steps=3, seeds=2, optimizer="adam", lr=0.01,
                                key=0, activations=True)
    for i, net in enumerate(nets.values()):
        for s in range(2):
            ref = _np_coord_check(net, x, y, s, 2, "adam", 0.01)["l1"]
            np.testing.assert_allclose(cc.values[i, s, :2], ref, rtol=1e-4)


def test_nonfinite_values_are_reported_not_hidden(tmp_path):
    x, y = _tiny_data()
    nets = {16: _tiny(16), 32: _tiny(32)}
    cc = coordcheck.coord_check(nets, (x, y), steps=3, seeds=2, optimizer="sgd", lr=1e30,
                                key=0)
    assert cc.diverged == 4 and (cc.first_nonfinite_step >= 2).all()
    assert np.isfinite(cc.slopes()[0]).all() and np.isnan(cc.slopes()[2]).any()
    payload = cc.to_json_dict()
    assert payload["diverged"] == 4 and None in payload["slope"][2]
    json.dumps(payload, allow_nan=False)  # strict JSON: non-finite numbers are null
    cc.save(tmp_path, figure=False)
    assert json.loads((tmp_path / "coord_check.json").read_text())["diverged"] == 4
    fig = coordcheck.plot(cc)
    assert any("non-finite" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_layer_names_of_a_residual_network():
    net = Network(8, (Dense(16, activation="identity"),
                      Residual((Dense(16, "he_normal", "relu", preactivation=True),)),
                      Residual((Dense(16, "he_normal", "relu", preactivation=True),)),
                      Dense(3, activation="identity")))
    assert coordcheck.layer_names(net) == ("hidden1", "res2/branch", "res2", "res3/branch",
                                           "res3", "readout")
    with pytest.raises(ValueError, match="the last block of 'residual' is a 'residual' block"):
        coordcheck.layer_names(Network(16, (Residual((Dense(16, preactivation=True),)),)))


# -- the CLI contract (issue 16, "Done when") ----------------------------------------------------
def test_contract_json_shape(contract):
    results, _ = contract
    for payload in results.values():
        assert payload["widths"] == [64, 128, 256, 512, 1024]
        assert payload["steps"] == [1, 2, 3, 4]
        assert payload["layers"] == ["hidden1", "hidden2", "readout"]
        assert np.asarray(payload["l1"]).shape == (5, 4, 3)
        assert np.asarray(payload["slope"]).shape == (4, 3)
        assert payload["diverged"] == 0
        # the slope is that of log2 l1 against log2 width
        np.testing.assert_allclose(
            payload["slope"], coordcheck.fit_slope(payload["widths"], payload["l1"]),
            rtol=1e-12)


def test_contract_mup_is_flat(contract):
    slope = np.asarray(contract[0]["mup"]["slope"])
    assert np.abs(slope[:, :-1]).max() <= 0.2, slope  # every hidden layer, every step
    assert np.abs(slope[2:, -1]).max() <= 0.3, slope  # the readout from step 3
    # at t = 1 the readout shrinks like width^-1/2 (its init variance is 1/fan_in^2)
    assert slope[0, -1] == pytest.approx(-0.5, abs=0.1)


def test_contract_sp_readout_grows(contract):
    slope = np.asarray(contract[0]["sp"]["slope"])
    assert slope[1:, -1].min() >= 0.5, slope  # the readout from step 2
    assert np.abs(slope[0]).max() <= 0.2, slope  # SP is width-stable at init
    assert np.abs(slope[:, 0]).max() <= 0.2, slope  # the input layer (fan-in 64) stays flat


def test_contract_out_writes_json_data_and_figure(contract):
    results, out = contract
    saved = json.loads((out / "coord_check.json").read_text())
    assert saved["slope"] == results["sp"]["slope"]
    assert saved["setup"]["parametrization"] == "sp" and saved["setup"]["base_width"] == 64
    for f in ("coord_check.npz", "coord_check.png", "coord_check.pdf"):
        assert (out / f).exists(), f
    assert not (out / ".initjax.lock").exists()


# -- SGD, from the theory ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sgd():
    ds = data.digits()
    out = {}
    for par in ("sp", "mup"):
        nets = {w: parametrization.mlp(64, w, 3, 10, parametrization=par, optimizer="sgd",
                                       base_width=SGD_WIDTHS[0]) for w in SGD_WIDTHS}
        out[par] = coordcheck.coord_check(nets, ds, batch=64, steps=4, seeds=4, optimizer="sgd",
                                          lr=SGD_LR, key=0)
    return out


def test_sgd_mup_is_flat(sgd):
    slope = sgd["mup"].slopes()
    assert np.abs(slope[:, :-1]).max() <= 0.2, slope
    assert np.abs(slope[1:, -1]).max() <= 0.3, slope  # the readout once it has moved


def test_sgd_sp_readout_grows_and_input_layer_stays_flat(sgd):
    cc = sgd["sp"]
    slope = cc.slopes()
    assert slope[1:, -1].min() >= 0.5, slope  # readout change ~ lr * width
    assert np.abs(slope[:, 0]).max() <= 0.2, slope  # input layer: its change is O(width^-1/2)
    # the hidden layer (width -> width) grows after the updates (theory: slope -> 1/2)
    assert slope[-1, 1] >= slope[0, 1] + 0.1, slope
    assert cc.slope("readout", 2) == slope[1, -1]


def test_a_new_learning_rate_or_parametrization_does_not_compile_again(sgd, compiles):
    ds = data.digits()
    nets = {w: parametrization.mlp(64, w, 3, 10, parametrization="sp", optimizer="sgd",
                                   base_width=SGD_WIDTHS[0]) for w in SGD_WIDTHS}
    run = lambda: coordcheck.coord_check(nets, ds, batch=64, steps=4, seeds=4,  # noqa: E731
                                         optimizer="sgd", lr=0.05, key=0)
    assert compiles(run) == []
    # muP's networks differ from SP's only in init and learning-rate multipliers (data): the
    # training programs are shared, only the initializations are new (compiled by the fixture)
    mup = {w: parametrization.mlp(64, w, 3, 10, parametrization="mup", optimizer="sgd",
                                  base_width=SGD_WIDTHS[0]) for w in SGD_WIDTHS}
    assert compiles(lambda: coordcheck.coord_check(mup, ds, batch=64, steps=4, seeds=4,
                                                   optimizer="sgd", lr=0.05, key=0)) == []


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_value():
    x, y = _tiny_data()
    nets = {16: _tiny(16), 32: _tiny(32)}
    cases = [
        (dict(), "widths are needed", lambda **k: coordcheck.coord_check(_tiny, (x, y), **k)),
        (dict(widths=(32, 16)), "increasing widths, got \\[32, 16\\]",
         lambda **k: coordcheck.coord_check(_tiny, (x, y), **k)),
        (dict(optimizer="rmsprop"), "optimizer must be one of 'sgd', 'adam'; got 'rmsprop'",
         lambda **k: coordcheck.coord_check(nets, (x, y), **k)),
        (dict(statistic="mean"), "statistic must be one of 'l1', 'l2', 'std'; got 'mean'",
         lambda **k: coordcheck.coord_check(nets, (x, y), **k)),
        (dict(lr=0.0), "lr must be > 0.0, got 0.0",
         lambda **k: coordcheck.coord_check(nets, (x, y), **k)),
        (dict(steps=0), "steps must be >= 1, got 0",
         lambda **k: coordcheck.coord_check(nets, (x, y), **k)),
        (dict(), "x must have shape \\(batch, 8\\), got \\(5, 7\\)",
         lambda **k: coordcheck.coord_check(nets, (x[:, :7], y), **k)),
        (dict(), "values in \\[0, 3\\), got shape \\(5,\\), range \\[1, 3\\]",
         lambda **k: coordcheck.coord_check(nets, (x, y + 1), **k)),
        (dict(batch=5000), "batch 5000 exceeds the",
         lambda **k: coordcheck.coord_check(nets, data.digits(), **k)),
    ]
    for kwargs, message, call in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            call(**kwargs)
    with pytest.raises(TypeError, match="must be an initjax Network, got str"):
        coordcheck.coord_check({16: "net", 32: "net"}, (x, y))
    with pytest.raises(SystemExit):  # argparse: one of sp, ntk, mup
        _cli(["--parametrization", "abc", "--widths", "16,32", "--steps", "1", "--seeds", "1"])
    with pytest.raises(ValueError, match="base_width=64 is larger than the network's width 32"):
        _cli(["--widths", "32,64", "--base-width", "64", "--steps", "1", "--seeds", "1"])
    with pytest.raises(SystemExit):
        _cli(["--widths", "64,abc"])


def test_statistic_function():
    v = jnp.array([[-1.0, 3.0], [2.0, -2.0]])
    assert float(coordcheck.statistic(v, "l1")) == pytest.approx(2.0)
    assert float(coordcheck.statistic(v, "l2")) == pytest.approx(np.sqrt(4.5))
    assert float(coordcheck.statistic(v, "std")) == pytest.approx(np.std(np.asarray(v)))
