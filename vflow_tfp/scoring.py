"""Density scoring with an exported SavedModel: inputs, checks, results.

`bin/score.py` is a thin flag parser around this module:

```python
info = export.load_metadata(model_dir)                # no TF model loading
inputs = open_inputs(['photos/', 'more.npy', 'tfds:photo_patches/8x8:test'],
                     info)                            # every check up front
scorer = SavedModelScorer(model_dir)
records = score(scorer, inputs, num_samples=16, seed=0, batch_size=64)
write_results('scores.json', summarize(records, model_dir, 16, 0, 64))
```

Inputs may be image files (PNG, JPEG; also GIF, WebP, BMP of 24 or 32
bits per pixel when named explicitly), directories (their `*.png`,
`*.jpg`, `*.jpeg`, sorted; a warning counts the files of those other kinds
and the arrays that a directory leaves out), globs (`**` matches any
depth of directories), `.npy` and `.npz` arrays and `tfds:NAME[:SPLIT]`
splits (the `image` feature;
split `test` by default; `test[10:20]` or `test[-5:]` read a slice, whose
examples keep their index in the split). `open_inputs` refuses, with a
`ValueError` of one line that names the offending input, anything the model
cannot score as it is: a shape other than the model's (with the expected
shape in the message), grayscale against RGB, float or NaN pixel data,
values outside [0, 255] (or outside [0, L - 1] for a model of L < 256
levels, which also refuses TFDS splits: they hold 8-bit images), 16-bit
PNGs, palette and 16-bit BMPs, animated GIFs and PNGs, empty inputs,
unreadable or non-image files (broken symbolic links too). An image file
that is gone or changed when it is read again for scoring stops `score`
with the same kind of `ValueError`. Pixel
values are never rescaled, rounded or clipped. Vector models (e.g. the
checkerboard) score float arrays `[N, D]`.

Files, directories and globs may be URLs that `tf.io.gfile` serves
(`gs://bucket/images/`, `gs://bucket/batch-*/*.png`): there each `*` of a
glob matches within one level (`**` is refused), and an array is read into
memory rather than mapped. The results file (`write_results`) may be a URL
too.
"""

import collections
import csv
import glob
import io
import json
import math
import os
import re
import tempfile
import zipfile

from absl import logging
import numpy as np
import tensorflow as tf

from vflow_tfp import export
from vflow_tfp import file_io
from vflow_tfp.data import pipelines

__all__ = [
    'IMAGE_EXTENSIONS',
    'Inputs',
    'SavedModelScorer',
    'check_array',
    'open_inputs',
    'output_format',
    'read_image_file',
    'score',
    'summarize',
    'write_results',
]

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
ARRAY_EXTENSIONS = ('.npy', '.npz')
# Files that a directory does not give but that are scored when named.
_READABLE_IF_NAMED = ('.gif', '.bmp', '.webp') + ARRAY_EXTENSIONS
TFDS_PREFIX = 'tfds:'
_CHANNEL_NAMES = {1: 'grayscale', 2: 'grayscale with alpha', 3: 'RGB',
                  4: 'RGBA'}
_OUTPUT_FORMATS = {'.json': 'json', '.csv': 'csv'}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# The DIB header size of an OS/2 1.x BMP, whose bit count is at byte 24;
# every later header has it at byte 28.
_BMP_CORE_HEADER_SIZE = 12
# `NAME:SPLIT` or `NAME:SPLIT[SLICE]` after `tfds:`; NAME may hold colons
# (`photo_patches/8x8:1.0.0`), and so may SLICE.
_TFDS_SPEC = re.compile(r'^(?P<name>.*):(?P<split>{})(?:\[(?P<slice>.*)\])?$'
                        .format('|'.join(pipelines.SPLITS)))
# A TFDS version after NAME (`photo_patches/8x8:1.0.0`, `mnist:3.*.*`): the
# one thing other than a split that may follow NAME's last colon.
_TFDS_VERSION = re.compile(r'^(\d+|\*)(\.(\d+|\*)){0,2}$')
# The slices supported: integer bounds, as Python's (TFDS's percent forms
# are not).
_INTEGER_SLICE = re.compile(r'^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$')


def _size(shape):
    return 'x'.join(str(int(d)) for d in shape)


