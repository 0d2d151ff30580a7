"""A harder embedded data set: scikit-learn's digits, small, warped, cluttered and noisy.

Why it exists: on the plain digits a small network is right 97% of the time at
its first exit, so every exit policy looks alike and a random baseline crosses
them all. Exit policies only have something to decide when early exits are
weak and later ones fix their mistakes. Here each 8x8 digit is drawn at 16 to
20 pixels somewhere on a 32x32 canvas (so a network's coarse 8x8 feature maps
see it as a blob of a few cells and its early exits must guess), under a
random rotation (up to about 20 degrees), anisotropic scaling, shear and shift,
over a faint copy of another digit, with background level, stripes, pixel
noise and one occluding block. The first exits of a small network then fall
well below the last (about 15 points in the quickstart suite), and the test
split is large (thousands of images) so that bootstrap bands separate policies.

Why integers only: the images must be the same bits on every machine, so that
a cached logit made anywhere is valid everywhere. Random numbers come from a
counter-based generator (SplitMix64 on unsigned 64-bit integers, keyed by seed,
sample and field: no numpy ``Generator`` stream whose algorithm could change
between releases), rotations use the rational parametrisation
``cos = (D^2 - k^2) / (D^2 + k^2)``, ``sin = 2kD / (D^2 + k^2)`` (no libm
calls), and bilinear sampling runs in fixed point. The result is uint8; the
only float step is the evaluation transform's division by 255.

Why splits by source digit: all distortions of one digit belong to one split,
so the test set never holds a new warp of a digit the network trained on. The
test digits (``test_fraction`` of the 1797, chosen by the seed) appear
``copies`` times each; training digits appear once, so validation (carved from
the training split by ``val_size``, as for CIFAR) is made of digits the network
never saw, like the test set. Copies of one test digit are not independent
samples: bootstrap intervals over images are somewhat narrower than intervals
over digits would be.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from eebench.data.base import InMemoryImageDataset
from eebench.errors import InputError

#: Per-channel mean and std in [0, 1] of the default data set (copies=6, seed=0, all samples).
DIGITS_DISTORTED_MEAN = (0.2260, 0.2260, 0.2260)
DIGITS_DISTORTED_STD = (0.1820, 0.1820, 0.1820)

_SIZE = 32  # output side; at warp scale 1 the digit's 8 pixels would span it
_SRC = 8  # side of the source digits
_F = 256  # fixed-point unit of source coordinates (1/256 pixel)
_Q = 4096  # fixed-point unit of the warp matrix
_D = 64  # rotation: tan(angle / 2) = k / _D
_N_DIGITS = 1797  # images in sklearn.datasets.load_digits()

# Named random fields: each sample draws field f from the counter (seed, sample, f).
_FIELDS = (
    "rot", "scale_x", "scale_y", "shear", "shift_x", "shift_y",  # warp
    "other", "other_dx", "other_dy", "other_level",  # clutter: a faint other digit
    "contrast", "background", "stripe_period", "stripe_phase", "stripe_depth",
    "occ_x", "occ_y", "occ_w", "occ_h", "occ_level", "noise",
)
_FIELD = {name: i for i, name in enumerate(_FIELDS)}


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of uint64 counters (wrapping arithmetic, bit-exact)."""
    z = np.array(x, dtype=np.uint64, ndmin=1) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _bits(seed: int, sample: np.ndarray, field: int, extra: np.ndarray | int = 0) -> np.ndarray:
    """64 random bits per (seed, sample, field, extra) counter."""
    key = splitmix64(splitmix64(np.array([seed], dtype=np.uint64)) + np.uint64(field))
    ctr = (np.array(sample, dtype=np.uint64, ndmin=1) << np.uint64(24)) + np.asarray(
        extra, dtype=np.uint64
    )
    return splitmix64(splitmix64(ctr ^ key))


def _uniform_int(seed: int, sample: np.ndarray, field: str, low: int, high: int) -> np.ndarray:
    """Integers in [low, high] (inclusive), one per sample, from the top 32 bits (tiny bias)."""
    top = (_bits(seed, sample, _FIELD[field]) >> np.uint64(32)).astype(np.int64)
    return low + (top * (high - low + 1)) // (1 << 32)


