"""Runs the benchmark suite and prints a table: `python bench/run.py`.

Every benchmark runs in a fresh Python process (so peak memory is its own and
no traced graph is shared), one after the other. Examples:

  python bench/run.py                           # the default suite
  python bench/run.py --only=flowpp_attn,glow,tfp_glow --json=bench.json
  python bench/run.py --only=toy_vflow --xla    # XLA-compiled train step

Figures: training throughput (images or points per second, median step after
warm-up), peak RSS, 64-sample sampling time with the numerical inverse's
maximum latent error and mean/max root-finder iterations, and importance-
weighted scoring throughput at S = 16 and 128. Benchmarks that have a
baseline print the ratio (ours / baseline). The image benchmarks train on
photo patches, which need scikit-image (`pip install -e ".[images]"`). A
benchmark that fails is reported and the others still run; the table and
`--json` hold those that finished, and the exit code is 1; if every one
fails, nothing is written and the exit code is 2. See bench/README.md (it
lists the benchmarks).
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

# No TensorFlow here: names are checked, and listed in --help, at once.
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from benchmarks import BENCHMARKS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('only', [], 'Comma-separated benchmarks to run, from: '
                  f'{", ".join(BENCHMARKS)} (default: all but the slow '
                  'vflow_cifar10 memory runs; see bench/README.md).')
flags.DEFINE_string('json', None, 'Write the results to this JSON file.')
flags.DEFINE_integer('steps', 10, 'Timed training steps per benchmark.')
flags.DEFINE_bool('xla', False, 'XLA-compile the training step.')
flags.DEFINE_bool('sampling', True, 'Measure sampling.')
flags.DEFINE_bool('scoring', True, 'Measure importance-weighted scoring.')
flags.DEFINE_string('worker', None, 'Internal: run one benchmark and write '
                    'its JSON result to --json.')


def _fail(message):
    print(f'bench/run.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _run_worker():
    import suite  # pylint: disable=g-import-not-at-top
    result = suite.run(BENCHMARKS[FLAGS.worker], steps=FLAGS.steps,
                       jit_compile=FLAGS.xla, sampling=FLAGS.sampling,
                       scoring=FLAGS.scoring)
    with open(FLAGS.json, 'w') as f:
        json.dump(result, f)


def _format(value, fmt):
    return '-' if value is None else format(value, fmt)


def _table(results):
    header = ('benchmark', 'params', 'train/s', 'ratio', 'step s',
              'GF/item', 'GF/s', 'peak MiB', 'MiB/img', 'sample s', 'inv err',
              'iters', 'IW16/s', 'IW128/s', 'IW16/s ex')
    rows = []
    for r in results:
        ratio = r.get('ratio_to_baseline')
        iters = None
        if r.get('inverse_mean_iterations') is not None:
            iters = (f"{r['inverse_mean_iterations']:.2f}/"
                     f"{r['inverse_max_iterations']}")
        rows.append((
            r['name'], f"{r['parameters']:,}",
            _format(r['train_per_second'], '.2f'),
            _format(ratio, '.2f'), _format(r['step_seconds'], '.3g'),
            _format(r['train_gflop_per_item'], '.3g'),
            _format(r['achieved_gflops'], '.1f'),
            _format(r['peak_rss_mb'], '.0f'),
            _format(r['train_mb_per_image'], '.0f'),
            _format(r.get('sample_seconds'), '.3g'),
            _format(r.get('inverse_max_error'), '.1e'), iters or '-',
            _format(r.get('score_per_second_s16'), '.1f'),
            _format(r.get('score_per_second_s128'), '.1f'),
            _format(r.get('score_per_second_s16_per_example'), '.1f')))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ['  '.join(str(x).ljust(w) for x, w in zip(header, widths))]
    lines += ['  '.join(str(x).ljust(w) for x, w in zip(row, widths))
              for row in rows]
    return '\n'.join(lines)


def _check_json_path(path):
    # Checked before the benchmarks run, not after: a bad path would
    # otherwise cost every figure of a long run.
    if os.path.isdir(path):
        _fail(f'--json={path} is a directory; name a file.')
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        _fail(f'--json={path}: no directory {directory} to write it to.')


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}')
    if FLAGS.steps < 1:
        _fail(f'--steps must be >= 1; got {FLAGS.steps}.')
    if FLAGS['only'].present and not any(FLAGS.only):
        _fail('--only names no benchmark; leave it out for the default '
              'suite.')
    if FLAGS.json and not FLAGS.worker:
        _check_json_path(FLAGS.json)
    if FLAGS.worker:
        if FLAGS.worker not in BENCHMARKS or not FLAGS.json:
            _fail('--worker needs a benchmark name and --json')
        _run_worker()
        return
    names = [n for n in FLAGS.only if n] or [
        name for name, b in BENCHMARKS.items() if b.in_default_suite]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        _fail(f'unknown benchmark(s) {unknown}; choose from '
              f'{", ".join(BENCHMARKS)}.')
    results, failed = [], []
    # The BFC allocator (as on GPUs) lets a worker read its tensor memory.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
               TF_CPU_ALLOCATOR_USE_BFC='true')
    for name in names:
        print(f'[{len(results) + len(failed) + 1}/{len(names)}] {name}: '
              f'{BENCHMARKS[name].description} ...', file=sys.stderr,
              flush=True)
        with tempfile.NamedTemporaryFile(suffix='.json') as out:
            command = [sys.executable, os.path.abspath(__file__),
                       f'--worker={name}', f'--json={out.name}',
                       f'--steps={FLAGS.steps}',
                       f'--xla={FLAGS.xla}', f'--sampling={FLAGS.sampling}',
                       f'--scoring={FLAGS.scoring}']
            done = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                print(f'    {name} failed (exit {done.returncode}); going '
                      'on with the others.', file=sys.stderr, flush=True)
                failed.append(name)
                continue
            with open(out.name) as f:
                results.append(json.load(f))
        r = results[-1]
        print(f'    {r["train_per_second"]:.2f} per second, peak '
              f'{r["peak_rss_mb"]:.0f} MiB', file=sys.stderr, flush=True)
    if not results:
        _fail(f'every benchmark failed: {", ".join(failed)}.')
    by_name = {r['name']: r for r in results}
    for r in results:
        base = BENCHMARKS[r['name']].baseline
        if base in by_name:
            r['ratio_to_baseline'] = (r['train_per_second']
                                      / by_name[base]['train_per_second'])
    import suite  # pylint: disable=g-import-not-at-top
    peak = suite.peak_matmul_flops() / 1e9
    for r in results:
        r['fraction_of_matmul_peak'] = r['achieved_gflops'] / peak
    print(_table(results))
    print(f'float32 matmul peak of this machine: {peak:.0f} GFLOP/s '
          '(2048x2048 product); "GF/s" is the training step\'s counted '
          'FLOPs per second.')
    if FLAGS.json:
        with open(FLAGS.json, 'w') as f:
            json.dump(dict(xla=FLAGS.xla, steps=FLAGS.steps,
                           matmul_peak_gflops=peak, results=results,
                           failed=failed), f, indent=1)
    if failed:
        print(f'bench/run.py: {len(failed)} benchmark(s) failed: '
              f'{", ".join(failed)} (their errors are above).',
              file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    app.run(main)
