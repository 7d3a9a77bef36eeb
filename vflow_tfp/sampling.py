"""Sampling from an exported SavedModel: draws in batches, written to files.

`bin/sample.py` is a thin flag parser around this module:

```python
info = export.load_metadata(model_dir)             # no TF model loading
kind = output_kind('samples.png', info)             # checked before sampling
sampler = SavedModelSampler(model_dir)
with SampleWriter('samples.png', kind, info.get('num_bins')) as writer:
    for batch in draw_batches(sampler, 64, temperature=0.8, seed=0):
        writer.add(batch)
```

(`draw` returns the samples as one array; `write_samples` writes one.)
Three outputs, chosen by the name:

* `NAME.png`: one grid of the samples (image models);
* `NAME.npy`: the samples as one array, uint8 `[N, H, W, C]` for images
  (pixel values in `[0, num_bins)`, as the model draws them) and float
  `[N, D]` for vectors;
* a directory (an existing empty local one, or a name without extension
  or ending in `/`; a URL's kind is read from its name alone, so name
  `gs://b/runs.v2/` with its `/`): one PNG per sample, `sample_000000.png`,
  ..., the layout that FID and other sample metrics read (image models).

PNGs hold 8-bit pixels: a model of fewer levels (`num_bins` < 256) has its
values spread over [0, 255] (`vflow_tfp.images.to_8bit`), so score the
`.npy`, not the PNGs, with that model. A directory's PNGs are written batch
by batch, so memory does not grow with their number; a grid and an array
are written at the end. Any output may be a URL that `tf.io.gfile` serves
(`gs://bucket/x.png`). Nothing is visible under the output's name until it
is complete: files are written beside it and moved into place, a directory
is filled under another name and renamed; an error or an interrupt leaves
no partial output. A file of the name is replaced; a directory must be new
or empty.
"""

import os
import re

import numpy as np
import tensorflow as tf

from vflow_tfp import export
from vflow_tfp import file_io
from vflow_tfp import images
from vflow_tfp import scoring
from vflow_tfp.bijectors import shape_checks

__all__ = ['SAMPLE_FILE', 'SampleWriter', 'SavedModelSampler', 'draw',
           'draw_batches', 'output_kind', 'write_samples']

_EXTENSIONS = {'.png': 'grid', '.npy': 'array'}
SAMPLE_FILE = 'sample_{:06d}.png'
# Lines of a TF runtime error's message that are not its reason.
_TF_NOISE = re.compile(r'^(Graph execution error:|Detected at node|'
                       r'<stack traces unavailable>|\s*\[\[|\s*File "|$)')


def output_kind(path, metadata):
    """`'grid'`, `'array'` or `'directory'` for `path`, checked up front.

    Raises:
      ValueError: one line, for a file name of another extension, `-`, an
        image output for a vector model, a directory that holds files, an
        existing file where a directory is named, a missing local parent
        directory, or a URL whose file system TF cannot reach (checked
        before sampling, not after).
    """
    path = os.fspath(path)
    if path == '-':
        raise ValueError('-: samples are written to files, not to stdout; '
                         'name a .png, a .npy or a directory.')
    image = metadata.get('kind') == 'image'
    url = file_io.is_url(path)
    if not url and os.path.basename(os.path.normpath(path)) in ('.', '..'):
        # Its staging directory would have to go beside the working
        # directory, which would then be replaced under the shell.
        raise ValueError(f'{path}: name the directory by its own name (e.g. '
                         '../samples), not as . or ..')
    if not url and os.path.islink(path.rstrip('/')) and os.path.isdir(path):
        raise ValueError(f'{path}: a symbolic link to a directory; name the '
                         'directory itself.')
    if path.endswith('/'):
        kind = 'directory'
    else:
        extension = os.path.splitext(path)[1].lower()
        kind = _EXTENSIONS.get(extension)
        if kind is None and not url and os.path.isdir(path):
            kind = 'directory'  # an existing one with a dot: `runs.v2`
        if kind is None and extension:
            raise ValueError(f'{path}: unknown output; name a .png (a grid '
                             'of the samples), a .npy (an array) or a '
                             'directory (one PNG per sample).')
        kind = kind or 'directory'
    if not image and kind != 'array':
        raise ValueError(f'{path}: the model draws vectors of '
                         f'{metadata["data_shape"][0]} values, not images; '
                         'name a .npy file.')
    file_io.check_reachable(path)
    if kind == 'directory':
        if file_io.isdir(path):
            if file_io.listdir(path):
                raise ValueError(f'{path}: the directory holds files '
                                 'already; name a new or empty one.')
        elif file_io.exists(path.rstrip('/')):
            raise ValueError(f'{path}: a file, not a directory.')
    elif file_io.isdir(path):
        raise ValueError(f'{path}: a directory; name a file to write.')
    if not file_io.is_url(path):
        directory = os.path.dirname(path.rstrip('/')) or '.'
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
        self.metadata, self._sample = export.load_signature(export_dir,
                                                            'sample')

    def sample(self, num, temperature, seed):
        """`num` samples as a NumPy array (uint8 images or float vectors)."""
        out = self._sample(num=tf.constant(num, tf.int32),
                           temperature=tf.constant(temperature, tf.float32),
                           seed=tf.constant(seed, tf.int32))
        return next(iter(out.values())).numpy()


