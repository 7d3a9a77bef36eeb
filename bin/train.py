"""Trains a VFlow / Flow++ model.

Usage: `python bin/train.py --flagfile=configs/cifar.flags`.

Rerunning the same command with the same `--output_dir` resumes from the
latest checkpoint (also after SIGTERM/SIGINT or a hard kill). Progress lines
go to stderr; `OUTPUT_DIR/results.json` holds step, train/test bits/dim,
wall time, images/s and the latest checkpoint; TensorBoard summaries are in
`OUTPUT_DIR/summaries`, the latest sample grid in `OUTPUT_DIR/samples.png`,
and at the end the EMA model as a SavedModel in `OUTPUT_DIR/saved_model`
(`--noexport` skips it; `bin/score.py` scores images with it).

Strategies: `--strategy=mirrored` (all local GPUs, else the CPU),
`multi_worker` (MultiWorkerMirroredStrategy configured by TF_CONFIG),
`one_device`.
"""

import ast
import logging as std_logging
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

# Model.
flags.DEFINE_string('preset', None, 'Model preset (vflow_tfp.models.presets).')
flags.DEFINE_integer('filters', None, 'Override the preset\'s filters F.')
flags.DEFINE_integer('blocks', None, 'Override the preset\'s blocks B.')
flags.DEFINE_integer('components', None,
                     'Override the preset\'s mixture components K.')
flags.DEFINE_float('dropout', None, 'Override the preset\'s dropout rate.')
flags.DEFINE_multi_string(
    'set', [], 'Any other preset setting as name=value (Python literal), '
    'e.g. --set=augment_channels=0; repeatable.')
# Data.
flags.DEFINE_string('dataset', 'photo_patches/16x16',
                    'tfds name (cifar10, downsampled_imagenet/32x32, '
                    'downsampled_imagenet/64x64, mnist), photo_patches/NxN '
                    '(offline photographs) or checkerboard.')
flags.DEFINE_string('data_dir', None, 'tfds data directory.')
flags.DEFINE_integer('validation_size', 0,
                     'Hold out this many training images as the evaluation '
                     'split (the paper uses 10000); 0 evaluates on test.')
flags.DEFINE_integer('num_bits', 8,
                     'Bits per pixel value: fewer keep the top bits of the '
                     '8-bit images (Glow\'s 5-bit CelebA-HQ) and build the '
                     'preset for 2^num_bits levels.', lower_bound=1,
                     upper_bound=8)
# Optimisation.
flags.DEFINE_integer('global_batch_size', 64, 'Global batch size.')
flags.DEFINE_integer('train_steps', 100_000, 'Total training steps.')
flags.DEFINE_enum('optimizer', 'adam', ['adam'],
                  'Optimizer (both papers use Adam; recorded in '
                  'results.json).')
flags.DEFINE_float('max_lr', 1.2e-3, 'Peak learning rate.')
flags.DEFINE_integer('warmup_steps', 2000, 'Linear warm-up steps.')
flags.DEFINE_integer('hold_until', 50_000, 'Last step at the peak rate.')
flags.DEFINE_float('lr_decay', 0.99999, 'Per-step decay after hold_until.')
flags.DEFINE_float('min_lr', 3e-4, 'Decay floor.')
flags.DEFINE_float('adam_beta1', 0.9, 'Adam beta1.')
flags.DEFINE_float('adam_beta2', 0.999, 'Adam beta2.')
flags.DEFINE_float('adam_epsilon', 1e-8, 'Adam epsilon.')
flags.DEFINE_float('clip_norm', 1.0, 'Global gradient-norm clip; 0 = off.')
flags.DEFINE_float('ema_decay', 0.999, 'Weight EMA decay.')
flags.DEFINE_integer('init_batch_size', 64,
                     'Examples for the data-dependent initialisation.')
flags.DEFINE_bool('jit_compile', False,
                  'XLA-compile the replica step and the optimizer\'s update '
                  '(on every device; off, neither is compiled on any).')
# Bookkeeping.
flags.DEFINE_string('output_dir', None,
                    'Run directory (resumes if present); a local path or a '
                    'URL such as gs://bucket/run.')
flags.DEFINE_integer('checkpoint_every', 1000, 'Steps between checkpoints.')
flags.DEFINE_integer('keep_checkpoints', 3, 'Checkpoints kept.')
flags.DEFINE_integer('eval_every', 5000, 'Steps between evaluations.')
flags.DEFINE_integer('eval_batches', 0,
                     'Evaluation batches per evaluation; 0 = whole split.')
