"""Exports a trained run as a SavedModel.

Usage: `python bin/export.py --run_dir=runs/quickstart`.

Restores the EMA weights of the run's latest checkpoint (or `--checkpoint`)
into the run's preset and writes a SavedModel (default
`RUN_DIR/saved_model`) with the signatures `serving_default`, `log_prob`,
`elbo`, `sample` and `metadata` (see `vflow_tfp.export`). It loads with plain
`tf.saved_model.load`, without vflow_tfp; score images with `bin/score.py`.
"""

import os
import signal
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string('run_dir', None,
                    'Training run directory (bin/train.py --output_dir).')
flags.DEFINE_string('export_dir', None,
                    'SavedModel directory; default RUN_DIR/saved_model.')
flags.DEFINE_string('checkpoint', None,
                    'Checkpoint prefix (e.g. RUN_DIR/checkpoints/ckpt-800); '
                    'default: the latest.')
flags.DEFINE_integer('serving_num_samples', None,
                     'Importance samples of the serving_default signature; '
                     'default: the run\'s --iw_samples, else 16.',
                     lower_bound=1, upper_bound=2**31 - 1)


def _fail(message):
    print(f'export.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def _check_export_dir(path):
    # Before the model is restored and traced, which take a while: a path
    # that cannot hold the export fails at once. The directories made to
    # find out go again at once (the export makes them anew), so that a
    # command refused later, say for its checkpoint, leaves none behind.
    # A URL (gs://...) is left to the export itself.
    if '://' in path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    made, missing = [], parent
    while not os.path.lexists(missing):
        made.append(missing)
        missing = os.path.dirname(missing)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        _fail(f'--export_dir must be in a directory that exists or can be '
              f'created; got {path!r} ({e.strerror}: {e.filename}).')
    for directory in made:
        os.rmdir(directory)


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}')
    if not FLAGS.run_dir:
        _fail('--run_dir is required (a bin/train.py --output_dir).')
    if FLAGS.export_dir:
        _check_export_dir(FLAGS.export_dir)
    # Imported here so that --help and flag errors answer without TF start-up.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from vflow_tfp import export  # pylint: disable=g-import-not-at-top
    from vflow_tfp import interrupts  # pylint: disable=g-import-not-at-top

    path = None
    try:
        # SIGTERM interrupts as Ctrl-C does. The SavedModel is written to a
        # staging directory and moved into place whole, so an interrupt
        # leaves no partial export.
        with interrupts.SignalInterrupts((signal.SIGINT, signal.SIGTERM)):
            path = export.export_run(
                FLAGS.run_dir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint,
                default_num_samples=FLAGS.serving_num_samples)
    except KeyboardInterrupt:
        # A signal whose raise C code dropped is seen only when the block
        # ends; if the export got into place by then, it stands.
        if path is None:
            print('export.py: interrupted; nothing exported.',
                  file=sys.stderr)
            sys.exit(130)
    except ValueError as e:
        _fail(str(e))
    except OSError as e:
        # Writing the SavedModel (e.g. a full disk, or a directory made
        # read-only after the check above).
        _fail(f'{e.filename or FLAGS.run_dir}: {e.strerror or e}.')
    except tf.errors.OpError as e:
        # The same through tf.io.gfile (a URL: a missing bucket, no access).
        _fail(' '.join(e.message.split()))
    info = export.load_metadata(path)
    test_bpd = info.get('test_bpd')
    print(f'exported {info["preset"]} (step {info["step"]}, EMA weights, '
          f'data {"x".join(map(str, info["data_shape"]))}, test bpd '
          f'{"unknown" if test_bpd is None else f"{test_bpd:.4f}"}) to '
          f'{path}')


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
