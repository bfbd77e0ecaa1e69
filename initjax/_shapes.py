"""The geometry of Shapeset-3x2 (Glorot & Bengio 2010, section 2.1): the canonical shapes, their
placement inside the image and their rasterization on the pixel grid.

A private helper module of :mod:`initjax.data` (whose ``shapeset_*`` functions are the public face);
its names are public so that the data module and the tests share them.
"""

from __future__ import annotations

import math

import numpy as np

IMAGE_SIZE = 32

TRIANGLE, PARALLELOGRAM, ELLIPSE = 0, 1, 2
NONE = -1
# Each shape's side (its bounding box before rotation) is a fraction of the image size per axis.
SCALE = (0.2, 0.8)
# "Away from the border": every shape keeps a margin of one pixel, so the outer ring of pixels is
# always background.
MARGIN = 1.0 / IMAGE_SIZE
MAX_REJECTION_ROUNDS = 10_000

# Canonical convex polygons in the unit box [-1/2, 1/2]^2, counter-clockwise, padded to 4 vertices
# by repeating one (a zero-length edge passes every half-plane test). The parallelogram is sheared
# by a quarter of its height so that it never looks like a rectangle.
POLYGONS = np.array(
    [
        [[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5], [0.0, 0.5]],  # isosceles triangle
        [[-0.5, -0.5], [0.25, -0.5], [0.5, 0.5], [-0.25, 0.5]],  # parallelogram
    ]
)  # shape=(2, 4, 2)

# Pixel centres on [0, 1], the same for x (columns) and y (rows).
CENTRES = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE


def rasterize(kinds: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Boolean masks ``(m, H*W)`` of shapes ``kinds`` ``(m,)`` placed by ``params`` ``(m, 5)``.

    ``params`` rows are ``cx, cy, sx, sy, angle``: centre and box size in image units ``[0, 1]``,
    rotation in radians.

    Polygons: a pixel centre ``p`` is inside when it lies on the left of every counter-clockwise
    edge ``v -> w`` (half-plane test ``cross(w - v, p - v) >= 0``). Ellipses: inside when the
    quadratic form of ``p - centre`` in the ellipse's rotated frame is ``<= 1``. Both forms are
    sums of a row term and a column term, so they are computed per row and per column (cheap, in
    float64) and only combined over the ``H x W`` grid (in float32, the costly part).
    """
    m, size = kinds.shape[0], IMAGE_SIZE
    masks = np.empty((m, size, size), dtype=bool)
    grid = CENTRES[None, None, :]

    poly = np.flatnonzero(kinds != ELLIPSE)
    if poly.size:
        v = polygon_vertices(kinds[poly], params[poly])  # (k, 4, 2)
        e = np.roll(v, -1, axis=1) - v
        # cross = e_x (y - v_y) - e_y (x - v_x) = row(y) + col(x); inside: row >= -col per edge.
        row = (e[..., 0, None] * (grid - v[..., 1, None])).astype(np.float32)  # (k, 4, H)
        neg_col = (e[..., 1, None] * (grid - v[..., 0, None])).astype(np.float32)  # (k, 4, W)
        inside = row[:, 0, :, None] >= neg_col[:, 0, None, :]
        for k in range(1, v.shape[1]):
            inside &= row[:, k, :, None] >= neg_col[:, k, None, :]
        masks[poly] = inside

    ell = np.flatnonzero(kinds == ELLIPSE)
    if ell.size:
        cx, cy, sx, sy, angle = (p[:, None] for p in params[ell].T)
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = CENTRES[None, :] - cx, CENTRES[None, :] - cy  # (k, W), (k, H)
        # Offset in the ellipse's frame over the semi-axes a = sx/2, b = sy/2:
        # u = (c dx + s dy) / a, v = (c dy - s dx) / b; inside: u^2 + v^2 <= 1.
        a, b = 0.5 * sx, 0.5 * sy
        f32 = np.float32
        u = (c * dx / a).astype(f32)[:, None, :] + (s * dy / a).astype(f32)[:, :, None]
        w = (c * dy / b).astype(f32)[:, :, None] - (s * dx / b).astype(f32)[:, None, :]
        masks[ell] = u * u + w * w <= np.float32(1.0)
    return masks.reshape(m, size * size)


def polygon_vertices(kinds: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Image-space vertices ``(m, 4, 2)`` of polygons (scale per axis, rotate, translate)."""
    cx, cy, sx, sy, angle = params.T
    local = POLYGONS[kinds] * np.stack([sx, sy], axis=-1)[:, None, :]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x = cx[:, None] + cos * local[..., 0] - sin * local[..., 1]
    y = cy[:, None] + sin * local[..., 0] + cos * local[..., 1]
    return np.stack([x, y], axis=-1)


def half_extents(kinds: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-width and half-height of each shape's axis-aligned bounding box, about its centre."""
    sx, sy, angle = params[:, 2], params[:, 3], params[:, 4]
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    # Ellipse with semi-axes a, b rotated by angle: hx = sqrt(a^2 cos^2 + b^2 sin^2).
    a, b = 0.5 * sx, 0.5 * sy
    hx = np.sqrt((a * cos) ** 2 + (b * sin) ** 2)
    hy = np.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    poly = kinds != ELLIPSE
    if poly.any():
        centred = params[poly].copy()
        centred[:, :2] = 0.0
        verts = polygon_vertices(kinds[poly], centred)
        hx[poly] = np.abs(verts[..., 0]).max(axis=1)
        hy[poly] = np.abs(verts[..., 1]).max(axis=1)
    return hx, hy


def place_shapes(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
    """Draw ``(m, 5)`` parameters cx, cy, sx, sy, angle for shapes that fit inside the image.

    Scales are U[0.2, 0.8] per axis and the angle U[0, 2 pi); a (scale, angle) draw whose rotated
    bounding box cannot fit inside the image minus its margin is redrawn (rejection sampling, which
    slightly favours smaller and axis-aligned shapes among the largest ones). The centre is then
    uniform over the positions that keep the whole box inside.
    """
    m = kinds.shape[0]
    params = np.zeros((m, 5))
    todo = np.arange(m)
    room = 0.5 - MARGIN
    for _ in range(MAX_REJECTION_ROUNDS):
        if todo.size == 0:
            break
        params[todo, 2:4] = rng.uniform(*SCALE, size=(todo.size, 2))
        params[todo, 4] = rng.uniform(0.0, 2.0 * math.pi, size=todo.size)
        hx, hy = half_extents(kinds[todo], params[todo])
        todo = todo[(hx > room) | (hy > room)]
    else:  # pragma: no cover - acceptance is well above 1/2
        raise RuntimeError("Shapeset: could not fit shapes inside the image")
    hx, hy = half_extents(kinds, params)
    u = rng.random((m, 2))
    params[:, 0] = MARGIN + hx + u[:, 0] * (1.0 - 2.0 * (MARGIN + hx))
    params[:, 1] = MARGIN + hy + u[:, 1] * (1.0 - 2.0 * (MARGIN + hy))
    return params
