"""Small RGB image patches cut from the photographs shipped with scikit-image.

Real 8-bit images for quick CPU runs and tests, available offline: the colour
photographs bundled in the `skimage.data` package (no download), each
optionally downscaled by block averaging, cut into square patches and
shuffled deterministically. Needs scikit-image
(`pip install -e ".[images]"` in the checkout).

Train and test patches come from **different photographs**, so no test patch
overlaps a training photo:

- train: `astronaut` (512x512), `hubble_deep_field` (872x1000),
  `immunohistochemistry` (512x512), `retina` (1411x1411), `rocket`
  (427x640), `motorcycle` (left view of `stereo_motorcycle`, 500x741);
- test: `chelsea` (300x451), `coffee` (400x600).

(Names are `skimage.data` functions; sizes are the full H x W.)

Left out: the grayscale images, the synthetic ones (`colorwheel`,
`chessboard`, `logo`), `cat` (the same photograph as `chelsea`), the right
view of `stereo_motorcycle` (the same scene as the left one) and the images
that scikit-image would download.

With the defaults (`downscale=2`, non-overlapping patches), `patch_size=8`
gives 15,606 training and 1,429 test patches; `patch_size=32` gives 944 and
82.
"""

import functools

import numpy as np

__all__ = ['PHOTOS', 'TEST_PHOTOS', 'TRAIN_PHOTOS', 'photo_patches']

TRAIN_PHOTOS = ('astronaut', 'hubble_deep_field', 'immunohistochemistry',
                'retina', 'rocket', 'motorcycle')
TEST_PHOTOS = ('chelsea', 'coffee')
PHOTOS = {'train': TRAIN_PHOTOS, 'test': TEST_PHOTOS}


def _skimage_data():
    try:
        from skimage import data  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(
            'vflow_tfp.data.photo_patches needs scikit-image for its bundled '
            'photographs: pip install -e ".[images]" in the vflow_tfp '
            'checkout (or pip install scikit-image).') from e
    return data


def _load(name):
    """The full-size photograph `name` as uint8 `[H, W, 3]`."""
    data = _skimage_data()
    if name == 'motorcycle':
        image = data.stereo_motorcycle()[0]
    else:
        image = getattr(data, name)()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f'skimage.data photograph {name!r} is not an RGB '
                         f'uint8 image: {image.dtype} {image.shape}.')
    return image


def _block_average(image, factor):
    """Means of `factor x factor` blocks, rounded; the edges that do not fill
    a whole block are cropped."""
    if factor == 1:
        return image
    height = image.shape[0] // factor
    width = image.shape[1] // factor
    blocks = image[:height * factor, :width * factor].reshape(
        height, factor, width, factor, image.shape[-1])
    means = blocks.astype(np.float64).mean(axis=(1, 3))
    return np.clip(np.round(means), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def _photo(name, downscale):
    image = _block_average(_load(name), downscale)
    image.setflags(write=False)
    return image


def photo_patches(patch_size, split='train', max_patches=None, stride=None,
                  seed=0, downscale=2, return_sources=False):
    """Square RGB patches of scikit-image's photographs, shuffled.

    Every photograph of the split (see the module docstring) is downscaled by
    averaging `downscale x downscale` pixel blocks, then every patch whose
    top-left corner lies on the grid `(i * stride, j * stride)` and that fits
    inside the photograph is cut out. The patches of all photographs of the
    split are shuffled together with `numpy.random.default_rng(seed)`, and
    the first `max_patches` are returned.

    #### Example

    ```python
    train = vflow_tfp.data.photo_patches(8, 'train')      # [15606, 8, 8, 3]
    test = vflow_tfp.data.photo_patches(8, 'test', max_patches=256)
    ```

    Args:
      patch_size: side `P` of the patches in pixels, >= 1.
      split: `'train'` or `'test'`; the two use disjoint photographs.
      max_patches: keep at most this many patches (after shuffling); `None`
        keeps all.
      stride: distance between neighbouring patches in (downscaled) pixels;
        `None` means `patch_size` (non-overlapping patches).
      seed: seed of the shuffle; the same arguments always give the same
        array.
      downscale: integer block-averaging factor applied to every photograph
        before cutting; 1 keeps full resolution. Default value: 2.
      return_sources: also return the name of each patch's photograph.

    Returns:
      A uint8 array `[N, P, P, 3]` and, if `return_sources`, a string array
      `[N]` of photograph names.

    Raises:
      ImportError: if scikit-image is not installed.
      ValueError: for an unknown split or invalid sizes.
    """
    if split not in PHOTOS:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    patch_size = int(patch_size)
    stride = patch_size if stride is None else int(stride)
    downscale = int(downscale)
    if patch_size < 1 or stride < 1 or downscale < 1:
        raise ValueError('patch_size, stride and downscale must be >= 1; got '
                         f'{patch_size}, {stride}, {downscale}.')
    if max_patches is not None and max_patches < 0:
        raise ValueError(f'max_patches must be >= 0; got {max_patches}.')

    photos = [_photo(name, downscale) for name in PHOTOS[split]]
    # (photo, top, left) of every patch, in a fixed order, then shuffled, so
    # only the kept patches are ever copied.
    index = []
    for p, photo in enumerate(photos):
        tops = np.arange(0, photo.shape[0] - patch_size + 1, stride)
        lefts = np.arange(0, photo.shape[1] - patch_size + 1, stride)
        grid = np.stack(np.meshgrid(tops, lefts, indexing='ij'), -1)
        grid = grid.reshape(-1, 2)
        index.append(np.concatenate(
            [np.full([len(grid), 1], p), grid], axis=1))
    index = np.concatenate(index, axis=0).astype(np.int64)
    if not len(index):
        raise ValueError(f'patch_size={patch_size} is larger than every '
                         f'{split} photograph at downscale={downscale}.')
    index = index[np.random.default_rng(seed).permutation(len(index))]
    if max_patches is not None:
        index = index[:max_patches]

    patches = np.empty([len(index), patch_size, patch_size, 3], np.uint8)
    for n, (p, top, left) in enumerate(index):
        patches[n] = photos[p][top:top + patch_size, left:left + patch_size]
    if return_sources:
        names = np.asarray(PHOTOS[split])
        return patches, names[index[:, 0]] if len(index) else names[:0]
    return patches
