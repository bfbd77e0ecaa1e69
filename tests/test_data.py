"""Tests of initjax.data: Shapeset-3x2, digits, the local-file readers, teacher-student, batches."""

import gzip
import math
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from initjax import _shapes, data
from initjax._keys import as_key

# --------------------------------------------------------------------------------------------
# Shapeset-3x2

N_BALANCE = 9_000  # draws for the class-balance and grey-level tests


@pytest.fixture(scope="module")
def sample():
    """A large Shapeset batch with its masks and grey levels (drawn once for the module)."""
    return data.shapeset_sample(123, N_BALANCE)


def test_shapeset_shapes_dtypes_and_range():
    x, y = data.shapeset_batch(0, 50)
    assert x.shape == (50, 1024) and x.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert y.min() >= 0 and y.max() < 9
    x4, y4 = data.shapeset_batch(0, 50, flatten=False)
    assert x4.shape == (50, 32, 32, 1) and x4.dtype == np.float32
    np.testing.assert_array_equal(x4.reshape(50, -1), x)
    np.testing.assert_array_equal(y4, y)
    assert len(data.SHAPESET_CLASSES) == 9 and data.SHAPESET_IMAGE_SIZE == 32


def test_shapeset_public_images_have_one_dark_and_one_light_level():
    # Without the helper: each image holds exactly two grey levels (shapes and background), one in
    # the background interval and one in the foreground interval, in either role.
    x, _ = data.shapeset_batch(5, 300)
    grey = (x.astype(np.float64) + 1.0) / 2.0
    for img in grey:
        levels = np.unique(img)
        assert levels.size == 2
        assert -1e-6 <= levels[0] <= 0.45 + 1e-6
        assert 0.55 - 1e-6 <= levels[1] <= 1.0 + 1e-6


def test_shapeset_grey_levels_follow_the_masks(sample):
    union = sample.masks.any(axis=1)
    img = sample.images
    shape_level = sample.shape_level.astype(np.float32)[:, None, None]
    background_level = sample.background_level.astype(np.float32)[:, None, None]
    assert np.all(np.where(union, img == shape_level, img == background_level))
    light = np.where(sample.swapped, sample.background_level, sample.shape_level)
    dark = np.where(sample.swapped, sample.shape_level, sample.background_level)
    assert np.all((light >= 0.55) & (light <= 1.0))
    assert np.all((dark >= 0.0) & (dark <= 0.45))
    # Swapped with probability 1/2: within 5 binomial sigmas.
    n = sample.swapped.size
    assert abs(sample.swapped.sum() - n / 2) <= 5 * math.sqrt(n / 4)
    # Both intervals are used over their whole width, not one end.
    assert light.min() < 0.6 and light.max() > 0.95 and dark.min() < 0.05 and dark.max() > 0.4


def test_shapeset_class_balance(sample):
    n, k = sample.labels.size, len(data.SHAPESET_CLASSES)
    counts = np.bincount(sample.labels, minlength=k)
    assert counts.size == k
    p = 1.0 / k
    sigma = math.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= 5 * sigma), counts


def test_shapeset_number_of_shapes_matches_label(sample):
    areas = sample.masks.sum(axis=(2, 3))  # (n, 2)
    single = sample.labels < 3
    assert np.all(areas[:, 0] > 0)
    assert np.all(areas[single, 1] == 0)
    assert np.all(areas[~single, 1] > 0)
    # The smallest shape (a triangle of 0.2 x 0.2 of the image) still covers about 20 pixels.
    assert areas[areas > 0].min() >= 10


def test_shapeset_overlap_at_most_half_of_smaller_area(sample):
    pairs = sample.labels >= 3
    m = sample.masks[pairs]
    areas = m.sum(axis=(2, 3))
    inter = (m[:, 0] & m[:, 1]).sum(axis=(1, 2))
    assert np.all(inter <= 0.5 * areas.min(axis=1))
    assert np.any(inter > 0)  # overlapping is allowed, just not by more than half


