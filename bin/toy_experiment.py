"""The 2-D checkerboard sweep of the VFlow paper (§5, Figs. 2-3).

Trains Glow (D = D_X + D_Z = 2, L steps) and VFlow (D > 2: L - 1 steps of p
and one of q) on the checkerboard for every D in --dims, L in --steps and
seed --first_seed .. --first_seed + --seeds - 1, and scores each on a fixed
test set (VFlow by --iw_samples-sample importance weighting). Writes into
--output_dir:

  runs/D{D}_L{L}_seed{S}.json   one result per run (a re-run with --resume
                                skips runs whose file exists)
  checkpoints/D{D}_L{L}_seed{S}/  the run in progress, saved at every
                                progress report (--resume goes on from it)
  densities/D{D}_L{L}_seed{S}.npy   log-density grids of --density_configs
  config.json                   the settings every run of the directory shares
  results.json                  all runs and the per-cell summary
  table.md                      mean ± std over seeds of the test
                                log-likelihood
  fig3.png                      test log-likelihood against L, a line per D
  fig2_densities.png            data histogram and model densities

Ctrl-C, SIGTERM or SIGHUP stops the sweep with one line (exit 128 + the
signal's number), keeping the finished runs and the checkpoint of the run
in progress as of its last report.

    python bin/toy_experiment.py --output_dir=/tmp/toy            # full sweep
    python bin/toy_experiment.py --output_dir=/tmp/toy --resume   # continue
    python bin/toy_experiment.py --output_dir=/tmp/t --iterations=5000 \\
        --seeds=1 --dims=2,10 --steps=3
"""

import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time

from absl import app
from absl import flags
import numpy as np

# The preset names alone: no TensorFlow before the flags are checked.
from vflow_tfp.models import catalog

# TensorFlow and the library are imported in main() after the flags have been
# checked, so that a bad command line fails fast.
cb = None  # vflow_tfp.experiments.checkerboard
# checkerboard.MAX_SEED, without importing TF before the flags are checked.
_MAX_SEED = 2**31 - 1

_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Directory of the outputs (required).')
_ITERATIONS = flags.DEFINE_integer('iterations', 100_000,
                                   'Training iterations per run.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Seeds per configuration: '
                              'first_seed .. first_seed + seeds - 1.')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 0, 'First seed.')
_DIMS = flags.DEFINE_list('dims', ['2', '4', '6', '8', '10'],
                          'D = D_X + D_Z values; 2 is Glow.')
_STEPS = flags.DEFINE_list('steps', ['2', '3', '5', '10', '20'],
                           'Flow steps L.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Training batch size.')
_LR = flags.DEFINE_float('learning_rate', 2e-3, 'Peak Adam learning rate.')
_SCHEDULE = flags.DEFINE_enum('schedule', 'cosine',
                              ['cosine', 'linear', 'constant'],
                              'Learning-rate schedule: cosine or linear decay '
                              'to 0 over the run, or constant.')
_CLIP = flags.DEFINE_float('clip_norm', 100.0, 'Global gradient-norm clip.')
_ESTIMATOR = flags.DEFINE_enum(
    'gradient_estimator', 'sticking_the_landing',
    ['sticking_the_landing', 'reparameterization'],
    'Gradient estimator of the VFlow ELBO (see VFlow.elbo); Glow has none.')
_POSTERIOR_SAMPLES = flags.DEFINE_integer(
    'posterior_samples', 8,
    'Draws of z per training point, their ELBOs averaged (VFlow only).')
_IW = flags.DEFINE_integer('iw_samples', 100,
                           'Importance samples of the VFlow test likelihood.')
_TEST_SIZE = flags.DEFINE_integer('test_size', 1000,
                                  'Points of the fixed test set.')
_INIT_SIZE = flags.DEFINE_integer('init_size', 4096,
                                  'Points of the data-dependent init batch.')
_SCALE_FN = flags.DEFINE_enum(
    'scale_fn', None, ['tanh', 'sigmoid', 'exp'],
    'Scale function of the affine couplings; default: the preset\'s.')
_LINEAR_TOP = flags.DEFINE_boolean(
    'linear_top', False,
    'End p with a dense linear map (a full-covariance Gaussian top).')
_RECYCLE_EVERY = flags.DEFINE_integer(
    'recycle_every', 0,
    'Recycle the MLPs\' dead ReLU units every this many steps (0: never).')
_RECYCLE_UNTIL = flags.DEFINE_float(
    'recycle_until', 1.0,
    'Fraction of the run after which no recycling happens.')