def _check_image_shape(shape, data_shape, name, what='image is'):
    """Raises unless one image of `shape` fits a model of `data_shape`."""
    shape, data_shape = tuple(shape), tuple(data_shape)
    if shape == data_shape:
        return
    channels, expected = shape[-1], data_shape[-1]
    if len(shape) == 3 and shape[:2] == data_shape[:2] and (
            channels in _CHANNEL_NAMES and expected in _CHANNEL_NAMES):
        raise ValueError(
            f'{name}: {what} {_CHANNEL_NAMES[channels]} ({_size(shape)}), '
            f'the model expects {_CHANNEL_NAMES[expected]} images '
            f'({_size(data_shape)}).')
    raise ValueError(f'{name}: {what} {_size(shape)}, the model expects '
                     f'{_size(data_shape)}.')


def _first_index(mask):
    return int(np.argwhere(mask)[0][0])


def _pixel_rule(levels):
    return f'pixel values must be integers in [0, {levels - 1}]'


def _check_levels(images, levels, name, names=None):
    """Raises unless every pixel of `images` `[N, ...]` is in [0, levels)."""
    flat = images.reshape(len(images), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    if (low < 0).any():
        i = _first_index(low < 0)
        problem = f'negative value {low[i]}'
    elif (high > levels - 1).any():
        i = _first_index(high > levels - 1)
        problem = f'value {high[i]} > {levels - 1}'
    else:
        return
    where = names[i] if names else f'{name}[{i}]'
    raise ValueError(f'{where}: {problem}; {_pixel_rule(levels)}.')


def check_array(array, data_shape, name, input_dtype=None, levels=256):
    """Checks an array of examples against a model's data shape.

    Images must be integers in [0, levels - 1]: uint8 or another integer dtype
    (rank 4 `[N, H, W, C]`, or one image `[H, W, C]`; for one-channel models
    also `[N, H, W]` and `[H, W]`). Vectors must be finite numbers, `[N, D]`
    or `[D]`.

    Args:
      array: a NumPy array (a memory map is read, not copied).
      data_shape: the model's `(H, W, C)` or `(D,)`.
      name: how messages name the array, e.g. `'data.npy'`.
      input_dtype: the float dtype a vector model reads (the export's
        `input_dtype`); vectors it cannot represent (they would become
        infinite) are refused. Default value: `None` (not checked).
      levels: the number of pixel levels of an image model (the export's
        `num_bins`). Default value: 256.

    Returns:
      A view of `array` of shape `[N] + data_shape` (dtype unchanged).

    Raises:
      ValueError: one line naming `name` (and the first offending example).
    """
    data_shape = tuple(int(d) for d in data_shape)
    image = len(data_shape) == 3
    if array.dtype.kind not in 'iuf':
        raise ValueError(f'{name}: {array.dtype} data; expected '
                         f'{"uint8 pixel values" if image else "numbers"}.')
    shape = tuple(array.shape)
    if array.size == 0:
        raise ValueError(f'{name}: empty array (shape {list(shape)}), nothing '
                         'to score.')
    if image:
        height, width, channels = data_shape
        if array.ndim == 4:
            batch = array
        elif array.ndim == 3 and channels == 1 and shape[1:] == (height,
                                                                 width):
            batch = array[..., np.newaxis]
        elif array.ndim == 3:
            if shape[1:] == (height, width) and shape != data_shape:
                # Likely grayscale images; "image is 2x8x8" would hide it.
                raise ValueError(
                    f'{name}: shape {list(shape)} is one {_size(shape)} '
                    f'image or {shape[0]} grayscale {_size(shape[1:])} '
                    f'images; the model expects {_size(data_shape)} '
                    'images.')
            batch = array[np.newaxis]
        elif array.ndim == 2 and channels == 1:
            batch = array[np.newaxis, ..., np.newaxis]
        else:
            raise ValueError(
                f'{name}: array of rank {array.ndim} (shape {list(shape)}); '
                f'the model expects images [N, {height}, {width}, '
                f'{channels}] or one image [{height}, {width}, {channels}].')
        _check_image_shape(batch.shape[1:], data_shape, name,
                           'images are' if len(batch) > 1 else 'image is')
    else:
        if array.ndim == 2:
            batch = array
        elif array.ndim == 1:
            batch = array[np.newaxis]
        else:
            raise ValueError(
                f'{name}: array of rank {array.ndim} (shape {list(shape)}); '
                f'the model expects vectors [N, {data_shape[0]}] or one '
                f'vector [{data_shape[0]}].')
        if batch.shape[1:] != data_shape:
            raise ValueError(f'{name}: vectors of {batch.shape[1]} values, '
                             f'the model expects {data_shape[0]}.')
    if array.dtype.kind == 'f':
        nan = np.isnan(batch).reshape(len(batch), -1).any(axis=1)
        if nan.any():
            raise ValueError(f'{name}[{_first_index(nan)}]: NaN values; '
                             + (f'{_pixel_rule(levels)}.'
                                if image else 'vectors must be finite.'))
        if image:
            raise ValueError(f'{name}: {array.dtype} data; '
                             f'{_pixel_rule(levels)} (uint8), not floats.')
        infinite = np.isinf(batch).reshape(len(batch), -1).any(axis=1)
        if infinite.any():
            raise ValueError(f'{name}[{_first_index(infinite)}]: infinite '
                             'values; vectors must be finite.')
        if input_dtype is not None:
            largest = np.finfo(np.dtype(input_dtype)).max
            too_large = (np.abs(batch) > largest).reshape(
                len(batch), -1).any(axis=1)
            if too_large.any():
                raise ValueError(f'{name}[{_first_index(too_large)}]: values '
                                 f'beyond the {np.dtype(input_dtype).name} '
                                 'range the model reads; vectors must be '
                                 'finite in it.')
    elif image and (array.dtype != np.uint8 or levels < 256):
        _check_levels(batch, levels, name)
    return batch


def read_image_file(path):
    """Decodes a PNG, JPEG, GIF or BMP file to uint8 [H, W, C].

    Raises:
      ValueError: naming `path` if it cannot be read or decoded, or if it is
        an animated GIF or PNG (more than one image).
    """
    try:
        contents = file_io.read_bytes(path)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and os.path.islink(path):
            raise ValueError(f'{path}: cannot read it (a broken symbolic '
                             f'link to {os.readlink(path)}).') from e
        raise ValueError(f'{path}: cannot read it ({e.strerror}).') from e
    if not contents:
        raise ValueError(f'{path}: empty file, not an image.')
    # Byte 24 is the bit depth in a PNG's header; decoding to uint8 would
    # rescale 16-bit values.
    if contents.startswith(_PNG_SIGNATURE) and contents[24:25] == b'\x10':
        raise ValueError(f'{path}: 16-bit PNG; the model scores 8-bit '
                         'images.')
    frames = _png_frames(contents)
    if frames > 1:
        # TensorFlow's PNG decoder reads an animated PNG's first frame only.
        raise ValueError(f'{path}: an animated PNG of {frames} frames; save '
                         'each frame as an image file (or stack them in a '
                         '.npy array) to score them.')
    bits = _bmp_bits_per_pixel(contents)
    if bits == 8:
        # TensorFlow's BMP decoder returns the palette indices of such a
        # file, not its colours: wrong pixels, scored without a word (it
        # cannot decode palette BMPs of fewer bits at all).
        raise ValueError(f'{path}: {bits}-bit palette BMP, which TensorFlow '
                         'decodes to palette indices, not colours; convert '
                         'it to PNG.')
    if bits is not None and bits not in (24, 32):
        raise ValueError(f'{path}: {bits}-bit BMP, which TensorFlow cannot '
                         'decode (it reads 24- and 32-bit BMPs); convert it '
                         'to PNG.')
    try:
        # Every frame: an animation's later frames must not go unscored
        # without a word.
        image = tf.io.decode_image(contents, expand_animations=True)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        raise ValueError(f'{path}: not a PNG, JPEG, GIF or BMP image (cannot '
                         'decode it).') from e
    if image.shape.rank == 4:
        if image.shape[0] != 1:
            raise ValueError(f'{path}: an animated GIF of {image.shape[0]} '
                             'frames; save each frame as an image file (or '
                             'stack them in a .npy array) to score them.')
        image = image[0]
    return image.numpy()


def _png_frames(contents):
    """The frame count of an animated PNG's `acTL` chunk; 1 for a still
    PNG or another format."""
    if not contents.startswith(_PNG_SIGNATURE):
        return 1
    at = len(_PNG_SIGNATURE)
    # Chunks are length (4 bytes), type (4), data, CRC (4); `acTL` must
    # come before the image data.
    while at + 8 <= len(contents):
        length = int.from_bytes(contents[at:at + 4], 'big')
        kind = contents[at + 4:at + 8]
        if kind == b'acTL' and length >= 4:
            return max(int.from_bytes(contents[at + 8:at + 12], 'big'), 1)
        if kind in (b'IDAT', b'IEND'):
            break
        at += 12 + length
    return 1


def _bmp_bits_per_pixel(contents):
    """The bit count of a BMP file's header; `None` if not a BMP."""
    if not contents.startswith(b'BM') or len(contents) < 30:
        return None
    header_size = int.from_bytes(contents[14:18], 'little')
    at = 24 if header_size == _BMP_CORE_HEADER_SIZE else 28
    return int.from_bytes(contents[at:at + 2], 'little')


class _ImageFiles:
    """Image files, decoded once to check them and again when read."""

    def __init__(self, paths, data_shape, levels=256):
        self.paths = list(paths)
        self.count = len(self.paths)
        self._data_shape = data_shape
        self._levels = levels
        for path in self.paths:
            self._check(path)

    def _check(self, path):
        image = read_image_file(path)
        _check_image_shape(image.shape, self._data_shape, path)
        if self._levels < 256:
            _check_levels(image[np.newaxis], self._levels, path, [path])
        return image

    def items(self):
        # Checked again: a file may have changed or gone since it was
        # checked, and its error must name it rather than surface from
        # np.stack or the model.
        for path in self.paths:
            yield path, self._check(path)


class _Array:
    """A checked array; examples are named `name[i]`."""

    def __init__(self, array, data_shape, name, input_dtype=None,
                 levels=256):
        self.array = check_array(array, data_shape, name, input_dtype, levels)
        self.name = name
        self.count = len(self.array)

    def items(self):
        for i, example in enumerate(self.array):
            yield f'{self.name}[{i}]', example


def _parse_slice(spec, text):
    """`(start, stop)` (ints or `None`) of a `SPLIT[START:STOP]` slice."""
    match = _INTEGER_SLICE.match(text)
    if not match:
        raise ValueError(f'{spec}: unsupported slice [{text}]; use integer '
                         'bounds, e.g. test[:100], test[100:200] or '
                         'test[-50:].')
    return tuple(None if bound is None else int(bound)
                 for bound in match.groups())


class _TfdsSplit:
    """The `image` feature of a TFDS split (or a slice of it), in order.

    Examples are named by their index in the whole split, so a slice's
    names are those of the same examples when the whole split is scored.
    """

    def __init__(self, spec, data_shape, data_dir, levels=256):
        name = spec[len(TFDS_PREFIX):]
        split, bounds = 'test', None
        match = _TFDS_SPEC.match(name)
        if match:
            name, split = match['name'], match['split']
            if match['slice'] is not None:
                bounds = _parse_slice(spec, match['slice'])
        else:
            # A slice's own colon ([:2]) is not the one before the split.
            unsliced = re.sub(r'\[[^\]]*\]$', '', name)
            head, sep, tail = unsliced.rpartition(':')
            if sep and head and not _TFDS_VERSION.match(tail):
                # Not a version, so a mistyped split: taken as part of the
                # name it would be reported as an unknown data set.
                split = name[len(head) + 1:]
                raise ValueError(
                    f'{spec}: unknown split {split!r}; expected '
                    f'tfds:NAME[:SPLIT] with SPLIT one of '
                    f'{", ".join(pipelines.SPLITS)}, optionally sliced '
                    '(e.g. test[:100]).')
        if not name:
            raise ValueError(f'{spec}: expected tfds:NAME[:SPLIT].')
        if levels < 256:
            raise ValueError(f'{spec}: TFDS images are 8-bit and the model '
                             f'has {levels} levels; quantise them to '
                             f'[0, {levels - 1}] and pass a .npy array.')
        self.label = f'{TFDS_PREFIX}{name}:{split}'
        try:
            shape = pipelines.image_shape(name, data_dir=data_dir)
            _check_image_shape(shape, data_shape, self.label, 'images are')
            # Read once, often in part (a slice): an in-memory cache of
            # the split would be filled for nothing.
            self.dataset = pipelines.image_dataset(
                name, split, 1, shuffle=False, repeat=False,
                data_dir=data_dir, drop_remainder=False, autocache=False)
        except pipelines.DatasetUnavailableError as e:
            raise ValueError(f'{self.label}: {e}') from e
        except ValueError as e:
            if str(e).startswith(self.label):
                raise
            if 'validation_size' in str(e):
                # The pipeline's advice is for training, which can hold
                # examples out; scoring reads whole TFDS splits.
                raise ValueError(
                    f'{self.label}: {name!r} has no validation split of its '
                    f'own; score {TFDS_PREFIX}{name}:test instead.') from e
            raise ValueError(f'{self.label}: {e}') from e
        count = int(self.dataset.cardinality())
        self.offset = 0
        if bounds is not None:
            count = self._slice(spec, bounds, count)
        if count == 0:
            what = 'slice' if bounds is not None else 'split'
            raise ValueError(f'{spec if bounds is not None else self.label}: '
                             f'the {what} has no examples, nothing to score.')
        self.count = count if count >= 0 else None

    def _slice(self, spec, bounds, count):
        """Keeps `[start:stop]` of the split; returns the new count."""
        if count < 0:
            # TFDS knows the size of every prepared split.
            raise ValueError(f'{spec}: the split does not say how many '
                             'examples it has, so it cannot be sliced.')
        start, stop, _ = slice(*bounds).indices(count)
        stop = max(stop, start)
        self.dataset = self.dataset.skip(start).take(stop - start)
        self.offset = start
        return stop - start

    def items(self):
        for i, batch in enumerate(self.dataset.as_numpy_iterator()):
            yield f'{self.label}[{self.offset + i}]', batch[0]


class Inputs:
    """Checked examples of several inputs, read in batches."""

    def __init__(self, parts):
        self._parts = list(parts)

    @property
    def num_examples(self):
        """The number of examples, `None` if a TFDS split does not say."""
        counts = [part.count for part in self._parts]
        return None if None in counts else sum(counts)

    def batches(self, batch_size):
        """Yields `(sources, examples)`, up to `batch_size` at a time."""
        sources, examples = [], []
        for part in self._parts:
            for source, example in part.items():
                sources.append(source)
                examples.append(example)
                if len(examples) == batch_size:
                    yield sources, np.stack(examples)
                    sources, examples = [], []
        if examples:
            yield sources, np.stack(examples)


def _load_arrays(path, data_shape, npz_key, input_dtype=None, levels=256):
    try:
        if file_io.is_url(path):
            # Read whole: a memory map needs a local file.
            source, mmap_mode = io.BytesIO(file_io.read_bytes(path)), None
            signature = source.getvalue()[:6]
        else:
            source, mmap_mode = path, 'r'
            with open(path, 'rb') as f:
                signature = f.read(6)
        if signature != b'\x93NUMPY' and not signature.startswith(b'PK'):
            # np.load would try it as a pickle and complain about pickles.
            raise ValueError(f'{path}: not a NumPy array file (no .npy or '
                             '.npz signature at its start).')
        # np.load goes by the content, not the extension.
        loaded = np.load(source, mmap_mode=mmap_mode, allow_pickle=False)
        if path.lower().endswith('.npy'):
            if not isinstance(loaded, np.ndarray):
                loaded.close()
                raise ValueError(f'{path}: a .npz archive, not a .npy '
                                 'array; name it .npz.')
            return [_Array(loaded, data_shape, path, input_dtype, levels)]
        if isinstance(loaded, np.ndarray):
            raise ValueError(f'{path}: a .npy array, not a .npz archive; '
                             'name it .npy.')
        with loaded as archive:
            keys = list(archive.files)
            if npz_key is not None:
                if npz_key not in keys:
                    raise ValueError(f'{path}: no array {npz_key!r}; it has '
                                     f'{keys}.')
                keys = [npz_key]
            if not keys:
                raise ValueError(f'{path}: no arrays in it, nothing to score.')
            arrays = []
            for key in keys:
                array = archive[key]
                if not isinstance(array, np.ndarray):
                    raise ValueError(f'{path}:{key}: not a NumPy array (a '
                                     '.npz holds .npy members).')
                arrays.append(_Array(array, data_shape, f'{path}:{key}',
                                     input_dtype, levels))
            return arrays
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f'{path}: cannot read it as a '
                         f'{os.path.splitext(path)[1]} array '
                         f'({getattr(e, "strerror", None) or e}).') from e
    except ValueError as e:
        if str(e).startswith(path):
            raise
        # NumPy's own complaint, e.g. about pickled object arrays.
        raise ValueError(f'{path}: cannot read it as an array ({e}).') from e