def _reason(error):
    """The line of a TF runtime error that says what went wrong."""
    lines = [line for line in error.message.splitlines()
             if not _TF_NOISE.match(line)]
    return lines[0].strip() if lines else type(error).__name__


def draw_batches(sampler, num, *, temperature=1.0, seed=0, batch_size=64,
                 first_batch=0, progress=None):
    """Yields `num` samples, `batch_size` per call of the `sample` signature.

    Batch `b` (counted from `first_batch`) is drawn with the stateless seed
    `(seed, b)`: the same `seed`, `batch_size` and `first_batch` give the
    same samples, and more samples only add batches (the first `n` of them
    do not depend on `num`: exactly for images, to float32 rounding for
    vectors, whose last batch may have another shape). A training run's
    `samples.png` of step `s` is batch `s` of `batch_size` `num_samples`
    (16) with the run's seed.

    Args:
      sampler: a `SavedModelSampler` (or anything with its `sample`).
      num: number of samples, 1 to 2^31 - 1.
      temperature: scale of the latent noise, finite and >= 0 (1 is the
        model; 0 maps the latent's mode). Default value: 1.
      seed: int in [0, 2^31). Default value: 0.
      batch_size: samples per call, 1 to 2^31 - 1. Default value: 64.
      first_batch: index of the first batch, >= 0. Default value: 0.
      progress: optional `fn(done, total)` called after every batch.

    Yields:
      NumPy arrays `[n] + data_shape`, `n <= batch_size`.

    Raises:
      ValueError: for bad arguments, or naming the batch that failed: the
        model's own refusal (an image model's flow gave non-finite values)
        or non-finite vectors (a temperature too high for the model).
    """
    scoring.check_count(num, 'num')
    scoring.check_count(batch_size, 'batch_size')
    if isinstance(first_batch, bool) or not isinstance(
            first_batch, (int, np.integer)) or not 0 <= first_batch < 2**31:
        raise ValueError('first_batch must be an integer in [0, 2^31); got '
                         f'{first_batch!r}.')
    if not _is_temperature(temperature):
        raise ValueError('temperature must be a number >= 0 that float32 '
                         '(the signature\'s type) holds; got '
                         f'{temperature!r}.')
    scoring.check_seed(seed)
    last = first_batch + (num - 1) // batch_size
    if last >= 2**31:
        # Found now, not after every batch before it was drawn.
        raise ValueError(f'{num} samples in batches of {batch_size} from '
                         f'batch {first_batch} end at batch {last}; batch '
                         'indices end at 2^31 - 1.')
    done = 0
    batch = int(first_batch)
    while done < num:
        count = min(batch_size, num - done)
        where = f'batch {batch} (seed ({seed}, {batch}))'
        try:
            samples = sampler.sample(count, float(temperature),
                                     (int(seed), batch))
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f'{where}: {_reason(e)}') from e
        if samples.dtype.kind == 'f' and not np.all(np.isfinite(samples)):
            raise ValueError(f'{where}: non-finite samples (temperature '
                             f'{temperature:g} is too high for the model).')
        done += count
        batch += 1
        if progress is not None:
            progress(done, num)
        yield samples