_JIT = flags.DEFINE_boolean('jit_compile', True,
                            'XLA-compile the training function.')
_RESUME = flags.DEFINE_boolean(
    'resume', False, 'Skip runs whose result file exists in --output_dir, '
    'and go on with an interrupted run from its checkpoint.')
_DENSITY = flags.DEFINE_list(
    'density_configs', ['2:3', '10:3'],
    'D:L cells whose first seed gets a density grid for Fig. 2.')
_GRID = flags.DEFINE_integer('grid_resolution', 128,
                             'Density grid resolution per axis.')
_GRID_IW = flags.DEFINE_integer('grid_iw_samples', 100,
                                'Importance samples per density grid point.')
_PROGRESS = flags.DEFINE_integer(
    'progress_every', 20_000,
    'Progress line, and checkpoint of the run in progress, every this many '
    'iterations (rounded up to whole calls of the compiled step, 250 '
    'iterations each).')

# The presets: checkerboard_glow_L (D = 2) and checkerboard_vflow_L_D.
_VALID_DIMS = (2, *catalog.TOY_DIMS)
_VALID_STEPS = catalog.TOY_STEPS
_SETTINGS = ('iterations', 'batch_size', 'learning_rate', 'schedule',
             'clip_norm', 'gradient_estimator', 'posterior_samples',
             'iw_samples', 'test_size', 'init_size', 'scale_fn',
             'linear_top', 'recycle_every', 'recycle_until',
             'grid_resolution', 'grid_iw_samples', 'jit_compile')
# The toy presets' scale function (`presets.checkerboard_model`), which
# --scale_fn left unset means.
_PRESET_SCALE_FN = 'sigmoid'
# Settings added after the first sweeps, with the value those sweeps used
# (so their output directories can still be resumed). The density grids'
# settings are checked too: one figure must not mix grids drawn at two
# resolutions or estimated with two sample counts.
_LATER_SETTINGS = {'linear_top': False, 'recycle_every': 0,
                   'recycle_until': 1.0, 'grid_resolution': 128,
                   'grid_iw_samples': 100, 'jit_compile': True}


def _tag(dims, steps, seed):
    """A run's name in runs/, checkpoints/ and densities/."""
    return f'D{dims}_L{steps}_seed{seed}'


