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
    x = rng.uniform(-4.0, 4.0, size=num_samples)
    column = np.floor((x + 4.0) / 2.0).astype(np.int64)
    # Two rows of every column are filled: those of the column's parity.
    row = 2 * rng.integers(0, 2, size=num_samples) + column % 2
    y = -4.0 + 2.0 * row + rng.uniform(0.0, 2.0, size=num_samples)
    return np.stack([x, y], axis=-1).astype(np.float32)


def checkerboard_log_prob(points):
    """The true log-density at `points` (`[..., 2]`): -ln 32 or -inf."""
    points = np.asarray(points, dtype=np.float64)
    inside = np.all(np.abs(points) < 4.0, axis=-1)
    cells = np.floor((points + 4.0) / 2.0).astype(np.int64)
    on_black = (cells[..., 0] + cells[..., 1]) % 2 == 0
    return np.where(inside & on_black, CHECKERBOARD_LOG_LIKELIHOOD, -np.inf)