def _is_broken_link(path):
    return (not file_io.is_url(path) and os.path.islink(path)
            and not os.path.exists(path))


def _is_directory(path):
    # Each check of a bucket's object is a request: a match with a file
    # extension is taken for a file.
    if file_io.is_remote(path) and path.lower().endswith(
            IMAGE_EXTENSIONS + ARRAY_EXTENSIONS):
        return False
    return file_io.isdir(path)


def _normpath(path):
    # os.path.normpath would fold a URL's `//`.
    return path if file_io.is_url(path) else os.path.normpath(path)


def _directory_images(path, names=None):
    # Broken symbolic links are kept, to be refused by name as when named
    # explicitly, rather than skipped without a word. Hidden files are left
    # out, as a glob's `*` leaves them out (macOS's `._x.png` companions
    # are not images). `names`: the directory's listing, if already made.
    if names is None:
        names = file_io.listdir(path)
    paths = (file_io.join(path, name) for name in names
             if name.lower().endswith(IMAGE_EXTENSIONS)
             and not name.startswith('.'))
    if file_io.is_remote(path):
        # Every listed name exists; a sub-directory's ends in `/` in an
        # object store, so the extension test has left it out.
        return sorted(paths)
    if file_io.is_url(path):
        # `file://` lists a sub-directory named like an image (`x.png`)
        # without the `/`, and a look costs no request.
        return sorted(p for p in paths if not file_io.isdir(p))
    return sorted(p for p in paths
                  if os.path.isfile(p) or _is_broken_link(p))