flags.DEFINE_integer('log_every', 100, 'Steps between progress lines.')
flags.DEFINE_integer('num_samples', 16, 'Samples in the grid per evaluation.')
flags.DEFINE_integer('inverse_check_images', 16,
                     'Images of the first evaluation batch mapped to the '
                     'latent and back at each evaluation; the largest '
                     'difference is test_reconstruction_error (Flow++\'s '
                     'val_inverr); 0 = skip.')
flags.DEFINE_integer('iw_samples', 0,
                     'Importance samples for the final test bound; 0 = skip.')
flags.DEFINE_integer('iw_images', 256,
                     'Test images for the importance-weighted bound (rounded '
                     'up to whole batches; results.json records the count).')
flags.DEFINE_integer('seed', 0, 'Random seed.')
flags.DEFINE_bool('export', True,
                  'At the end, export the EMA model as a SavedModel to '
                  'OUTPUT_DIR/saved_model (see bin/export.py); a rerun '
                  'keeps the export of the same checkpoint and settings.')
flags.DEFINE_enum('strategy', 'mirrored',
                  ['mirrored', 'multi_worker', 'one_device'],
                  'tf.distribute strategy.')

flags.mark_flags_as_required(['preset', 'output_dir'])


# The directories this command made for --output_dir, deepest first.
_made_dirs = []


# The signals that stop a run; before the trainer handles them (while TF
# starts and the data are set up) they interrupt, as Ctrl-C does.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_received = []  # the signals that interrupted, first first


def _interrupt(signum, frame):
    del frame
    _received.append(signal.Signals(signum))
    raise KeyboardInterrupt


