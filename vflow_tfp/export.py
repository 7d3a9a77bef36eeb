"""SavedModel export of trained flows for density scoring and sampling.

`export_run(run_dir)` restores the EMA weights of a training run (the
directory `bin/train.py --output_dir` writes) into a freshly built model and
exports it; `export_model(model, export_dir)` exports any `VFlow` as it is.
The SavedModel needs neither vflow_tfp nor TFP to load:

```python
loaded = tf.saved_model.load('runs/quickstart/saved_model')
scores = loaded.signatures['log_prob'](
    x=tf.constant(images),                      # uint8 [N, H, W, C]
    num_samples=tf.constant(16), seed=tf.constant([0, 0]))
scores['bits_per_dim']                          # float64 [N]
```

Signatures (every batch dimension is `None`; image models take uint8
`[N, H, W, C]`, vector models float `[N, D]` in the model's dtype):

* `log_prob(x, num_samples, seed)`: `num_samples` int32, `seed` int32 `[2]`
  -> `log_likelihood`, `bits_per_dim` (float64 `[N]`).
* `serving_default(x)`: `log_prob` with the export's default sample count
  (the run's `iw_samples`, else 16) and the seed `SERVING_SEED`; a signature
  cannot have optional inputs.
* `elbo(x, seed)` -> `elbo`, `bits_per_dim` (float64 `[N]`): the
  single-sample bound.
* `sample(num, temperature, seed)`: int32, float32, int32 `[2]` -> `images`
  (uint8 `[num, H, W, C]`) or `samples` (float `[num, D]`).
* `metadata()` -> `json` (all of it), `preset`, `dataset`, `data_shape`,
  `test_bpd`, `test_bpd_iw` (NaN when unknown), `default_num_samples`.

`log_prob` is the importance-weighted bound `log (1/S) sum_s exp(ELBO_s)`
(VFlow Eq. 5) in nats, `bits_per_dim` the same divided by `-D_x ln 2`. The
noise of every signature comes from its `seed` alone (stateless ops). In
`log_prob`, `serving_default` and `elbo` each example draws its own noise
from a seed derived from its content and `seed`
(`VFlow.example_seeds`): an example's noise depends only on the example,
`seed` and `num_samples`, not on the batch it is sent in, its position or
the batch size, and so does its score, up to float32 rounding (kernels
round differently for other batch shapes: about 1e-6 bits/dim). The
outputs equal the in-memory model's
`log_prob(x, num_samples, chunk_size, seed=model.example_seeds(x, seed))`,
`elbo(x, seed=model.example_seeds(x, seed))` and
`sample(num, temperature, seed=seed)` up to float32 rounding (the graph's
fused kernels against eager ops: about 1e-6 bits/dim). The signatures check
their inputs with `tf.debugging` assertions: an empty batch,
`num_samples < 1`, `num < 1`, a temperature that is negative or not finite,
non-finite vectors and (for a model of fewer than 256 levels) pixel values
past its levels are errors, not garbage outputs; so is any input of another
shape or rank (`tf.ensure_shape`: serving calls skip the signatures' own
shape checks).

The metadata (preset, overrides, training config, dataset, data shape,
pixel levels `num_bins` of an image model, test bits/dim, default sample
count, versions) is also the asset
`assets/metadata.json`, which `load_metadata` reads without loading the
model.

Run and export directories may be local paths or URLs that `tf.io.gfile`
serves (`gs://bucket/run`).
"""

import functools
import json
import math
import numbers
import os
import re
import tempfile

from absl import logging
import tensorflow as tf

import vflow_tfp
from vflow_tfp import file_io
from vflow_tfp import tf_logs
from vflow_tfp.models import presets
from vflow_tfp.training import ema as ema_lib

__all__ = [
    'DEFAULT_NUM_SAMPLES',
    'FlowScorer',
    'METADATA_FILE',
    'SERVING_SEED',
    'export_model',
    'export_run',
    'load_metadata',
    'load_signature',
]