def _warn_of_files_left_out(path, names):
    """Warns of the files among `names`, directory `path`'s listing, that
    `score` could read if named, but a directory does not give (GIF, BMP,
    WebP, arrays)."""
    counts = collections.Counter(
        os.path.splitext(name)[1].lower() for name in names
        if not name.startswith('.')
        and name.lower().endswith(_READABLE_IF_NAMED))
    if counts:
        logging.warning(
            '%s: left out %s (a directory gives its %s files; name the '
            'others, or match them with a glob, to score them).', path,
            ', '.join(f'{n} {ext} file{"s" * (n > 1)}'
                      for ext, n in sorted(counts.items())),
            ', '.join(IMAGE_EXTENSIONS))


def open_inputs(specs, metadata, *, npz_key=None, data_dir=None):
    """Opens and checks every input before anything is scored.

    Args:
      specs: a path or a sequence of paths (strings or `os.PathLike`): image
        files, directories, globs (`**` for any depth), `.npy`/`.npz` files,
        `tfds:NAME[:SPLIT]` (SPLIT may be sliced with integer bounds:
        `test[:100]`).
      metadata: the export's metadata (`export.load_metadata`): its
        `data_shape`, `kind` and `num_bins` (256 if absent) decide what
        fits.
      npz_key: score only this array of each `.npz`; all by default.
      data_dir: TFDS data directory.

    Returns:
      `Inputs`.

    Raises:
      ValueError: one line naming the first input the model cannot score.
    """
    if isinstance(specs, (str, bytes, os.PathLike)):
        # One path, not a sequence of one-character specs.
        specs = [specs]
    specs = [os.fsdecode(spec) for spec in specs]
    data_shape = tuple(metadata['data_shape'])
    image = metadata.get('kind') == 'image'
    levels = int(metadata.get('num_bins') or 256)
    if not specs:
        raise ValueError('no input given: pass image files, directories, '
                         'globs, .npy/.npz arrays or tfds:NAME[:SPLIT].')
    parts, files = [], []

    def flush_files():
        if files:
            parts.append(_ImageFiles(files, data_shape, levels))
            files.clear()

    def add_file(path):
        if path.lower().endswith(ARRAY_EXTENSIONS):
            flush_files()
            parts.extend(_load_arrays(path, data_shape, npz_key,
                                      None if image else
                                      metadata.get('input_dtype'), levels))
        elif not image:
            raise ValueError(f'{path}: the model scores vectors of '
                             f'{data_shape[0]} values, not images; pass '
                             '.npy or .npz arrays.')
        else:
            files.append(path)

    def add_directory(path):
        names = file_io.listdir(path)  # One request for a bucket.
        found = _directory_images(path, names)
        if not found:
            raise ValueError(f'{path}: no {", ".join(IMAGE_EXTENSIONS)} '
                             'files in this directory.')
        _warn_of_files_left_out(path, names)
        for name in found:
            add_file(name)

    for spec in specs:
        if spec.startswith(TFDS_PREFIX):
            if not image:
                raise ValueError(f'{spec}: the model scores vectors of '
                                 f'{data_shape[0]} values, not images.')
            flush_files()
            parts.append(_TfdsSplit(spec, data_shape, data_dir, levels))
        elif file_io.isdir(spec):
            add_directory(spec)
        elif file_io.exists(spec):
            add_file(spec)
        elif glob.has_magic(spec):
            # `**` matches any depth of directories, as in shells that
            # support it (local paths only).
            matches = file_io.glob(spec)
            if not matches:
                raise ValueError(f'{spec}: no file matches this pattern.')
            # `dir/**` matches every directory and every file below it: each
            # file counts once, and a matched directory without images of
            # its own (one holding only subdirectories, say) adds nothing
            # rather than stopping the run as a named one would.
            is_dir = {m: _is_directory(m) for m in matches}
            seen = {_normpath(m) for m in matches if not is_dir[m]}
            found = [m for m in matches if not is_dir[m]]
            for match in matches:
                if is_dir[match]:
                    new = [name for name in _directory_images(match)
                           if _normpath(name) not in seen]
                    found += new
                    seen.update(_normpath(name) for name in new)
            if not found:
                raise ValueError(f'{spec}: the pattern matches only '
                                 'directories without images.')
            for name in sorted(found):
                add_file(name)
        else:
            raise ValueError(f'{spec}: no such file or directory.')
    flush_files()
    return Inputs(parts)


