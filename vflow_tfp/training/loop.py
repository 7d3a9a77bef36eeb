"""The training loop: tf.distribute custom loop, EMA, checkpoints, results.

`Trainer` trains a preset model on any `tf.distribute.Strategy`
(`MirroredStrategy` over local GPUs or CPUs, `MultiWorkerMirroredStrategy`
across machines, `OneDeviceStrategy`):

* model, optimiser, EMA and checkpoint are created under `strategy.scope()`;
* data-dependent initialisation runs once, eagerly, in cross-replica context,
  on one batch every worker draws identically, so all replicas hold the same
  values (TFP's own Glow does not: there each replica assigns its own
  shard's statistics to a mirrored ActNorm variable, and the copies
  silently diverge);
* the whole train step is one `tf.function`: per-replica negative ELBO
  averaged over the global batch, gradients all-reduced once, clipped by
  their global norm, applied, then the EMA updated;
* evaluation, sampling and the final importance-weighted bound use the EMA
  weights; every checkpoint holds model, optimiser (with its step counter),
  EMA and RNG state, so a rerun resumes the model where the last one
  stopped. The input pipeline is rebuilt for the resume step
  (`train_input_fn(input_context, start_step)`), so a resumed run does not
  replay the data from the start of the stream;
* every worker resumes from the chief's checkpoints
  (`output_dir/checkpoints`, which must be visible to all workers, e.g. on
  a shared file system or a bucket, `gs://...`); the workers check that they
  found the same step before anything collective runs;
* SIGTERM, SIGINT or SIGHUP checkpoints and returns; the stop request
  travels in the gradients' all-reduce, so a signal to any one worker stops
  every worker after the same step;
* evaluation noise comes from stateless seeds, so evaluating leaves the
  training noise alone; a single pass over the evaluation split counts every
  example (the last batch may be partial);
* a non-finite loss or gradient norm stops the run before the next save,
  and every save first checks that all model, optimiser and EMA values are
  finite, so a non-finite model never becomes the latest checkpoint;
* once training is complete, the chief exports the EMA model as a scoring
  SavedModel to `output_dir/saved_model` (`vflow_tfp.export`).

Library code: it takes a `TrainConfig` and input functions, never flags.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
import weakref

from absl import logging
import numpy as np
import tensorflow as tf
# No public API tells whether op determinism is on.
# pylint: disable-next=g-direct-tensorflow-import
from tensorflow.python.framework import config as tf_config

from vflow_tfp import export as export_lib
from vflow_tfp import file_io
from vflow_tfp import images as images_lib
from vflow_tfp import interrupts
from vflow_tfp import tf_logs
from vflow_tfp.models import presets
from vflow_tfp.training import ema as ema_lib
from vflow_tfp.training import optimizers
from vflow_tfp.training import schedules

__all__ = ['Trainer', 'format_duration',
           'make_output_dir', 'write_json_atomic']

_SEED_SPEC = tf.TensorSpec([2], tf.int32)
# Values that `Trainer._sum_over_replicas` all-reduces at once.
_SUM_SIZE = 5
_BATCH_SIZE_MESSAGE = (
    'Every training batch must hold global_batch_size / replicas = {} '
    'examples on each replica (batch the training data with '
    'drop_remainder=True)')
# The importance-weighted pass can run for hours; it logs its progress at
# most this often (seconds).
_IW_PROGRESS_SECONDS = 60.0


# `CheckpointManager`'s file names: `ckpt-<step>.index` and data shards.
_CHECKPOINT_FILE = re.compile(r'^ckpt-(\d+)\.(index|data-\d+-of-\d+)$')
# What a save cut short leaves: TF writes a checkpoint's shards into
# `ckpt-<step>_temp/` and the state file as `checkpoint.tmp<hex>`, and
# renames them into place at the end.
_PARTIAL_SAVE = re.compile(r'^(ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]+)$')


def _is_damage(error):
    """Whether a restore failed on unreadable files (truncated, overwritten,
    missing: "not an sstable", "Checksum does not match", ...), as opposed to
    a checkpoint of another model (unmatched objects, other shapes)."""
    return (isinstance(error, IndexError)
            or (isinstance(error, tf.errors.OpError)
                and not isinstance(error, tf.errors.InvalidArgumentError)))


def _latest_or_none(directory):
    """The checkpoint the state file of `directory` names, `None` if none
    or the file is unreadable."""
    try:
        return tf.train.latest_checkpoint(directory)
    except (ValueError, tf.errors.OpError):
        return None


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _sum_and_count(x, per_example, dtype):
    """The sum of `per_example()` (a `[N]` tensor of `dtype` for the batch
    `x`) and `N`, or two zeros for an empty `x` without running it.

    A replica's share of the last evaluation batch can be empty, and in a
    graph TF's oneDNN convolution (CPUs) gives an empty batch the wrong
    shape, which fails the model's next layer.
    """
    def score():
        values = per_example()
        return tf.reduce_sum(values), tf.cast(tf.shape(values)[0], dtype)

    zero = tf.zeros([], dtype)
    return tf.cond(tf.shape(x)[0] > 0, score, lambda: (zero, zero))


def make_output_dir(path, name='output_dir'):
    """Creates the run directory `path` (if new); returns it.

    `path` is a local path or a URL that `tf.io.gfile` serves (`gs://...`).

    Raises:
      ValueError: one line naming `name` and `path` if `path` is empty, a
        file, or cannot be created or written.
    """
    if not path:
        raise ValueError(f'{name} must name a directory; got {path!r}.')
    if file_io.is_url(path):
        return _make_url_dir(path, name)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f'{name} must be a directory; got {path!r}, which '
                         'is a file.')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f'{name} must be a directory that can be created; '
                         f'got {path!r} ({e.strerror}: {e.filename}).'
                         ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f'{name} must be a writable directory; got '
                         f'{path!r}.')
    return path


def _make_url_dir(path, name):
    """`make_output_dir` for a URL: made, then probed with a written file
    (a bucket has no permission bits to read)."""
    try:
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            raise ValueError(f'{name} must be a directory; got {path!r}, '
                             'which is a file.')
        tf.io.gfile.makedirs(path)
        probe = os.path.join(path, f'.write_probe.{os.getpid()}')
        with tf.io.gfile.GFile(probe, 'w') as f:
            f.write('')
        tf.io.gfile.remove(probe)
    except tf.errors.OpError as e:
        raise ValueError(f'{name} must be a directory that can be created '
                         f'and written; got {path!r} '
                         f'({" ".join(e.message.split())}).') from e
    return path


def _data_alone(dataset, what):
    """`dataset`, refused by name if its elements are not single tensors
    (e.g. `(image, label)` pairs, which would fail deep in a step)."""
    spec = dataset.element_spec
    if isinstance(spec, (tuple, list, dict)):
        if isinstance(spec, dict):
            # TFDS's examples, unless loaded with as_supervised=True.
            key = next((k for k in ('image', 'x') if k in spec),
                       '<the data key>')
            fix = f'ds.map(lambda example: example[{key!r}])'
        else:
            fix = 'ds.map(lambda x, *_: x)'
        raise ValueError(
            f'{what} must give batches of the data alone; its elements are '
            f'{spec}. Drop the labels, e.g. `{fix}`.')
    return dataset


def _settings(config):
    """A recorded config without `output_dir`: the same run may be named
    by another path (`run/`, a relative path, another mount)."""
    return {k: v for k, v in config.items() if k != 'output_dir'}


# What the final importance-weighted bound of a checkpoint depends on: its
# model, data, batches, sample counts, noise seed and compilation (XLA
# draws other noise). Not the schedule or the bookkeeping (log, checkpoint
# and evaluation intervals, sample grids, export).
_BOUND_SETTINGS = ('preset', 'preset_overrides', 'dataset', 'validation_size',
                   'global_batch_size', 'iw_samples', 'iw_images',
                   'iw_chunk_size', 'seed', 'jit_compile')


def _bound_settings(config):
    return {k: config.get(k) for k in _BOUND_SETTINGS}


def _recorded_figure(value, what):
    """`value`, or `None` with a warning if it is not finite (JSON has no
    NaN or infinity; Python writes them as tokens strict readers refuse)."""
    if math.isfinite(value):
        return value
    logging.warning('%s is %s: some evaluation image has no finite bound '
                    '(zero density under the model, or an overflow); '
                    'recorded as null in results.json.', what, value)
    return None


def _format_bpd(value):
    return 'not finite' if value is None else f'{value:.4f}'


def write_json_atomic(path, payload):
    """Writes JSON so that readers never see a partial file.

    Raises:
      ValueError: for NaN or infinite values (not JSON).
    """
    with file_io.atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True, allow_nan=False)


def format_duration(seconds):
    """`'HH:MM:SS'`, with whole days in front beyond 24 h: `'3d 17:02:11'`."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f'{hours:02d}:{minutes:02d}:{secs:02d}'
    return f'{days}d {clock}' if days else clock