DEFAULT_NUM_SAMPLES = 16
# `serving_default` has no seed input (signatures have no optional inputs).
SERVING_SEED = (0, 0)
METADATA_FILE = 'metadata.json'
_FORMAT = 'vflow_tfp.export/2'
# Format 1 drew one noise sample per call, so scores depended on batching.
_OLD_FORMATS = ('vflow_tfp.export/1',)


def _positive_int(value, name):
    """`value` as a Python int (NumPy integers too) in [1, 2^31)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(f'{name} must be a positive integer; got {value!r}.')
    if value >= 2**31:
        # An int32 in the signatures.
        raise ValueError(f'{name} must be below 2^31; got {value}.')
    return int(value)


class FlowScorer(tf.Module):
    """A `VFlow` with `tf.function`s ready to be SavedModel signatures.

    Holds the model (its variables are saved as they are: swap in EMA
    weights before saving) and the `log_prob`, `serving_default`, `elbo`,
    `sample` and `metadata` functions of the module docstring, each with an
    `input_signature` with a `None` batch.

    #### Example

    ```python
    scorer = FlowScorer(model, metadata={'dataset': 'photo_patches/8x8'})
    scorer.log_prob(images, 16, [1, 2])['bits_per_dim']
    tf.saved_model.save(scorer, path, signatures=scorer.signature_map())
    ```
    """

    def __init__(self, model, metadata=None,
                 default_num_samples=DEFAULT_NUM_SAMPLES, chunk_size=16,
                 name=None):
        """Wraps `model`.

        Args:
          model: a `vflow_tfp.models.VFlow` (images `[H, W, C]` or vectors
            `[D]`), initialised or trained.
          metadata: JSON-serialisable dict stored with the export (e.g.
            `preset`, `dataset`, `test_bpd`). Default value: none.
          default_num_samples: importance samples of `serving_default`.
            Default value: 16.
          chunk_size: draws evaluated per pass of `log_prob` (memory grows
            with `batch * chunk_size`). Default value: 16.
          name: module name. Default value: `'flow_scorer'`.

        Raises:
          ValueError: for a non-positive sample count or chunk size, image
            models with more than 256 levels (not uint8), or metadata that is
            not JSON-serialisable.
        """
        super().__init__(name=name or 'flow_scorer')
        self._default_num_samples = _positive_int(default_num_samples,
                                                  'default_num_samples')
        self._chunk_size = _positive_int(chunk_size, 'chunk_size')
        self.model = model
        shape = tuple(model.data_shape)
        self._is_image = len(shape) == 3
        if self._is_image and model.image_logit.num_bins > 256:
            raise ValueError('uint8 signatures need images of at most 256 '
                             f'levels; the model has '
                             f'{model.image_logit.num_bins}.')
        x_dtype = tf.uint8 if self._is_image else model.p.dtype
        self._levels = model.image_logit.num_bins if self._is_image else None
        info = dict(metadata or {})
        info.update(
            format=_FORMAT, vflow_tfp_version=vflow_tfp.__version__,
            tensorflow_version=tf.__version__,
            kind='image' if self._is_image else 'vector',
            data_shape=list(shape), input_dtype=x_dtype.name,
            num_data_dims=model.num_data_dims,
            default_num_samples=self._default_num_samples,
            serving_seed=list(SERVING_SEED), chunk_size=self._chunk_size)
        if self._is_image:
            info.update(num_bins=self._levels)
        try:
            # Kept as a string: tf.Module would wrap a dict attribute.
            self._metadata_json = json.dumps(info, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f'metadata must be JSON-serialisable: {e}') from e

        x_spec = tf.TensorSpec([None, *shape], x_dtype)
        seed_spec = tf.TensorSpec([2], tf.int32)
        int_spec = tf.TensorSpec([], tf.int32)
        # Without autograph, as the training steps (training/loop.py).
        function = functools.partial(tf.function, autograph=False)
        self.log_prob = function(
            self._log_prob, input_signature=[x_spec, int_spec, seed_spec])
        self.serving_default = function(self._serving_default,
                                        input_signature=[x_spec])
        self.elbo = function(self._elbo, input_signature=[x_spec, seed_spec])
        self.sample = function(
            self._sample, input_signature=[int_spec,
                                           tf.TensorSpec([], tf.float32),
                                           seed_spec])
        self.metadata = function(self._metadata, input_signature=[])

    @property
    def info(self):
        """The metadata dict (a copy)."""
        return json.loads(self._metadata_json)

    def signature_map(self):
        """`{signature name: tf.function}` for `tf.saved_model.save`."""
        return {'serving_default': self.serving_default,
                'log_prob': self.log_prob, 'elbo': self.elbo,
                'sample': self.sample, 'metadata': self.metadata}

    def _checked(self, x):
        # Signature calls (serving) do not check input shapes; without this
        # a wrong size fails deep inside the networks. (`EnsureShape` runs
        # in the graph; comparisons of `tf.shape` would be constant-folded
        # from the traced shape.)
        x = tf.ensure_shape(x, [None, *self.model.data_shape])
        tf.debugging.assert_positive(
            tf.shape(x)[0], message='x must hold at least one example')
        if not self._is_image:
            x = tf.debugging.assert_all_finite(
                x, 'x must be finite (no NaN or infinity)')
        # (Image models check their pixels' range themselves.)
        return x

    def _log_prob(self, x, num_samples, seed):
        """Importance-weighted log-likelihood and bits/dim, float64 [N]."""
        x = self._checked(x)
        num_samples = tf.ensure_shape(num_samples, [])
        seed = tf.ensure_shape(seed, [2])
        ll = self.model.log_prob(x, num_samples, chunk_size=self._chunk_size,
                                 seed=self.model.example_seeds(x, seed))
        return {'log_likelihood': ll,
                'bits_per_dim': self.model.bits_per_dim(ll)}

    def _serving_default(self, x):
        """`log_prob` with the default sample count and `SERVING_SEED`."""
        # Calls the traced `log_prob`: one graph for both signatures.
        return self.log_prob(x, tf.constant(self._default_num_samples),
                             tf.constant(SERVING_SEED, tf.int32))

    def _elbo(self, x, seed):
        """Single-sample ELBO and its bits/dim, float64 [N]."""
        x = self._checked(x)
        seed = tf.ensure_shape(seed, [2])
        elbo = tf.cast(
            self.model.elbo(x, seed=self.model.example_seeds(x, seed)),
            tf.float64)
        return {'elbo': elbo, 'bits_per_dim': self.model.bits_per_dim(elbo)}

    def _sample(self, num, temperature, seed):
        """`num` draws at `temperature`: uint8 images or float vectors."""
        num = tf.ensure_shape(num, [])
        temperature = tf.ensure_shape(temperature, [])
        seed = tf.ensure_shape(seed, [2])
        # (An empty request would fail inside the convolutions.)
        tf.debugging.assert_positive(num, message='num must be >= 1')
        tf.debugging.assert_all_finite(temperature,
                                       'temperature must be finite')
        # 0 is allowed, as in `VFlow.sample`: the latent's mode.
        tf.debugging.assert_non_negative(temperature,
                                         message='temperature must be >= 0')
        samples = self.model.sample(num, temperature, seed=seed)
        return {'images' if self._is_image else 'samples': samples}

    def _metadata(self):
        """The export's metadata as tensors (NaN for unknown bits/dim)."""
        info = self.info

        def bpd(key):
            value = info.get(key)
            return tf.constant(math.nan if value is None else float(value),
                               tf.float64)
        return {
            'json': tf.constant(self._metadata_json),
            'preset': tf.constant(str(info.get('preset') or '')),
            'dataset': tf.constant(str(info.get('dataset') or '')),
            'data_shape': tf.constant(info['data_shape'], tf.int32),
            'test_bpd': bpd('test_bpd'),
            'test_bpd_iw': bpd('test_bpd_iw'),
            'default_num_samples': tf.constant(self._default_num_samples,
                                               tf.int32),
        }


