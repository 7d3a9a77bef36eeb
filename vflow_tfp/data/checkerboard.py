"""The 2-D checkerboard density of the VFlow toy experiment (paper §5).

Uniform on 8 of the 16 squares of side 2 that tile [-4, 4]^2: the squares
whose column and row indices have an even sum. The density is 1/32 on its
support, so the best achievable expected log-likelihood is -ln 32 = -3.466.
"""

import math

import numpy as np

__all__ = [
    'CHECKERBOARD_LOG_LIKELIHOOD',
    'checkerboard_log_prob',
    'sample_checkerboard',
]

CHECKERBOARD_LOG_LIKELIHOOD = -math.log(32.0)


def sample_checkerboard(num_samples, seed=None):
    """Draws `num_samples` points, a float32 array of shape `[n, 2]`.

    Args:
      num_samples: Python int.
      seed: seed of `numpy.random.default_rng`, or a `numpy.random.Generator`.
    """
    if num_samples < 0:
        raise ValueError(f'num_samples must be >= 0; got {num_samples}.')
    rng = (seed if isinstance(seed, np.random.Generator)
           else np.random.default_rng(seed))
    # The squares are decided on the float32 values returned, and each
    # coordinate kept below its square's upper edge: rounding to float32
    # must not move a point onto the next (white) square or onto x = 4.
    x = _below(rng.uniform(-4.0, 4.0, size=num_samples).astype(np.float32),
               4.0)
    column = _cells(x)
    # Two rows of every column are filled: those of the column's parity.
    row = 2 * rng.integers(0, 2, size=num_samples) + column % 2
    y = -4.0 + 2.0 * row + rng.uniform(0.0, 2.0, size=num_samples)
    y = _below(y.astype(np.float32), -2.0 + 2.0 * row)
    return np.stack([x, y], axis=-1)


def _cells(values):
    """Square indices 0..3 of coordinates in [-4, 4).

    `floor(v / 2) + 2` rather than `floor((v + 4) / 2)`: halving is exact,
    while adding 4 rounds a value just under a square's edge onto it.
    """
    values = np.asarray(values, np.float64)
    return np.floor(values / 2.0).astype(np.int64) + 2


def _below(values, edge):
    """float32 `values`, each at most the largest float32 under `edge`."""
    edge = np.asarray(edge, np.float32)
    return np.minimum(values, np.nextafter(edge, np.float32(-np.inf)))


def checkerboard_log_prob(points):
    """The true log-density at `points` (`[..., 2]`): -ln 32 or -inf."""
    points = np.asarray(points, dtype=np.float64)
    inside = np.all((points >= -4.0) & (points < 4.0), axis=-1)
    cells = _cells(points)
    on_black = (cells[..., 0] + cells[..., 1]) % 2 == 0
    return np.where(inside & on_black, CHECKERBOARD_LOG_LIKELIHOOD, -np.inf)