class SavedModelScorer:
    """The `log_prob` signature of an exported model."""

    def __init__(self, export_dir):
        """Loads `export_dir` (an `export.export_model` SavedModel).

        Raises:
          ValueError: if it is not one.
        """
        self.metadata, self._log_prob = export.load_signature(export_dir,
                                                              'log_prob')
        self._dtype = tf.as_dtype(self.metadata['input_dtype'])

    def log_prob(self, examples, num_samples, seed):
        """`(log_likelihood, bits_per_dim)`, float64 NumPy arrays [N].

        Raises:
          ValueError: for examples that `check_array` refuses (e.g. float
            or out-of-range pixels, which the cast to the model's input
            dtype would change silently), or a seed that is not two
            integers in [0, 2^31).
        """
        check_count(num_samples, 'num_samples')
        examples = check_array(np.asarray(examples),
                               self.metadata['data_shape'], 'examples',
                               input_dtype=self.metadata['input_dtype'],
                               levels=self.metadata.get('num_bins') or 256)
        if np.ndim(seed) != 1 or len(seed) != 2:
            raise ValueError(f'seed must be two integers; got {seed!r}.')
        for part in seed:
            check_seed(part)
        out = self._log_prob(
            x=tf.cast(examples, self._dtype),
            num_samples=tf.constant(num_samples, tf.int32),
            seed=tf.constant(seed, tf.int32))
        return out['log_likelihood'].numpy(), out['bits_per_dim'].numpy()