def _is_saved_model(path):
    return tf.io.gfile.exists(os.path.join(path, 'saved_model.pb'))


def export_model(model, export_dir, metadata=None,
                 default_num_samples=DEFAULT_NUM_SAMPLES, chunk_size=16):
    """Saves `model` with its current weights as a scoring SavedModel.

    The SavedModel is written next to `export_dir` and moved into place, so
    `export_dir` never holds a partial export; an existing SavedModel there is
    replaced. (On an object store such as GCS a directory is moved object by
    object: a reader may see a partial export while it moves.)

    Args:
      model: a `vflow_tfp.models.VFlow`.
      export_dir: output directory (a local path or a `tf.io.gfile` URL);
        must not exist, be empty or hold a SavedModel.
      metadata: JSON-serialisable dict saved with it (see `FlowScorer`).
      default_num_samples: importance samples of `serving_default`.
        Default value: 16.
      chunk_size: draws per pass of the importance-weighted bound.
        Default value: 16.

    Returns:
      `export_dir`.

    Raises:
      ValueError: if `export_dir` is a symbolic link, a file or a non-empty
        directory that is not a SavedModel, or for bad arguments (see
        `FlowScorer`).
    """
    export_dir = file_io.absolute(export_dir)
    url = file_io.is_url(export_dir)
    if not url and os.path.islink(export_dir):
        # Replacing the link's target behind the user's back, or the link
        # by a directory, would each surprise someone.
        raise ValueError(f'{export_dir} is a symbolic link (to '
                         f'{os.path.realpath(export_dir)}); give a real '
                         'directory.')
    if tf.io.gfile.exists(export_dir) and not (
            tf.io.gfile.isdir(export_dir)
            and (not tf.io.gfile.listdir(export_dir)
                 or _is_saved_model(export_dir))):
        raise ValueError(f'{export_dir} exists and is not a SavedModel or an '
                         'empty directory; refusing to overwrite it.')
    scorer = FlowScorer(model, metadata, default_num_samples, chunk_size)
    with file_io.staged_directory(export_dir) as staging, \
            tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, METADATA_FILE)
        with open(path, 'w') as f:
            json.dump(scorer.info, f, indent=2, sort_keys=True)
        scorer.metadata_file = tf.saved_model.Asset(path)
        with tf_logs.quiet_info():
            tf.saved_model.save(scorer, staging,
                                signatures=scorer.signature_map())
    return export_dir