def _warn_if_op_order_varies():
    """Warns if op determinism is on but independent ops run on threads.

    Op determinism fixes each kernel, not the order in which TF's executor
    runs independent ops; AddN, which sums the gradients of a tensor with
    three or more consumers, adds first whichever input buffer is free
    first, so such runs differ by rounding (bin/train.py sets one thread).
    """
    threads = (tf.config.threading.get_inter_op_parallelism_threads()
               or os.environ.get('TF_NUM_INTEROP_THREADS'))
    if tf_config.is_op_determinism_enabled() and str(threads) != '1':
        logging.warning(
            'Op determinism is on, but TF runs independent ops on several '
            'threads, so gradient sums can add in another order and two runs '
            'differ by rounding. Call '
            'tf.config.threading.set_inter_op_parallelism_threads(1) before '
            'TF starts (or set TF_NUM_INTEROP_THREADS=1).')


def _task(strategy):
    """(is_chief, task_id) of this process under `strategy`."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    is_chief = task_type == 'chief' or (task_type == 'worker' and
                                        task_id == 0 and 'chief' not in
                                        resolver.cluster_spec().as_dict())
    return is_chief, task_id


class Trainer:
    """Trains, evaluates, checkpoints and resumes one model.

    #### Example

    ```python
    config = TrainConfig(preset='tiny_vflow', output_dir='/tmp/run',
                         train_steps=500, dataset='photo_patches/8x8')
    trainer = Trainer(config, tf.distribute.MirroredStrategy(),
                      train_input_fn, eval_input_fn, init_images)
    results = trainer.train()
    ```
    """

    def __init__(self, config, strategy, train_input_fn, eval_input_fn,
                 init_batch):
        """Builds model, optimiser, EMA and checkpoint under the strategy.

        Args:
          config: a `TrainConfig`.
          strategy: a `tf.distribute.Strategy`.
          train_input_fn: `fn(input_context, start_step) ->
            tf.data.Dataset` of per-replica batches, repeating (for
            `strategy.distribute_datasets_from_function`). `start_step` is
            the step training starts from (0, or the resumed checkpoint's
            step): a resumable stream starts there instead of at its
            beginning (see `training_inputs`).
          eval_input_fn: the same for the evaluation split, finite.
          init_batch: data for the data-dependent initialisation; identical
            on every worker (e.g. drawn with a fixed seed).

        The model's initial weights come from TF's global random state,
        which this seeds with `config.seed` (`tf.random.set_seed`), so that
        the seed fixes them in every process and on any number of replicas.
        """
        config.validate()
        _warn_if_op_order_varies()
        # Each trainer traces its step functions once; TF would count the
        # traces of all trainers in the process as retracing.
        tf_logs.drop_retracing_warnings('Trainer')
        replicas = strategy.num_replicas_in_sync
        if config.global_batch_size % replicas:
            raise ValueError(
                f'global_batch_size ({config.global_batch_size}) must be '
                f'divisible by the {replicas} replicas.')
        self._replica_batch_size = config.global_batch_size // replicas
        self.config = config
        self.strategy = strategy
        self.is_chief, self.task_id = _task(strategy)
        self._train_input_fn = train_input_fn
        self._eval_input_fn = eval_input_fn
        self._init_batch = init_batch
        self._stop_requested = threading.Event()
        # The first signal that stopped `train` (SIGTERM, SIGINT, SIGHUP),
        # `None` if none did.
        self.stop_signal = None
        # The initial weights are drawn from TF's global random state (the
        # preset's seed covers noise and dropout): seeded here, so that
        # `config.seed` (bin/train.py's `--seed`) fixes them.
        tf.random.set_seed(config.seed)
        with strategy.scope():
            self.model = presets.build(config.preset, seed=config.seed,
                                       **config.preset_overrides)
            self.variables = self.model.trainable_variables
            self.schedule = schedules.WarmupHoldDecay(
                config.max_lr, config.warmup_steps, config.hold_until,
                config.lr_decay, config.min_lr)
            # With `jit_compile`, the update is compiled as well: it runs
            # outside the replica's compiled loss and gradients.
            self.optimizer = optimizers.adam(
                self.schedule, beta_1=config.adam_beta1,
                beta_2=config.adam_beta2, epsilon=config.adam_epsilon,
                jit_compile=config.jit_compile)
            # Slots exist before any restore or replica step.
            self.optimizer.build(self.variables)
            self.ema = ema_lib.WeightEMA(self.variables, config.ema_decay)
            self.initialized = tf.Variable(False, trainable=False,
                                           name='initialized')
        self._check_inputs()
        # After the build and the checks, so that a preset refusing its
        # settings, or data it cannot take, leaves no new directory behind.
        make_output_dir(config.output_dir)
        # One process trains into a run directory at a time: two would
        # write the same checkpoints and results over each other. The
        # chief's lock (workers write nowhere else), held while the trainer
        # lives, released by the system if the process is killed.
        self._lock = (file_io.lock_directory(config.output_dir)
                      if self.is_chief else None)
        if self._lock is not None:
            weakref.finalize(self, self._lock.release)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, ema=self.ema,
            rng=self.model.rng, initialized=self.initialized)
        # Every worker resumes from the chief's checkpoints.
        self._resume_dir = os.path.join(config.output_dir, 'checkpoints')
        if self.is_chief:
            self._checkpoint_dir = self._resume_dir
        else:
            # Saving is collective under MultiWorkerMirroredStrategy: other
            # workers write to a scratch directory, made by the first save
            # and removed when `train` returns, or else when the trainer
            # goes (say after a refused restore) or the process ends.
            self._checkpoint_dir = os.path.join(
                tempfile.gettempdir(),
                f'vflow_tfp_worker{self.task_id}_{uuid.uuid4().hex[:8]}')
            weakref.finalize(self, shutil.rmtree, self._checkpoint_dir,
                             True)
        # The step of the last save, identical on every worker (unlike the
        # checkpoint directories), so every worker takes the same decision
        # on the collective final save.
        self._saved_step = None
        self.manager = self._checkpoint_manager()
        # Made at the first summary (`_summaries`): creating a writer
        # creates summaries/, which would keep a run refused before then
        # (say for its data) from leaving its output_dir as it found it.
        self._writer = None
        self._resumed_step = None  # the checkpoint's step, once restored
        self._train_step = self._make_train_step()
        self._eval_step = None   # traced for the evaluation data's spec
        self._summed = None  # `_sum_over_replicas`
        self.evaluated_images = None  # by the last `evaluate`
        self._all_finite = self._make_all_finite()
        self.results = {}
        self._start_state = None

    def _check_inputs(self):
        """Refuses inputs that would fail, or hang, only once training is
        under way (at the first evaluation, say, hours in).

        The input functions are called once with a local `InputContext` and
        their datasets checked by their static element spec and size;
        nothing is read.
        """
        config = self.config
        shape = tuple(self.model.data_shape)
        hint = ''
        if 'image_shape' in presets.overridable(config.preset):
            hint = (" For images of another size or number of channels, "
                    "build the preset for them: preset_overrides={'image_"
                    "shape': (height, width, channels)}.")
        if isinstance(self._init_batch, tf.data.Dataset):
            raise TypeError('init_batch must be the examples themselves (an '
                            'array or tensor), not a dataset; take a batch, '
                            'e.g. `next(iter(dataset))`.')
        values = np.asarray(self._init_batch)
        if values.ndim and not len(values):
            raise ValueError('init_batch is empty: the data-dependent '
                             'initialisation needs examples.')
        if values.shape[1:] != shape:
            raise ValueError(
                f'the model of preset {config.preset!r} takes data of shape '
                f'{list(shape)}; init_batch holds examples of shape '
                f'{list(values.shape[1:])}.'
                + (hint if values.ndim == len(shape) + 1 == 4 else ''))
        if (np.issubdtype(values.dtype, np.floating)
                and not np.all(np.isfinite(values))):
            # Else the initialisation's statistics are NaN, and the error
            # (from the first save) would blame the model.
            raise ValueError(
                f'init_batch holds {int(np.sum(~np.isfinite(values)))} '
                'non-finite value(s): the data-dependent initialisation '
                'needs finite data.')
        if len(shape) == 3:
            # As the model refuses them, but now, before the run directory
            # is locked and the strategy set up.
            levels = self.model.num_bins
            bad = ((values != np.floor(values)) | (values < 0)
                   | (values >= levels))
            if bad.any():
                example = values[bad].flat[0].item()
                raise ValueError(
                    f'init_batch holds pixel values that are not integers '
                    f'in [0, {levels}) (the model\'s levels), e.g. '
                    f'{example!r}: images scaled to [0, 1], dequantised, or '
                    'of more levels than the model.')
        context = tf.distribute.InputContext(
            num_replicas_in_sync=self.strategy.num_replicas_in_sync)
        datasets = {}
        for name, fn, args in (
                ('train_input_fn', self._train_input_fn, (context, 0)),
                ('eval_input_fn', self._eval_input_fn, (context,))):
            signature = ('(input_context, start_step)' if len(args) == 2
                         else '(input_context)')
            if not callable(fn):
                raise TypeError(f'{name} must be a function {signature} '
                                f'returning a tf.data.Dataset; got a '
                                f'{type(fn).__name__}.')
            try:
                with tf_logs.quiet_info():
                    dataset = fn(*args)
            except TypeError as e:
                raise TypeError(f'{name} must be a function {signature} '
                                f'returning a tf.data.Dataset: {e}') from e
            if not isinstance(dataset, tf.data.Dataset):
                raise TypeError(f'{name} must return a tf.data.Dataset; got '
                                f'a {type(dataset).__name__}.')
            batch_shape = _data_alone(dataset, name).element_spec.shape
            if not batch_shape.is_compatible_with((None,) + shape):
                raise ValueError(
                    f'{name} gives batches of shape {batch_shape}; the model '
                    f'of preset {config.preset!r} takes [batch] + '
                    f'{list(shape)}.{hint}')
            datasets[name] = dataset
        train = datasets['train_input_fn']
        evaluation = datasets['eval_input_fn']
        size = int(train.cardinality())
        if size == 0:
            raise ValueError(
                'train_input_fn gives no batch: its data holds fewer '
                'examples than one per-replica batch '
                f'({self._replica_batch_size}) with drop_remainder=True, or '
                'none at all.')
        if size > 0:
            raise ValueError(
                f'train_input_fn gives {size} batch(es) and then ends; it '
                'must repeat (e.g. dataset.repeat()).')
        if train.element_spec.shape[0] is None:
            logging.warning(
                'train_input_fn gives batches of unknown size: a partial '
                'batch (say at the end of an epoch) will stop training. '
                'Batch the training data with drop_remainder=True.')
        elif train.element_spec.shape[0] != self._replica_batch_size:
            raise ValueError(
                _BATCH_SIZE_MESSAGE.format(self._replica_batch_size)
                + f'; train_input_fn gives {train.element_spec.shape[0]}.')
        size = int(evaluation.cardinality())
        if size == 0:
            raise ValueError(
                f'eval_input_fn gives no batch: the {self.eval_split} data '
                'is empty (or smaller than one batch with '
                'drop_remainder=True).')
        if size == tf.data.INFINITE_CARDINALITY and not config.eval_batches:
            raise ValueError(
                'eval_input_fn gives an endless dataset (it repeats), so '
                'with eval_batches=0 (the whole split) an evaluation would '
                'never end: give one pass over the split, or set '
                'eval_batches.')

    # -- state ------------------------------------------------------------

    def _summaries(self):
        """The summary writer (a no-op one off the chief), made once.

        A resumed run's file starts with a `SessionLog.START` event at the
        step after its checkpoint's. A process killed without a chance to
        save may have written summaries past its last checkpoint, which the
        rerun writes again; TensorBoard's Python loader drops the stale ones
        only on that event (its Rust data server drops them on the repeated
        steps alone). The event files themselves keep both.
        """
        if self._writer is None:
            if not self.is_chief:
                self._writer = tf.summary.create_noop_writer()
            else:
                self._writer = tf.summary.create_file_writer(
                    os.path.join(self.config.output_dir, 'summaries'))
                if self._resumed_step is not None:
                    restart = tf.compat.v1.Event(
                        wall_time=time.time(), step=self._resumed_step + 1,
                        session_log=tf.compat.v1.SessionLog(
                            status=tf.compat.v1.SessionLog.START))
                    # No public API writes an event through a TF2 writer.
                    tf.raw_ops.ImportEvent(
                        # pylint: disable-next=protected-access
                        writer=self._writer._resource,
                        event=restart.SerializeToString())
        return self._writer

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self):
        """Resumes from the latest checkpoint, or runs the init pass.

        Runs once per trainer: later calls (e.g. from `train` after the
        caller already restored) return the first outcome and leave the
        in-memory state alone.
        """
        if self._start_state is None:
            # Not at a step: a signal interrupts (KeyboardInterrupt).
            with self._signals_interrupt():
                self._start_state = self._restore_or_initialize()
        return self._start_state

    def _checkpoint_manager(self):
        """The `CheckpointManager` of this worker's checkpoint directory.

        An unreadable state file (`checkpoints/checkpoint`, say emptied by a
        full disk) is set aside, so that it cannot stop the run: the
        checkpoints themselves are found without it (`_saved_checkpoints`).
        """
        def manager():
            return tf.train.CheckpointManager(
                self.checkpoint, self._checkpoint_dir,
                max_to_keep=self.config.keep_checkpoints,
                step_counter=self.optimizer.iterations)
        try:
            return manager()
        except ValueError as e:  # "Invalid checkpoint state loaded from"
            state = file_io.join(self._checkpoint_dir, 'checkpoint')
            aside = f'{state}.unreadable-{int(time.time())}'
            logging.warning('%s cannot be read (%s); moved to %s, the '
                            'checkpoints are found without it.', state,
                            _first_line(e), aside)
            file_io.replace(state, aside)
            return manager()

    def _saved_checkpoints(self):
        """The checkpoints of the resume directory, highest step first.

        Every `ckpt-N` with an index file, and the one the state file names:
        a damaged or missing state file must not hide the checkpoints (a run
        that started over would overwrite them).
        """
        try:
            names = file_io.listdir(self._resume_dir)
        except FileNotFoundError:
            return []
        except NotADirectoryError as e:
            raise ValueError(
                f'{self._resume_dir} is a file, not a directory of '
                'checkpoints; move it away or use another output '
                'directory.') from e
        found = {}
        for name in names:
            # A data shard without its index counts too: such a checkpoint
            # cannot load, but the directory is not a new run's.
            match = _CHECKPOINT_FILE.match(name)
            if match:
                found[int(match[1])] = file_io.join(self._resume_dir,
                                                    f'ckpt-{match[1]}')
        latest = _latest_or_none(self._resume_dir)
        if latest and re.fullmatch(r'\d+', latest.rsplit('-', 1)[-1]):
            found.setdefault(int(latest.rsplit('-', 1)[1]), latest)
        return [found[step] for step in sorted(found, reverse=True)]

    def _restore_or_initialize(self):
        candidates = self._saved_checkpoints()
        self._check_workers_agree(candidates[0] if candidates else None)
        if not candidates:
            self._refuse_results_without_checkpoints()
            self._remove_partial_saves()
            self._initialize()
            self.save()
            return 'initialized'
        recorded = self._recorded_config()
        if recorded.get('preset', self.config.preset) != self.config.preset:
            raise ValueError(
                f'{self.config.output_dir} holds a run of preset '
                f'{recorded["preset"]!r}, not {self.config.preset!r}; '
                'use another output directory.')
        if recorded:
            # Other pixel levels are other data: every figure of the run
            # (bits/dim, samples) would change meaning part way.
            levels = (dict(recorded.get('preset_overrides') or {}).get(
                'num_bins', 256), self.config.preset_overrides.get(
                    'num_bins', 256))
            if levels[0] != levels[1]:
                raise ValueError(
                    f'{self.config.output_dir} holds a run on data of '
                    f'{levels[0]} levels, not {levels[1]}; use another '
                    'output directory.')
        damaged = []
        for path in candidates:
            if self._restore(path, recorded, damaged):
                break
        else:
            raise ValueError(
                f'{self._resume_dir} holds checkpoints but none can be read '
                f'({"; ".join(damaged)}). Move them away to start over, or '
                'use another output directory.')
        self._saved_step = self._resumed_step = self.step
        self._remove_partial_saves()
        if self.is_chief and path != _latest_or_none(self._resume_dir):
            # The state file is unreadable, missing or names a damaged
            # checkpoint: it is written anew for the restored one, so that
            # the export and the manager's rotation find it.
            kept = candidates[candidates.index(path):][::-1]
            # With timestamps after `last_preserved_timestamp`: checkpoints
            # listed without them would be kept for good, never rotated out.
            now = time.time()
            tf.compat.v1.train.update_checkpoint_state(
                self._resume_dir, path, all_model_checkpoint_paths=kept,
                all_model_checkpoint_timestamps=[
                    now - len(kept) + i for i in range(len(kept))],
                last_preserved_timestamp=now - len(kept) - 1)
            self.manager = self._checkpoint_manager()
        if damaged:
            logging.warning(
                'Resumed from %s, the newest checkpoint that can be read '
                '(newer, damaged: %s); its step\'s checkpoint will be '
                'written anew.', path, '; '.join(damaged))
        logging.info(
            'Resumed from %s at step %d (learning rate %.6g, EMA '
            'checksum %.9g).', path, self.step,
            float(self.schedule(self.optimizer.iterations)),
            self.ema_checksum())
        return 'restored'

    def _remove_partial_saves(self):
        """Removes what saves cut short (a hard kill, a full disk) left in
        the checkpoint directory: partial shards can be as large as a
        checkpoint, and nothing else would ever remove them.

        Only in a local run directory, which this process has locked, so no
        other process can be saving there (an object store has no lock).
        """
        if not self.is_chief or file_io.is_url(self._resume_dir):
            return
        try:
            names = os.listdir(self._resume_dir)
        except FileNotFoundError:
            return
        removed = sorted(n for n in names if _PARTIAL_SAVE.match(n))
        for name in removed:
            path = os.path.join(self._resume_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        if removed:
            logging.warning('Removed what an interrupted save left in %s: '
                            '%s.', self._resume_dir, ', '.join(removed))

    def _restore(self, path, recorded, damaged):
        """Restores checkpoint `path`; `False` (noted in `damaged`) if its
        files cannot be read, an error if it is another model's."""
        status = None
        try:
            # Consumed, not just matched: a smaller model (say one step
            # fewer) matches a subset of a larger model's checkpoint.
            status = self.checkpoint.restore(path)
            status.assert_consumed()
            return True
        except (AssertionError, ValueError, IndexError,
                tf.errors.OpError) as e:
            # The error below (or the older checkpoint) says it all;
            # without this TF logs every unrestored value of the checkpoint
            # when the objects are collected.
            if status is not None:
                status.expect_partial()
            else:
                tf_logs.forget_failed_restore(self.checkpoint)
            if _is_damage(e):
                damaged.append(f'{os.path.basename(path)}: {_first_line(e)}')
                logging.warning('%s cannot be read (%s); trying the '
                                'checkpoint before it.', path, _first_line(e))
                return False
            trained = (f' (results.json: overrides '
                       f'{recorded["preset_overrides"]})'
                       if 'preset_overrides' in recorded else '')
            if recorded.get('dataset', self.config.dataset) != (
                    self.config.dataset):
                trained += (f' (trained on {recorded["dataset"]}, not '
                            f'{self.config.dataset})')
            raise ValueError(
                f'{path} is not a checkpoint of preset '
                f'{self.config.preset!r} with overrides '
                f'{self.config.preset_overrides}{trained}: {_first_line(e)} '
                'Use another output directory.') from e

    def _refuse_results_without_checkpoints(self):
        """A new run must not replace results it cannot resume: a run's
        whose checkpoints were removed (to free space, say), or another
        tool's (a toy sweep's `results.json`)."""
        results = self._recorded_results()
        if not results:
            return
        out = self.config.output_dir
        if not isinstance(results.get('config'), dict):
            raise ValueError(
                f'{out} holds a results.json that is not a training run\'s; '
                'use another output directory.')
        raise ValueError(
            f'{out} holds the results of a run (results.json, step '
            f'{results.get("step")}) but no checkpoint to resume it from; a '
            'new run would replace them. Use another output directory, or '
            'move results.json away to start over there.')

    def _recorded_config(self):
        """The `config` of `output_dir`'s results.json, `{}` if none."""
        return self._recorded_results().get('config') or {}

    def _recorded_results(self):
        """`output_dir`'s results.json, `{}` if none.

        One that is not a JSON object (say cut short by hand or by a disk
        fault; the trainer itself replaces it atomically) is moved aside by
        the chief, as the checkpoints' state file is: the checkpoints are
        the run, and the results are written anew from them.
        """
        path = os.path.join(self.config.output_dir, 'results.json')
        try:
            results = file_io.read_json(path)
            if isinstance(results, dict):
                return results
            problem = f'a JSON {type(results).__name__}, not an object'
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as e:
            problem = _first_line(e)
        if self.is_chief:
            aside = f'{path}.unreadable-{int(time.time())}'
            logging.warning('%s cannot be read (%s); moved to %s, the run '
                            'goes on from its checkpoints.', path, problem,
                            aside)
            file_io.replace(path, aside)
        return {}

    def _sum_over_replicas(self, values):
        """The sum of up to `_SUM_SIZE` float64 `values` over all replicas (a
        collective: every worker must call it at the same point).

        One function of a fixed size, traced once per trainer: one traced
        per call would make TF warn of excessive retracing once a process
        has built a few trainers.
        """
        if self._summed is None:
            # Read from a plain (host) variable, as a captured constant would
            # be: under MultiWorkerMirroredStrategy, all-reducing a tensor
            # passed in through `strategy.run` fails ("destinations can not
            # be empty").
            self._to_sum = tf.Variable(tf.zeros([_SUM_SIZE], tf.float64),
                                       trainable=False)

            def replica_fn():
                return tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.identity(self._to_sum))

            @tf.function(autograph=False)
            def summed():
                return self.strategy.experimental_local_results(
                    self.strategy.run(replica_fn))[0]
            self._summed = summed
        self._to_sum.assign(list(values) + [0.0] * (_SUM_SIZE - len(values)))
        return self._summed().numpy()[:len(values)]

    def _check_workers_agree(self, latest):
        """Raises unless every replica runs the same settings and found the
        checkpoint of `latest`'s step.

        Workers started with other settings (say another batch size) would
        train on differently weighted gradients, or fail in a collective
        with a message that names no cause. Restoring and initialising run
        different collective operations, so workers that disagree on the
        checkpoint (e.g. `output_dir` is not shared) would hang or train
        different weights. One all-reduce of `(1, s, s^2, h, h^2)` with `s`
        the step (-1 for none) and `h` a 16-bit fingerprint of the settings
        tells: each is equal everywhere iff `n * sum(s^2) = sum(s)^2` (exact
        in float64 at these sizes).
        """
        step = -1.0 if latest is None else float(latest.rsplit('-', 1)[1])
        # The output directory may be mounted under other paths.
        settings = json.dumps(dict(dataclasses.asdict(self.config),
                                   output_dir=None), sort_keys=True,
                              default=str)
        fingerprint = float(int.from_bytes(
            hashlib.sha256(settings.encode()).digest()[:2], 'big'))
        count, total, squares, fingerprints, fingerprint_squares = (
            float(v) for v in self._sum_over_replicas(
                [1.0, step, step * step, fingerprint,
                 fingerprint * fingerprint]))
        if count * fingerprint_squares != fingerprints * fingerprints:
            raise RuntimeError(
                'The workers were started with different settings (flags '
                'or TrainConfig); start every worker with the same ones, '
                'only TF_CONFIG\'s task differs.')
        if count * squares != total * total:
            raise RuntimeError(
                f'The workers found different checkpoints to resume from '
                f'(this one: {latest or "none"} in {self._resume_dir}). '
                'Every worker must see the chief\'s output_dir, e.g. on a '
                'shared file system or bucket.')

    def _initialize(self):
        start = time.time()
        seed = tf.constant([self.config.seed, 12345], tf.int32)
        with self.strategy.scope():
            # With dropout, as the official init pass (SPEC §3). One
            # cross-replica pass from a fixed seed, its masks from the
            # model's generator (seeded from `config.seed` on every worker),
            # so every replica and worker assigns identical statistics.
            elbo = self.model.initialize(self._init_batch, training=True,
                                         seed=seed)
            self.ema.reset()
            self.initialized.assign(True)
        bpd = float(tf.reduce_mean(self.model.bits_per_dim(elbo)))
        logging.info('Data-dependent initialisation on %d examples in %.1f s: '
                     '%.4f bits/dim.', len(self._init_batch),
                     time.time() - start, bpd)
        if len(self.model.data_shape) == 3 and bpd < 0:
            # The mean bound of a normalised model of discrete data is at
            # most log P(x) <= 0. Saved, this start would be resumed from on
            # every rerun, and its first step is usually already NaN.
            raise FloatingPointError(
                f'The data-dependent initialisation on '
                f'{len(self._init_batch)} examples gives {bpd:.4f} '
                'bits/dim; a normalised model of discrete data cannot go '
                'below 0, so the statistics of so few examples are '
                'degenerate. Not saved; use a larger init batch '
                '(init_batch_size).')

    @property
    def eval_split(self):
        """`'validation'` or `'test'`: what the evaluations run on."""
        return 'validation' if self.config.validation_size else 'test'

    def ema_checksum(self):
        """Sum of all EMA shadow values (float64), to compare states."""
        return float(sum(np.sum(s.numpy().astype(np.float64))
                         for s in self.ema.shadows))

    def save(self):
        """Checkpoints the current state; refuses a non-finite one.

        Raises:
          FloatingPointError: a model, optimiser or EMA value is not finite
            (e.g. an update turned finite gradients into NaN weights, which
            the loss and gradient norm of the step cannot show). The latest
            checkpoint stays the last good one.
        """
        if not bool(self._all_finite()):
            raise FloatingPointError(
                f'Non-finite model, optimizer or EMA values at step '
                f'{self.step}; not saved. The '
                f'{self._last_good_checkpoint()}')
        with tf_logs.quiet_info():
            path = self.manager.save(
                checkpoint_number=self.optimizer.iterations)
        self._saved_step = self.step
        return path if self.is_chief else None

    def _last_good_checkpoint(self):
        """'last good checkpoint is ...', for an error that stops the run."""
        latest = tf.train.latest_checkpoint(self._resume_dir)
        text = f'last good checkpoint is {latest}.'
        if latest is not None and latest.endswith('-0'):
            # A rerun resumes from it: the initialisation is not redone.
            text += (' It holds the initialisation, so a rerun starts from '
                     'it again; to initialise anew (say from a larger init '
                     'batch), use a new output directory.')
        return text

    def request_stop(self, signum=None, frame=None):
        """Signal handler: checkpoint after the next step and return.

        Under `MultiWorkerMirroredStrategy` a signal to any one worker stops
        all of them after the same step, with one collective save, so a
        preempted worker does not leave the others waiting in a collective.
        The signal's number is kept in `stop_signal` (for an exit status).
        """
        del frame
        if signum is not None and self.stop_signal is None:
            self.stop_signal = signal.Signals(signum)
            # Acknowledged at once (a step, an evaluation or the first trace
            # can take a while); a raw write, as logging is not safe in a
            # signal handler.
            os.write(2, f'{self.stop_signal.name}: stopping after the '
                        'current step, with a checkpoint.\n'.encode())
        self._stop_requested.set()

    # -- compiled steps ---------------------------------------------------

    def _make_train_step(self):
        config = self.config
        model, optimizer = self.model, self.optimizer
        variables = self.variables

        per_replica = self._replica_batch_size

        def loss_and_grads(x):
            with tf.GradientTape() as tape:
                elbo = model.elbo(x, training=True)
                loss = tf.nn.compute_average_loss(
                    -elbo, global_batch_size=config.global_batch_size)
            return loss, tape.gradient(loss, variables)

        if config.jit_compile:
            loss_and_grads = tf.function(loss_and_grads, jit_compile=True,
                                         autograph=False)

        def replica_step(x, stop_vote):
            # The loss is averaged over global_batch_size, so a batch of
            # another size would scale the loss and the gradients silently.
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(x)[0], per_replica,
                    message=_BATCH_SIZE_MESSAGE.format(per_replica))]):
                x = tf.identity(x)
            loss, grads = loss_and_grads(x)
            # One all-reduce of the gradients of the global-batch mean; the
            # clipping norm is then the same on every replica. The stop
            # votes ride along, so every worker learns of a signal that
            # reached any one of them at the same step.
            # (Copied to this replica's device: the argument is one tensor
            # shared by all replicas, which an all-reduce cannot place.)
            stop_vote = tf.identity(tf.cast(stop_vote, variables[0].dtype))
            grads, stop_votes = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, (grads, stop_vote))
            if config.clip_norm > 0:
                grads, norm = tf.clip_by_global_norm(grads, config.clip_norm)
            else:
                norm = tf.linalg.global_norm(grads)
            optimizer.apply_gradients(zip(grads, variables),
                                      skip_gradients_aggregation=True)
            return loss, norm, stop_votes

        # autograph=False, as for every tf.function of this module: the
        # model's code has no Python control flow on tensors, and autograph
        # would rewrite all of it (seconds per process for a small image
        # model; TFP's advice, tensorflow/probability#694). A Python `if` on
        # a tensor is then an error at trace time, not a silent tf.cond.
        @tf.function(autograph=False)
        def train_step(iterator, stop_vote):
            x = next(iterator)
            loss, norm, stop_votes = self.strategy.run(
                replica_step, args=(x, stop_vote))
            loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss,
                                        axis=None)
            norm = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, norm,
                                        axis=None)
            self.ema.update()
            # Already all-reduced: this worker's first replica has the sum.
            stop_votes = self.strategy.experimental_local_results(
                stop_votes)[0]
            return loss, norm, stop_votes

        return train_step

    def _make_all_finite(self):
        # Once per save, on the device: one boolean comes back to the host.
        @tf.function(autograph=False)
        def all_finite():
            values = [v for v in (list(self.model.variables)
                                  + list(self.optimizer.variables())
                                  + list(self.ema.shadows))
                      if v.dtype.is_floating]
            return tf.reduce_all(tf.stack(
                [tf.reduce_all(tf.math.is_finite(v)) for v in values]))

        return all_finite

    def _make_eval_step(self, element_spec):
        model = self.model

        def replica_step(x, seed):
            replica = (
                tf.distribute.get_replica_context().replica_id_in_sync_group)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
            return _sum_and_count(
                x, lambda: model.elbo(x, training=False, seed=seed),
                model.p.dtype)

        # The data's spec (an unknown batch size): the last, partial batch
        # does not trace the step again.
        @tf.function(input_signature=[element_spec, _SEED_SPEC],
                     autograph=False)
        def eval_step(x, seed):
            total, count = self.strategy.run(replica_step, args=(x, seed))
            return (self.strategy.reduce(tf.distribute.ReduceOp.SUM, total,
                                         axis=None),
                    self.strategy.reduce(tf.distribute.ReduceOp.SUM, count,
                                         axis=None))

        return eval_step

    # -- evaluation -------------------------------------------------------

    def _eval_dataset(self):
        # Built anew for every pass; TFDS's notes on loading the split would
        # repeat at every evaluation.
        with tf_logs.quiet_info():
            return self.strategy.distribute_datasets_from_function(
                self._eval_input_fn)

    def evaluate(self):
        """Test bits/dim of the single-sample ELBO with the EMA weights.

        Its noise comes from stateless seeds fixed by `config.seed`, not from
        the model's generator: evaluating neither changes the training noise
        that follows, nor depends on when it runs. The number of images it
        scored is left in `evaluated_images`.
        """
        dataset = self._eval_dataset()
        if self._eval_step is None:
            self._eval_step = self._make_eval_step(dataset.element_spec)
        seed = tf.constant([self.config.seed, 555], tf.int32)
        # Summed on the device and read once: the host queues the batches
        # ahead of the device.
        total, count = 0.0, 0.0
        with self.ema.averaged_weights():
            for i, x in enumerate(dataset):
                if self.config.eval_batches and i >= self.config.eval_batches:
                    break
                batch_total, batch_count = self._eval_step(
                    x, tf.random.experimental.stateless_fold_in(seed, i))
                total += batch_total
                count += batch_count
        total, count = float(total), float(count)
        if not count:
            raise ValueError('The evaluation split yielded no batch.')
        self.evaluated_images = int(count)
        return float(self.model.bits_per_dim(total / count))

    def reconstruction_error(self):
        """Flow++'s `val_inverr` with the EMA weights, or `None` if off.

        The largest `|xz - forward(inverse(xz))|` of p over the first
        `config.inverse_check_images` images of the first evaluation batch
        (of this worker's first replica), with fixed noise
        (`VFlow.reconstruction_error`): a check that the samples come from
        the model that the bits/dim score. Eager, like the sample grid:
        p's numerical inverse would take long to trace for one batch.
        """
        if not self.config.inverse_check_images:
            return None
        batch = next(iter(self._eval_dataset()))
        x = self.strategy.experimental_local_results(batch)[0]
        x = x[:self.config.inverse_check_images]
        if not x.shape[0]:
            return None  # fewer evaluation images than replicas
        seed = tf.constant([self.config.seed, 556], tf.int32)
        with self.ema.averaged_weights():
            return float(tf.reduce_max(
                self.model.reconstruction_error(x, seed=seed)))

    def evaluate_importance_weighted(self):
        """Bits/dim of the S-sample importance-weighted bound (EMA).

        Returns:
          `(bits_per_dim, images)`, or `(None, images done)` if a signal
          (`request_stop`) interrupted it.
        """
        config = self.config
        dataset = self._eval_dataset()
        seed = tf.constant([config.seed, 777], tf.int32)
        model = self.model

        def replica_step(x, seed, stop_vote):
            replica = (
                tf.distribute.get_replica_context().replica_id_in_sync_group)
            total, count = _sum_and_count(x, lambda: model.log_prob(
                x, config.iw_samples, config.iw_chunk_size,
                seed=tf.random.experimental.stateless_fold_in(seed, replica)),
                tf.float64)
            return total, count, tf.identity(stop_vote)

        @tf.function(input_signature=[dataset.element_spec, _SEED_SPEC,
                                      tf.TensorSpec([], tf.float32)],
                     autograph=False)
        def step(x, seed, stop_vote):
            results = self.strategy.run(replica_step,
                                        args=(x, seed, stop_vote))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, r,
                                         axis=None) for r in results]

        # This pass can take hours (SPEC §9.15): a signal to any worker ends
        # it on every worker after the same batch, its votes summed with the
        # batch's results like the train step's.
        no_vote, vote = tf.constant(0.0), tf.constant(1.0)
        total, count = 0.0, 0.0
        last_report = time.time()
        with self.ema.averaged_weights():
            for i, x in enumerate(dataset):
                if count >= config.iw_images:
                    break
                batch_total, batch_count, votes = step(
                    x, tf.random.experimental.stateless_fold_in(seed, i),
                    vote if self._stop_requested.is_set() else no_vote)
                if float(votes) > 0:
                    return None, int(count)
                total += float(batch_total)
                count += float(batch_count)
                now = time.time()
                if i == 0:
                    # The first batch traced the step: the rate starts here.
                    timed_start, timed_count = now, count
                elif (now - last_report >= _IW_PROGRESS_SECONDS
                      and timed_count < count < config.iw_images):
                    last_report = now
                    seconds_per_image = ((now - timed_start)
                                         / (count - timed_count))
                    logging.info(
                        '%d-sample importance-weighted bound: %d of %d '
                        'images, %.4f bits/dim so far | ETA %s',
                        config.iw_samples, count, config.iw_images,
                        float(self.model.bits_per_dim(total / count)),
                        format_duration((config.iw_images - count)
                                        * seconds_per_image))
        return float(self.model.bits_per_dim(total / count)), int(count)

    def write_samples(self, step):
        """Draws a grid of samples with the EMA weights; PNG + summary."""
        if not self.config.num_samples:
            return None
        seed = tf.constant([self.config.seed, step % (2**31 - 1)], tf.int32)
        try:
            with self.ema.averaged_weights():
                samples = self.model.sample(self.config.num_samples,
                                            seed=seed)
        except tf.errors.InvalidArgumentError as e:
            # Samples are a diagnostic: early in training the flow's inverse
            # may still overflow, which must not end the run.
            if 'non-finite' not in e.message:
                raise
            logging.warning('Step %d: the EMA model gave non-finite samples; '
                            'no sample grid written.', step)
            return None
        if len(self.model.data_shape) != 3 or not self.is_chief:
            return None
        grid = images_lib.image_grid(images_lib.to_8bit(
            samples.numpy(), self.model.num_bins))
        path = os.path.join(self.config.output_dir, 'samples.png')
        tf.io.write_file(path + '.tmp', tf.io.encode_png(grid))
        file_io.replace(path + '.tmp', path)
        with self._summaries().as_default():
            tf.summary.image('samples', grid[np.newaxis], step=step)
        return path

    # -- the loop ---------------------------------------------------------

    def _write_results(self, **updates):
        self.results.update(updates)
        latest = self.manager.latest_checkpoint
        # Absolute, like `saved_model`: a relative path would only hold
        # from the working directory of the training run.
        if latest is not None:
            # The chief's: another worker's own is a scratch copy, gone
            # when `train` returns.
            latest = file_io.absolute(os.path.join(
                self._resume_dir, os.path.basename(latest)))
        self.results['latest_checkpoint'] = latest
        if self.is_chief:
            write_json_atomic(
                os.path.join(self.config.output_dir, 'results.json'),
                self.results)

    def train(self):
        """Runs (or resumes) training to `train_steps`; returns the results.

        `results['completed']` (also in `results.json`) says whether the run
        is finished: trained to `train_steps`, with the final bound and the
        export. It is `False` when a signal or `request_stop` stopped it
        (the state is saved; call `train` again, on this trainer or a new
        one, to go on).
        """
        config = self.config
        # From the call on, a signal flags a stop (the init and the export
        # still interrupt): the caller's handler would raise in the midst
        # of the bookkeeping, where C code may drop its exception.
        handlers = self._install_signal_handlers()
        try:
            elapsed_before, same_bound = self._start_results(
                self.restore_or_initialize())
            completed = self._loop(time.time(), elapsed_before,
                                   same_bound)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            # A stop request is for the call it stopped (one made before a
            # call stops that call), not for the next.
            self._stop_requested.clear()
            if not self.is_chief:
                shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
        if config.export and self.is_chief and completed:
            # From the final checkpoint into a model built outside the
            # strategy: plain variables, whatever the training strategy.
            # A rerun of a finished run keeps the export it already has.
            with self._signals_interrupt():
                path = export_lib.export_run(config.output_dir,
                                             keep_current=True)
            logging.info('The EMA model\'s SavedModel: %s.', path)
            self._write_results(saved_model=path)
        if completed:
            self._write_results(completed=True)
        # Every worker leaves together: a worker that ended while the chief
        # still exports would be reported by the chief's coordination
        # service as crashed.
        self._sum_over_replicas([0.0])
        return self.results

    def _start_results(self, how):
        """Sets `results` for a `train` call on top of the earlier call's
        (or, after a restore, `results.json`'s).

        Args:
          how: what `restore_or_initialize` did ('restored' or not).

        Returns:
          The wall time of the earlier calls, and whether they had this
          config's settings of the final bound (`_BOUND_SETTINGS`).
        """
        config = self.config
        previous = dict(self.results)  # of an earlier call on this trainer
        if not previous and how == 'restored':
            previous = self._recorded_results()
        earlier = previous.get('config')
        # As results.json holds it (tuples become lists), so that a second
        # `train` call on this trainer compares like with like.
        current = json.loads(json.dumps(dataclasses.asdict(config)))
        same_settings = (earlier is not None
                         and _settings(earlier) == _settings(current))
        if earlier is not None and not same_settings:
            # Allowed (e.g. more train_steps, another rate), but kept: the
            # results then hold every setting the checkpoints came from.
            before, now = _settings(earlier), _settings(current)
            changed = sorted(k for k in set(before) | set(now)
                             if before.get(k) != now.get(k))
            logging.info('Going on with other settings than before: %s.',
                         ', '.join(f'{k} {before.get(k)!r} -> '
                                   f'{now.get(k)!r}' for k in changed))
            previous['earlier_configs'] = list(previous.get(
                'earlier_configs', [])) + [dict(config=earlier,
                                                until_step=self.step)]
        self.results = dict(previous, preset=config.preset,
                            dataset=config.dataset,
                            config=current, completed=False)
        if self.step < config.train_steps:
            # An export of an earlier step is not this run's model (with
            # `export=False` none replaces it).
            self.results.pop('saved_model', None)
        return float(previous.get('wall_time', 0.0)), (
            earlier is not None
            and _bound_settings(earlier) == _bound_settings(current))

    def _evaluate_and_record(self, step):
        """The test ELBO, reconstruction check and sample grid of `step`,
        logged and written to the summaries and results."""
        test_bpd = self.evaluate()
        recorded_bpd = _recorded_figure(
            test_bpd, f'Step {step}: the {self.eval_split} bits/dim')
        inverse_error = recorded_error = self.reconstruction_error()
        if inverse_error is not None and not math.isfinite(inverse_error):
            # As for the samples: early in training p's numerical inverse
            # may overflow. JSON has no NaN or infinity.
            logging.warning('Step %d: p\'s inverse gave non-finite values on '
                            'evaluation images.', step)
            recorded_error = None
        logging.info('step %d | %s bpd (ELBO, EMA) %.4f%s', step,
                     self.eval_split, test_bpd,
                     '' if inverse_error is None else
                     f' | reconstruction error {inverse_error:.2g}')
        with self._summaries().as_default():
            tf.summary.scalar('test/bpd', test_bpd, step=step)
            if inverse_error is not None:
                tf.summary.scalar('test/reconstruction_error', inverse_error,
                                  step=step)
        self.write_samples(step)
        self._write_results(step=step, test_bpd=recorded_bpd,
                            test_bpd_step=step,
                            test_images=self.evaluated_images,
                            test_reconstruction_error=recorded_error)

    def _run_train_step(self, iterator, stop_vote, step):
        """The compiled step, with a bad input pipeline named in one line."""
        try:
            return self._train_step(iterator, stop_vote)
        except tf.errors.OutOfRangeError:
            raise ValueError(
                f'The training data ran out after step {step}: '
                'train_input_fn must give a repeating dataset (e.g. '
                'dataset.repeat()).') from None
        except tf.errors.InvalidArgumentError as e:
            message = _BATCH_SIZE_MESSAGE.format(self._replica_batch_size)
            if message not in e.message:
                raise
            raise ValueError(f'At step {step + 1}: {message}.') from None

    def _signals_interrupt(self):
        """SIGTERM, SIGINT and SIGHUP raise `KeyboardInterrupt` inside, also
        when C code drops or changes the raise (`interrupts.SignalInterrupts`),
        for work that cannot stop at a step, such as the export."""
        def record(sig):
            if self.stop_signal is None:
                self.stop_signal = sig
        return interrupts.SignalInterrupts(on_signal=record)

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.request_stop)
                for sig in interrupts.STOP_SIGNALS}

    def _loop(self, start, elapsed_before, same_bound):
        """Trains to `train_steps`, then the final bound; `False` if stopped.

        `same_bound`: whether `results.json` came from a config with these
        settings of the final bound.
        """
        config = self.config
        split = self.eval_split
        step = start_step = self.step
        dataset = self.strategy.distribute_datasets_from_function(
            lambda context: self._train_input_fn(context, start_step))
        iterator = iter(dataset)
        # The loss is summed on the device and read back only at log,
        # checkpoint and evaluation boundaries. The one per-step read is the
        # previous step's stop votes (below), so the host stays a step ahead.
        window_loss, window_steps = 0.0, 0
        window_start = time.time()
        # Rates are timed from the end of this process's first step (which
        # includes tracing and compilation) and leave out the saves,
        # evaluations and sample grids between steps: they measure training.
        # The ETA predicts wall time, so it counts those on average: wall
        # time per step since the end of the first step.
        timed_start, timed_steps = None, 0
        wall_start, wall_steps = None, 0
        images_per_second = float(self.results.get('images_per_second', 0.0))
        train_bpd = self.results.get('train_bpd')
        no_vote, vote = tf.constant(0.0), tf.constant(1.0)
        previous_votes = None
        if step < config.train_steps:
            # Minutes for the paper's models, with nothing else to show.
            logging.info('Tracing the training step: step %d includes the '
                         'tracing and compilation.', step + 1)
        elif step > config.train_steps:
            # A smaller --train_steps cannot take the run back: say that the
            # results are the checkpoint's, not those of the step asked for.
            logging.warning(
                'The checkpoint is at step %d, past train_steps=%d: nothing '
                'to train; the final evaluation and export are of step %d.',
                step, config.train_steps, step)
        while step < config.train_steps:
            loss, norm, votes = self._run_train_step(
                iterator, vote if self._stop_requested.is_set() else no_vote,
                step)
            step += 1
            window_loss += loss
            window_steps += 1
            if timed_start is None:
                float(loss)  # waits for the first step, once
                timed_start = wall_start = time.time()
            else:
                timed_steps += 1
                wall_steps += 1
            # A signal stops every worker after the same step: the one after
            # the step whose all-reduced votes first count it. Those are read
            # once the next step is queued, so the host never waits for the
            # step it just launched.
            stopping = (previous_votes is not None
                        and float(previous_votes) > 0)
            previous_votes = votes
            logging_now = (step % config.log_every == 0
                           or step == config.train_steps or stopping)
            if logging_now or step % config.checkpoint_every == 0 or (
                    step % config.eval_every == 0):
                # Checked before anything is saved: a non-finite update in
                # the window makes the next step's loss non-finite, and that
                # of the window's last step often shows in its gradient norm.
                # An update that turns finite gradients into NaN weights does
                # not; `save` itself refuses those.
                window_mean = float(window_loss) / window_steps
                if not (math.isfinite(window_mean)
                        and math.isfinite(float(norm))):
                    raise FloatingPointError(
                        f'Non-finite loss or gradient norm between steps '
                        f'{step - window_steps + 1} and {step}; the '
                        f'{self._last_good_checkpoint()}')
            if logging_now:
                now = time.time()
                if timed_steps:
                    seconds_per_step = (now - timed_start) / timed_steps
                else:  # only the first step so far: its time is all there is
                    seconds_per_step = (now - window_start) / window_steps
                seconds_per_step = max(seconds_per_step, 1e-9)
                images_per_second = (config.global_batch_size
                                     / seconds_per_step)
                train_bpd = float(self.model.bits_per_dim(-window_mean))
                # The rate of the update just applied (at iterations - 1).
                lr = float(self.schedule(step - 1))
                wall_per_step = ((now - wall_start) / wall_steps
                                 if wall_steps else seconds_per_step)
                remaining = (config.train_steps - step) * wall_per_step
                logging.info(
                    'step %d/%d | train bpd %.4f | lr %.2e | grad norm %.3g | '
                    '%.1f img/s | ETA %s', step, config.train_steps,
                    train_bpd, lr, float(norm), images_per_second,
                    format_duration(remaining))
                with self._summaries().as_default():
                    tf.summary.scalar('train/bpd', train_bpd, step=step)
                    tf.summary.scalar('train/loss', window_mean, step=step)
                    tf.summary.scalar('train/learning_rate', lr, step=step)
                    tf.summary.scalar('train/grad_norm', float(norm),
                                      step=step)
                    tf.summary.scalar('train/seconds_per_step',
                                      seconds_per_step, step=step)
                window_loss, window_steps = 0.0, 0
                window_start = time.time()
                timed_start, timed_steps = window_start, 0
            paused = time.time()
            if step % config.checkpoint_every == 0 or stopping:
                self.save()
            if step % config.eval_every == 0 or step == config.train_steps:
                self._evaluate_and_record(step)
            if step % config.log_every == 0 or stopping:
                self._write_results(
                    step=step, train_bpd=train_bpd,
                    images_per_second=images_per_second,
                    wall_time=elapsed_before + time.time() - start)
            if stopping:
                logging.info('Stopped by a signal (to this or another worker) '
                             'at step %d; rerun the same command to resume.',
                             step)
                return False
            if timed_start is not None:
                timed_start += time.time() - paused
        if self._saved_step != step:
            self.save()
        if self.results.get('test_bpd_step') != step:
            # Resumed at the end without the final evaluation on record
            # (killed between the last save and it, or results.json lost).
            self._evaluate_and_record(step)
        # Before the bound, which a signal may cut short: results.json names
        # the final checkpoint from here on.
        self._write_results(step=step, train_bpd=train_bpd,
                            images_per_second=images_per_second,
                            wall_time=elapsed_before + time.time() - start)
        if config.iw_samples:
            if (self.results.get('test_bpd_iw_step') == step
                    and same_bound and start_step == step):
                # A rerun of the finished command: the bound is the same
                # computation on the same checkpoint. (Not after training
                # here: a run that fell back from a damaged final checkpoint
                # has trained that step again, to other weights if its
                # input order differs.)
                logging.info('%s bpd (%d-sample importance weighted, EMA, %d '
                             'images) %s, from results.json (step %d).',
                             split, config.iw_samples,
                             self.results['iw_images'],
                             _format_bpd(self.results['test_bpd_iw']), step)
            else:
                iw_bpd, images = self.evaluate_importance_weighted()
                if iw_bpd is None:
                    logging.info('Stopped by a signal during the %d-sample '
                                 'importance-weighted evaluation (%d images '
                                 'done); training is complete and saved. '
                                 'Rerun the same command to evaluate and '
                                 'export.', config.iw_samples, images)
                    self._summaries().flush()
                    return False
                logging.info('%s bpd (%d-sample importance weighted, EMA, %d '
                             'images) %.4f', split, config.iw_samples, images,
                             iw_bpd)
                self._write_results(
                    test_bpd_iw=_recorded_figure(
                        iw_bpd, f'The {split} bits/dim of the bound'),
                    iw_images=images, test_bpd_iw_step=step)
        self._write_results(step=step, train_bpd=train_bpd,
                            images_per_second=images_per_second,
                            wall_time=elapsed_before + time.time() - start)
        self._summaries().flush()
        return True