def check_count(value, name):
    """Raises unless `value` is an integer in [1, 2^31) (a count of a CLI's).

    The counts become int32 tensors, which would wrap a larger one without
    an error (2^32 + 1 samples would be 1).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f'{name} must be a positive integer; got {value!r}.')
    if value >= 2**31:
        raise ValueError(f'{name} must be below 2^31; got {value}.')


def check_seed(seed):
    """Raises unless `seed` is an integer in [0, 2^31) (a stateless seed's
    first element)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            not 0 <= seed < 2**31:
        raise ValueError(f'seed must be an integer in [0, 2^31); got '
                         f'{seed!r}.')


def score(scorer, inputs, *, num_samples, seed=0, batch_size=64,
          progress=None):
    """Scores every example of `inputs`, `batch_size` at a time.

    Every batch is scored with the stateless seed `(seed, 0)`, from which the
    export derives each example's own noise: an example's noise depends on
    the example and `seed` only, not on `batch_size`, its position, the
    order of the inputs or the other examples (with `seed` 0 its score is
    the `serving_default` signature's when `num_samples` is the export's
    default). The arithmetic is float32, and TensorFlow's kernels may round
    differently for batches of different sizes: scores with another
    `batch_size` agree to about 1e-6 bits/dim, not bit for bit; with the
    same `batch_size`, seed and inputs they are identical.

    Args:
      scorer: a `SavedModelScorer` (or anything with its `log_prob`).
      inputs: `Inputs`.
      num_samples: importance samples per example, in [1, 2^31).
      seed: int in [0, 2^31). Default value: 0.
      batch_size: examples per call. Default value: 64.
      progress: optional `fn(done, total)` called after every batch
        (`total` may be `None`).

    Returns:
      A list of `{'source', 'bits_per_dim', 'log_likelihood'}` dicts in
      input order.

    Raises:
      ValueError: for bad arguments, or one line naming an image file that
        is gone or no longer fits the model since `open_inputs` checked it.
    """
    check_count(num_samples, 'num_samples')
    check_count(batch_size, 'batch_size')
    check_seed(seed)
    records = []
    total = inputs.num_examples
    for sources, examples in inputs.batches(batch_size):
        log_likelihood, bits = scorer.log_prob(examples, num_samples,
                                               (int(seed), 0))
        records.extend({'source': source, 'bits_per_dim': float(b),
                        'log_likelihood': float(ll)}
                       for source, b, ll in zip(sources, bits,
                                                log_likelihood))
        if progress is not None:
            progress(len(records), total)
    return records