def _fail(message):
    print(f'toy_experiment.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def _check_matplotlib():
    # Every finished run redraws the figures: without matplotlib the sweep
    # would stop after its first run (`pip install -e ".[images]"` does not
    # bring it).
    try:
        import matplotlib  # pylint: disable=g-import-not-at-top
        del matplotlib  # Only whether it imports matters here.
    except ImportError:
        _fail('the figures need matplotlib, which is not installed; install '
              'it with pip install -e ".[plots]" (or pip install '
              'matplotlib).')


def _make_dirs(out_dir, *subdirs):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        _fail(f'--output_dir must be a directory; got {out_dir!r}, which is '
              'a file.')
    for subdir in subdirs:
        try:
            os.makedirs(os.path.join(out_dir, subdir), exist_ok=True)
        except OSError as e:
            _fail(f'--output_dir must be a directory that can be created; '
                  f'got {out_dir!r} ({e.strerror}: {e.filename}).')
    if not os.access(out_dir, os.W_OK | os.X_OK):
        _fail(f'--output_dir must be a writable directory; got {out_dir!r}.')


def _int_list(name, values, valid):
    try:
        out = [int(v) for v in values]
    except ValueError:
        _fail(f'--{name} must be comma-separated integers; got '
              f'{",".join(values)!r}.')
    bad = [v for v in out if v not in valid]
    if not out or bad:
        _fail(f'--{name} values must be among {",".join(map(str, valid))}; '
              f'got {",".join(values)!r}.')
    return sorted(set(out))


def _check_flags():
    if not _OUTPUT_DIR.value:
        _fail('--output_dir is required.')
    for flag, low in ((_ITERATIONS, 1), (_SEEDS, 1), (_BATCH, 1), (_IW, 1),
                      (_POSTERIOR_SAMPLES, 1),
                      (_TEST_SIZE, 1), (_INIT_SIZE, 2), (_GRID, 2),
                      (_GRID_IW, 1), (_PROGRESS, 1), (_FIRST_SEED, 0),
                      (_RECYCLE_EVERY, 0)):
        if flag.value < low:
            _fail(f'--{flag.name} must be >= {low}; got {flag.value}.')
    if _FIRST_SEED.value + _SEEDS.value - 1 > _MAX_SEED:
        _fail(f'--first_seed + --seeds - 1 must be <= {_MAX_SEED}; got '
              f'{_FIRST_SEED.value + _SEEDS.value - 1}.')
    # (inf too: a clip of inf makes every gradient NaN, and JSON would keep
    # neither value for a --resume to compare.)
    if not 0 < _LR.value < math.inf:
        _fail(f'--learning_rate must be finite and > 0; got {_LR.value}.')
    if not 0 < _CLIP.value < math.inf:
        _fail(f'--clip_norm must be finite and > 0; got {_CLIP.value}.')
    if not 0.0 <= _RECYCLE_UNTIL.value <= 1.0:
        _fail(f'--recycle_until must be in [0, 1]; got '
              f'{_RECYCLE_UNTIL.value}.')
    dims = _int_list('dims', _DIMS.value, _VALID_DIMS)
    steps = _int_list('steps', _STEPS.value, _VALID_STEPS)
    density = []
    for item in _DENSITY.value:
        try:
            d, num_steps = (int(v) for v in item.split(':'))
        except ValueError:
            _fail(f'--density_configs entries must be D:L; got {item!r}.')
        if d not in _VALID_DIMS or num_steps not in _VALID_STEPS:
            _fail(f'--density_configs entry {item!r}: D must be one of '
                  f'{list(_VALID_DIMS)} and L one of {list(_VALID_STEPS)}.')
        density.append((d, num_steps))
    return dims, steps, density


def _settings():
    return dict(iterations=_ITERATIONS.value, batch_size=_BATCH.value,
                learning_rate=_LR.value, schedule=_SCHEDULE.value,
                clip_norm=_CLIP.value,
                gradient_estimator=_ESTIMATOR.value,
                posterior_samples=_POSTERIOR_SAMPLES.value,
                iw_samples=_IW.value, test_size=_TEST_SIZE.value,
                init_size=_INIT_SIZE.value, scale_fn=_SCALE_FN.value,
                linear_top=_LINEAR_TOP.value,
                recycle_every=_RECYCLE_EVERY.value,
                recycle_until=_RECYCLE_UNTIL.value,
                grid_resolution=_GRID.value,
                grid_iw_samples=_GRID_IW.value, jit_compile=_JIT.value)


def _comparable(name, value):
    """A setting as a --resume compares it: no scale_fn is the preset's."""
    if name == 'scale_fn' and value is None:
        return _PRESET_SCALE_FN
    return value


def _atomic_write(path, mode='w'):
    # Not imported at the top: the package imports TensorFlow.
    from vflow_tfp import file_io  # pylint: disable=g-import-not-at-top
    return file_io.atomic_write(path, mode)


def _write_json(path, obj):
    from vflow_tfp import file_io  # pylint: disable=g-import-not-at-top
    with _atomic_write(path) as f:
        # Strict JSON: an undefined figure (the std of one seed, the rate of
        # a run too short to time) is written as null, not NaN.
        json.dump(file_io.finite_or_none(obj), f, indent=1, allow_nan=False)


def _load_runs(run_dir):
    runs = []
    for name in sorted(os.listdir(run_dir)):
        if name.endswith('.json'):
            with open(os.path.join(run_dir, name)) as f:
                run = json.load(f)
            if run.get('test_log_likelihood') is None:   # non-finite
                run['test_log_likelihood'] = math.nan
            runs.append(run)
    return runs


def _fmt(value, digits=3):
    return '—' if value is None or not np.isfinite(value) else (
        f'{value:.{digits}f}')


def _recycling_note(settings):
    every = settings.get('recycle_every', 0)
    if not every:
        return ''
    until = settings.get('recycle_until', 1.0)
    return (f', dead ReLU units recycled every {every} steps'
            + (f' up to {until:g} of the run' if until < 1.0 else ''))


def _table(summary, settings):
    dims = sorted({d for d, _ in summary})
    steps = sorted({s for _, s in summary})
    iw = settings['iw_samples']
    lines = [
        '# Checkerboard test log-likelihood (nats)',
        '',
        f'Mean ± std over seeds (n = number of seeds) of the mean test '
        f'log-likelihood on {settings["test_size"]} fixed test points; '
        f'{settings["iterations"]} iterations per run, batch '
        f'{settings["batch_size"]}, Adam lr {settings["learning_rate"]:g} '
        f'({settings["schedule"]}), grad clip {settings["clip_norm"]:g}, '
        f'VFlow ELBO gradient {settings["gradient_estimator"]} with '
        f'{settings["posterior_samples"]} z draw(s) per training point, '
        f'VFlow likelihood by {iw}-sample importance weighting; '
        f'scale_fn {settings["scale_fn"] or "preset default"}'
        f'{", linear top" if settings.get("linear_top") else ""}'
        f'{_recycling_note(settings)}. '
        f'True log-likelihood {-np.log(32):.3f}.',
        '',
        '| D \\ L | ' + ' | '.join(str(s) for s in steps) + ' |',
        '|---|' + '---|' * len(steps),
    ]
    for d in dims:
        cells = []
        for s in steps:
            c = summary.get((d, s))
            cells.append('—' if c is None else
                         f'{_fmt(c["mean"])} ± {_fmt(c["std"])} '
                         f'(n={len(c["seeds"])})')
        label = f'{d} (Glow)' if d == 2 else f'{d} (VFlow)'
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Targets', '']
    vflow = summary.get((10, 3))
    glow = summary.get((2, 3))
    if vflow:
        ok = vflow['mean'] >= -3.52
        lines.append(f'* 3-step 10-dim VFlow >= -3.52: {_fmt(vflow["mean"])} '
                     f'-> {"met" if ok else "NOT met"}')
    if glow:
        ok = abs(glow['mean'] - (-3.67)) <= 0.06
        lines.append(f'* 3-step Glow within 0.06 of -3.67: '
                     f'{_fmt(glow["mean"])} -> {"met" if ok else "NOT met"}')
    pairs = [(d, s) for d, s in summary if d > 2 and (2, s) in summary]
    # A cell with a diverged run has no mean: neither better nor worse.
    undecided = [(d, s) for d, s in sorted(pairs) if not (
        np.isfinite(summary[(d, s)]['mean'])
        and np.isfinite(summary[(2, s)]['mean']))]
    comparisons = [c for c in pairs if c not in undecided]
    if comparisons:
        worse = [(d, s) for d, s in sorted(comparisons)
                 if summary[(d, s)]['mean'] <= summary[(2, s)]['mean']]
        lines.append(
            f'* VFlow better than Glow at equal L: '
            f'{len(comparisons) - len(worse)} of {len(comparisons)} '
            f'(D, L) cells' + (
                '' if not worse else ' (not: ' + ', '.join(
                    f'D={d} L={s}' for d, s in worse) + ')'))
    if undecided:
        lines.append('* Not compared (a diverged run leaves no mean): '
                     + ', '.join(f'D={d} L={s}' for d, s in undecided))
    if not (vflow or glow or pairs):
        lines.append('* (cells D=2/10, L=3 not run)')
    return '\n'.join(lines) + '\n'


def _write_outputs(out_dir, settings, density_configs, final=False):
    """Results, table and figures from the runs so far; `final` also says
    which requested density grids are missing."""
    runs = _load_runs(os.path.join(out_dir, 'runs'))
    if not runs:
        return
    summary = cb.summarize(runs)
    _write_json(os.path.join(out_dir, 'results.json'), dict(
        settings=settings,
        summary=[dict(dims=d, steps=s, **v) for (d, s), v in summary.items()],
        runs=runs))
    with _atomic_write(os.path.join(out_dir, 'table.md')) as f:
        f.write(_table(summary, settings))
    cb.plot_log_likelihood_vs_steps(
        summary, os.path.join(out_dir, 'fig3.png'),
        title=(f'checkerboard, {settings["iterations"]} iterations, '
               f'up to {max(len(v["seeds"]) for v in summary.values())} '
               'seeds'))
    panels = [('data', cb.histogram_density(resolution=_GRID.value))]
    # The configurations asked for now and those drawn by earlier
    # invocations: a --resume without --density_configs keeps its panels.
    drawn = {tuple(int(v) for v in re.match(r'D(\d+)_L(\d+)_seed', f).groups())
             for f in os.listdir(os.path.join(out_dir, 'densities'))
             if re.match(r'D\d+_L\d+_seed\d+\.npy$', f)}
    for d, s in list(density_configs) + sorted(
            drawn - set(density_configs)):
        grids = sorted(f for f in os.listdir(os.path.join(out_dir,
                                                          'densities'))
                       if f.startswith(f'D{d}_L{s}_seed')
                       and f.endswith('.npy'))
        if not grids:
            cell = [r for r in runs if (r['dims'], r['steps']) == (d, s)]
            if final and cell:
                # Grids are drawn from a model right after it trains.
                why = ('its runs diverged' if all(
                    not np.isfinite(r['test_log_likelihood']) for r in cell)
                       else 'its runs finished before it was requested (use '
                       'a new --output_dir)')
                print(f'    no density grid for {d}:{s}: {why}', flush=True)
            continue
        log_p = np.load(os.path.join(out_dir, 'densities', grids[0]))
        seed = int(grids[0].split('seed')[1].split('.')[0])
        run = next((r for r in runs if (r['dims'], r['steps'], r['seed'])
                    == (d, s, seed)), None)
        name = f'Glow L={s}' if d == 2 else f'VFlow L={s} D={d}'
        if run is not None:
            name += f'\ntest LL {run["test_log_likelihood"]:.3f}'
        panels.append((name, np.exp(log_p)))
    cb.plot_densities(panels, os.path.join(out_dir, 'fig2_densities.png'))


# The stop signals the sweep received (SIGINT before TF is imported is
# Python's own KeyboardInterrupt and is not recorded).
_stopped_by = []


def main(argv):
    try:
        with contextlib.ExitStack() as stack:
            _sweep(argv, stack)
    except KeyboardInterrupt:
        # A finished run's results are written as it ends, and the run in
        # progress has its checkpoint of the last progress report.
        sig = _stopped_by[0] if _stopped_by else signal.SIGINT
        how = ('interrupted' if sig == signal.SIGINT
               else f'stopped by {sig.name}')
        print(f'\ntoy_experiment.py: {how}; the finished runs and the '
              f'one in progress (as of its last report) are in '
              f'{_OUTPUT_DIR.value}: rerun the same command with --resume '
              'to go on.', file=sys.stderr)
        sys.exit(128 + sig)


def _sweep(argv, stack):
    """The sweep. Its signal handling, entered once TF is imported, goes
    on the caller's `contextlib.ExitStack` `stack`, whose exit raises the
    interrupt of a stop signal whose raise C code dropped."""
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}.')
    dims, steps, density_configs = _check_flags()
    _check_matplotlib()
    out_dir = _OUTPUT_DIR.value
    run_dir = os.path.join(out_dir, 'runs')
    grid_dir = os.path.join(out_dir, 'densities')
    checkpoint_root = os.path.join(out_dir, 'checkpoints')
    _make_dirs(out_dir, 'runs', 'densities', 'checkpoints')
    settings = _settings()
    config_path = os.path.join(out_dir, 'config.json')
    has_runs = os.listdir(checkpoint_root) or any(
        name.endswith('.json') for name in os.listdir(run_dir))
    if os.path.exists(config_path) and has_runs:
        with open(config_path) as f:
            old = json.load(f)
        old = {k: old.get(k, _LATER_SETTINGS.get(k)) for k in _SETTINGS}
        diff = [k for k in _SETTINGS
                if _comparable(k, old[k]) != _comparable(k, settings[k])]
        if diff:
            _fail(f'{out_dir} holds runs with other settings ('
                  + ', '.join(f'--{k}={_comparable(k, old[k])}'
                              for k in diff)
                  + '); use another --output_dir.')
    else:
        # Settings of a directory without results (a first invocation
        # stopped before its first run finished) bind nothing yet.
        _write_json(config_path, settings)

    seeds = range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value)
    # Seed by seed, cheap cells first: an interrupted sweep has every cell
    # for the first seeds.
    jobs = [(d, s, seed) for seed in seeds for s in steps for d in dims]
    existing = [j for j in jobs
                if os.path.exists(os.path.join(run_dir, _tag(*j) + '.json'))]
    if existing and not _RESUME.value:
        _fail(f'{len(existing)} of the {len(jobs)} runs already have results '
              f'in {run_dir}; pass --resume to skip them or use another '
              '--output_dir.')
    in_progress = [_tag(*j) for j in jobs
                   if os.path.isdir(os.path.join(checkpoint_root, _tag(*j)))]
    if in_progress and not _RESUME.value:
        _fail(f'{len(in_progress)} of the {len(jobs)} runs were started '
              f'before (checkpoints in {checkpoint_root}, e.g. '
              f'{in_progress[0]}); pass --resume to go on with them or use '
              'another --output_dir.')
    global cb
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # pylint: disable-next=g-import-not-at-top
    from vflow_tfp.experiments import checkerboard
    from vflow_tfp import interrupts  # pylint: disable=g-import-not-at-top
    cb = checkerboard
    # SIGTERM (a scheduler's stop) and SIGHUP stop the sweep as Ctrl-C
    # does, with its message, where their default would end the process
    # silently. A signal whose KeyboardInterrupt C code dropped (a TF
    # finalizer) is recorded, and stops the sweep at the run's next progress
    # report.
    signals = stack.enter_context(interrupts.SignalInterrupts(
        interrupts.STOP_SIGNALS, on_signal=_stopped_by.append))
    tf.get_logger().setLevel('ERROR')  # retracing notes of the per-run fns
    test_points = cb.test_set(_TEST_SIZE.value)
    overrides = ({'scale_fn': _SCALE_FN.value} if _SCALE_FN.value else {})
    if _LINEAR_TOP.value:
        overrides['linear_top'] = True
    print(f'Checkerboard sweep: {len(jobs)} runs (D {dims}, L {steps}, seeds '
          f'{list(seeds)}), {_ITERATIONS.value} iterations each, '
          f'{len(existing)} already done; outputs in {out_dir}', flush=True)
    start = time.time()
    for k, (d, s, seed) in enumerate(jobs, 1):
        tag = _tag(d, s, seed)
        path = os.path.join(run_dir, tag + '.json')
        if os.path.exists(path):
            continue
        preset = cb.preset_name(d, s)
        print(f'[{k}/{len(jobs)}] {preset} seed {seed} '
              f'({time.time() - start:.0f} s elapsed)', flush=True)
        checkpoint_dir = os.path.join(checkpoint_root, tag)
        saved_at = cb.checkpointed_iteration(checkpoint_dir)
        if saved_at is not None:
            print(f'    going on from its checkpoint at iteration {saved_at}',
                  flush=True)

        def progress(info):
            rate = info['iterations_per_second']
            print(f'    it {info["iteration"]:7d}/{info["iterations"]}  '
                  f'train ELBO {info["train_elbo"]:8.4f}  '
                  f'lr {info["learning_rate"]:.2e}'
                  + (f'  {rate:6.0f} it/s' if np.isfinite(rate) else ''),
                  flush=True)
            signals.check()  # after the report's checkpoint

        try:
            result, model = cb.run(
                preset, _ITERATIONS.value, seed, test_points,
                batch_size=_BATCH.value, learning_rate=_LR.value,
                schedule=_SCHEDULE.value, clip_norm=_CLIP.value,
                gradient_estimator=_ESTIMATOR.value,
                posterior_samples=_POSTERIOR_SAMPLES.value,
                recycle_every=_RECYCLE_EVERY.value,
                recycle_until=_RECYCLE_UNTIL.value,
                iw_samples=_IW.value, init_size=_INIT_SIZE.value,
                jit_compile=_JIT.value, progress=progress,
                progress_every=_PROGRESS.value, model_overrides=overrides,
                checkpoint_dir=checkpoint_dir, return_model=True)
        except FloatingPointError as e:
            # A diverged run is a result too (its cell's mean becomes
            # undefined), recorded so that the sweep and a --resume go on.
            _write_json(path, dict(
                preset=preset, dims=d, steps=s, seed=seed,
                iterations=_ITERATIONS.value, test_log_likelihood=None,
                error=str(e)))
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            print(f'    {tag}: diverged ({e})', flush=True)
            _write_outputs(out_dir, settings, density_configs)
            continue
        if (d, s) in density_configs and not any(
                f.startswith(f'D{d}_L{s}_seed') and f.endswith('.npy')
                for f in os.listdir(grid_dir)):
            log_p = cb.density_grid(model, _GRID.value,
                                    num_samples=_GRID_IW.value, seed=seed)
            # Through a temporary file: a half-written grid would be taken
            # as done by every later --resume.
            grid_path = os.path.join(grid_dir, tag + '.npy')
            with _atomic_write(grid_path, 'wb') as f:
                np.save(f, log_p)
        rate = result['iterations_per_second']
        _write_json(path, result)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        print(f'    {tag}: test log-likelihood '
              f'{result["test_log_likelihood"]:.4f} '
              f'(± {result["test_log_likelihood_sem"]:.4f} s.e. over test '
              f'points; init {result["init_test_log_likelihood"]:.4f}), '
              f'{result["train_seconds"]:.1f} s'
              + (f', {rate:.0f} it/s' if np.isfinite(rate) else ''),
              flush=True)
        _write_outputs(out_dir, settings, density_configs)
    _write_outputs(out_dir, settings, density_configs, final=True)
    print(f'Done in {time.time() - start:.0f} s. Table: '
          f'{os.path.join(out_dir, "table.md")}', flush=True)


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
