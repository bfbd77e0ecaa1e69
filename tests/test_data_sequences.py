"""Tests of initjax.data.sequences: labels recomputed from the one-hot inputs, determinism per
seed, independent train/test streams, the registry spec, and refused input."""

import numpy as np
import pytest

from initjax import data


def _ids(x):
    """Token ids from one-hot inputs, checking that every token is exactly one-hot."""
    assert x.dtype == np.float32
    assert np.all((x == 0) | (x == 1)) and np.all(x.sum(-1) == 1)
    return x.argmax(-1)


@pytest.mark.parametrize("task", ["sort", "reverse", "max"])
def test_labels_recomputed_from_inputs(task):
    ds = data.sequences(task, 300, 50, tokens=7, vocab=5, seed=1)
    assert ds.name == "sequences" and ds.num_classes == 5
    for x, y, n in ((ds.x_train, ds.y_train, 300), (ds.x_test, ds.y_test, 50)):
        assert x.shape == (n, 7, 5) and y.dtype == np.int32
        ids = _ids(x)
        want = {"sort": np.sort(ids, axis=1), "reverse": ids[:, ::-1], "max": ids.max(axis=1)}[task]
        assert y.shape == want.shape
        np.testing.assert_array_equal(y, want)
        assert 0 <= y.min() and y.max() < 5


def test_tokens_uniform_over_the_vocabulary():
    # 20,000 ids over 10 values: each count ~ Binomial(20000, 0.1), std 42; 6 std allowed.
    ids = _ids(data.sequences("sort", 2000, 1, tokens=10, vocab=10, seed=0).x_train)
    counts = np.bincount(ids.ravel(), minlength=10)
    assert np.all(np.abs(counts - 2000) < 6 * np.sqrt(20000 * 0.1 * 0.9))
    # the sort labels are then non-decreasing and not all equal
    ys = data.sequences("sort", 50, 1, seed=0).y_train
    assert np.all(np.diff(ys, axis=1) >= 0) and np.any(np.diff(ys, axis=1) > 0)


def test_deterministic_per_seed_and_streams_independent():
    a = data.sequences("reverse", 64, 32, seed=4)
    b = data.sequences("reverse", 64, 32, seed=4)
    for u, v in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(u, v)
    c = data.sequences("reverse", 64, 32, seed=5)
    assert not np.array_equal(a.x_train, c.x_train)
    # train and test come from different streams: the first test sequences are not the first
    # training ones, and a larger training set starts with the same sequences (one stream)
    assert not np.array_equal(a.x_train[:32], a.x_test)
    big = data.sequences("reverse", 128, 8, seed=4)
    np.testing.assert_array_equal(big.x_train[:64], a.x_train)
    np.testing.assert_array_equal(big.x_test, a.x_test[:8])
    # the same ids whatever the task
    s = data.sequences("sort", 64, 32, seed=4)
    np.testing.assert_array_equal(s.x_train, a.x_train)


def test_registry_spec():
    ds = data.get("sequences:task=max,tokens=4,vocab=3", n_train=16, n_test=8, seed=2)
    assert ds.x_train.shape == (16, 4, 3) and ds.y_train.shape == (16,)
    np.testing.assert_array_equal(ds.y_train, ds.x_train.argmax(-1).max(1))
    assert "sequences" in data.names()


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "copy"}, "task must be one of 'sort', 'reverse', 'max'; got 'copy'"),
    ({"tokens": 1}, "tokens"),
    ({"vocab": 1}, "vocab"),
    ({"n_train": 0}, "n_train"),
    ({"n_test": 0}, "n_test"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.sequences(**kwargs)


def test_bad_types_refused():
    with pytest.raises(TypeError, match="tokens"):
        data.sequences(tokens=2.5)
    with pytest.raises(TypeError, match="seed"):
        data.sequences(seed="0")
