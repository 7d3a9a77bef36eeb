"""Sampling from an exported SavedModel: draws in batches, written to files.

`bin/sample.py` is a thin flag parser around this module:

```python
info = export.load_metadata(model_dir)             # no TF model loading
kind = output_kind('samples.png', info)             # checked before sampling
sampler = SavedModelSampler(model_dir)
samples = draw(sampler, 64, temperature=0.8, seed=0, batch_size=64)
write_samples('samples.png', kind, samples)
```

Three outputs, chosen by the name:

* `NAME.png`: one grid of the samples (image models);
* `NAME.npy`: the samples as one array, uint8 `[N, H, W, C]` for images
  (pixel values in `[0, num_bins)`, as the model draws them) and float
  `[N, D]` for vectors;
* a directory (a name without extension, new or empty): one PNG per
  sample, `sample_000000.png`, ..., the layout that FID and other sample
  metrics read (image models).

PNGs hold 8-bit pixels: a model of fewer levels (`num_bins` < 256) has its
values spread over [0, 255] (`vflow_tfp.images.to_8bit`).

Any of them may be a URL that `tf.io.gfile` serves (`gs://bucket/x.png`).
Each file is written beside its name and moved into place, so no name
holds a partial file.
"""

import math
import os

import numpy as np
import tensorflow as tf

from vflow_tfp import export
from vflow_tfp import file_io
from vflow_tfp import images
from vflow_tfp import scoring

__all__ = ['SavedModelSampler', 'draw', 'output_kind', 'write_samples']

_EXTENSIONS = {'.png': 'grid', '.npy': 'array'}
SAMPLE_FILE = 'sample_{:06d}.png'


def output_kind(path, metadata):
    """`'grid'`, `'array'` or `'directory'` for `path`, checked up front.

    Raises:
      ValueError: one line, for a file name of another extension, an image
        output for a vector model, a directory that holds files, an
        existing file where a directory is named, or a missing local parent
        directory (checked before sampling, not after).
    """
    path = os.fspath(path)
    image = metadata.get('kind') == 'image'
    extension = os.path.splitext(path.rstrip('/'))[1].lower()
    kind = _EXTENSIONS.get(extension)
    if kind is None and extension:
        raise ValueError(f'{path}: unknown output; name a .png (a grid of '
                         'the samples), a .npy (an array) or a directory '
                         '(one PNG per sample).')
    if kind is None:
        kind = 'directory'
    if not image and kind != 'array':
        raise ValueError(f'{path}: the model draws vectors of '
                         f'{metadata["data_shape"][0]} values, not images; '
                         'name a .npy file.')
    if kind == 'directory':
        if file_io.isdir(path):
            if file_io.listdir(path):
                raise ValueError(f'{path}: the directory holds files '
                                 'already; name a new or empty one.')
        elif file_io.exists(path):
            raise ValueError(f'{path}: a file, not a directory.')
        return kind
    if file_io.isdir(path):
        raise ValueError(f'{path}: a directory; name a file to write.')
    if not file_io.is_url(path):
        directory = os.path.dirname(path) or '.'
        if not os.path.isdir(directory):
            raise ValueError(f'{path}: no directory {directory} to write it '
                             'to.')
    return kind


class SavedModelSampler:
    """The `sample` signature of an exported model."""

    def __init__(self, export_dir):
        """Loads `export_dir` (an `export.export_model` SavedModel).

        Raises:
          ValueError: if it is not one.
        """
        self.metadata = export.load_metadata(export_dir)
        try:
            self._sample = tf.saved_model.load(export_dir).signatures[
                'sample']
        except KeyError:
            raise ValueError(f'{export_dir}: the SavedModel has no sample '
                             'signature.') from None

    def sample(self, num, temperature, seed):
        """`num` samples as a NumPy array (uint8 images or float vectors)."""
        out = self._sample(num=tf.constant(num, tf.int32),
                           temperature=tf.constant(temperature, tf.float32),
                           seed=tf.constant(seed, tf.int32))
        return next(iter(out.values())).numpy()


def draw(sampler, num, *, temperature=1.0, seed=0, batch_size=64,
         progress=None):
    """`num` samples, `batch_size` per call of the `sample` signature.

    Batch `b` is drawn with the stateless seed `(seed, b)`: the same `seed`,
    `num` and `batch_size` give the same samples; another `batch_size`
    gives other (equally distributed) ones.

    Args:
      sampler: a `SavedModelSampler` (or anything with its `sample`).
      num: number of samples (>= 1).
      temperature: scale of the latent noise, finite and >= 0 (1 is the
        model; 0 maps the latent's mode). Default value: 1.
      seed: int in [0, 2^31). Default value: 0.
      batch_size: samples per call. Default value: 64.
      progress: optional `fn(done, total)` called after every batch.

    Returns:
      A NumPy array `[num] + data_shape`.

    Raises:
      ValueError: for bad arguments, or naming the batch whose samples the
        model refused (an image model whose flow gave non-finite values).
    """
    scoring.check_count(num, 'num')
    scoring.check_count(batch_size, 'batch_size')
    if isinstance(temperature, bool) or not isinstance(
            temperature, (int, float, np.integer, np.floating)) or not (
                math.isfinite(temperature) and temperature >= 0):
        raise ValueError('temperature must be a finite number >= 0; got '
                         f'{temperature!r}.')
    scoring.check_seed(seed)
    batches = []
    done = 0
    for b in range(-(-num // batch_size)):
        count = min(batch_size, num - done)
        try:
            batches.append(sampler.sample(count, float(temperature),
                                          (int(seed), b)))
        except tf.errors.InvalidArgumentError as e:
            # The model's own check, e.g. a latent mapped to non-finite
            # values; TF appends the graph's call stack to the message.
            raise ValueError(f'batch {b} (seed ({seed}, {b})): '
                             f'{e.message.strip().splitlines()[0]}') from e
        done += count
        if progress is not None:
            progress(done, num)
    return np.concatenate(batches)


def _png(image):
    return tf.io.encode_png(image).numpy()


def write_samples(path, kind, samples, num_bins=256, columns=None):
    """Writes `draw`'s samples as `output_kind` named them.

    Args:
      path: the output name.
      kind: `output_kind(path, metadata)`.
      samples: `[N] + data_shape` array.
      num_bins: the model's pixel levels (the export's `num_bins`), which
        PNGs spread over [0, 255]. Default value: 256.
      columns: columns of a grid; default `ceil(sqrt(N))`.

    Returns:
      The paths written.

    Raises:
      ValueError: if a file cannot be written.
    """
    path = os.fspath(path)
    try:
        if kind == 'array':
            with file_io.atomic_write(path, 'wb') as f:
                np.save(f, samples)
            return [path]
        pictures = images.to_8bit(samples, num_bins)
        if kind == 'grid':
            with file_io.atomic_write(path, 'wb') as f:
                f.write(_png(images.image_grid(pictures, columns)))
            return [path]
        if file_io.is_url(path):
            tf.io.gfile.makedirs(path)
        else:
            os.makedirs(path, exist_ok=True)
        written = []
        for i, image in enumerate(pictures):
            name = file_io.join(path, SAMPLE_FILE.format(i))
            with file_io.atomic_write(name, 'wb') as f:
                f.write(_png(image))
            written.append(name)
        return written
    except (OSError, tf.errors.OpError) as e:
        reason = (getattr(e, 'strerror', None) or getattr(e, 'message', None)
                  or e)
        raise ValueError(f'{path}: cannot write it ({reason}).') from e
