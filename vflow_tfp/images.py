"""Pictures of image batches: grids and 8-bit display values."""

import math

import numpy as np

__all__ = ['image_grid', 'to_8bit']


def image_grid(images, columns=None):
    """Tiles `[N, H, W, C]` images into one `[rows*H, columns*W, C]` image.

    `columns` defaults to `ceil(sqrt(N))`; cells past the last image stay 0.
    """
    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f'image_grid needs a non-empty [N, H, W, C] batch; '
                         f'got shape {images.shape}.')
    num, height, width, channels = images.shape
    columns = columns or int(math.ceil(math.sqrt(num)))
    rows = int(math.ceil(num / columns))
    grid = np.zeros((rows * height, columns * width, channels), images.dtype)
    for i in range(num):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height,
             c * width:(c + 1) * width] = images[i]
    return grid


def to_8bit(images, num_bins=256):
    """Pixel values in `[0, num_bins)` spread over `[0, 255]`, as uint8.

    `round(x * 255 / (num_bins - 1))`: a model of fewer levels (5-bit data,
    say) would otherwise look nearly black. 8-bit values pass unchanged.
    """
    images = np.asarray(images)
    if num_bins == 256:
        return images.astype(np.uint8)
    scaled = np.round(images.astype(np.float64) * (255.0 / (num_bins - 1)))
    return np.clip(scaled, 0, 255).astype(np.uint8)