def test_shapeset_shapes_lie_inside_the_image(sample):
    union = sample.masks.any(axis=1)
    border = np.ones((32, 32), dtype=bool)
    border[1:-1, 1:-1] = False
    assert not np.any(union[:, border])
    # Positions cover the image: some shape reaches each side's second row/column.
    assert union[:, 1, :].any() and union[:, -2, :].any()
    assert union[:, :, 1].any() and union[:, :, -2].any()


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.0, 2.5, 4.0])
def test_rasterized_areas_match_geometry(angle):
    # Shapes of box 0.6 x 0.5 at the centre: areas 1/2, 3/4 and pi/4 of the box, in pixels.
    kinds = np.array([0, 1, 2])
    params = np.tile([0.5, 0.5, 0.6, 0.5, angle], (3, 1))
    masks = _shapes.rasterize(kinds, params)
    box = 0.6 * 0.5 * 1024
    expected = np.array([0.5, 0.75, math.pi / 4]) * box
    np.testing.assert_allclose(masks.sum(axis=1), expected, rtol=0.06)


def test_half_extents_bound_the_rasterized_shape():
    rng = np.random.default_rng(0)
    kinds = rng.integers(0, 3, 200)
    params = _shapes.place_shapes(rng, kinds)
    hx, hy = _shapes.half_extents(kinds, params)
    masks = _shapes.rasterize(kinds, params).reshape(-1, 32, 32)
    centres = (np.arange(32) + 0.5) / 32
    for i in range(kinds.size):
        rows, cols = np.nonzero(masks[i])
        assert np.all(np.abs(centres[cols] - params[i, 0]) <= hx[i] + 1e-6)
        assert np.all(np.abs(centres[rows] - params[i, 1]) <= hy[i] + 1e-6)


def test_shapeset_deterministic_per_seed_and_different_across_seeds():
    x1, y1 = data.shapeset_batch(7, 40)
    x2, y2 = data.shapeset_batch(7, 40)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, _ = data.shapeset_batch(8, 40)
    assert not np.array_equal(x1, x3)
    # A Generator is advanced in place: two calls give two different batches.
    rng = np.random.default_rng(7)
    a, _ = data.shapeset_batch(rng, 40)
    b, _ = data.shapeset_batch(rng, 40)
    np.testing.assert_array_equal(a, x1)
    assert not np.array_equal(a, b)


def test_shapeset_large_batch_is_chunked_consistently():
    x, y = data.shapeset_batch(3, 2 * data.SHAPESET_CHUNK + 5)
    assert x.shape == (2 * data.SHAPESET_CHUNK + 5, 1024) and y.shape == (2 * data.SHAPESET_CHUNK + 5,)
    # Chunks draw fresh images, not copies of the first chunk.
    assert not np.array_equal(x[:5], x[data.SHAPESET_CHUNK : data.SHAPESET_CHUNK + 5])


