"""Scores images with an exported flow.

Usage: `python bin/score.py --model DIR INPUT...`.

INPUT is any mix of image files (PNG, JPEG), directories (their PNG and JPEG
files), globs (quoted; `**` matches any depth), `.npy`/`.npz` arrays (uint8
`[N, H, W, C]` or one image `[H, W, C]`; float `[N, D]` for vector models)
and `tfds:NAME[:SPLIT]` (e.g. `tfds:photo_patches/8x8:test`, or a slice:
`tfds:photo_patches/8x8:test[:100]`). Files, directories and globs may be
in a bucket (`gs://bucket/images/`, `'gs://bucket/*/*.png'`: there `*`
matches within one level and `**` is refused), and so may `--model` and
`--output`. Every input is checked before scoring starts; anything the
model cannot score (wrong shape, grayscale for an RGB model, float or
out-of-range pixel values, NaN, palette BMPs, animated GIFs, empty or
unreadable inputs, a directory that is not an exported model) stops the run
with one line on stderr and exit code 2, as does an image file that is gone
or changed when it is read again for scoring.

Prints one line per example (`source`, bits/dim, log-likelihood in nats,
from the `log_prob` signature: the importance-weighted bound with
`--num_samples` draws) and the mean; `--output=FILE.json` also writes the
mean and every record (keys `mean_bits_per_dim`, `num_images`, `images`;
so named for vector models too), `--output=FILE.csv` the records. The file
is written before anything is printed, so a reader that stops early
(`| head`) loses nothing; printing then stops quietly. Each image's noise
comes from its own content and `--seed`, so it is the same with any
`--batch_size`, in any order and next to any other inputs; the scores agree
to about 1e-6 bits/dim across batch sizes (float32 kernels round differently
for other batch shapes) and are identical for the same batch size and seed.
"""

import os
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
                    'Also write the scores to this .json or .csv file (a '
                    'path or a URL, e.g. gs://bucket/scores.csv).')
flags.DEFINE_integer('num_samples', None,
                     'Importance samples per image; default: the export\'s '
                     '(the run\'s --iw_samples, else 16).', lower_bound=1,
                     upper_bound=2**31 - 1)
flags.DEFINE_integer('seed', 0, 'Seed of the importance samples.',
                     lower_bound=0, upper_bound=2**31 - 1)
flags.DEFINE_integer('batch_size', 64, 'Images per model call (memory and '
                     'speed: the noise does not depend on it, the scores '
                     'only by float32 rounding, about 1e-6 bits/dim).',
                     lower_bound=1, upper_bound=2**31 - 1)
flags.DEFINE_string('npz_key', None,
                    'Score only this array of each .npz file (default: all).')
flags.DEFINE_string('data_dir', None, 'tfds data directory for tfds: inputs.')
flags.DEFINE_bool('progress', True,
                  'Show a progress bar on stderr (only on a terminal).')