def _report_unraisable(unraisable):
    """`sys.unraisablehook`: keeps a signal's dropped raise out of stderr.

    A finalizer reports the exception it dropped ("Exception ignored in",
    with a traceback); for the interrupt of a recorded signal, which the
    set-up raises again (`_raise_if_interrupted`), that is noise before the
    command's one line.
    """
    if _received and issubclass(unraisable.exc_type, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _raise_if_interrupted():
    """Raises the `KeyboardInterrupt` of a signal that was lost on the way.

    A handler runs wherever the main thread next runs Python, also in code
    that C calls back, and C may drop its exception: a finalizer only
    reports it (TF's functions have finalizers), and an attribute probe such
    as `PyObject_HasAttr` clears it. The set-up then goes on as if no signal
    came; the signal is still recorded, so each stage of the set-up ends
    with this. (C may also turn the exception into another error: `main`
    takes any error after a signal for the signal's.)
    """
    if _received:
        raise KeyboardInterrupt


def _remove_made_dirs():
    """Removes the output directory this command made, if it holds nothing.

    A refused or interrupted command leaves no trace. "Nothing" allows the
    trainer's lock file and empty directories (os.rmdir refuses any other).
    """
    if not _made_dirs:
        return
    run_dir = _made_dirs[0]
    try:
        names = os.listdir(run_dir)
        if names == ['.lock']:
            # Still locked by this process, which is ending: a process that
            # opened the file meanwhile finds it locked and refuses.
            os.remove(os.path.join(run_dir, '.lock'))
        for parent, _, _ in sorted(os.walk(run_dir), reverse=True):
            if parent != run_dir:
                os.rmdir(parent)
    except OSError:
        return
    for path in _made_dirs:
        try:
            os.rmdir(path)
        except OSError:
            break


def _latest_checkpoint():
    """The run's latest checkpoint, `None` if none (or no readable state)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
        return tf.train.latest_checkpoint(
            os.path.join(FLAGS.output_dir, 'checkpoints'))
    except (ValueError, tf.errors.OpError):
        return None


def _fail(message):
    print(f'train.py: error: {message}', file=sys.stderr)
    _remove_made_dirs()
    # The message is the whole story: keep TF's warnings on the way out
    # (e.g. every unmatched value of a refused checkpoint) from burying it.
    std_logging.getLogger('tensorflow').setLevel(std_logging.ERROR)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def _missing_dirs(path):
    """The local directories that creating `path` adds, deepest first (none
    for a URL: an object store's directories vanish with their files)."""
    missing = []
    if '://' in path:
        return missing
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _preset_overrides():
    overrides = {}
    given_as = {}  # name -> the flag that set it, for a contradiction
    for name in ('filters', 'blocks', 'components', 'dropout'):
        value = getattr(FLAGS, name)
        if value is not None:
            overrides[name] = value
            given_as[name] = f'--{name}={value}'
    for item in FLAGS.set:
        name, sep, text = item.partition('=')
        if not sep or not name:
            _fail(f'--set expects name=value; got {item!r}.')
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if name in overrides and overrides[name] != value:
            # Whichever came last would win silently.
            _fail(f'--set={item} contradicts {given_as[name]}; give each '
                  'setting once.')
        overrides[name] = value
        given_as[name] = f'--set={item}'
    return overrides


def _fail_to_build(given, error):
    """Exits with a preset's refusal, naming the user's settings."""
    # Mostly a setting the preset refuses (e.g. --blocks=-1), or a --set
    # value of the wrong type: the library's message names the argument,
    # this line names the user's settings it came from.
    message = str(error).strip().splitlines()[0]
    if given:
        _fail(f'preset {FLAGS.preset!r} cannot be built with {given}: '
              f'{message}')
    _fail(message)


def _check_image_size(tf, data, presets, overrides, given):
    """Refuses a data set whose image size the preset cannot take.

    Before a data set is downloaded and prepared, which can take hours: the
    TFDS metadata give the size, and a model built for it in a graph that
    is then dropped shows whether the preset takes it. (A prepared data set
    opens in seconds, and the trainer's build reports the same.)
    """
    if (FLAGS.dataset == 'checkerboard' or 'image_shape' in overrides
            or 'image_shape' not in presets.overridable(FLAGS.preset)):
        return
    try:
        if data.is_prepared(FLAGS.dataset, data_dir=FLAGS.data_dir):
            return
        shape = tuple(data.image_shape(FLAGS.dataset, data_dir=FLAGS.data_dir))
    except (ValueError, data.DatasetUnavailableError):
        return  # Reported, as before, when the data are opened.

    def build(**settings):
        with tf.Graph().as_default() as graph:
            # No variable is initialised and TF's global seed is untouched;
            # op determinism (TF_DETERMINISTIC_OPS) needs a seed to build
            # random initialisers at all.
            graph.seed = FLAGS.seed
            presets.build(FLAGS.preset, **settings)

    try:
        build(image_shape=shape, **overrides)
    except (ValueError, TypeError) as e:
        try:
            build(**overrides)
        except (ValueError, TypeError) as other:
            _fail_to_build(given, other)  # Not the size: another setting.
        size = 'x'.join(str(d) for d in shape)
        _fail(f'preset {FLAGS.preset!r} cannot take the {size} images of '
              f'{FLAGS.dataset}: {str(e).strip().splitlines()[0]}')


def _make_strategy(tf):
    if FLAGS.strategy == 'multi_worker':
        if 'TF_CONFIG' not in os.environ:
            _fail('--strategy=multi_worker needs the TF_CONFIG environment '
                  'variable (cluster and task).')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if FLAGS.strategy == 'one_device':
        gpus = tf.config.list_logical_devices('GPU')
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus
                                               else '/cpu:0')
    return tf.distribute.MirroredStrategy()


def _train(trainer):
    """Restores or initialises, then trains; errors as one line."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
        try:
            # Before training: refuses an output_dir of another model (and
            # a non-finite initialisation, which it does not save).
            trainer.restore_or_initialize()
        except (ValueError, FloatingPointError, RuntimeError) as e:
            # RuntimeError: workers that disagree on settings or
            # checkpoints.
            _fail(str(e))
        # The trainer's own handlers, which only flag a stop, take over in
        # `train`; a signal before them is this command's to act on.
        _raise_if_interrupted()
        return trainer.train()
    except (OSError, tf.errors.ResourceExhaustedError) as e:
        if 'No space left on device' not in str(e):
            raise
        _fail(f'no space left on the device of {FLAGS.output_dir}; make '
              'room and rerun the same command to '
              + (f'resume from {latest}.' if (latest := _latest_checkpoint())
                 else 'start.'))
    except FloatingPointError as e:
        # A non-finite loss, gradient or model: the message names the last
        # good checkpoint, and a traceback into the loop adds nothing.
        _fail(str(e))
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.CancelledError) as e:
        if FLAGS.strategy != 'multi_worker':
            raise
        # Another worker died or became unreachable: TF's message names
        # only the collective that noticed.
        _fail(f'a worker stopped or became unreachable '
              f'({type(e).__name__}, TF\'s log above); rerun every worker '
              f'to resume from {_latest_checkpoint() or "the start"}.')


def _fix_op_order_under_determinism(tf):
    """Under op determinism, TF runs independent ops on one thread.

    Op determinism (`TF_DETERMINISTIC_OPS=1`) fixes what each kernel
    computes, not the order in which the executor runs independent ops, and
    that order can change a sum: AddN, which adds up the gradients of a
    tensor with three or more consumers, adds first whichever input buffer
    no other op holds any more. Two 20-step `tiny_vflow` runs differed in
    about 790 of 1045 checkpoint tensors (up to 6e-8) with TF's default
    threads, and in none with one inter-op thread. Must run before TF
    starts its runtime; `TF_NUM_INTEROP_THREADS`, if set, is kept.
    """
    # pylint: disable-next=g-import-not-at-top,g-direct-tensorflow-import
    from tensorflow.python.framework import config as tf_config
    if (not tf_config.is_op_determinism_enabled()
            or os.environ.get('TF_NUM_INTEROP_THREADS')):
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF has started (train.py run in a process).
        logging.warning('TF started before one inter-op thread could be '
                        'set: runs may differ by rounding.')


def _checked_config():
    """The flags' `TrainConfig` and preset overrides, refused before TF
    starts (which takes seconds) if a setting is bad."""
    # pylint: disable-next=g-import-not-at-top
    from vflow_tfp.models import catalog
    # pylint: disable-next=g-import-not-at-top
    from vflow_tfp.training import config as config_lib

    if FLAGS.preset not in catalog.names():
        _fail(f'unknown preset {FLAGS.preset!r}; choose from: '
              f'{", ".join(catalog.names())}.')
    overrides = _preset_overrides()
    config = config_lib.TrainConfig(
        preset=FLAGS.preset, output_dir=FLAGS.output_dir,
        preset_overrides=overrides, dataset=FLAGS.dataset,
        global_batch_size=FLAGS.global_batch_size,
        train_steps=FLAGS.train_steps, max_lr=FLAGS.max_lr,
        warmup_steps=FLAGS.warmup_steps, hold_until=FLAGS.hold_until,
        lr_decay=FLAGS.lr_decay, min_lr=FLAGS.min_lr,
        optimizer=FLAGS.optimizer, adam_beta1=FLAGS.adam_beta1,
        adam_beta2=FLAGS.adam_beta2, adam_epsilon=FLAGS.adam_epsilon,
        clip_norm=FLAGS.clip_norm,
        ema_decay=FLAGS.ema_decay, init_batch_size=FLAGS.init_batch_size,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints, eval_every=FLAGS.eval_every,
        eval_batches=FLAGS.eval_batches, log_every=FLAGS.log_every,
        num_samples=FLAGS.num_samples,
        inverse_check_images=FLAGS.inverse_check_images,
        iw_samples=FLAGS.iw_samples,
        iw_images=FLAGS.iw_images, validation_size=FLAGS.validation_size,
        seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile, export=FLAGS.export)
    try:
        config.check_settings()
    except ValueError as e:
        _fail(str(e))
    return config, overrides


def _make_trainer():
    """The `Trainer` of the flags' run; bad settings exit with one line."""
    config, overrides = _checked_config()
    # The user's own settings, for errors: the data may add image_shape.
    given = dict(overrides)
    # Imported here so that --help and bad settings answer without TF
    # start-up.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    _fix_op_order_under_determinism(tf)
    from vflow_tfp import data  # pylint: disable=g-import-not-at-top
    from vflow_tfp.models import presets  # pylint: disable=g-import-not-at-top
    from vflow_tfp import file_io  # pylint: disable=g-import-not-at-top
    from vflow_tfp import training  # pylint: disable=g-import-not-at-top

    try:
        # Before the strategy and the data, which take a while: the names
        # of the preset's settings, and a path that cannot hold the run,
        # fail at once.
        config.validate()
        _made_dirs[:] = _missing_dirs(FLAGS.output_dir)
        training.make_output_dir(FLAGS.output_dir)
    except ValueError as e:
        _fail(str(e))
    _check_image_size(tf, data, presets, overrides, given)
    _raise_if_interrupted()
    strategy = _make_strategy(tf)
    _raise_if_interrupted()
    replicas = strategy.num_replicas_in_sync
    if FLAGS.global_batch_size % replicas:
        _fail(f'--global_batch_size={FLAGS.global_batch_size} is not '
              f'divisible by the {replicas} replicas.')

    try:
        inputs = training.training_inputs(
            FLAGS.dataset, FLAGS.global_batch_size,
            init_batch_size=FLAGS.init_batch_size, seed=FLAGS.seed,
            data_dir=FLAGS.data_dir, validation_size=FLAGS.validation_size,
            num_bits=FLAGS.num_bits)
    except (ValueError, FileNotFoundError,
            data.DatasetUnavailableError) as e:
        _fail(str(e))
    _raise_if_interrupted()
    if 'image_shape' in presets.overridable(FLAGS.preset) and (
            'image_shape' not in overrides) and len(inputs.data_shape) == 3:
        config.preset_overrides['image_shape'] = tuple(inputs.data_shape)
    if 'num_bins' in presets.overridable(FLAGS.preset):
        levels = 2 ** FLAGS.num_bits
        if overrides.get('num_bins', levels) != levels:
            _fail(f'--set=num_bins={overrides["num_bins"]} contradicts '
                  f'--num_bits={FLAGS.num_bits} ({levels} levels); set '
                  '--num_bits alone.')
        if levels != 256:
            config.preset_overrides['num_bins'] = levels

    try:
        trainer = training.Trainer(config, strategy, inputs.train_input_fn,
                                   inputs.eval_input_fn, inputs.init_batch)
    except file_io.DirectoryInUse as e:
        _fail(str(e))
    except (ValueError, TypeError) as e:
        _fail_to_build(given, e)
    _raise_if_interrupted()
    logging.info('%s: %s parameters, %d replica(s), dataset %s %s.',
                 FLAGS.preset, f'{trainer.model.count_params():,}', replicas,
                 FLAGS.dataset, list(inputs.data_shape))
    return trainer


def _exit_interrupted(trainer):
    """Exits with 128 + the signal that interrupted the command outside the
    steps (where a signal stops at the next one): while TF starts, the data
    are set up, the model initialised or exported."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # one line, even if repeated
    stopped_by = ((trainer.stop_signal if trainer else None)
                  or (_received[0] if _received else signal.SIGINT))
    latest = _latest_checkpoint() if trainer else None
    if not latest:
        _remove_made_dirs()
    print(f'train.py: interrupted by {stopped_by.name}; '
          + (f'the latest checkpoint is {latest}, rerun the same command '
             'to go on.' if latest else 'nothing was saved.'),
          file=sys.stderr)
    sys.exit(128 + int(stopped_by))


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}')
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    sys.unraisablehook = _report_unraisable
    trainer = None
    try:
        trainer = _make_trainer()
        results = _train(trainer)
    except Exception:  # pylint: disable=broad-except
        # After a signal, its raise that C code turned into another error
        # (CPython's SystemError "... returned a result with an exception
        # set"): still that signal's stop.
        if not _received:
            raise
        _exit_interrupted(trainer)
    except KeyboardInterrupt:
        _exit_interrupted(trainer)
    # The run is over and its results are written: a signal now would only
    # turn a finished run's exit status into an interrupted one's.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    step = results.get('step')
    figures = []
    for key in ('train_bpd', 'test_bpd', 'test_bpd_iw'):
        if isinstance(results.get(key), float):
            at = results.get(f'{key}_step', step)
            figures.append(f'{key} {results[key]:.4f}'
                           + (f' (step {at})' if at != step else ''))
    print(f'step {step}: {", ".join(figures)}; results in '
          f'{os.path.join(FLAGS.output_dir, "results.json")}')
    if not results.get('completed'):
        # Stopped and saved, not finished: a scheduler must not take the
        # run for done. 128 + the signal, as a shell reports a run it
        # killed; a stop that came from another worker counts as SIGTERM.
        stopped_by = trainer.stop_signal or signal.SIGTERM
        print(f'stopped by {stopped_by.name} before the end; rerun the same '
              'command to resume.', file=sys.stderr)
        sys.exit(128 + int(stopped_by))


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