def test_shapeset_stream_and_fixed_split():
    ds = data.shapeset(60, 30, seed=4)
    assert ds.num_classes == 9 and ds.name == "shapeset"
    assert ds.x_train.shape == (60, 1024) and ds.x_test.shape == (30, 1024)
    # Train and test come from different streams: no test image among the training images.
    assert not np.array_equal(ds.x_train[:30], ds.x_test)
    train_rows = {row.tobytes() for row in ds.x_train}
    assert not any(row.tobytes() in train_rows for row in ds.x_test)

    stream = data.shapeset_stream(4, 60)
    first, second = next(stream), next(stream)
    np.testing.assert_array_equal(first[0], ds.x_train)
    np.testing.assert_array_equal(first[1], ds.y_train)
    assert not np.array_equal(first[0], second[0])  # every batch fresh
    again = data.shapeset_stream(4, 60)
    next(again)
    np.testing.assert_array_equal(next(again)[0], second[0])  # deterministic per seed
    test_first = next(data.shapeset_stream(4, 30, split="test"))
    np.testing.assert_array_equal(test_first[0], ds.x_test)
    assert not np.array_equal(test_first[0], first[0][:30])
    # The k-th image of a stream does not depend on the batch size, across block boundaries too.
    small = data.shapeset_stream(4, 7)
    parts = [next(small) for _ in range(150)]  # 1050 images: spans two blocks of 1024
    big = next(data.shapeset_stream(4, 1050))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), big[0])
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), big[1])
    np.testing.assert_array_equal(big[0][:60], ds.x_train)
    other = data.shapeset(60, 30, seed=5)
    assert not np.array_equal(other.x_train, ds.x_train)
    assert data.shapeset(3, 2, flatten=False).x_train.shape == (3, 32, 32, 1)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: data.shapeset_batch(0, 0), ValueError, "n must be >= 1"),
        (lambda: data.shapeset_batch(0, 2.5), TypeError, "n must be an integer"),
        (lambda: data.shapeset_batch("seed", 3), TypeError, "rng_or_seed"),
        (lambda: data.shapeset_batch(-1, 3), ValueError, "rng_or_seed must be >= 0"),
        (lambda: data.shapeset_batch(0, 3, flatten=1), TypeError, "flatten"),
        (lambda: data.shapeset_stream(0, 0), ValueError, "batch_size must be >= 1"),
        (lambda: data.shapeset_stream(0, 4, split="val"), ValueError, "'train', 'test'"),
        (lambda: data.shapeset(0, 5), ValueError, "n_train must be >= 1"),
        (lambda: data.shapeset(5, 0), ValueError, "n_test must be >= 1"),
        (lambda: data.shapeset(5, 5, seed=-3), ValueError, "seed must be >= 0"),
    ],
)
def test_shapeset_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# --------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_labels_split_and_determinism():
    ds = data.digits()
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert ds.x_train.shape[1] == 64 and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
    # Stratified: each class holds out round(0.2 * its count) images.
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.round(0.2 * counts))
    # Standardized with training statistics: train features have mean 0 and std 1 or 0 (constant).
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    std = ds.x_train.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-4) | (std < 1e-6))
    again = data.digits()
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    other = data.digits(seed=1)
    assert not np.array_equal(other.y_test, ds.y_test) or not np.array_equal(
        other.x_test, ds.x_test
    )


def test_digits_unstandardized_and_unflattened():
    ds = data.digits(test_fraction=0.5, standardize=False, flatten=False)
    assert ds.x_train.shape[1:] == (8, 8, 1)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert abs(ds.x_test.shape[0] - 1797 / 2) <= 10


@pytest.mark.parametrize("bad, err", [(0.0, ValueError), (1.0, ValueError), (-0.1, ValueError),
                                      (1.5, ValueError), ("0.2", TypeError), (None, TypeError)])
def test_digits_bad_test_fraction(bad, err):
    with pytest.raises(err, match="test_fraction"):
        data.digits(test_fraction=bad)