def summarize(records, model, num_samples, seed, batch_size):
    """The JSON document of `score`'s records (see `write_results`).

    The records are under `images` and counted by `num_images` for vector
    models as well: one layout for every export. With no records, the means
    are `None` (JSON `null`), not a figure.
    """
    bits = [r['bits_per_dim'] for r in records]
    lls = [r['log_likelihood'] for r in records]
    return {
        'model': model,
        'num_samples': num_samples,
        'seed': seed,
        'batch_size': batch_size,
        'num_images': len(records),
        # Scores the model cannot give as numbers (an input far outside
        # the data, where the flow overflows); such a mean is not finite.
        'num_not_finite': sum(not math.isfinite(b) for b in bits),
        'mean_bits_per_dim': math.fsum(bits) / len(bits) if bits else None,
        'mean_log_likelihood': math.fsum(lls) / len(lls) if lls else None,
        'images': records,
    }


def output_format(path):
    """`'json'` or `'csv'` from `path`'s extension.

    For a URL (`gs://bucket/scores.csv`), the file system must be one TF
    reaches; its directory is made when the file is written (object stores
    have no directories to check).

    Raises:
      ValueError: for any other extension, if `path` is a directory or its
        local directory does not exist, or a URL's file system cannot be
        reached (checked before scoring, not after).
    """
    fmt = _OUTPUT_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f'{path}: unknown output format; use a .json or '
                         '.csv file name.')
    file_io.check_reachable(path)
    if file_io.isdir(path):
        raise ValueError(f'{path}: a directory; name a file to write.')
    if file_io.is_url(path):
        return fmt
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        raise ValueError(f'{path}: no directory {directory} to write it to.')
    try:
        # Permission bits do not tell (root, read-only mounts, /proc).
        with tempfile.NamedTemporaryFile(dir=directory,
                                         prefix='.write_probe.'):
            pass
    except OSError as e:
        raise ValueError(f'{path}: cannot write in {directory} '
                         f'({file_io.reason(e)}).') from e
    return fmt