def _round_div(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """num / den rounded half up, in integers (den > 0)."""
    return (2 * num + den) // (2 * den)


def _warp_matrices(seed: int, sample: np.ndarray) -> tuple[np.ndarray, ...]:
    """The output-to-source matrix of each sample in units of 1/_Q, and its shift in 1/_F px."""
    k = _uniform_int(seed, sample, "rot", -11, 11)  # |angle| <= 2 atan(11/64) ~ 19.5 degrees
    # Source pixels per 4 output pixels, in 1/64: the digit spans 32 * 64 / a = 16..20.5 px.
    ax = _uniform_int(seed, sample, "scale_x", 100, 128)
    ay = _uniform_int(seed, sample, "scale_y", 100, 128)
    h = _uniform_int(seed, sample, "shear", -8, 8)
    c, s, den = _D * _D - k * k, 2 * k * _D, (_D * _D + k * k) * 64
    # A = R(angle) @ [[ax, h], [0, ay]] / 64
    m11 = _round_div(_Q * c * ax, den)
    m12 = _round_div(_Q * (c * h - s * ay), den)
    m21 = _round_div(_Q * s * ax, den)
    m22 = _round_div(_Q * (s * h + c * ay), den)
    tx = _uniform_int(seed, sample, "shift_x", -_F * 3, _F * 3)
    ty = _uniform_int(seed, sample, "shift_y", -_F * 3, _F * 3)
    return m11, m12, m21, m22, tx, ty


def _sample_bilinear(src: np.ndarray, xf: np.ndarray, yf: np.ndarray) -> np.ndarray:
    """Bilinear samples of (N, 8, 8) integer images at fixed-point coordinates (N, S, S).

    Coordinates are in 1/_F source pixels with pixel i covering [i, i + 1); outside
    the image is 0. Returns values in units of 1/_F^2 of the source's.
    """
    n = src.shape[0]
    # Two zero pixels before and three after each side: clipping the lower corner to
    # [-2, _SRC + 1] keeps every sample that lies outside the image on zeros.
    side = _SRC + 5
    padded = np.zeros((n, side, side), dtype=np.int64)
    padded[:, 2 : 2 + _SRC, 2 : 2 + _SRC] = src
    flat = padded.reshape(-1)
    xp, yp = xf - _F // 2, yf - _F // 2  # relative to pixel centres
    x0, y0 = xp // _F, yp // _F
    fx, fy = xp - x0 * _F, yp - y0 * _F
    x0 = np.clip(x0, -2, _SRC + 1) + 2
    y0 = np.clip(y0, -2, _SRC + 1) + 2
    base = np.arange(n, dtype=np.int64)[:, None, None] * side * side + y0 * side + x0
    top = flat[base] * (_F - fx) + flat[base + 1] * fx
    bottom = flat[base + side] * (_F - fx) + flat[base + side + 1] * fx
    return top * (_F - fy) + bottom * fy


def _render(src: np.ndarray, m: tuple[np.ndarray, ...]) -> np.ndarray:
    """Warp (N, 8, 8) digits (values 0..16) to (N, S, S) uint8-range int64 images."""
    m11, m12, m21, m22, tx, ty = (v[:, None, None] for v in m)
    # Output pixel centres relative to the centre, in half output pixels: 2u + 1 - S.
    d = 2 * np.arange(_SIZE, dtype=np.int64) + 1 - _SIZE
    du, dv = d[None, None, :], d[None, :, None]
    # One half output pixel is _SRC / (2 S) source pixels; centre of the source is _SRC / 2.
    den = 2 * _SIZE * _Q
    xf = (_SRC // 2) * _F + ((m11 * du + m12 * dv) * _SRC * _F) // den + tx
    yf = (_SRC // 2) * _F + ((m21 * du + m22 * dv) * _SRC * _F) // den + ty
    v = _sample_bilinear(src, xf, yf)  # units of 1/_F^2, source values 0..16
    return np.clip(_round_div(v * 255, 16 * _F * _F), 0, 255)


def render_digits_distorted(
    source: np.ndarray, source_index: np.ndarray, seed: int
) -> np.ndarray:
    """The distorted images of ``source[source_index]``, sample i keyed by counter i.

    ``source`` holds the (M, 8, 8) digits as integers 0..16. Returns (N, S, S) uint8.
    """
    n = source_index.shape[0]
    sample = np.arange(n, dtype=np.int64)
    src = source[source_index].astype(np.int64)
    img = _render(src, _warp_matrices(seed, sample))

    # Clutter: another digit at 16 px, shifted up to 16 px, at 12% to 27% intensity.
    other = _uniform_int(seed, sample, "other", 0, source.shape[0] - 1)
    odx = _uniform_int(seed, sample, "other_dx", -_F * 8, _F * 8)
    ody = _uniform_int(seed, sample, "other_dy", -_F * 8, _F * 8)
    two, zero = np.full(n, 2 * _Q, dtype=np.int64), np.zeros(n, dtype=np.int64)
    clutter = _render(source[other].astype(np.int64), (two, zero, zero, two, odx, ody))
    level = _uniform_int(seed, sample, "other_level", 30, 70)[:, None, None]
    img = np.maximum(img, (clutter * level) // 255)

    # Contrast, background and horizontal stripes of varying depth.
    contrast = _uniform_int(seed, sample, "contrast", 150, 255)[:, None, None]
    bg = _uniform_int(seed, sample, "background", 0, 60)[:, None, None]
    period = _uniform_int(seed, sample, "stripe_period", 3, 8)[:, None, None]
    phase = _uniform_int(seed, sample, "stripe_phase", 0, 7)[:, None, None]
    depth = _uniform_int(seed, sample, "stripe_depth", 0, 30)[:, None, None]
    rows = np.arange(_SIZE, dtype=np.int64)[None, :, None]
    stripe = np.where(((rows + phase) // period) % 2 == 0, depth, 0)
    img = bg + stripe + (img * contrast * (255 - bg - stripe)) // (255 * 255)

    # One occluding block of a random level.
    ox = _uniform_int(seed, sample, "occ_x", 0, _SIZE - 1)[:, None, None]
    oy = _uniform_int(seed, sample, "occ_y", 0, _SIZE - 1)[:, None, None]
    ow = _uniform_int(seed, sample, "occ_w", 3, 7)[:, None, None]
    oh = _uniform_int(seed, sample, "occ_h", 3, 7)[:, None, None]
    olevel = _uniform_int(seed, sample, "occ_level", 0, 255)[:, None, None]
    cols = np.arange(_SIZE, dtype=np.int64)[None, None, :]
    block = (rows >= oy) & (rows < oy + oh) & (cols >= ox) & (cols < ox + ow)
    img = np.where(block, olevel, img)

    # Pixel noise: the sum of two uniform integers in [-12, 12] (triangular).
    pix = np.arange(_SIZE * _SIZE, dtype=np.uint64).reshape(1, _SIZE, _SIZE)
    noise = np.zeros(img.shape, dtype=np.int64)
    for j in range(2):
        bits = _bits(seed, sample[:, None, None], _FIELD["noise"], pix + np.uint64(j << 12))
        noise += (((bits >> np.uint64(32)).astype(np.int64) * 25) >> 32) - 12
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def source_split(n_sources: int, test_fraction: float, seed: int) -> np.ndarray:
    """Whether each source digit is a test digit: the ``test_fraction`` with the smallest hashes."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * n_sources))
    if not 0 < n_test < n_sources:
        raise InputError(
            f"test_fraction {test_fraction} of {n_sources} digits leaves an empty split"
        )
    order = np.argsort(_bits(seed, np.arange(n_sources), 255), kind="stable")
    is_test = np.zeros(n_sources, dtype=bool)
    is_test[order[:n_test]] = True
    return is_test


class DistortedDigits(InMemoryImageDataset):
    """The in-memory data set, plus ``source_index``: each sample's position in
    ``sklearn.datasets.load_digits()`` (the unit of the split)."""

    source_index: np.ndarray


@lru_cache(maxsize=4)
def _rendered(copies: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, np.ndarray,
                                                                     np.ndarray, np.ndarray]:
    """Images (N, S, S) uint8, labels, source index and test mask, made once per process
    (a suite builds the data set several times: to train, to extract, to time)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    source = np.rint(raw.images).astype(np.int64)  # the data set's integers 0..16
    if source.shape[0] != _N_DIGITS:
        raise InputError(f"expected {_N_DIGITS} digits from scikit-learn, got {source.shape[0]}")
    is_test = source_split(source.shape[0], test_fraction, seed)
    source_index = np.repeat(np.arange(source.shape[0]), np.where(is_test, copies, 1))
    images = torch.from_numpy(render_digits_distorted(source, source_index, seed))
    labels = raw.target[source_index].astype(np.int64)
    return images, labels, source_index, is_test


def digits_distorted(
    *,
    copies: int = 6,
    test_fraction: float = 1 / 3,
    val_size: int = 400,
    seed: int = 0,
    transform: Any = None,
) -> DistortedDigits:
    """Scikit-learn's 1797 digits, distorted, as (3, 32, 32) uint8 images with an official split.

    Test digits (``test_fraction`` of them, chosen by ``seed``) appear ``copies``
    times, each under its own distortion; the others appear once and form the
    training split, from which validation takes ``val_size`` images (seeded by the
    suite's split seed). Samples are ordered by source digit, then copy; the same
    arguments give the same bits on every machine (see the module's docstring).
    ``source_index`` of the result maps each sample to its position in
    ``sklearn.datasets.load_digits()``.
    """
    for name, value, low in (("copies", copies, 1), ("val_size", val_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise InputError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    n_train = int((~source_split(_N_DIGITS, float(test_fraction), int(seed))).sum())
    if val_size >= n_train:
        raise InputError(
            f"val_size must be below the {n_train} training digits, got {val_size}; "
            "lower val_size or test_fraction"
        )
    images, labels, source_index, is_test = _rendered(int(copies), float(test_fraction), int(seed))
    test_rows = is_test[source_index]
    ds = DistortedDigits(
        "digits_distorted",
        {
            "copies": int(copies),
            "test_fraction": float(test_fraction),
            "val_size": int(val_size),
            "seed": int(seed),
        },
        images.clone()[:, None].expand(-1, 3, -1, -1),
        labels.copy(),
        [str(c) for c in range(10)],
        mean=DIGITS_DISTORTED_MEAN,
        std=DIGITS_DISTORTED_STD,
        transform=transform,
        flip_invariant=False,
        official_splits={
            "train": np.flatnonzero(~test_rows),
            "test": np.flatnonzero(test_rows),
        },
        default_val_size=int(val_size),
    )
    ds.source_index = source_index.copy()
    return ds
