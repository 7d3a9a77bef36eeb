"""Draws samples from an exported flow.

Usage: `python bin/sample.py --model DIR --output OUT`.

OUT names what is written: `NAME.png` a grid of the samples, `NAME.npy` the
samples as one array (uint8 `[N, H, W, C]` images with the model's pixel
values, or float `[N, D]` vectors), or a new or empty directory (a name
without extension, or ending in `/`) one PNG per sample
(`sample_000000.png`, ...: the layout FID tools read). `--model` and
`--output` may be URLs (`gs://bucket/...`). The output and the model are
checked before sampling starts; a bad one, like a bad or out-of-range flag,
stops the run with one line on stderr and exit code 2. Nothing appears
under OUT until it is complete, and an error or an interrupt (Ctrl-C,
SIGTERM) leaves nothing behind; one that comes while the finished output is
moved into place waits for the move, and the output is reported as
written.

The samples come from the export's `sample` signature (the EMA weights of a
trained run), `--batch_size` at a time; batch `b` draws from the stateless
seed `(--seed, b)`, counting from `--first_batch`, so the same `--seed`,
`--batch_size` and `--first_batch` give the same samples (a larger `--num`
only adds samples). A training run's `samples.png` of step S is
`--num=N --batch_size=N --first_batch=S` with the run's `--seed`, N being
the run's `--num_samples` (16 by default).
`--temperature` scales the latent noise (1 is the model; lower values give
smoother, more typical images; 0 maps the latent's mode; high values
saturate the pixels).

    python bin/sample.py --model=runs/quickstart/saved_model --num=64 \\
        --temperature=0.8 --output=samples.png
"""

import math
import signal
import sys
import time

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

flags.DEFINE_string('model', None,
                    'SavedModel directory written by bin/export.py (or by '
                    'training: OUTPUT_DIR/saved_model).')
flags.DEFINE_string('output', None,
                    'NAME.png (a grid), NAME.npy (an array) or a new or '
                    'empty directory (one PNG per sample).')
flags.DEFINE_integer('num', 64, 'Number of samples.', lower_bound=1,
                     upper_bound=2**31 - 1)
flags.DEFINE_float('temperature', 1.0,
                   'Scale of the latent noise (1: the model; 0: the '
                   'latent\'s mode).', lower_bound=0.0)
flags.DEFINE_integer('seed', 0, 'Seed of the samples.', lower_bound=0,
                     upper_bound=2**31 - 1)
flags.DEFINE_integer('batch_size', 64, 'Samples per model call (memory and '
                     'speed; the samples depend on it, see above).',
                     lower_bound=1, upper_bound=2**31 - 1)
flags.DEFINE_integer('first_batch', 0, 'Index of the first batch: batch b '
                     'draws from the seed (--seed, b).', lower_bound=0,
                     upper_bound=2**31 - 1)
flags.DEFINE_integer('columns', None, 'Columns of a .png grid (default: '
                     'about the square root of --num; at most --num).',
                     lower_bound=1)
flags.DEFINE_bool('progress', True,
                  'Show progress on stderr (only on a terminal).')


def _fail(message):
    print(f'sample.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def _progress(enabled):
    if not enabled:
        return None
    start = time.time()

    def report(done, total):
        rate = done / max(time.time() - start, 1e-9)
        sys.stderr.write(f'\r{done}/{total} samples, {rate:.1f} samples/s')
        if done == total:
            sys.stderr.write('\n')
    return report


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}')
    if not FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.model:
        _fail('--model is required (an exported SavedModel directory).')
    if not FLAGS.output:
        _fail('--output is required: NAME.png, NAME.npy or a directory.')
    if not math.isfinite(FLAGS.temperature):
        _fail(f'--temperature must be finite; got {FLAGS.temperature}.')
    # Imported here so that --help and flag errors answer without TF start-up.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from vflow_tfp import export  # pylint: disable=g-import-not-at-top
    from vflow_tfp import file_io  # pylint: disable=g-import-not-at-top
    from vflow_tfp import interrupts  # pylint: disable=g-import-not-at-top
    from vflow_tfp import sampling  # pylint: disable=g-import-not-at-top

    try:
        metadata = export.load_metadata(FLAGS.model)
        kind = sampling.output_kind(FLAGS.output, metadata)
        if FLAGS.columns is not None and kind != 'grid':
            raise ValueError('--columns applies to a .png grid.')
        sampler = sampling.SavedModelSampler(FLAGS.model)
    except ValueError as e:
        _fail(str(e))
    start = time.time()
    writer = None
    try:
        # SIGTERM (a job scheduler's stop) interrupts as Ctrl-C does, also
        # if C code drops the raise (checked after every batch); the writer
        # removes what it staged.
        with interrupts.SignalInterrupts(
                (signal.SIGINT, signal.SIGTERM)) as signals, \
                sampling.SampleWriter(
                    FLAGS.output, kind, int(metadata.get('num_bins') or 256),
                    FLAGS.columns) as writer:
            for batch in sampling.draw_batches(
                    sampler, FLAGS.num, temperature=FLAGS.temperature,
                    seed=FLAGS.seed, batch_size=FLAGS.batch_size,
                    first_batch=FLAGS.first_batch,
                    progress=_progress(FLAGS.progress
                                       and sys.stderr.isatty())):
                writer.add(batch)
                shape = 'x'.join(str(d) for d in batch.shape[1:])
                dtype = batch.dtype.name
                signals.check()
            # The writer's exit moves the output into place, which must not
            # stop halfway: a signal from here on ends the block after it.
            signals.defer_to_exit()
    except KeyboardInterrupt:
        # A signal that came while the output was moved into place (or
        # whose raise C code dropped then) ends the block only once the
        # output is whole.
        if not (writer and writer.complete):
            print(f'sample.py: interrupted; nothing written to '
                  f'{FLAGS.output}.', file=sys.stderr)
            sys.exit(130)
    except ValueError as e:
        _fail(str(e))
    except (OSError, tf.errors.OpError) as e:
        _fail(f'{FLAGS.output}: cannot write it ({file_io.reason(e)}).')
    plural = 's' * (writer.count != 1)
    what = (f'{writer.count} file{plural} in {FLAGS.output}'
            if kind == 'directory' else FLAGS.output)
    print(f'{writer.count} sample{plural} ({shape}, {dtype}, temperature '
          f'{FLAGS.temperature:g}, seed {FLAGS.seed}) in '
          f'{time.time() - start:.1f} s: wrote {what}')


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
