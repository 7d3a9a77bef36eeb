"""Draws samples from an exported flow: `python bin/sample.py --model DIR --output OUT`.

OUT names what is written: `NAME.png` a grid of the samples, `NAME.npy` the
samples as one array (uint8 `[N, H, W, C]` images with the model's pixel
values, or float `[N, D]` vectors), or a new or empty directory one PNG per
sample (`sample_000000.png`, ...: the layout FID tools read). `--model` and
`--output` may be URLs (`gs://bucket/...`). Everything is checked before
sampling starts; a bad setting stops the run with one line on stderr and
exit code 2.

The samples come from the export's `sample` signature (the EMA weights of a
trained run), `--batch_size` at a time; batch `b` draws from the stateless
seed `(--seed, b)`, so the same `--seed`, `--num` and `--batch_size` give
the same samples. `--temperature` scales the latent noise (1 is the model;
lower values give smoother, more typical images; 0 maps the latent's mode).

    python bin/sample.py --model=runs/quickstart/saved_model --num=64 \\
        --temperature=0.8 --output=samples.png
"""

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
flags.DEFINE_integer('num', 64, 'Number of samples.', lower_bound=1)
flags.DEFINE_float('temperature', 1.0,
                   'Scale of the latent noise (1: the model; 0: the '
                   'latent\'s mode).', lower_bound=0.0)
flags.DEFINE_integer('seed', 0, 'Seed of the samples.', lower_bound=0,
                     upper_bound=2**31 - 1)
flags.DEFINE_integer('batch_size', 64, 'Samples per model call (memory and '
                     'speed; the samples depend on it, see above).',
                     lower_bound=1)
flags.DEFINE_integer('columns', None, 'Columns of a .png grid (default: '
                     'about the square root of --num).', lower_bound=1)


def _fail(message):
    print(f'sample.py: error: {message}', file=sys.stderr)
    sys.exit(2)


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
    # Imported here so that --help and flag errors answer without TF start-up.
    from vflow_tfp import export  # pylint: disable=g-import-not-at-top
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
    try:
        samples = sampling.draw(sampler, FLAGS.num,
                                temperature=FLAGS.temperature, seed=FLAGS.seed,
                                batch_size=FLAGS.batch_size,
                                progress=_progress(sys.stderr.isatty()))
    except ValueError as e:
        _fail(str(e))
    seconds = time.time() - start
    try:
        written = sampling.write_samples(
            FLAGS.output, kind, samples,
            num_bins=int(metadata.get('num_bins') or 256),
            columns=FLAGS.columns)
    except ValueError as e:
        _fail(str(e))
    shape = 'x'.join(str(d) for d in samples.shape[1:])
    what = FLAGS.output if len(written) == 1 else (
        f'{len(written)} files in {FLAGS.output}')
    print(f'{len(samples)} samples ({shape}, {samples.dtype.name}, '
          f'temperature {FLAGS.temperature:g}, seed {FLAGS.seed}) in '
          f'{seconds:.1f} s: wrote {what}')


if __name__ == '__main__':
    app.run(main)