def load_signature(export_dir, name):
    """`(metadata, signature)`: an export's metadata and one of its
    signatures, e.g. `'log_prob'` or `'sample'`.

    Raises:
      ValueError: if `export_dir` is not an `export_model` SavedModel or has
        no such signature.
    """
    metadata = load_metadata(export_dir)
    try:
        signature = tf.saved_model.load(export_dir).signatures[name]
    except KeyError:
        raise ValueError(f'{export_dir}: the SavedModel has no {name} '
                         'signature.') from None
    return metadata, signature


def load_metadata(export_dir):
    """The metadata dict of an export, read from `assets/metadata.json`.

    Plain JSON: no model loading.

    Raises:
      ValueError: if `export_dir` is not a SavedModel, or not one written by
        `export_model`.
    """
    if not tf.io.gfile.isdir(export_dir):
        raise ValueError(f'{export_dir}: not a SavedModel directory (no such '
                         'directory).')
    if not _is_saved_model(export_dir):
        raise ValueError(f'{export_dir}: not a SavedModel directory (no '
                         'saved_model.pb).')
    path = os.path.join(export_dir, 'assets', METADATA_FILE)
    try:
        info = file_io.read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f'{export_dir}: not a vflow_tfp scoring SavedModel '
                         f'(cannot read assets/{METADATA_FILE}: '
                         f'{getattr(e, "strerror", None) or e}).') from e
    if isinstance(info, dict) and info.get('format') in _OLD_FORMATS:
        raise ValueError(
            f'{export_dir}: exported by vflow_tfp '
            f'{info.get("vflow_tfp_version", "?")} in the format '
            f'{info["format"]}, whose scores depend on the batching; '
            f're-export it with bin/export.py (format {_FORMAT}).')
    if not isinstance(info, dict) or info.get('format') != _FORMAT:
        raise ValueError(f'{export_dir}: assets/{METADATA_FILE} is not '
                         f'{_FORMAT} metadata.')
    return info