def test_shipped_digits_equal_scikit_learns():
    """The shipped file is scikit-learn's load_digits, image for image and label for label
    (scikit-learn is a test dependency: the independent copy)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = data.digits(standardize=False, flatten=False, test_fraction=0.5)
    images = np.concatenate([ds.x_train, ds.x_test])[..., 0]
    labels = np.concatenate([ds.y_train, ds.y_test])
    # the split keeps file order within each set; compare as multisets of (label, image)
    got = sorted((int(y), tuple(np.round(x.ravel() * 16).astype(int)))
                 for x, y in zip(images, labels, strict=True))
    want = sorted((int(y), tuple(x.ravel().astype(int)))
                  for x, y in zip(bunch.images, bunch.target, strict=True))
    assert got == want


def test_digits_need_no_scikit_learn():
    """A user who installed initjax alone (README command 1) has the digits: load them in a
    process where importing scikit-learn fails."""
    code = ("import sys; sys.modules['sklearn'] = None; sys.modules['sklearn.datasets'] = None\n"
            "from initjax import data; ds = data.digits()\n"
            "print(ds.x_train.shape[0] + ds.x_test.shape[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1797"


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    ndim = array.ndim
    if magic is None:
        magic = 0x0800 | ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder, rng, n_train=6, n_test=4, rows=5, cols=3, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("loader", [data.mnist, data.fashion_mnist])
def test_idx_roundtrip(tmp_path, gz, loader):
    arrays = _write_mnist(tmp_path, np.random.default_rng(0), gz=gz)
    ds = loader(tmp_path)
    train = arrays["train-images-idx3-ubyte"]
    assert ds.x_train.shape == (6, 15) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train, train.reshape(6, -1).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(
        ds.x_test, arrays["t10k-images-idx3-ubyte"].reshape(4, -1).astype(np.float32) / 255.0
    )
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    img = loader(tmp_path, flatten=False)
    assert img.x_train.shape == (6, 5, 3, 1)
    np.testing.assert_array_equal(img.x_train[..., 0] * 255.0, train.astype(np.float32))


def test_read_idx_parses_header(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_bytes(arr))
    out = data.read_idx(path, expected_magic=2051)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.mnist(tmp_path / "nowhere")
    msg = str(info.value)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in msg
    assert "MNIST" in msg and "does not exist" in msg
    _write_mnist(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte.gz"):
        data.fashion_mnist(tmp_path)
    with pytest.raises(TypeError, match="data_dir"):
        data.mnist(3)


def test_mnist_corrupt_magic(tmp_path):
    _write_mnist(tmp_path, np.random.default_rng(0))
    bad = _idx_bytes(np.zeros((6, 5, 3), np.uint8), magic=2050)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*magic number 2050"):
        data.mnist(tmp_path)
    # Labels file in place of images: a valid IDX, but the wrong magic (2049).
    labels = _idx_bytes(np.zeros(6, np.uint8))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(ValueError, match="magic number 2049"):
        data.mnist(tmp_path)


def test_mnist_truncated_and_mismatched(tmp_path):
    _write_mnist(tmp_path, np.random.default_rng(0))
    raw = _idx_bytes(np.zeros((6, 5, 3), np.uint8))[:-7]
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: IDX header says"):
        data.mnist(tmp_path)
    _write_mnist(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros(3, np.uint8)))
    )
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        data.mnist(tmp_path)


# --------------------------------------------------------------------------------------------
# CIFAR-10


def _write_cifar(folder, rng, n=3, protocol=pickle.HIGHEST_PROTOCOL):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        raw = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": raw,
                 b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = (raw, labels)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("nested", [True, False])
def test_cifar_roundtrip(tmp_path, nested, protocol):
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    batches = _write_cifar(folder, np.random.default_rng(1), protocol=protocol)
    ds = data.cifar10(tmp_path)
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (3, 3072)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    raw = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(ds.y_train, labels)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])
    img = data.cifar10(folder, flatten=False)  # the batches directory itself is accepted too
    assert img.x_train.shape == (15, 32, 32, 3)
    # Pixel (h, w) of channel c sits at c * 1024 + h * 32 + w of a row of the file.
    for i, h, w, c in [(0, 0, 0, 0), (4, 7, 30, 1), (14, 31, 2, 2)]:
        assert img.x_train[i, h, w, c] == np.float32(raw[i, c * 1024 + h * 32 + w]) / 255.0
    np.testing.assert_array_equal(img.x_train.reshape(15, -1), ds.x_train)
    np.testing.assert_array_equal(
        ds.x_test.reshape(3, 32, 32, 3).transpose(0, 3, 1, 2).reshape(3, -1) * 255.0,
        batches["test_batch"][0].astype(np.float32),
    )


def test_cifar_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.cifar10(tmp_path)
    msg = str(info.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "data_batch_5" in msg
    assert "test_batch" in msg and "CIFAR-10" in msg
    _write_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError):
        data.cifar10(tmp_path)


def test_cifar_reads_pickles_naming_numpy_core(tmp_path):
    # The real batches were pickled by numpy 1 (numpy.core.multiarray); numpy 2 renamed it
    # numpy._core and warns on the old name. Rewrite our protocol-2 pickles to the old name.
    batches = _write_cifar(tmp_path, np.random.default_rng(2), protocol=2)
    for name in batches:
        raw = (tmp_path / name).read_bytes()
        old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        if old == raw:
            pytest.skip("this numpy pickles under numpy.core already")
        (tmp_path / name).write_bytes(old)
    ds = data.cifar10(tmp_path, flatten=False)
    np.testing.assert_array_equal(
        ds.x_test.transpose(0, 3, 1, 2).reshape(3, -1) * 255.0,
        batches["test_batch"][0].astype(np.float32),
    )


class _Evil:
    def __reduce__(self):
        return (sys.exit, ("pickle ran code",))


def test_cifar_refuses_foreign_pickles(tmp_path):
    _write_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=r"test_batch.*refusing to load .*exit"):
        data.cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(ValueError, match="test_batch: missing key"):
        data.cifar10(tmp_path)


# --------------------------------------------------------------------------------------------
# teacher-student


def test_teacher_student_classification():
    ds = data.teacher_student(0, 3000, 500, in_dim=20, num_classes=5, hidden=(64,))
    assert ds.x_train.shape == (3000, 20) and ds.x_train.dtype == np.float32
    assert ds.y_train.shape == (3000,) and ds.y_train.dtype == np.int32
    assert ds.num_classes == 5 and ds.name == "teacher_student"
    counts = np.bincount(ds.y_train, minlength=5)
    assert counts.size == 5 and np.all(counts > 0)
    assert counts.max() < 0.9 * 3000  # not degenerate
    # The one key rule: an int seed s is jax.random.key(s, impl="philox2x32") (as_key(s)).
    for key in (as_key(0), jax.random.key(0, impl="philox2x32")):
        again = data.teacher_student(key, 3000, 500, 20, 5, hidden=(64,))
        np.testing.assert_array_equal(again.x_train, ds.x_train)
        np.testing.assert_array_equal(again.y_test, ds.y_test)
    # A threefry key (typed, or the raw jax.random.PRNGKey(s) it makes) is another key: other data,
    # the same for both forms.
    threefry = data.teacher_student(jax.random.key(0, impl="threefry2x32"), 3000, 500, 20, 5,
                                    hidden=(64,))
    raw = data.teacher_student(jax.random.PRNGKey(0), 3000, 500, 20, 5, hidden=(64,))
    np.testing.assert_array_equal(raw.x_train, threefry.x_train)
    assert not np.array_equal(threefry.x_train, ds.x_train)
    other = data.teacher_student(1, 3000, 500, 20, 5, hidden=(64,))
    assert not np.array_equal(other.x_train, ds.x_train)
    assert not np.array_equal(ds.x_train[:500], ds.x_test)


def test_teacher_student_regression_and_linear_teacher():
    ds = data.teacher_student(2, 200, 50, 10, 3, hidden=(32, 32), activation="relu",
                              task="regression", noise=0.1)
    assert ds.y_train.shape == (200, 3) and ds.y_train.dtype == np.float32
    assert np.all(np.isfinite(ds.y_train)) and np.all(np.isfinite(ds.y_test))
    assert ds.y_train.std() > 0.01
    # A linear teacher with no noise: y = x @ W with W ~ N(0, 1/in_dim) has Var[y] ~ |x|^2 / in_dim.
    lin = data.teacher_student(3, 4000, 10, 50, 1, hidden=(), task="regression")
    assert lin.y_train.shape == (4000, 1)
    w, *_ = np.linalg.lstsq(lin.x_train, lin.y_train, rcond=None)
    np.testing.assert_allclose(lin.x_train @ w, lin.y_train, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(num_classes=1), ValueError, "num_classes must be >= 2"),
        (dict(task="ranking"), ValueError, "task must be one of"),
        (dict(noise=0.5), ValueError, "noise applies"),
        (dict(n_train=0), ValueError, "n_train must be >= 1"),
        (dict(hidden=(8, 0)), ValueError, "hidden width must be >= 1"),
        (dict(hidden="8"), TypeError, "hidden"),
        (dict(key_or_seed="k"), TypeError, "key_or_seed"),
        (dict(key_or_seed=True), TypeError, "key_or_seed"),
        (dict(key_or_seed=-1), ValueError, "key_or_seed"),
        (dict(activation="nope"), ValueError, "unknown activation"),
    ],
)
def test_teacher_student_bad_input(kwargs, err, match):
    args = dict(key_or_seed=0, n_train=10, n_test=5, in_dim=4, num_classes=3)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        data.teacher_student(**args)


# --------------------------------------------------------------------------------------------
# batches


def test_batches_each_example_once_per_epoch():
    n, bs = 60, 12
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n, dtype=np.int32)
    epochs = []
    it = data.batches(x, y, bs, seed=0, epochs=3)
    for _ in range(3):
        seen = []
        for _ in range(n // bs):
            xb, yb = next(it)
            assert xb.shape == (bs, 3) and yb.shape == (bs,)
            np.testing.assert_array_equal(xb[:, 0], yb)  # rows stay paired
            seen.append(yb)
        epochs.append(np.concatenate(seen))
        np.testing.assert_array_equal(np.sort(epochs[-1]), y)
    with pytest.raises(StopIteration):
        next(it)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], y)  # shuffled
    again = [yb for _, yb in data.batches(x, y, bs, seed=0, epochs=3)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(epochs))
    other = [yb for _, yb in data.batches(x, y, bs, seed=1, epochs=1)]
    assert not np.array_equal(np.concatenate(other), epochs[0])


def test_batches_drop_last_and_endless():
    y = np.arange(10)
    got = list(data.batches(y, y, 3, seed=0, epochs=2))
    assert len(got) == 6 and all(b[1].shape == (3,) for b in got)
    for e in range(2):
        ids = np.concatenate([b[1] for b in got[3 * e : 3 * e + 3]])
        assert np.unique(ids).size == 9  # 9 distinct examples, the 10th dropped this epoch
    endless = data.batches(y, y, 10, seed=0)
    assert len([next(endless) for _ in range(25)]) == 25


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((np.zeros(5), np.zeros(5), 0, 0), ValueError, "batch_size must be >= 1"),
        ((np.zeros(5), np.zeros(5), 6, 0), ValueError, "batch_size must be <= .* 5, got 6"),
        ((np.zeros(5), np.zeros(4), 2, 0), ValueError, "same number of rows"),
        ((np.zeros(5), np.zeros(5), 2.0, 0), TypeError, "batch_size must be an integer"),
        ((np.zeros(5), np.zeros(5), 2, -1), ValueError, "seed must be >= 0"),
        ((np.zeros(0), np.zeros(0), 1, 0), ValueError, "at least one"),
    ],
)
def test_batches_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        data.batches(*args)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        data.batches(np.zeros(5), np.zeros(5), 1, 0, epochs=0)


# --------------------------------------------------------------------------------------------
# registry


def test_get_registry():
    ds = data.get("shapeset", n_train=5, n_test=4, seed=2)
    ref = data.shapeset(5, 4, seed=2)
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    ts = data.get("teacher_student:in_dim=6,num_classes=3", key_or_seed=1, n_train=8, n_test=4)
    assert ts.x_train.shape == (8, 6) and ts.num_classes == 3
    for name in ("shapeset", "digits", "mnist", "fashion_mnist", "cifar10", "teacher_student"):
        assert name in data.names()
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cifar10.*teacher_student"):
        data.get("imagenet")
    with pytest.raises(FileNotFoundError):
        data.get("mnist", data_dir="/nonexistent/initjax-test")


def test_public_api():
    for name in data.__all__:
        assert hasattr(data, name), name


def test_data_dir_that_is_a_file_is_named_as_such(tmp_path):
    path = tmp_path / "mnist.gz"
    path.write_bytes(b"not a directory")
    with pytest.raises(FileNotFoundError, match="is a file, not a directory"):
        data.mnist(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.mnist(tmp_path / "nowhere")