def _is_temperature(value):
    if isinstance(value, bool) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        return False
    try:
        value = float(value)
    except OverflowError:  # an int past float64's range
        return False
    # (A Python float: compared with a NumPy float32, 1e39 would be cast
    # to it, with an overflow warning.)
    return 0 <= value <= float(np.finfo(np.float32).max)


def draw(sampler, num, **kwargs):
    """`draw_batches`' samples as one array `[num] + data_shape`."""
    return np.concatenate(list(draw_batches(sampler, num, **kwargs)))


def _png(image):
    return tf.io.encode_png(image).numpy()


class SampleWriter:
    """Writes batches of samples to an `output_kind` output, as they come.

    Use as a context manager: the output appears under its name when the
    `with` block ends normally (`complete` is then true), and an error or
    interrupt inside it leaves nothing (no partial file or directory, no
    scratch file). A directory output must be new or empty: one that holds
    files is refused when the block starts (`ValueError`), and if files
    appear in it meanwhile, the samples are dropped, not the files
    (`FileExistsError` at the end of the block).
    """

    def __init__(self, path, kind, num_bins=256, columns=None):
        """Args:
          path: the output name.
          kind: `output_kind(path, metadata)`.
          num_bins: the model's pixel levels (the export's `num_bins`),
            which PNGs spread over [0, 255]. Default value: 256.
          columns: columns of a grid; default `ceil(sqrt(N))`, and at most
            `N`.
        """
        self.path = os.fspath(path)
        if kind not in ('grid', 'array', 'directory'):
            raise ValueError(f"kind must be 'grid', 'array' or 'directory'; "
                             f'got {kind!r}.')
        if columns is not None:
            columns = shape_checks.as_size(columns, 'columns')
        self.kind = kind
        self.num_bins = shape_checks.as_size(num_bins, 'num_bins', minimum=2)
        self.columns = columns
        self.count = 0
        self.complete = False
        self._batches = []
        self._staged = None

    def __enter__(self):
        if self.kind == 'directory':
            if file_io.exists(self.path.rstrip('/')) and not (
                    file_io.isdir(self.path)
                    and not file_io.listdir(self.path)):
                raise ValueError(f'{self.path}: a file or a directory that '
                                 'holds files is there; name a new or empty '
                                 'directory.')
            self._staged = file_io.staged_directory(self.path, replace=False)
            self._staging = self._staged.__enter__()
        return self

    def add(self, samples):
        """Writes (or keeps, for a grid) a batch `[n] + data_shape`."""
        if self.kind == 'directory':
            if self._staged is None:
                raise RuntimeError('SampleWriter.add: a directory output is '
                                   'written inside a `with` block.')
            for image in images.to_8bit(samples, self.num_bins):
                # Straight into the staging directory, which nobody reads
                # before it is renamed: no per-file rename (on an object
                # store, a copy per file).
                name = file_io.join(self._staging,
                                    SAMPLE_FILE.format(self.count))
                with tf.io.gfile.GFile(name, 'wb') as f:
                    f.write(_png(image))
                self.count += 1
        else:
            self._batches.append(samples)
            self.count += len(samples)

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._staged is not None:
                # Moves the staging directory into place, or removes it.
                staged, self._staged = self._staged, None
                if staged.__exit__(exc_type, exc, traceback):
                    return True
        self.complete = exc_type is None
        return False

    def _finish(self):
        if self.kind == 'directory':
            return
        if not self.count:
            raise ValueError(f'{self.path}: no samples to write.')
        samples = np.concatenate(self._batches)
        self._batches = []
        with file_io.atomic_write(self.path, 'wb') as f:
            if self.kind == 'array':
                np.save(f, samples)
            else:
                columns = (min(self.columns, len(samples)) if self.columns
                           else None)
                f.write(_png(images.image_grid(
                    images.to_8bit(samples, self.num_bins), columns)))


def write_samples(path, kind, samples, num_bins=256, columns=None):
    """Writes an array of samples as `output_kind` named them.

    Returns:
      The number of samples written.

    Raises:
      ValueError: if the output cannot be written.
    """
    try:
        with SampleWriter(path, kind, num_bins, columns) as writer:
            writer.add(np.asarray(samples))
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f'{path}: cannot write it '
                         f'({file_io.reason(e)}).') from e
    return writer.count