def _read_results(run_dir):
    path = os.path.join(run_dir, 'results.json')
    try:
        results = file_io.read_json(path)
    except FileNotFoundError:
        if file_io.isdir(os.path.join(run_dir, 'checkpoints')):
            # Written at the first log step (or lost): its settings name
            # the model to build.
            raise ValueError(
                f'{run_dir}: no results.json yet, so no record of the run\'s '
                'settings; rerun its training command, which writes it '
                '(again), then export.') from None
        raise ValueError(f'{run_dir}: no results.json; expected the '
                         '--output_dir of a bin/train.py run.') from None
    except (OSError, ValueError) as e:
        raise ValueError(f'{path}: unreadable ({e}).') from e
    if (not isinstance(results, dict)
            or not isinstance(results.get('config'), dict)
            or not results.get('preset')):
        raise ValueError(f'{path} has no preset or config; expected the '
                         'results of a bin/train.py run.')
    return results


def _checkpoint_path(run_dir, checkpoint):
    if checkpoint is None:
        directory = os.path.join(run_dir, 'checkpoints')
        path = tf.train.latest_checkpoint(directory)
        if path is None:
            raise ValueError(f'{run_dir}: no checkpoint in {directory}.')
        return path
    if tf.io.gfile.isdir(checkpoint):
        path = tf.train.latest_checkpoint(checkpoint)
        if path is None:
            raise ValueError(f'{checkpoint}: no checkpoint in it.')
        return path
    if not tf.io.gfile.exists(checkpoint + '.index'):
        raise ValueError(f'{checkpoint}: no such checkpoint (no '
                         f'{os.path.basename(checkpoint)}.index).')
    return checkpoint


def export_run(run_dir, export_dir=None, checkpoint=None,
               default_num_samples=None, keep_current=False):
    """Exports the EMA weights of a training run as a scoring SavedModel.

    Builds the run's preset with its overrides (from `results.json`),
    restores model and EMA from the checkpoint, swaps the EMA weights in and
    calls `export_model`. Runs outside any `tf.distribute` strategy, so it
    also works for runs trained on several replicas or workers.

    Args:
      run_dir: the `--output_dir` of a `bin/train.py` run (`results.json`
        and `checkpoints/`).
      export_dir: output directory. Default value: `run_dir/saved_model`.
      checkpoint: checkpoint prefix (e.g. `run_dir/checkpoints/ckpt-800`) or
        directory. One outside `run_dir/checkpoints` (a copy, another run's
        of the same model) is exported without the run's test figures,
        which were not measured on it. Default value: the latest of
        `run_dir/checkpoints`.
      default_num_samples: importance samples of `serving_default`.
        Default value: the run's `iw_samples`, else 16.
      keep_current: if `True` and `export_dir` already holds the export this
        call would write (the same checkpoint, not rewritten since, with the
        same metadata, sample count, chunk size and versions), keep it instead
        of exporting again. Default value: `False`.

    Returns:
      The export directory.

    Raises:
      ValueError: if `run_dir` has no results or checkpoint, or the
        checkpoint does not match the run's model.
    """
    results = _read_results(run_dir)
    config = results['config']
    path = _checkpoint_path(run_dir, checkpoint)
    export_dir = export_dir or os.path.join(run_dir, 'saved_model')
    overrides = dict(config.get('preset_overrides') or {})
    metadata = _run_metadata(results, path, overrides,
                             _is_run_checkpoint(run_dir, path))
    if default_num_samples is None:
        default_num_samples = config.get('iw_samples') or DEFAULT_NUM_SAMPLES
    # Checked now: it goes into the metadata compared below.
    default_num_samples = _positive_int(default_num_samples,
                                        'default_num_samples')
    chunk_size = config.get('iw_chunk_size', 16)
    if keep_current and _is_current_export(
            export_dir, path, metadata, default_num_samples, chunk_size):
        logging.info('%s already holds the export of %s: kept.', export_dir,
                     path)
        return file_io.absolute(export_dir)
    model = presets.build(results['preset'], seed=config.get('seed'),
                          **overrides)
    ema = ema_lib.WeightEMA(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, ema=ema)
    mismatch = None
    try:
        status = checkpoint.restore(path)
        # The optimiser and trainer state in the checkpoint are not needed.
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        mismatch = str(e).splitlines()[0]
        # A restore that fails part-way (a shape) returns no status.
        tf_logs.forget_failed_restore(checkpoint)
    if mismatch is not None:
        raise ValueError(f'{path} does not hold the weights of preset '
                         f'{results["preset"]!r} with overrides {overrides} '
                         f'({mismatch}).')
    with ema.averaged_weights():
        return export_model(model, export_dir, metadata,
                            default_num_samples=default_num_samples,
                            chunk_size=chunk_size)


