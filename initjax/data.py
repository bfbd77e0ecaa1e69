"""Deterministic datasets for the training experiments, as numpy arrays.

Every loader returns a :class:`Dataset`: ``float32`` inputs and ``int32`` labels (``float32``
targets for the teacher-student regression task). Inputs are flattened to ``(n, features)`` by
default; ``flatten=False`` gives images as ``(n, H, W, C)`` (channels last, as Flax's ``Conv``
expects). A flattened image is the row-major flattening of its ``(H, W, C)`` array, so
``x_flat.reshape(n, H, W, C)`` recovers it.

    >>> ds = get("shapeset", n_train=1_000, n_test=200)     # Glorot & Bengio's Shapeset-3x2
    >>> ds.x_train.shape, ds.num_classes
    ((1000, 1024), 9)
    >>> for xb, yb in batches(ds.x_train, ds.y_train, batch_size=10, seed=0, epochs=1):
    ...     pass                                             # 100 shuffled batches of 10
    >>> xb.shape, yb.shape
    ((10, 1024), (10,))

What each set is:

- **Shapeset-3x2** (Glorot & Bengio 2010, section 2.1): procedural 32x32 grey images of one or two
  shapes, generated on the fly: :func:`shapeset_batch`, the endless online stream
  :func:`shapeset_stream`, and the fixed train/test split :func:`shapeset`.
- **digits**: the 8x8 handwritten digits shipped with initjax (1797 images, no download), :func:`digits`.
- **MNIST, Fashion-MNIST, CIFAR-10**: readers of the files a user downloaded once
  (:func:`mnist`, :func:`fashion_mnist`, :func:`cifar10`). Nothing here ever downloads.
- **teacher-student**: Gaussian inputs labelled by a random teacher MLP, :func:`teacher_student`.
- **sequences**: procedural one-hot token sequences to sort, reverse or take the maximum of, for
  token networks (transformers): :func:`sequences`; inputs ``(n, tokens, vocab)``.

Randomness is numpy's ``Generator`` seeded through ``SeedSequence`` (the teacher-student set also
takes a JAX key, whose data seeds numpy), so a given seed gives the same arrays on every machine
and every run.

References:
  Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
  networks", AISTATS. https://proceedings.mlr.press/v9/glorot10a.html
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from initjax import _shapes
from initjax._checks import check_choice, check_float, check_int
from initjax._keys import as_key
from initjax._precision import matmul_precision
from initjax._registry import Registry

__all__ = [
    "Dataset",
    "get",
    "names",
    "batches",
    "SHAPESET_CLASSES",
    "SHAPESET_IMAGE_SIZE",
    "shapeset",
    "shapeset_batch",
    "shapeset_stream",
    "shapeset_sample",
    "ShapesetSample",
    "SHAPESET_CHUNK",
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "read_idx",
    "teacher_student",
    "sequences",
    "SEQUENCE_TASKS",
]


class Dataset(NamedTuple):
    """A train/test split held in memory.

    Attributes:
      x_train: inputs, ``float32``; shape ``(n_train, features)`` when flattened, else
        ``(n_train, H, W, C)``; for sequence sets ``(n_train, tokens, features)``.
      y_train: labels ``int32`` in ``[0, num_classes)``, shape ``(n_train,)``; for per-token
        sequence tasks (:func:`sequences`' ``"sort"``, ``"reverse"``) one label per token,
        ``(n_train, tokens)``; for the teacher-student regression task, ``float32`` targets of
        shape ``(n_train, num_classes)``.
      x_test: as ``x_train``, for the test set.
      y_test: as ``y_train``, for the test set.
      num_classes: the number of classes (for regression: the number of outputs), i.e. the width
        of the model's output layer.
      name: the dataset's registry name, e.g. ``"shapeset"``.
    """

    x_train: np.ndarray  # shape=(n_train, features) or (n_train, H, W, C), dtype=float32
    y_train: np.ndarray  # shape=(n_train,) or (n_train, tokens), dtype=int32
    x_test: np.ndarray  # shape=(n_test, features) or (n_test, H, W, C), dtype=float32
    y_test: np.ndarray  # shape=(n_test,) or (n_test, tokens), dtype=int32
    num_classes: int
    name: str

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape} {self.x_train.dtype}, "
            f"x_test={self.x_test.shape}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_seed(name: str, seed: Any) -> int:
    # SeedSequence accepts only non-negative integers.
    return check_int(name, seed, minimum=0)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def _as_generator(rng_or_seed: Any) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, bool) or not isinstance(rng_or_seed, numbers.Integral):
        raise TypeError(
            "rng_or_seed must be a numpy.random.Generator or a non-negative int seed, "
            f"got {rng_or_seed!r} ({type(rng_or_seed).__name__})"
        )
    return np.random.default_rng(_check_seed("rng_or_seed", rng_or_seed))


def _child_rng(seed: int, *path: int) -> np.random.Generator:
    """An independent generator for the stream ``path`` of ``seed`` (numpy's spawn mechanism)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=path))


def _images(x: np.ndarray, flatten: bool) -> np.ndarray:
    """``(n, H, W, C)`` float32 -> flattened ``(n, H*W*C)`` (row-major) if ``flatten``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x.reshape(x.shape[0], -1) if flatten else x


# --------------------------------------------------------------------------------------------
# Shapeset-3x2

SHAPESET_IMAGE_SIZE = _shapes.IMAGE_SIZE


#: Class index -> the shapes in the image (t = triangle, p = parallelogram, e = ellipse).
#: 0-2 are single shapes, 3-8 the unordered pairs, same kind first.
SHAPESET_CLASSES: tuple[str, ...] = ("t", "p", "e", "tt", "pp", "ee", "tp", "te", "pe")
_LETTER = {"t": _shapes.TRIANGLE, "p": _shapes.PARALLELOGRAM, "e": _shapes.ELLIPSE}
_CLASS_SHAPES = np.array(
    [[_LETTER[c[0]], _LETTER[c[1]] if len(c) == 2 else _shapes.NONE] for c in SHAPESET_CLASSES],
    dtype=np.int64,
)  # shape=(9, 2): the first and second shape of each class, _shapes.NONE where there is none

# Grey levels in [0, 1] before scaling to [-1, 1] (Glorot & Bengio 2010, section 2.1).
_FOREGROUND = (0.55, 1.0)
_BACKGROUND = (0.0, 0.45)
# Two shapes may share at most this fraction of the smaller one's area (in pixels).
_MAX_OVERLAP = 0.5
# Images generated per vectorized chunk: bounds the memory of the (shapes, pixels) arrays.
SHAPESET_CHUNK = 2048


class ShapesetSample(NamedTuple):
    """Everything drawn for a batch of Shapeset images (a testing and plotting aid)."""

    images: np.ndarray  # shape=(n, H, W), dtype=float32, grey levels in [0, 1] (before scaling)
    masks: np.ndarray  # shape=(n, 2, H, W), dtype=bool; the second mask is empty for one shape
    labels: np.ndarray  # shape=(n,), dtype=int32
    shape_level: np.ndarray  # shape=(n,), grey level of the shapes' pixels
    background_level: np.ndarray  # shape=(n,), grey level of the other pixels
    swapped: np.ndarray  # shape=(n,), dtype=bool; True: dark shapes on a light background



def _shapeset_chunk(rng: np.random.Generator, n: int) -> ShapesetSample:
    size = SHAPESET_IMAGE_SIZE
    labels = rng.integers(0, len(SHAPESET_CLASSES), size=n)
    kinds = _CLASS_SHAPES[labels]  # (n, 2)
    shape_level = rng.uniform(*_FOREGROUND, size=n)
    background_level = rng.uniform(*_BACKGROUND, size=n)
    swapped = rng.random(n) < 0.5
    shape_level, background_level = (
        np.where(swapped, background_level, shape_level),
        np.where(swapped, shape_level, background_level),
    )

    masks = np.zeros((n, 2, size * size), dtype=bool)
    masks[:, 0] = _shapes.rasterize(kinds[:, 0], _shapes.place_shapes(rng, kinds[:, 0]))
    # Pairs: redraw both shapes of an image while they share more than half of the smaller area.
    todo = np.flatnonzero(kinds[:, 1] != _shapes.NONE)
    for attempt in range(_shapes.MAX_REJECTION_ROUNDS):
        if todo.size == 0:
            break
        if attempt > 0:
            masks[todo, 0] = _shapes.rasterize(kinds[todo, 0], _shapes.place_shapes(rng, kinds[todo, 0]))
        masks[todo, 1] = _shapes.rasterize(kinds[todo, 1], _shapes.place_shapes(rng, kinds[todo, 1]))
        area = masks[todo].sum(axis=2)  # (k, 2)
        inter = (masks[todo, 0] & masks[todo, 1]).sum(axis=1)
        todo = todo[inter > _MAX_OVERLAP * area.min(axis=1)]
    else:  # pragma: no cover
        raise RuntimeError("Shapeset: could not place two shapes with overlap <= 1/2")

    union = masks.any(axis=1)
    images = np.where(union, shape_level[:, None], background_level[:, None]).astype(np.float32)
    return ShapesetSample(
        images=images.reshape(n, size, size),
        masks=masks.reshape(n, 2, size, size),
        labels=labels.astype(np.int32),
        shape_level=shape_level,
        background_level=background_level,
        swapped=swapped,
    )


def shapeset_sample(rng_or_seed: Any, n: int) -> ShapesetSample:
    """``n`` Shapeset-3x2 images with their shape masks and grey levels.

    The images are those of ``shapeset_batch(rng_or_seed, n)`` before scaling to ``[-1, 1]``.
    """
    rng = _as_generator(rng_or_seed)
    n = check_int("n", n, minimum=1)
    parts = [_shapeset_chunk(rng, min(SHAPESET_CHUNK, n - i)) for i in range(0, n, SHAPESET_CHUNK)]
    if len(parts) == 1:
        return parts[0]
    return ShapesetSample(*(np.concatenate(fields) for fields in zip(*parts)))


def shapeset_batch(
    rng_or_seed: np.random.Generator | int, n: int, *, flatten: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` Shapeset-3x2 images (Glorot & Bengio 2010, section 2.1).

    Each 32x32 grey image holds one or two shapes among triangle, parallelogram and ellipse. The
    label is one of 9 classes, :data:`SHAPESET_CLASSES` =
    ``("t", "p", "e", "tt", "pp", "ee", "tp", "te", "pe")``: the single shape (0-2), or the
    unordered pair (3-8, including two of the same kind). Classes are drawn **uniformly at
    random** (i.i.d.), so they are balanced in expectation, not exactly.

    How an image is drawn:

    - grey levels: shapes ``U[0.55, 1]``, background ``U[0, 0.45]``, the two swapped with
      probability 1/2 (dark shapes on a light background); both shapes of a pair share one level;
    - each shape: its unrotated bounding box is ``U[0.2, 0.8]`` of the image size per axis,
      rotated by ``U[0, 2 pi)``; (size, angle) draws that cannot fit are redrawn; the position is
      uniform among those keeping the shape at least one pixel away from the border;
    - pairs: both shapes are redrawn until they share at most half of the smaller one's area;
    - rasterization on the pixel-centre grid (no anti-aliasing): point in polygon by half-plane
      tests, ellipse by its quadratic form; then pixels are scaled from ``[0, 1]`` to ``[-1, 1]``.

    Canonical shapes: an isosceles triangle and a parallelogram sheared by a quarter of its height,
    both filling their box's width, and the ellipse inscribed in the box. The paper does not give
    these details; these are our choices.

    Args:
      rng_or_seed: a ``numpy.random.Generator`` (advanced in place) or a non-negative int seed.
        A given seed and ``n`` always give the same batch.
      n: the number of images, ``>= 1``.
      flatten: return ``x`` as ``(n, 1024)`` if True, else ``(n, 32, 32, 1)``.

    Returns:
      ``(x, y)``: ``float32`` images in ``[-1, 1]`` and ``int32`` labels in ``[0, 9)``.

    Raises:
      TypeError: if ``rng_or_seed`` is neither a Generator nor an int, or ``n`` is not an int.
      ValueError: if ``n < 1`` or the seed is negative.

    References:
      Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
      networks". https://proceedings.mlr.press/v9/glorot10a.html
    """
    flatten = _check_flag("flatten", flatten)
    sample = shapeset_sample(rng_or_seed, n)
    x = 2.0 * sample.images[..., None] - 1.0
    return _images(x, flatten), sample.labels


_SPLITS = {"train": 0, "test": 1}
# The streams draw images in blocks of this many, block j from its own generator (seed, split, j):
# the k-th image of a stream is the same whatever the batch size, and a batch of 10 (the paper's)
# costs no more per image than a large one.
_STREAM_BLOCK = 1024


def _stream_blocks(
    seed: int, split_id: int, flatten: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    block = 0
    while True:
        yield shapeset_batch(_child_rng(seed, split_id, block), _STREAM_BLOCK, flatten=flatten)
        block += 1


def shapeset_stream(
    seed: int, batch_size: int, *, split: str = "train", flatten: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An endless online stream of fresh Shapeset-3x2 batches, as trained on in the paper.

    The stream is a fixed sequence of images per ``(seed, split)``, cut into consecutive batches:
    every batch is new, the ``k``-th image is the same on every run **and for every batch size**,
    and the ``"test"`` stream is independent of the ``"train"`` one. :func:`shapeset`'s training
    set is the first ``n_train`` images of the train stream, and its test set the first ``n_test``
    of the test stream. (Images are generated in blocks of 1024, block ``j`` by a generator spawned
    from ``(seed, split, j)``.)

    Args:
      seed: non-negative int.
      batch_size: images per batch, ``>= 1``.
      split: ``"train"`` or ``"test"``: which of two independent streams.
      flatten: as in :func:`shapeset_batch`.

    Yields:
      ``(x, y)`` batches as returned by :func:`shapeset_batch`.

    Raises:
      TypeError, ValueError: for a bad seed, batch size or split (raised at the call, not at the
        first ``next``).

    References:
      Glorot & Bengio 2010. https://proceedings.mlr.press/v9/glorot10a.html
    """
    seed = _check_seed("seed", seed)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    split_id = _SPLITS[check_choice("split", split, _SPLITS)]
    flatten = _check_flag("flatten", flatten)

    def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        blocks = _stream_blocks(seed, split_id, flatten)
        x, y = next(blocks)
        pos = 0
        while True:
            if pos + batch_size <= x.shape[0]:
                yield x[pos : pos + batch_size], y[pos : pos + batch_size]
                pos += batch_size
                continue
            # The batch spans blocks: keep the unused tail and append as many blocks as needed.
            need = pos + batch_size - x.shape[0]
            more_x, more_y = _next_blocks(blocks, need)
            x, y = np.concatenate([x[pos:], more_x]), np.concatenate([y[pos:], more_y])
            pos = 0

    return stream()


def _next_blocks(
    blocks: Iterator[tuple[np.ndarray, np.ndarray]], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole blocks holding at least ``n`` images."""
    parts = [next(blocks) for _ in range(-(-n // _STREAM_BLOCK))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def shapeset(n_train: int, n_test: int, seed: int = 0, *, flatten: bool = True) -> Dataset:
    """A fixed Shapeset-3x2 train/test split (Glorot & Bengio 2010).

    The paper trains on an endless stream (:func:`shapeset_stream`); a fixed training set is handy
    for epoch-based comparisons. The training set is the first ``n_train`` images of the
    ``"train"`` stream and the test set the first ``n_test`` images of the independent ``"test"``
    stream, so the test set never overlaps any training stream of the same seed.

    Args:
      n_train: training images, ``>= 1``.
      n_test: test images, ``>= 1``.
      seed: non-negative int.
      flatten: ``x`` as ``(n, 1024)`` if True, else ``(n, 32, 32, 1)``.

    Returns:
      A :class:`Dataset` with 9 classes and ``float32`` pixels in ``[-1, 1]``.

    References:
      Glorot & Bengio 2010. https://proceedings.mlr.press/v9/glorot10a.html
    """
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    seed = _check_seed("seed", seed)
    flatten = _check_flag("flatten", flatten)
    def first(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = _next_blocks(_stream_blocks(seed, _SPLITS[split], flatten), n)
        # Copy, so the unused tail of the last block is freed.
        return x[:n].copy(), y[:n].copy()

    x_train, y_train = first("train", n_train)
    x_test, y_test = first("test", n_test)
    return Dataset(x_train, y_train, x_test, y_test, len(SHAPESET_CLASSES), "shapeset")


# --------------------------------------------------------------------------------------------
# digits (shipped: data_files/digits.npz)


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices with ``round(test_fraction * count)`` test items per class."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


DIGITS_FILE = Path(__file__).parent / "data_files" / "digits.npz"


@functools.lru_cache(maxsize=1)
def _digits_file() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8 0-16, labels (1797,) uint8) from the shipped file."""
    try:
        with np.load(DIGITS_FILE) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, KeyError, ValueError) as err:
        raise OSError(f"initjax's digits file {DIGITS_FILE} is missing or damaged ({err}); "
                      "reinstall initjax") from err
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise OSError(f"initjax's digits file {DIGITS_FILE} holds shapes {images.shape}, "
                      f"{labels.shape}, not (1797, 8, 8), (1797,); reinstall initjax")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def digits(
    test_fraction: float = 0.2, seed: int = 0, *, standardize: bool = True, flatten: bool = True
) -> Dataset:
    """The 8x8 handwritten digits (1797 images, 10 classes), shipped with initjax: no download and
    no optional dependency (the UCI "Optical Recognition of Handwritten Digits" images that
    scikit-learn bundles as ``load_digits``; CC BY 4.0, Alpaydin & Kaynak 1998).

    Pixels (0-16 in the file) are scaled to ``[0, 1]``; then, with ``standardize=True``, each pixel
    is standardized with the **training** set's mean and std (pixels constant in the training set,
    such as the always-blank corners, are only centred), so the test set sees no test statistics.
    The split is stratified: each class puts ``round(test_fraction * count)`` of its images, chosen
    by ``seed``, into the test set; both sets keep the original file order.

    Args:
      test_fraction: fraction of each class held out, in ``(0, 1)``.
      seed: non-negative int choosing the split.
      standardize: standardize per pixel (True) or keep ``[0, 1]`` pixels (False).
      flatten: ``x`` as ``(n, 64)`` if True, else ``(n, 8, 8, 1)``.

    Returns:
      A :class:`Dataset` named ``"digits"`` with 10 classes.

    Raises:
      ValueError: if ``test_fraction`` is not in ``(0, 1)`` or leaves a set empty.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(
            f"test_fraction must be a real number in (0, 1), got {test_fraction!r} "
            f"({type(test_fraction).__name__})"
        )
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in the open interval (0, 1), got {test_fraction}")
    test_fraction = float(test_fraction)
    seed = _check_seed("seed", seed)
    standardize = _check_flag("standardize", standardize)
    flatten = _check_flag("flatten", flatten)
    images, labels = _digits_file()
    x = images.astype(np.float64) / 16.0  # (1797, 8, 8), 0-16 -> [0, 1]
    y = labels.astype(np.int32)
    train, test = _stratified_split(y, test_fraction, _child_rng(seed, 0))
    if train.size == 0 or test.size == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves the train or the test set empty")
    x_train, x_test = x[train], x[test]
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0.0, std, 1.0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(
        _images(x_train[..., None], flatten),
        y[train],
        _images(x_test[..., None], flatten),
        y[test],
        10,
        "digits",
    )


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX files)

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (n, rows, cols)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (n,)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_WHERE = {
    "mnist": "the MNIST database page of Yann LeCun, Corinna Cortes and Chris Burges "
    "('THE MNIST DATABASE of handwritten digits')",
    "fashion_mnist": "Zalando Research's Fashion-MNIST repository on GitHub "
    "(zalandoresearch/fashion-mnist)",
    "cifar10": "Alex Krizhevsky's CIFAR-10 page at the University of Toronto "
    "('CIFAR-10 python version', cifar-10-python.tar.gz, then extract it)",
}


def _check_dir(data_dir: Any) -> Path:
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            f"data_dir must be a str or path, got {data_dir!r} ({type(data_dir).__name__})"
        )
    return Path(data_dir).expanduser()


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it starts with the gzip magic (whatever its extension)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    return raw


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not, into a numpy array.

    An IDX file is a big-endian header, a magic number ``0x0000TTDD`` (``TT`` the element type,
    ``0x08`` for unsigned bytes; ``DD`` the number of dimensions), then one ``uint32`` per
    dimension, then the data in row-major order. MNIST images have magic 2051 (``0x803``), labels
    2049 (``0x801``).

    Args:
      path: the file; gzip is detected from its content, not its name.
      expected_magic: if given, the magic number the file must have.

    Returns:
      The array with the header's shape and dtype (native byte order).

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: naming the file, for a bad or unexpected magic number, or a size that disagrees
        with the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file ({len(data)} bytes, shorter than the header)")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected {expected_magic} "
            f"(0x{expected_magic:08x}). Is the file corrupt, or not the one its name says?"
        )
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number {magic} (0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(data) - header} bytes after the header"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _idx_dataset(data_dir: Any, name: str, flatten: bool) -> Dataset:
    root = _check_dir(data_dir)
    flatten = _check_flag("flatten", flatten)
    paths = {key: _find_idx(root, stem) for key, stem in _MNIST_FILES.items()}
    missing = [_MNIST_FILES[k] + ".gz" for k, p in paths.items() if p is None]
    if missing:
        expected = ", ".join(stem + ".gz" for stem in _MNIST_FILES.values())
        if root.is_dir():
            state = f"lacks {', '.join(missing)}"
        else:
            state = "is a file, not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(
            f"{name}: directory {str(root)!r} {state}. Expected the four IDX files {expected} "
            f"(gzipped, or unzipped without '.gz'). initjax never downloads: get them once from "
            f"{_WHERE[name]} and pass their directory as data_dir."
        )
    arrays = {}
    for key, path in paths.items():
        magic = _IDX_IMAGES_MAGIC if key.endswith("images") else _IDX_LABELS_MAGIC
        arrays[key] = read_idx(path, expected_magic=magic)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{name}: {paths[f'{split}_images']} holds {images.shape[0]} images but "
                f"{paths[f'{split}_labels']} holds {labels.shape[0]} labels"
            )

    def x(key: str) -> np.ndarray:
        return _images(arrays[key][..., None].astype(np.float32) / 255.0, flatten)

    return Dataset(
        x("train_images"),
        arrays["train_labels"].astype(np.int32),
        x("test_images"),
        arrays["test_labels"].astype(np.int32),
        10,
        name,
    )


def mnist(data_dir: str | os.PathLike, *, flatten: bool = True) -> Dataset:
    """MNIST read from the four local IDX files (never downloaded).

    ``data_dir`` must hold ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the same names unzipped),
    from the MNIST database page (LeCun, Cortes & Burges). Pixels are scaled to ``[0, 1]``.

    Args:
      data_dir: the directory of the files.
      flatten: ``x`` as ``(n, 784)`` if True, else ``(n, 28, 28, 1)``.

    Returns:
      A :class:`Dataset` named ``"mnist"``: 60,000 training and 10,000 test images, 10 classes.

    Raises:
      FileNotFoundError: if the directory or a file is missing (the message lists the names).
      ValueError: for a corrupt header (naming the file and the magic number found).
    """
    return _idx_dataset(data_dir, "mnist", flatten)


def fashion_mnist(data_dir: str | os.PathLike, *, flatten: bool = True) -> Dataset:
    """Fashion-MNIST (Zalando) read from local IDX files with MNIST's four file names.

    Same format, shapes and errors as :func:`mnist`; get the files from Zalando Research's
    Fashion-MNIST repository. Pixels are scaled to ``[0, 1]``.
    """
    return _idx_dataset(data_dir, "fashion_mnist", flatten)


# --------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

# The only globals a CIFAR batch pickle needs: numpy's array reconstruction. Anything else is
# refused, so a tampered file cannot run code. numpy 2 moved numpy.core to numpy._core.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1"); harmless.
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists and bytes"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.split(".", 2)[2]  # avoid numpy 2's deprecation shim
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        try:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not a CIFAR-10 python batch ({err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: missing key b'data' or b'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ValueError(
            f"{path}: expected data of shape (n, 3072) and n labels, got {data.shape} and "
            f"{labels.shape}"
        )
    # Rows store the red, green and blue 32x32 planes one after the other: (n, C, H, W) -> NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int32)


def cifar10(data_dir: str | os.PathLike, *, flatten: bool = True) -> Dataset:
    """CIFAR-10 read from the local python pickle batches (never downloaded).

    ``data_dir`` is either the extracted ``cifar-10-batches-py`` directory or its parent; it must
    hold ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` ("CIFAR-10 python version" from
    Alex Krizhevsky's CIFAR page). Pickles are loaded with an unpickler that accepts only numpy
    arrays. Pixels are scaled to ``[0, 1]``; images are channels-last.

    Args:
      data_dir: the directory.
      flatten: ``x`` as ``(n, 3072)`` (the row-major flattening of ``(32, 32, 3)``, not the file's
        plane order) if True, else ``(n, 32, 32, 3)``.

    Returns:
      A :class:`Dataset` named ``"cifar10"``: 50,000 training and 10,000 test images, 10 classes.

    Raises:
      FileNotFoundError: if the directory or a batch is missing (the message lists the names).
      ValueError: if a batch is not a CIFAR-10 pickle (naming the file).
    """
    root = _check_dir(data_dir)
    flatten = _check_flag("flatten", flatten)
    names_needed = (*_CIFAR_TRAIN, _CIFAR_TEST)
    candidates = (root / _CIFAR_SUBDIR, root)
    for folder in candidates:
        if all((folder / n).is_file() for n in names_needed):
            break
    else:
        raise FileNotFoundError(
            f"cifar10: found no CIFAR-10 batches in {str(root)!r} or {str(candidates[0])!r}. "
            f"Expected {_CIFAR_SUBDIR}/data_batch_1 ... data_batch_5 and "
            f"{_CIFAR_SUBDIR}/test_batch "
            f"(or those files directly in data_dir). initjax never downloads: get them once from "
            f"{_WHERE['cifar10']} and pass the directory as data_dir."
        )
    train = [_read_cifar_batch(folder / n) for n in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST)
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return Dataset(
        _images(x_train.astype(np.float32) / 255.0, flatten),
        y_train,
        _images(x_test.astype(np.float32) / 255.0, flatten),
        y_test,
        10,
        "cifar10",
    )


# --------------------------------------------------------------------------------------------
# teacher-student


def _key_entropy(key: jax.Array) -> list[int]:
    """The words of a JAX key's data, to seed numpy (so ``s`` and ``as_key(s)`` agree)."""
    return [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]


@functools.partial(jax.jit, static_argnames=("act",))
def _teacher_forward(x: jax.Array, weights: tuple[jax.Array, ...], act: Any) -> jax.Array:
    for w in weights[:-1]:
        x = act(x @ w)
    return x @ weights[-1]


def teacher_student(
    key_or_seed: jax.Array | int,
    n_train: int,
    n_test: int,
    in_dim: int,
    num_classes: int,
    hidden: Sequence[int] = (100,),
    activation: str | Any = "tanh",
    *,
    task: str = "classification",
    noise: float = 0.0,
) -> Dataset:
    """Gaussian inputs labelled by a random teacher MLP.

    The teacher has layers ``in_dim -> *hidden -> num_classes`` with weights ``N(0, 1/fan_in)``,
    zero biases and ``activation`` between layers (none after the last). Inputs are ``N(0, I)``.
    With ``task="classification"`` the label is the argmax of the teacher's output; with
    ``task="regression"`` the target is the output itself plus ``N(0, noise^2)`` noise.

    The teacher, the training inputs, the test inputs and the noise come from independent numpy
    streams seeded by the key's data (an int seed ``s`` is the key
    ``jax.random.key(s, impl="philox2x32")``, initjax's one rule for int seeds), so a seed gives the
    same data everywhere. Classes are not balanced
    by construction: a random teacher splits the input space unevenly (every class does appear for
    reasonable sizes; check ``np.bincount(y_train)`` if it matters).

    Args:
      key_or_seed: a JAX PRNG key (typed, or a raw ``uint32[2]`` one) or a non-negative int seed
        (see :func:`initjax._keys.as_key`).
      n_train: training examples, ``>= 1``.
      n_test: test examples, ``>= 1``.
      in_dim: input dimension, ``>= 1``.
      num_classes: classes (``>= 2``) for classification; outputs (``>= 1``) for regression.
      hidden: widths of the teacher's hidden layers (may be empty: a linear teacher).
      activation: an :mod:`initjax.activations` spec (``"tanh"``,
        ``"leaky_relu:negative_slope=0.1"``) or an :class:`~initjax.activations.Activation`.
      task: ``"classification"`` (``int32`` labels, shape ``(n,)``) or ``"regression"``
        (``float32`` targets, shape ``(n, num_classes)``).
      noise: std of Gaussian noise added to regression targets, ``>= 0`` (must be 0 for
        classification).

    Returns:
      A :class:`Dataset` named ``"teacher_student"`` with ``float32`` inputs ``(n, in_dim)``.
    """
    from initjax import activations

    key = as_key(key_or_seed, "key_or_seed")
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    in_dim = check_int("in_dim", in_dim, minimum=1)
    task = check_choice("task", task, ("classification", "regression"))
    num_classes = check_int(
        "num_classes", num_classes, minimum=2 if task == "classification" else 1
    )
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of ints (layer widths), got {hidden!r}")
    widths = [check_int("hidden width", h, minimum=1) for h in hidden]
    noise = check_float("noise", noise, minimum=0.0)
    if task == "classification" and noise != 0.0:
        raise ValueError(f"noise applies to task='regression' only, got noise={noise} for labels")
    act = activations.get(activation)

    entropy = _key_entropy(key)

    # Streams: 0 the teacher, 1 and 2 the train and test inputs, 3 and 4 their target noise.
    def rng(stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(stream,)))

    # Drawn with numpy (seeded by the key): jax.random would compile a kernel per shape, which
    # costs seconds on CPU for a dataset made once.
    dims = (in_dim, *widths, num_classes)
    teacher_rng = rng(0)
    weights = tuple(
        teacher_rng.standard_normal((fan_in, fan_out), dtype=np.float32)
        / np.float32(math.sqrt(fan_in))
        for fan_in, fan_out in zip(dims[:-1], dims[1:])
    )

    def split(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng(stream).standard_normal((n, in_dim), dtype=np.float32)
        with matmul_precision():  # the same labels on every backend (issue 13)
            out = np.asarray(_teacher_forward(x, weights, act), dtype=np.float32)
        if task == "classification":
            return x, np.argmax(out, axis=1).astype(np.int32)
        eps = rng(stream + 2).standard_normal(out.shape, dtype=np.float32)
        return x, out + np.float32(noise) * eps

    x_train, y_train = split(n_train, 1)
    x_test, y_test = split(n_test, 2)
    return Dataset(x_train, y_train, x_test, y_test, num_classes, "teacher_student")


# --------------------------------------------------------------------------------------------
# procedural token sequences

#: Sequence tasks: name -> what the label is ("token": one label per token, y (n, tokens);
#: "sequence": one label per sequence, y (n,)).
SEQUENCE_TASKS: dict[str, str] = {"sort": "token", "reverse": "token", "max": "sequence"}


def sequences(
    task: str = "sort",
    n_train: int = 4096,
    n_test: int = 1024,
    *,
    tokens: int = 8,
    vocab: int = 10,
    seed: int = 0,
) -> Dataset:
    """Procedural token sequences: sort them, reverse them, or name their largest token.

    Each sequence holds ``tokens`` ids drawn i.i.d. uniformly from ``[0, vocab)``; the input is
    their one-hot code, ``x[i, t] = e_{s_{i,t}}``. The task sets the label:

    - ``"sort"``: per token, ``y[i] = sorted(s_i)`` (ascending), shape ``(n, tokens)``;
    - ``"reverse"``: per token, ``y[i, t] = s_{i, tokens - 1 - t}``, shape ``(n, tokens)``;
    - ``"max"``: per sequence, ``y[i] = max_t s_{i,t}``, shape ``(n,)`` (not balanced: class
      ``c`` has probability ``((c+1)^T - c^T) / V^T``, so large ids dominate for long sequences).

    Per-token tasks need every token to see the others (attention); sorting also needs to count.
    The ``xiong2020-layernorm`` reproduction trains transformers on ``"sort"`` (Post-LN's need for
    learning-rate warm-up, Xiong et al. 2020, https://arxiv.org/abs/2002.04745).
    The training and test sets come from two independent numpy streams spawned from ``seed``
    (``SeedSequence(seed, spawn_key=(0,))`` and ``(1,)``), so a seed gives the same arrays on
    every machine, and the test set is not a slice of the training set (with ``vocab^tokens``
    possible sequences, a few may repeat across the two by chance).

    >>> ds = sequences("sort", 100, 20, tokens=5, vocab=7, seed=3)
    >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
    ((100, 5, 7), (100, 5), 7)
    >>> bool((ds.y_train == np.sort(ds.x_train.argmax(-1), axis=1)).all())
    True

    Args:
      task: ``"sort"``, ``"reverse"`` or ``"max"`` (see :data:`SEQUENCE_TASKS`).
      n_train: training sequences, ``>= 1``.
      n_test: test sequences, ``>= 1``.
      tokens: sequence length ``T``, ``>= 2``.
      vocab: number of token ids ``V`` (and of classes), ``>= 2``.
      seed: non-negative int.

    Returns:
      A :class:`Dataset` named ``"sequences"``: ``x`` one-hot ``float32`` of shape
      ``(n, tokens, vocab)``; ``y`` ``int32`` in ``[0, vocab)``, ``(n, tokens)`` or ``(n,)``;
      ``num_classes = vocab``.

    Raises:
      ValueError: an unknown task (the known ones listed), ``tokens < 2``, ``vocab < 2``,
        ``n_train < 1``, ``n_test < 1`` or a negative seed.
      TypeError: a non-integer size or seed.
    """
    task = check_choice("task", task, tuple(SEQUENCE_TASKS))
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    tokens = check_int("tokens", tokens, minimum=2)
    vocab = check_int("vocab", vocab, minimum=2)
    seed = _check_seed("seed", seed)
    eye = np.eye(vocab, dtype=np.float32)

    def split(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        ids = _child_rng(seed, stream).integers(0, vocab, size=(n, tokens))
        if task == "sort":
            y = np.sort(ids, axis=1)
        elif task == "reverse":
            y = ids[:, ::-1]
        else:  # "max"
            y = ids.max(axis=1)
        return eye[ids], np.ascontiguousarray(y, dtype=np.int32)

    x_train, y_train = split(n_train, 0)
    x_test, y_test = split(n_test, 1)
    return Dataset(x_train, y_train, x_test, y_test, vocab, "sequences")


# --------------------------------------------------------------------------------------------
# minibatches


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled minibatches ``(x[idx], y[idx])``, deterministic per seed.

    Each epoch is a fresh permutation drawn from ``(seed, epoch)``, so the order differs between
    epochs but epoch ``e`` is the same on every run. The last ``n % batch_size`` examples of each
    permutation are **dropped** (every batch has exactly ``batch_size`` rows, so a jitted step
    compiles once); they differ from epoch to epoch, so no example is left out for good.

    Args:
      x: inputs, an array with ``n`` rows.
      y: labels or targets with ``n`` rows.
      batch_size: rows per batch, ``1 <= batch_size <= n``.
      seed: non-negative int.
      epochs: the number of passes, ``>= 1``; ``None`` for an endless iterator.

    Yields:
      ``(x_batch, y_batch)``: ``n // batch_size`` batches per epoch.

    Raises:
      TypeError, ValueError: for arrays of different lengths or a bad batch size, seed or epochs
        (raised at the call, not at the first ``next``).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"x and y must have a leading example axis, got shapes {x.shape} and {y.shape}"
        )
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must have the same number of rows, got {n} and {y.shape[0]}")
    if n < 1:
        raise ValueError("x and y must hold at least one example, got 0")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of examples {n}, got {batch_size}")
    seed = _check_seed("seed", seed)
    if epochs is not None:
        epochs = check_int("epochs", epochs, minimum=1)

    def iterate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = 0
        while epochs is None or epoch < epochs:
            order = _child_rng(seed, epoch).permutation(n)
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                yield x[idx], y[idx]
            epoch += 1

    return iterate()


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY: Registry[Dataset] = Registry("dataset")
_REGISTRY.register("shapeset", shapeset, aliases=("shapeset3x2",))
_REGISTRY.register("digits", digits)
_REGISTRY.register("mnist", mnist)
_REGISTRY.register("fashion_mnist", fashion_mnist)
_REGISTRY.register("cifar10", cifar10)
_REGISTRY.register("teacher_student", teacher_student)
_REGISTRY.register("sequences", sequences)


def get(name: str, **kwargs: Any) -> Dataset:
    """Build the dataset ``name`` (``"name"`` or ``"name:key=value,..."``) with ``kwargs``.

    Names: ``shapeset`` (alias ``shapeset3x2``), ``digits``, ``mnist``, ``fashion_mnist``,
    ``cifar10``, ``teacher_student``, ``sequences``.

        >>> get("shapeset", n_train=1000, n_test=500, seed=1)
        Dataset(name='shapeset', x_train=(1000, 1024) float32, x_test=(500, 1024), num_classes=9)
        >>> get("mnist", data_dir="~/data/mnist")  # doctest: +SKIP
        >>> get("teacher_student:in_dim=20,num_classes=3", key_or_seed=0, n_train=100, n_test=50)
        Dataset(name='teacher_student', x_train=(100, 20) float32, x_test=(50, 20), num_classes=3)
        >>> get("sequences:task=reverse,tokens=6", n_train=64, n_test=16)
        Dataset(name='sequences', x_train=(64, 6, 10) float32, x_test=(16, 6, 10), num_classes=10)

    Raises:
      ValueError: for an unknown name (the message lists the known ones) or bad arguments.
    """
    return _REGISTRY.get(name, **kwargs)


def names(*, aliases: bool = True) -> tuple[str, ...]:
    """The registered dataset names."""
    return _REGISTRY.names(aliases=aliases)