def _fail(message):
    print(f'score.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def _printable(text, stream):
    """`text` as `stream` can encode it, with backslash escapes.

    A file name that is not valid UTF-8 holds surrogate escapes, and a name
    may hold characters the terminal's encoding lacks; either would make a
    strict stream raise after the whole run.
    """
    encoding = getattr(stream, 'encoding', None) or 'utf-8'
    # A tab or line break in a name would break the table's lines.
    text = text.translate({ord('\t'): '\\t', ord('\n'): '\\n',
                           ord('\r'): '\\r'})
    return text.encode(encoding, 'backslashreplace').decode(encoding)


def _print_records(records, summary):
    """Prints the table, stopping quietly if the reader closes stdout."""
    try:
        print('source\tbits_per_dim\tlog_likelihood')
        for r in records:
            print(f'{_printable(r["source"], sys.stdout)}\t'
                  f'{r["bits_per_dim"]:.4f}\t{r["log_likelihood"]:.2f}')
        print(summary)
        # A pipe is block-buffered: its error comes with the flush.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) has what it wanted. Python flushes stdout
        # again at exit, which would raise anew: point it at devnull (the
        # idiom of Python's signal documentation).
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            return  # Not a file descriptor (stdout redirected in Python).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


class _ProgressBar:
    """One stderr line, rewritten after every batch."""

    def __init__(self, enabled, unit):
        self.enabled = enabled
        self.unit = unit
        self.start = time.time()

    def __call__(self, done, total):
        if not self.enabled:
            return
        rate = done / max(time.time() - self.start, 1e-9)
        if total:
            filled = int(30 * done / total)
            bar = f'[{"#" * filled}{"." * (30 - filled)}] {done}/{total}'
        else:
            bar = f'{done}'
        sys.stderr.write(f'\r{bar} {self.unit}, {rate:.1f} {self.unit}/s')
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write('\n')


def main(argv):
    if not FLAGS['verbosity'].present:
        # TFDS logs every data set it opens; the scores are the output.
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.model:
        _fail('--model is required (an exported SavedModel directory).')
    # Imported here so that --help and flag errors answer without TF start-up.
    from vflow_tfp import export  # pylint: disable=g-import-not-at-top
    from vflow_tfp import file_io  # pylint: disable=g-import-not-at-top
    from vflow_tfp import interrupts  # pylint: disable=g-import-not-at-top
    from vflow_tfp import scoring  # pylint: disable=g-import-not-at-top

    specs = argv[1:]
    try:
        if FLAGS.output:
            scoring.output_format(FLAGS.output)
        metadata = export.load_metadata(FLAGS.model)
        inputs = scoring.open_inputs(specs, metadata, npz_key=FLAGS.npz_key,
                                     data_dir=FLAGS.data_dir)
        scorer = scoring.SavedModelScorer(FLAGS.model)
    except ValueError as e:
        _fail(str(e))
    num_samples = FLAGS.num_samples or metadata['default_num_samples']
    unit = 'images' if metadata.get('kind') == 'image' else 'vectors'
    progress = _ProgressBar(FLAGS.progress and sys.stderr.isatty(), unit)
    start = time.time()
    try:
        # SIGTERM (a job scheduler's stop) interrupts as Ctrl-C does, also
        # if C code drops the raise (checked after every batch). Python acts
        # on a signal between model calls: at most a batch later.
        with interrupts.SignalInterrupts(
                (signal.SIGINT, signal.SIGTERM)) as signals:

            def progress_then_check(done, total):
                progress(done, total)
                signals.check()

            records = scoring.score(scorer, inputs, num_samples=num_samples,
                                    seed=FLAGS.seed,
                                    batch_size=FLAGS.batch_size,
                                    progress=progress_then_check)
    except KeyboardInterrupt:
        progress.close()
        print('score.py: interrupted'
              + (f'; nothing written to {FLAGS.output}.' if FLAGS.output
                 else '.'), file=sys.stderr)
        sys.exit(130)
    except ValueError as e:
        # An image file gone or changed since it was checked.
        progress.close()
        _fail(str(e))
    progress.close()
    if not records:
        # Only a source that cannot count its examples beforehand gets here.
        _fail('the inputs yielded no example, nothing was scored.')
    results = scoring.summarize(records, file_io.absolute(FLAGS.model),
                                num_samples, FLAGS.seed, FLAGS.batch_size)
    # The file first: a reader that closes stdout early must not cost the
    # finished run.
    write_error = None
    if FLAGS.output:
        try:
            scoring.write_results(FLAGS.output, results)
        except ValueError as e:
            write_error = str(e)
    count = f'{len(records)} {unit if len(records) > 1 else unit[:-1]}'
    _print_records(
        records,
        f'mean bits/dim {results["mean_bits_per_dim"]:.4f} over {count} '
        f'({num_samples} importance samples, seed {FLAGS.seed}, '
        f'{time.time() - start:.1f} s)')
    if results['num_not_finite']:
        print(f'score.py: warning: {results["num_not_finite"]} of '
              f'{count} have no finite score (far outside the '
              'data, where the model overflows)'
              + ('; null in the JSON' if FLAGS.output
                 and FLAGS.output.lower().endswith('.json') else ''),
              file=sys.stderr)
    if write_error is not None:
        # The scores are on stdout; only the file is missing.
        _fail(write_error)
    if FLAGS.output:
        print(f'wrote {FLAGS.output}', file=sys.stderr)


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