def _is_run_checkpoint(run_dir, path):
    """Whether checkpoint `path` is in `run_dir/checkpoints` (not a copy
    elsewhere, nor another run's)."""
    def where(directory):
        if file_io.is_url(directory):
            return directory.rstrip('/')
        return os.path.realpath(directory)
    return where(os.path.dirname(path)) == where(
        os.path.join(run_dir, 'checkpoints'))


def _run_metadata(results, path, overrides, own_checkpoint=True):
    """The metadata `export_run` saves for checkpoint `path` of a run."""
    config = results['config']
    match = re.search(r'-(\d+)$', path)
    step = int(match[1]) if match else None
    # Test bits/dim belong to this export only if they were measured on
    # this checkpoint: one of the run's own, at the step they were measured
    # at (results.json before `test_bpd_step` existed: its own step).

    def measured_here(key):
        at = results.get(f'{key}_step', results.get('step'))
        return (results.get(key) if own_checkpoint and step is not None
                and at == step else None)
    return {
        'preset': results['preset'],
        'preset_overrides': overrides,
        'dataset': results.get('dataset') or config.get('dataset', ''),
        'config': config,
        'checkpoint': file_io.absolute(path),
        'step': step,
        'weights': 'ema',
        'test_bpd': measured_here('test_bpd'),
        'test_bpd_iw': measured_here('test_bpd_iw'),
        'iw_samples': config.get('iw_samples') or None,
        # What the test figures were measured on: the split (held-out
        # training images with --validation_size) and how many images.
        'eval_split': ('validation' if config.get('validation_size')
                       else 'test'),
        'test_images': (results.get('test_images')
                        if measured_here('test_bpd') is not None else None),
        'iw_images': (results.get('iw_images')
                      if measured_here('test_bpd_iw') is not None else None),
    }


def _is_current_export(export_dir, path, metadata, default_num_samples,
                       chunk_size):
    """Whether `export_dir` holds this export of checkpoint `path` already.

    The checkpoint must not be newer than the export (the same timestamp is
    the same clock tick on a file system of coarse timestamps): a run
    retrained from scratch in the same directory writes a new checkpoint of
    the same name.
    """
    try:
        info = load_metadata(export_dir)
        exported = file_io.mtime(os.path.join(export_dir, 'saved_model.pb'))
        written = file_io.mtime(path + '.index')
    except (ValueError, OSError):
        return False
    # JSON has no tuples: compare the metadata as it reads back.
    expected = json.loads(json.dumps(dict(
        metadata, format=_FORMAT, vflow_tfp_version=vflow_tfp.__version__,
        tensorflow_version=tf.__version__,
        default_num_samples=default_num_samples, chunk_size=chunk_size)))
    return written <= exported and all(
        info.get(key) == value for key, value in expected.items())