def write_results(path, results):
    """Writes `summarize`'s document as JSON, or its records as CSV.

    JSON is strict: a score that is not finite (`summarize`'s
    `num_not_finite`) is `null` there; CSV writes it as `inf`, `-inf` or
    `nan`. CSV has the header `source,bits_per_dim,log_likelihood` and one
    row per example, with the floats at full precision, in UTF-8; a file
    name that is not valid UTF-8 (surrogate escapes in Python) is written as
    its original bytes, so sources match the files they name. JSON escapes such
    names (`\udce9`). The file is written beside `path` and moved into
    place, so `path` never holds a partial result.

    Raises:
      ValueError: as `output_format`, or if the file cannot be written.
    """
    fmt = output_format(path)
    text = io.StringIO(newline='')
    if fmt == 'json':
        json.dump(file_io.finite_or_none(results), text, indent=1,
                  allow_nan=False)
        text.write('\n')
    else:
        writer = csv.writer(text)
        writer.writerow(['source', 'bits_per_dim', 'log_likelihood'])
        for r in results['images']:
            writer.writerow([r['source'], repr(r['bits_per_dim']),
                             repr(r['log_likelihood'])])
    contents = text.getvalue().encode('utf-8', errors='surrogateescape')
    try:
        if file_io.is_url(path):
            tf.io.gfile.makedirs(path.rsplit('/', 1)[0])
        with file_io.atomic_write(path, 'wb') as f:
            f.write(contents)
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f'{path}: cannot write it '
                         f'({file_io.reason(e)}).') from e
