"""Tests for `vflow_tfp.experiments.checkerboard` and bin/toy_experiment.py."""

import contextlib
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import types
from unittest import mock

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import nets
from vflow_tfp.data import checkerboard as data_lib
from vflow_tfp.experiments import checkerboard as cb
import cli_helpers
import lost_signals

# absolute(), not resolve(): under Bazel the runfiles, not the symlinks'
# targets in the source tree, must hold what the tests read.
REPO = pathlib.Path(__file__).absolute().parents[1]


def test_in_graph_sampler_is_the_checkerboard():
    points = cb.sample_checkerboard_tf(20_000, tf.constant([1, 2])).numpy()
    assert points.shape == (20_000, 2)
    assert np.all(np.isfinite(data_lib.checkerboard_log_prob(points)))
    # Each of the 8 squares gets about 1/8 of the points.
    cells = np.floor((points + 4.0) / 2.0).astype(int)
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    on = counts[counts > 0]
    assert len(on) == 8
    np.testing.assert_allclose(on / len(points), 1 / 8, atol=0.01)
    # Uniform within its square, on both axes (mean 1, variance 1/3 of the
    # offset from the square's corner), for both samplers.
    for sample in (points, data_lib.sample_checkerboard(20_000, seed=3)):
        offsets = (sample + 4.0) % 2.0
        np.testing.assert_allclose(offsets.mean(axis=0), 1.0, atol=0.02)
        np.testing.assert_allclose(offsets.var(axis=0), 1 / 3, atol=0.02)
        # Each axis draws its offset from its own stream: drawn from
        # x's, y's would be a function of it (correlation 0.25).
        assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.05


def test_the_test_set_is_fixed():
    # Every table in the README was measured on these 1,000 points.
    first = cb.test_set()
    assert first.shape == (1000, 2)
    np.testing.assert_array_equal(first, cb.test_set())
    np.testing.assert_array_equal(
        first, data_lib.sample_checkerboard(1000, seed=1_000_003))


def test_preset_names():
    assert cb.preset_name(2, 3) == 'checkerboard_glow_3'
    assert cb.preset_name(10, 3) == 'checkerboard_vflow_3_10'


@pytest.mark.parametrize('preset, estimator, posterior_samples', [
    ('checkerboard_glow_3', 'reparameterization', 1),
    ('checkerboard_vflow_3_4', 'reparameterization', 1),
    ('checkerboard_vflow_3_4', 'sticking_the_landing', 4),
])
def test_short_run_improves(preset, estimator, posterior_samples):
    test_points = cb.test_set(300)
    reports = []
    result, model = cb.run(preset, 400, seed=0, test_points=test_points,
                           learning_rate=3e-3, gradient_estimator=estimator,
                           posterior_samples=posterior_samples, iw_samples=8,
                           init_size=1024, steps_per_call=200,
                           progress=reports.append, progress_every=200,
                           return_model=True)
    # The headline figure: the mean over the test points of the trained
    # model's 8-sample importance-weighted bound, and its standard error.
    points = cb.evaluate(model, test_points, 8, seed=0)
    assert result['test_log_likelihood'] == np.mean(points)
    assert result['test_log_likelihood_sem'] == pytest.approx(
        np.std(points, ddof=1) / np.sqrt(len(points)), rel=1e-9)
    if 'vflow' in preset:
        assert np.mean(cb.evaluate(model, test_points, 1, seed=0)) < (
            result['test_log_likelihood'])
        # Each batch of points draws its own z (a density grid's rows are
        # independent estimates), reproducibly.
        twice = np.concatenate([test_points[:3], test_points[:3]])
        scores = cb.evaluate(model, twice, 2, seed=0, batch_size=3)
        assert np.all(scores[:3] != scores[3:])
        assert np.array_equal(
            cb.evaluate(model, twice, 2, seed=0, batch_size=3), scores)
    assert result['steps'] == 3
    # Glow's likelihood is exact: one sample, whatever was asked.
    assert result['iw_samples_used'] == (8 if 'vflow' in preset else 1)
    for key in ('test_log_likelihood', 'init_test_log_likelihood',
                'final_train_elbo', 'iterations_per_second'):
        assert np.isfinite(result[key]), key
    assert result['test_log_likelihood'] > (
        result['init_test_log_likelihood'] + 0.15)
    # Cannot beat the true density by more than the test-set noise.
    assert result['test_log_likelihood'] < cb.TRUE_LOG_LIKELIHOOD + 0.2
    assert [r['iteration'] for r in reports] == [200, 400]
    assert result['dims'] == (2 if 'glow' in preset else 4)
    assert result['gradient_estimator'] == estimator
    assert result['posterior_samples'] == posterior_samples
    json.dumps(result)  # serialisable


def test_recycling_dead_units_during_training():
    model, _ = cb.build_model('checkerboard_vflow_3_4', seed=1, init_size=256)
    mlps = {m.name: m for m in model.submodules if isinstance(m, nets.MLP)}
    # p's two coupling conditioners, q's conditional affine and coupling.
    assert sorted(mlps) == ['p_net0', 'p_net1', 'q_net0', 'q_norm_net']
    # Kill units so that there is something to recycle at the first pass.
    layer = mlps['p_net1'].hidden_layers[1]
    layer.bias.assign(tf.tensor_scatter_nd_update(
        layer.bias, [[0], [7]], [-1e3, -1e3]))
    reports = []
    stats = cb.train(model, 600, seed=1, learning_rate=3e-3,
                     recycle_every=200, recycle_until=0.5,
                     steps_per_call=150, progress=reports.append,
                     progress_every=300)
    passes = stats['recycled_units']
    assert [step for step, _ in passes] == [200]  # 400 > 0.5 * 600
    assert passes[0][1] >= 2
    assert reports[-1]['recycled_units'] == passes[0][1]
    assert np.isfinite(stats['final_train_elbo'])
    # The killed units were given new weights.
    assert float(tf.reduce_min(layer.bias)) > -1e3
    with pytest.raises(ValueError, match='recycle_every must be >= 0'):
        cb.train(model, 1, seed=0, recycle_every=-1)


def test_an_interrupted_run_goes_on_from_its_checkpoint(tmp_path):
    kwargs = dict(learning_rate=3e-3, recycle_every=200, recycle_until=0.9,
                  steps_per_call=100, progress_every=200, jit_compile=False)

    def fresh():
        return cb.build_model('checkerboard_vflow_3_4', seed=1,
                              init_size=256)[0]

    whole = fresh()
    reference = cb.train(whole, 600, seed=1, **kwargs)
    assert cb.checkpointed_iteration(str(tmp_path)) is None

    def stop_at_400(info):
        if info['iteration'] == 400:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.train(fresh(), 600, seed=1, progress=stop_at_400,
                 checkpoint_dir=str(tmp_path), **kwargs)
    assert cb.checkpointed_iteration(str(tmp_path)) == 400
    resumed_model = fresh()
    reports = []
    resumed = cb.train(resumed_model, 600, seed=1, progress=reports.append,
                       checkpoint_dir=str(tmp_path), **kwargs)
    # Only the steps after the checkpoint ran, and they gave the
    # uninterrupted run: the same weights (and Adam state, or the last
    # steps would differ), history and recycling passes.
    assert [r['iteration'] for r in reports] == [600]
    assert resumed['history'] == reference['history']
    assert resumed['recycled_units'] == reference['recycled_units']
    for a, b in zip(resumed_model.trainable_variables,
                    whole.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # One checkpoint is kept (the newest), and another run's is refused.
    assert sorted(os.listdir(tmp_path)) == [
        'step-400.data-00000-of-00001', 'step-400.index',
        'training_state.json']
    for change in (dict(learning_rate=1e-3), dict(seed=2),
                   dict(schedule='linear'), dict(batch_size=32),
                   dict(clip_norm=1.0), dict(recycle_every=100),
                   dict(iterations=800), dict(posterior_samples=4),
                   dict(gradient_estimator='reparameterization'),
                   dict(recycle_until=0.5), dict(recycle_batch_size=512)):
        (name,) = change
        arguments = {**kwargs, 'seed': 1, 'checkpoint_dir': str(tmp_path),
                     **change}
        with pytest.raises(ValueError, match=f'differs in {name}\\)'):
            cb.train(fresh(), arguments.pop('iterations', 600), **arguments)
    other = cb.build_model('checkerboard_vflow_3_6', seed=1,
                           init_size=256)[0]
    with pytest.raises(ValueError, match='differs in model, variables\\)'):
        cb.train(other, 600, seed=1, checkpoint_dir=str(tmp_path), **kwargs)


@pytest.mark.parametrize('schedule, quarter, half, three_quarters', [
    ('cosine', 0.5 * (1 + np.cos(np.pi / 4)), 0.5,
     0.5 * (1 + np.cos(3 * np.pi / 4))),
    ('linear', 0.75, 0.5, 0.25),
    ('constant', 1.0, 1.0, 1.0),
])
def test_learning_rate_schedules(schedule, quarter, half, three_quarters):
    # pylint: disable-next=protected-access
    rate = cb._learning_rate(2e-3, schedule, 400)
    at = (lambda step: float(rate(step))) if callable(rate) else (
        lambda step: rate)
    np.testing.assert_allclose(
        [at(0), at(100), at(200), at(300)],
        2e-3 * np.array([1.0, quarter, half, three_quarters]), rtol=1e-5)
    assert at(400) == pytest.approx(0.0 if schedule != 'constant' else 2e-3)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match='schedule must be one of'):
        cb._learning_rate(2e-3, 'step', 10)  # pylint: disable=protected-access


def test_posterior_samples_must_be_positive():
    model, _ = cb.build_model('checkerboard_vflow_3_4', seed=0, init_size=64)
    with pytest.raises(ValueError, match='posterior_samples must be >= 1'):
        cb.train(model, 1, seed=0, posterior_samples=0)


def test_summarize():
    runs = [dict(dims=2, steps=3, seed=s, iterations=10,
                 test_log_likelihood=v) for s, v in enumerate([-3.7, -3.6])]
    summary = cb.summarize(runs)
    assert summary[(2, 3)]['mean'] == pytest.approx(-3.65)
    assert summary[(2, 3)]['std'] == pytest.approx(np.std([-3.7, -3.6],
                                                          ddof=1))
    assert summary[(2, 3)]['seeds'] == [0, 1]
    # Runs come in file-name order (seed10 before seed2): values must
    # still line up with their seeds.
    runs = [dict(dims=4, steps=3, seed=s, iterations=10,
                 test_log_likelihood=-3.5 - s / 100)
            for s in sorted(range(11), key=str)]
    cell = cb.summarize(runs)[(4, 3)]
    assert cell['seeds'] == list(range(11))
    assert cell['values'] == pytest.approx([-3.5 - s / 100
                                            for s in range(11)])


def test_summarize_a_diverged_run_leaves_its_cell_without_a_mean():
    # A diverged run scores NaN (bin/toy_experiment.py's _load_runs): its
    # cell's mean over seeds is undefined, not the mean of the others.
    runs = [dict(dims=2, steps=3, seed=s, iterations=10,
                 test_log_likelihood=v)
            for s, v in enumerate([-3.6, math.nan, -3.7])]
    cell = cb.summarize(runs)[(2, 3)]
    assert math.isnan(cell['mean']) and math.isnan(cell['std'])
    assert cell['seeds'] == [0, 1, 2]


def test_run_records_one_posterior_sample_for_glow():
    # Glow has no z: `posterior_samples` is ignored, and the result says
    # what was used (one draw), as `iw_samples_used` does.
    result = cb.run('checkerboard_glow_2', 0, seed=0,
                    test_points=cb.test_set(4), posterior_samples=8,
                    iw_samples=3, init_size=64, jit_compile=False)
    assert result['posterior_samples'] == 1
    assert result['iw_samples_used'] == 1


def test_fig3_plots_the_log_likelihood_against_the_steps(tmp_path):
    # Fig. 3: one line per D, with L on the x axis and the cell's mean
    # (error bar: its std over seeds) on the y axis.
    import matplotlib.axes  # pylint: disable=import-outside-toplevel
    summary = {(2, 3): dict(mean=-3.7, std=0.01, seeds=[0, 1]),
               (2, 5): dict(mean=-3.6, std=0.02, seeds=[0, 1]),
               (10, 3): dict(mean=-3.5, std=0.03, seeds=[0, 1])}
    lines = []
    real = matplotlib.axes.Axes.errorbar

    def errorbar(ax, x, y, *args, **kwargs):
        lines.append((kwargs.get('label'), list(x), list(y),
                      list(kwargs['yerr'])))
        return real(ax, x, y, *args, **kwargs)

    with mock.patch.object(matplotlib.axes.Axes, 'errorbar', errorbar):
        cb.plot_log_likelihood_vs_steps(summary, str(tmp_path / 'f.png'))
    assert lines == [('Glow (D=2)', [3, 5], [-3.7, -3.6], [0.01, 0.02]),
                     ('VFlow D=10', [3], [-3.5], [0.03])]


def test_fig2_draws_row_0_of_a_density_at_the_bottom(tmp_path):
    # plot_densities takes densities with rows = y from -extent up: the
    # value of row 0 is shown at y = -extent, that of the last row at
    # y = +extent (column 0 at x = -extent).
    import matplotlib.axes  # pylint: disable=import-outside-toplevel
    images = []
    real = matplotlib.axes.Axes.imshow

    def imshow(ax, *args, **kwargs):
        images.append((ax, real(ax, *args, **kwargs)))
        return images[-1][1]

    density = np.arange(16.0).reshape(4, 4)
    with mock.patch.object(matplotlib.axes.Axes, 'imshow', imshow):
        cb.plot_densities([('d', density)], str(tmp_path / 'f.png'))
    ((ax, image),) = images

    def shown_at(x, y):
        px, py = ax.transData.transform((x, y))
        return image.get_cursor_data(types.SimpleNamespace(x=px, y=py))

    assert shown_at(-3.0, -3.0) == density[0, 0]
    assert shown_at(3.0, -3.0) == density[0, 3]
    assert shown_at(-3.0, 3.0) == density[3, 0]


def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.run(
        [sys.executable, str(REPO / 'bin' / 'toy_experiment.py'), *args],
        capture_output=True, text=True, env=env, timeout=300)


def test_script_end_to_end(tmp_path):
    out = tmp_path / 'toy'
    args = [f'--output_dir={out}', '--iterations=50', '--seeds=1',
            '--dims=2,4', '--steps=2', '--iw_samples=4', '--test_size=100',
            '--init_size=256', '--density_configs=2:2,4:2',
            '--grid_resolution=16', '--grid_iw_samples=2', '--nojit_compile']
    proc = _run_script(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ('results.json', 'table.md', 'fig3.png',
                 'fig2_densities.png', 'config.json',
                 'runs/D2_L2_seed0.json', 'runs/D4_L2_seed0.json',
                 'densities/D2_L2_seed0.npy', 'densities/D4_L2_seed0.npy'):
        assert (out / name).is_file(), name

    def strict(constant):
        raise AssertionError(f'{constant} is not JSON')
    results = json.loads((out / 'results.json').read_text(),
                         parse_constant=strict)
    for run in (out / 'runs').glob('*.json'):
        # One call of 50 iterations has no timed steps: a null rate.
        assert json.loads(run.read_text(), parse_constant=strict)[
            'iterations_per_second'] is None
    assert len(results['runs']) == 2
    assert all(np.isfinite(r['test_log_likelihood']) for r in results['runs'])
    table = (out / 'table.md').read_text()
    assert '| 2 (Glow) |' in table and '(n=1)' in table
    assert (out / 'fig3.png').read_bytes()[:4] == b'\x89PNG'

    # Existing results: refused without --resume, skipped with it.
    proc = _run_script(*args)
    assert proc.returncode != 0
    assert '--resume' in proc.stderr.strip().splitlines()[-1]
    proc = _run_script(*args, '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '2 already done' in proc.stdout
    assert '[1/2]' not in proc.stdout

    # A directory from before --linear_top existed resumes as linear_top
    # off, and refuses runs with it on.
    config = json.loads((out / 'config.json').read_text())
    assert config.pop('linear_top') is False
    (out / 'config.json').write_text(json.dumps(config))
    proc = _run_script(*args, '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run_script(*args, '--resume', '--linear_top')
    assert proc.returncode != 0
    assert '--linear_top=False' in proc.stderr.strip().splitlines()[-1]
    # An unset --scale_fn is the presets' sigmoid: the same setting.
    proc = _run_script(*args, '--resume', '--scale_fn=sigmoid')
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run_script(*args, '--resume', '--scale_fn=tanh')
    assert '--scale_fn=sigmoid' in proc.stderr.strip().splitlines()[-1]
    # Density grids of another resolution would not fit the figure's.
    proc = _run_script(*args, '--resume', '--grid_resolution=32')
    assert proc.returncode != 0
    assert '--grid_resolution=16' in proc.stderr.strip().splitlines()[-1]
    # Nor may one cell mix runs with and without XLA.
    proc = _run_script(*args, '--resume', '--jit_compile')
    assert proc.returncode != 0
    assert '--jit_compile=False' in proc.stderr.strip().splitlines()[-1]

    # A resume that asks for no density panels keeps those drawn before.
    def png_width(path):
        return int.from_bytes(path.read_bytes()[16:20], 'big')
    width = png_width(out / 'fig2_densities.png')
    proc = _run_script(*args[:-4], '--density_configs=', '--resume',
                       *args[-3:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png_width(out / 'fig2_densities.png') == width


def test_script_records_a_diverged_run_and_goes_on(tmp_path):
    out = tmp_path / 'toy'
    # The settings of a first invocation stopped before any run finished
    # bind nothing: this command's replace them.
    (out / 'runs').mkdir(parents=True)
    (out / 'config.json').write_text(json.dumps({'iterations': 100000}))
    proc = _run_script(f'--output_dir={out}', '--iterations=50', '--seeds=2',
                       '--dims=2', '--steps=2', '--test_size=100',
                       '--init_size=256', '--learning_rate=1e6',
                       '--schedule=constant', '--density_configs=2:2',
                       '--grid_resolution=16', '--nojit_compile')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / 'config.json').read_text())['iterations'] == 50
    assert proc.stdout.count(': diverged (') == 2, proc.stdout
    # Said once, at the end, and not as "finished before it was requested".
    assert proc.stdout.count('no density grid for 2:2: its runs '
                             'diverged') == 1, proc.stdout
    results = json.loads((out / 'results.json').read_text())
    assert [r['seed'] for r in results['runs']] == [0, 1]
    assert all(r['test_log_likelihood'] is None and 'non-finite' in
               r['error'] for r in results['runs'])
    assert '| 2 (Glow) | — ± — (n=2) |' in (out / 'table.md').read_text()


@pytest.mark.parametrize('flag, message', [
    ('--dims=3', '--dims values must be among'),
    ('--steps=4', '--steps values must be among'),
    ('--iterations=0', '--iterations must be >= 1'),
    ('--posterior_samples=0', '--posterior_samples must be >= 1'),
    ('--recycle_every=-1', '--recycle_every must be >= 0'),
    ('--recycle_until=1.5', '--recycle_until must be in [0, 1]'),
    ('--density_configs=3:7', "--density_configs entry '3:7': D must be"),
    ('--clip_norm=inf', '--clip_norm must be finite and > 0'),
    ('--learning_rate=inf', '--learning_rate must be finite and > 0'),
    ('--learning_rate=0', '--learning_rate must be finite and > 0'),
    ('--dims=', '--dims values must be among'),
    ('--density_configs=2:7', "--density_configs entry '2:7': D must be"),
    ('--test_size=0', '--test_size must be >= 1'),
    ('--progress_every=0', '--progress_every must be >= 1'),
    # DDI needs a spread of points; a grid of one cell is no image.
    ('--init_size=1', '--init_size must be >= 2'),
    ('--grid_resolution=1', '--grid_resolution must be >= 2'),
    ('--first_seed=2147483644',
     '--first_seed + --seeds - 1 must be <= 2147483647; got 2147483648.'),
])
def test_script_bad_flags(tmp_path, flag, message):
    # --output_dir names a file: a bad flag taken by mistake fails at once
    # at the directory check (with another message) instead of sweeping.
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    proc = _run_script(f'--output_dir={a_file}', flag)
    _assert_one_line_error(proc, 'toy_experiment.py', message)


def test_script_takes_seeds_up_to_the_largest(tmp_path):
    # Seeds 2147483643 .. 2147483647 (the 5 default --seeds) are all valid:
    # the flags pass, and the command stops at the directory check.
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    proc = _run_script(f'--output_dir={a_file}', '--first_seed=2147483643')
    _assert_one_line_error(proc, 'toy_experiment.py',
                           '--output_dir must be a directory; got')


def _toy_script_module():
    # Loaded once, its flags registered alone: score.py, run in this
    # process by other tests, defines --batch_size too.
    return cli_helpers.load_script(str(REPO / 'bin' / 'toy_experiment.py'),
                                   'toy_experiment_script')


# The sweep's settings as bin/toy_experiment.py records them.
_SCRIPT_SETTINGS = dict(iterations=1, batch_size=64, learning_rate=2e-3,
                        schedule='cosine', clip_norm=100.0,
                        gradient_estimator='sticking_the_landing',
                        posterior_samples=8, iw_samples=100, test_size=1000,
                        scale_fn=None)


def test_script_runs_the_seeds_and_grid_samples_asked_for(
        tmp_path, monkeypatch):
    # --first_seed and --seeds pick the seeds run; --grid_iw_samples (not
    # --iw_samples) is the density grid's estimator.
    # pylint: disable-next=import-outside-toplevel
    from absl.testing import flagsaver
    script = _toy_script_module()
    monkeypatch.setattr(script, 'cb', cb)
    seeds, grid_samples = [], []
    real_run, real_grid = cb.run, cb.density_grid

    def run(preset, iterations, seed, *args, **kwargs):
        seeds.append(seed)
        return real_run(preset, iterations, seed, *args, **kwargs)

    def density_grid(model, resolution, **kwargs):
        grid_samples.append(kwargs['num_samples'])
        return real_grid(model, resolution, **kwargs)

    monkeypatch.setattr(cb, 'run', run)
    monkeypatch.setattr(cb, 'density_grid', density_grid)
    out = tmp_path / 'toy'
    # The script quietens TF's logger for its process: later tests in this
    # one look for TF's warnings.
    tf_level = tf.get_logger().level
    try:
        with flagsaver.flagsaver():
            # As app.run calls it: the flags parsed, main given the rest.
            # pylint: disable-next=protected-access
            script.main(script._parse_flags([
                'toy_experiment.py', f'--output_dir={out}', '--iterations=4',
                '--first_seed=3', '--seeds=2', '--dims=4', '--steps=2',
                '--iw_samples=3', '--test_size=20', '--init_size=64',
                '--density_configs=4:2', '--grid_resolution=4',
                '--grid_iw_samples=2', '--nojit_compile']))
    finally:
        tf.get_logger().setLevel(tf_level)
    assert seeds == [3, 4]
    assert grid_samples == [2]
    assert sorted(p.name for p in (out / 'runs').glob('*.json')) == [
        'D4_L2_seed3.json', 'D4_L2_seed4.json']


def test_table_leaves_diverged_cells_out_of_the_comparison():
    script = _toy_script_module()
    settings = dict(_SCRIPT_SETTINGS)

    def cell(mean):
        return dict(mean=mean, std=math.nan, seeds=[0])

    table = script._table({(2, 3): cell(-3.6), (10, 3): cell(math.nan),
                           (2, 5): cell(-3.6), (4, 5): cell(-3.5)}, settings)
    assert 'VFlow better than Glow at equal L: 1 of 1 (D, L) cells' in table
    assert 'Not compared (a diverged run leaves no mean): D=10 L=3' in table
    # A cell is the mean ± the standard deviation over its seeds.
    summary = cb.summarize([dict(dims=2, steps=3, seed=s, iterations=1,
                                 test_log_likelihood=v)
                            for s, v in enumerate([-3.70, -3.60, -3.65])])
    assert '| 2 (Glow) | -3.650 ± 0.050 (n=3) |' in script._table(
        summary, settings)


def test_table_glow_target_is_within_0_06_of_the_paper_s():
    # The paper's 3-step Glow scores -3.67: a mean 0.06 either side of it
    # meets the target, one further off (above or below) does not.
    script = _toy_script_module()
    for mean, verdict in ((-3.62, 'met'), (-3.72, 'met'),
                          (-3.5, 'NOT met'), (-4.5, 'NOT met')):
        table = script._table({(2, 3): dict(mean=mean, std=0.0, seeds=[0])},
                              dict(_SCRIPT_SETTINGS))
        assert (f'* 3-step Glow within 0.06 of -3.67: {mean:.3f} -> '
                f'{verdict}\n') in table + '\n', table


def test_table_vflow_target_is_at_least_minus_3_52():
    # The 3-step 10-dim VFlow meets its target with a mean of -3.52 or
    # more, and misses it below.
    script = _toy_script_module()
    for mean, verdict in ((-3.45, 'met'), (-3.52, 'met'),
                          (-3.53, 'NOT met'), (-3.9, 'NOT met')):
        cell = dict(mean=mean, std=0.0, seeds=[0])
        table = script._table({(10, 3): cell},  # pylint: disable=W0212
                              dict(_SCRIPT_SETTINGS))
        assert (f'* 3-step 10-dim VFlow >= -3.52: {mean:.3f} -> '
                f'{verdict}\n') in table, table


def test_table_a_tie_is_not_vflow_better_than_glow():
    # "Better" is a higher mean: a VFlow cell equal to Glow's at the same
    # L is listed among those that are not.
    script = _toy_script_module()
    summary = {(d, 3): dict(mean=mean, std=math.nan, seeds=[0])
               for d, mean in ((2, -3.6), (4, -3.6), (6, -3.5))}
    table = script._table(summary,  # pylint: disable=protected-access
                          dict(_SCRIPT_SETTINGS))
    assert ('* VFlow better than Glow at equal L: 1 of 2 (D, L) cells '
            '(not: D=4 L=3)\n') in table, table


def _signal_script_in_training(tmp_path, sig):
    """Runs a one-run sweep into `tmp_path` and sends it `sig` once its
    first progress report is out. Returns the command, its environment,
    the exit code and stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    command = [sys.executable, str(REPO / 'bin' / 'toy_experiment.py'),
               f'--output_dir={tmp_path}', '--seeds=1', '--dims=2',
               '--steps=2', '--density_configs=', '--nojit_compile',
               '--progress_every=250', '--iterations=5000', '--test_size=200',
               '--init_size=256']
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.lstrip().startswith('it '):  # training is under way
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert 'Traceback' not in err, err[-3000:]
    return command, env, proc.returncode, err


def test_script_interrupted_goes_on_from_its_checkpoint(tmp_path):
    command, env, code, err = _signal_script_in_training(tmp_path,
                                                         signal.SIGINT)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f'toy_experiment.py: interrupted; the finished runs and the one in '
        f'progress (as of its last report) are in {tmp_path}: rerun the '
        'same command with --resume to go on.')
    checkpoints = tmp_path / 'checkpoints'
    assert os.listdir(checkpoints) == ['D2_L2_seed0']
    # Without --resume the saved run is not started over.
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f'toy_experiment.py: error: 1 of the 1 runs were started before '
        f'(checkpoints in {checkpoints}, e.g. D2_L2_seed0); pass --resume to '
        'go on with them or use another --output_dir.')
    done = subprocess.run(command + ['--resume'], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved_at = int(re.search(r'going on from its checkpoint at iteration '
                             r'(\d+)', done.stdout).group(1))
    assert saved_at >= 250 and saved_at % 250 == 0
    # Training reports start after the checkpoint.
    first = re.search(r'it +(\d+)/5000', done.stdout)
    assert int(first.group(1)) == saved_at + 250
    with open(tmp_path / 'runs' / 'D2_L2_seed0.json') as f:
        assert json.load(f)['iterations'] == 5000
    assert os.listdir(checkpoints) == []


def test_script_stops_for_sigterm_like_ctrl_c(tmp_path):
    # A scheduler's stop: the default SIGTERM would end the sweep without a
    # word; it stops with the interrupt's line and keeps the checkpoint.
    _, _, code, err = _signal_script_in_training(tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f'toy_experiment.py: stopped by SIGTERM; the finished runs and the '
        f'one in progress (as of its last report) are in {tmp_path}: rerun '
        'the same command with --resume to go on.')
    assert os.listdir(tmp_path / 'checkpoints') == ['D2_L2_seed0']
    assert os.listdir(tmp_path / 'runs') == []


def test_script_stops_for_a_ctrl_c_whose_raise_c_code_lost(tmp_path):
    # The handler may run in C's callback (a TF finalizer), which drops its
    # raise: the sweep still stops, at the progress report after the
    # checkpoint it was lost in, with its one line.
    proc = subprocess.run(
        [sys.executable, *lost_signals.python_args_sending_a_sigint(
            'vflow_tfp.experiments.checkerboard:_save_training', 'lost'),
         str(REPO / 'bin' / 'toy_experiment.py'), f'--output_dir={tmp_path}',
         '--seeds=1', '--dims=2', '--steps=2', '--density_configs=',
         '--nojit_compile', '--progress_every=250', '--iterations=1000',
         '--test_size=200', '--init_size=256'],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert '(a SIGINT lost)' in proc.stderr
    assert 'Exception ignored' not in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'toy_experiment.py: interrupted;')
    assert re.findall(r'it +(\d+)/1000', proc.stdout) == ['250']
    assert os.listdir(tmp_path / 'runs') == []
    assert os.listdir(tmp_path / 'checkpoints') == ['D2_L2_seed0']


def test_script_refuses_an_unknown_gradient_estimator(tmp_path):
    proc = _run_script(f'--output_dir={tmp_path}',
                       '--gradient_estimator=score')
    assert proc.returncode != 0
    assert ('--gradient_estimator=score: value should be one of'
            in proc.stderr), proc.stderr


def test_script_needs_output_dir():
    proc = _run_script('--iterations=5')
    assert proc.returncode != 0
    assert '--output_dir is required' in proc.stderr.strip().splitlines()[-1]


def _assert_one_line_error(proc, script, message):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'{script}: error: '), proc.stderr[-3000:]
    assert message in last, proc.stderr[-3000:]


def test_script_without_matplotlib_fails_before_training(tmp_path):
    # matplotlib hidden as if not installed (`pip install -e ".[images]"`):
    # the sweep must say so at once, not after its first run.
    hide = ('import runpy, sys\n'
            'sys.modules["matplotlib"] = None\n'
            'sys.argv = sys.argv[1:]\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")\n')
    out = tmp_path / 'toy'
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    proc = subprocess.run(
        [sys.executable, '-c', hide, str(REPO / 'bin' / 'toy_experiment.py'),
         f'--output_dir={out}', '--iterations=5', '--dims=2', '--steps=2',
         '--seeds=1', '--test_size=16', '--init_size=64', '--iw_samples=2',
         '--density_configs=', '--nojit_compile'],
        capture_output=True, text=True, env=env, timeout=300)
    _assert_one_line_error(proc, 'toy_experiment.py',
                           'pip install -e ".[plots]"')
    assert not (out / 'runs').exists()


def test_script_output_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    proc = _run_script(f'--output_dir={a_file}', '--iterations=5')
    _assert_one_line_error(proc, 'toy_experiment.py',
                           f"--output_dir must be a directory; got "
                           f"'{a_file}', which is a file.")
    proc = _run_script(f'--output_dir={a_file / "sub"}', '--iterations=5')
    _assert_one_line_error(proc, 'toy_experiment.py',
                           '--output_dir must be a directory that can be '
                           'created')


@pytest.mark.parametrize('flag, message', [
    ('--hidden_units=0', "--hidden_units must be comma-separated positive "
                         "integers; got '0'."),
    ('--hidden_units=a,b', "--hidden_units must be comma-separated positive "
                           "integers; got 'a,b'."),
    ('--num_steps=0', 'flag --num_steps=0: 0 is not a positive integer'),
    ('--bogus=1', "Unknown command line flag 'bogus'")])
def test_demo_bad_flags_are_one_line_before_tensorflow_starts(flag, message):
    # As in every script of bin/: TF's start takes seconds and logs lines
    # of its own, and a bad flag needs none of it.
    report = ('import atexit, runpy, sys\n'
              'atexit.register(lambda: print("TensorFlow imported:", '
              '"tensorflow" in sys.modules, file=sys.stderr))\n'
              'sys.argv = sys.argv[1:]\n'
              'runpy.run_path(sys.argv[0], run_name="__main__")\n')
    proc = subprocess.run(
        [sys.executable, '-c', report,
         str(REPO / 'bin' / 'checkerboard_demo.py'), flag],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr[-3000:]
    assert lines[0].startswith('checkerboard_demo.py: error: '), lines
    assert message in lines[0], lines
    assert lines[1] == 'TensorFlow imported: False', lines
    # No usage text (app.UsageError printed all the flags' help first).
    assert proc.stdout == '', proc.stdout


def test_demo_non_finite_loss_is_one_line():
    # A rate of 1e30 sends the weights to ~1e30 in one step.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    proc = subprocess.run(
        [sys.executable, str(REPO / 'bin' / 'checkerboard_demo.py'),
         '--learning_rate=1e30', '--seconds=60', '--max_iterations=20',
         '--test_size=10'],
        capture_output=True, text=True, env=env, timeout=300)
    _assert_one_line_error(
        proc, 'checkerboard_demo.py',
        '; try a lower --learning_rate (now 1e+30).')
    assert 'error: non-finite loss' in proc.stderr, proc.stderr[-3000:]


def test_demo_iteration_budget_is_reproducible():
    # With --seconds=inf the schedule and the stop are by iterations, so the
    # result does not depend on the machine's speed.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(REPO / 'bin' / 'checkerboard_demo.py'),
             '--seconds=inf', '--max_iterations=30', '--test_size=50',
             '--num_steps=2', '--coupling=affine', '--hidden_units=8'],
            capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert 'for 30 iterations.' in proc.stdout, proc.stdout
        assert 'Done: 30 iterations' in proc.stdout, proc.stdout
        outputs.append(re.search(r'Test log-likelihood: (\S+) nats',
                                 proc.stdout)[1])
    assert outputs[0] == outputs[1], outputs


# Runs bin/checkerboard_demo.py on a fake clock, each reading a second
# after the one before, and prints the rate of Adam and the number of
# weights of the flow after the run.
_DEMO_ON_A_FAKE_CLOCK = """
import importlib.util, itertools, sys, types
from absl import app
from vflow_tfp import training
spec = importlib.util.spec_from_file_location('demo', sys.argv[1])
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
clock = itertools.count()
demo.time = types.SimpleNamespace(time=lambda: float(next(clock)))
made, adam = [], training.adam
training.adam = lambda *args: made.append(adam(*args)) or made[-1]
built, build_flow = [], demo.build_flow
demo.build_flow = lambda *args: built.append(build_flow(*args)) or built[-1]
try:
    app.run(demo.main, argv=sys.argv[1:], flags_parser=demo._parse_flags)
finally:
    print('final rate:', float(made[0].learning_rate))
    print('flow weights:', sum(v.shape.num_elements()
                               for v in built[0].trainable_variables))
"""


def _demo_on_a_fake_clock(*flags):
    """Runs bin/checkerboard_demo.py with `flags` on a clock that ticks one
    second a call; returns its output, which ends with the final rate."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    proc = subprocess.run(
        [sys.executable, '-c', _DEMO_ON_A_FAKE_CLOCK,
         str(REPO / 'bin' / 'checkerboard_demo.py'), '--seconds=inf',
         '--learning_rate=0.003', *flags],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_demo_anneals_over_the_iteration_budget_and_reports_its_rate():
    proc = _demo_on_a_fake_clock(
        '--max_iterations=30', '--batch_size=64', '--test_size=50',
        '--num_steps=2', '--coupling=affine', '--hidden_units=8')
    done = re.search(r'Done: (\d+) iterations in (\S+) s \((\S+) points/s\)',
                     proc.stdout)
    assert done, proc.stdout
    iterations, seconds = int(done[1]), float(done[2])
    assert iterations == 30
    # Points (iterations x batch) per second.
    assert int(done[3].replace(',', '')) == round(30 * 64 / seconds), (
        proc.stdout)
    # Annealed linearly to zero over the 30 iterations: the last step,
    # with 29 done, trains at 1/30 of the initial rate.
    rate = float(re.search(r'final rate: (\S+)', proc.stdout)[1])
    assert rate == pytest.approx(0.003 / 30, rel=1e-5), proc.stdout


def test_demo_anneals_down_to_2_percent():
    # --learning_rate's help: annealed linearly towards zero, down to 2% of
    # it. With 59 of 60 iterations done, the linear rate would be 1/60.
    proc = _demo_on_a_fake_clock(
        '--max_iterations=60', '--batch_size=8', '--test_size=10',
        '--num_steps=1', '--coupling=additive', '--hidden_units=4')
    rate = float(re.search(r'final rate: (\S+)', proc.stdout)[1])
    assert rate == pytest.approx(0.003 * 0.02, rel=1e-5), proc.stdout


def test_demo_scores_a_fixed_test_set_against_a_standard_normal():
    # The test set is fixed, whatever --seed: the standard normal's score
    # on it is the same for two seeds, and it is the mean log-density per
    # point, -ln(2 pi) - E|x|^2 / 2 = -ln(2 pi) - 16 / 3 = -7.17 for the
    # board's uniform marginals (1,000 points: within 0.3).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    scores = []
    for seed in (0, 1):
        proc = subprocess.run(
            [sys.executable, str(REPO / 'bin' / 'checkerboard_demo.py'),
             '--seconds=inf', '--max_iterations=1', f'--seed={seed}',
             '--num_steps=1', '--coupling=additive', '--hidden_units=4'],
            capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        scores.append(float(re.search(r'a standard normal scores (\S+)\)',
                                      proc.stdout)[1]))
    assert scores[0] == scores[1], scores
    assert scores[0] == pytest.approx(-math.log(2 * math.pi) - 16 / 3,
                                      abs=0.3)


def _glow():
    return cb.build_model('checkerboard_glow_2', seed=0, init_size=64)[0]


def test_seeds_outside_int32_are_refused():
    # A run's seed is the first int32 word of its stateless seeds: reduced
    # modulo 2**31 - 1, seed 2**31 - 1 would train, draw and evaluate
    # exactly as seed 0.
    model = _glow()
    for seed in (-1, cb.MAX_SEED + 1):
        message = f'seed must be in \\[0, 2147483647\\]; got {seed}\\.'
        with pytest.raises(ValueError, match=message):
            cb.build_model('checkerboard_glow_2', seed=seed, init_size=64)
        with pytest.raises(ValueError, match=message):
            cb.train(model, 1, seed=seed, jit_compile=False)
        with pytest.raises(ValueError, match=message):
            cb.evaluate(model, cb.test_set(4), seed=seed)
    vflow = cb.build_model('checkerboard_vflow_2_4', seed=0, init_size=64)[0]
    points = cb.test_set(8)
    assert not np.array_equal(cb.evaluate(vflow, points, 4, seed=cb.MAX_SEED),
                              cb.evaluate(vflow, points, 4, seed=0))


def test_training_batches_are_keyed_on_the_seed_and_the_step():
    # With a rate of 0 the weights stay put, so each history entry is the
    # mean exact log-likelihood (Glow's ELBO) of that report's batches:
    # step k's batch is drawn from fold_in([seed, 0x5eed], k), and a report
    # averages all the steps since the previous one, weighting each call by
    # its steps (calls of 3 give reports after 6 steps and after a call of 2).
    model = _glow()
    elbos = []
    for step in range(8):
        step_seed = tf.random.experimental.stateless_fold_in(
            tf.constant([5, 0x5eed], tf.int32), step)
        data_seed, model_seed = tf.unstack(
            tfp.random.split_seed(step_seed, 2))
        x = cb.sample_checkerboard_tf(16, data_seed)
        elbos.append(float(tf.reduce_mean(model.elbo(
            x, training=True, seed=model_seed))))
    assert len(set(elbos)) == 8           # a fresh batch every step
    for steps_per_call, reports in ((2, [4, 8]), (3, [6, 8])):
        stats = cb.train(model, 8, seed=5, batch_size=16, learning_rate=0.0,
                         schedule='constant', steps_per_call=steps_per_call,
                         progress_every=4, jit_compile=False)
        assert [s for s, _ in stats['history']] == reports
        np.testing.assert_allclose(
            [e for _, e in stats['history']],
            [np.mean(elbos[:reports[0]]), np.mean(elbos[reports[0]:])],
            rtol=1e-5, err_msg=f'steps_per_call={steps_per_call}')
        assert stats['final_train_elbo'] == stats['history'][-1][1]


def test_each_step_trains_on_the_recipe_s_bound():
    # The estimator and the draws per point reach the model's ELBO (the
    # recipe's numbers depend on both), in every step.
    model = cb.build_model('checkerboard_vflow_3_4', seed=0,
                           init_size=256)[0]
    calls = []
    real_elbo = model.elbo

    def elbo(x, **kwargs):
        calls.append(kwargs)
        return real_elbo(x, **kwargs)

    with mock.patch.object(model, 'elbo', elbo):
        cb.train(model, 2, seed=0, gradient_estimator='reparameterization',
                 posterior_samples=3, steps_per_call=1, jit_compile=False)
    assert calls and all(
        c['gradient_estimator'] == 'reparameterization'
        and c['draws_per_row'] == 3 and c['training'] for c in calls)


def test_glow_ignores_posterior_samples(tmp_path):
    # Glow has no z: `posterior_samples` changes nothing, neither the
    # training (the same history, to the bit) nor which checkpoint a run
    # may go on from.
    kwargs = dict(seed=0, steps_per_call=2, progress_every=2,
                  jit_compile=False)
    one = cb.train(_glow(), 4, posterior_samples=1, **kwargs)
    eight = cb.train(_glow(), 4, posterior_samples=8, **kwargs)
    assert eight['history'] == one['history']

    def stop_at_2(info):
        if info['iteration'] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.train(_glow(), 4, posterior_samples=8, progress=stop_at_2,
                 checkpoint_dir=str(tmp_path), **kwargs)
    resumed = cb.train(_glow(), 4, posterior_samples=1,
                       checkpoint_dir=str(tmp_path), **kwargs)
    assert resumed['history'] == one['history']


def test_gradients_are_clipped_to_the_global_norm():
    # Adam's step is about lr * g / (|g| + 1e-7): with the gradient clipped
    # to a norm of 1e-12 no weight moves by more than lr * 1e-5; unclipped
    # they move by about lr per step.
    def moved(clip_norm):
        model = _glow()
        before = [v.numpy().copy() for v in model.trainable_variables]
        cb.train(model, 3, seed=0, learning_rate=1e-2, schedule='constant',
                 clip_norm=clip_norm, steps_per_call=3, jit_compile=False)
        return max(float(np.max(np.abs(v.numpy() - b)))
                   for v, b in zip(model.trainable_variables, before))

    assert moved(1e-12) < 1e-6
    assert moved(100.0) > 1e-3


def test_recycling_passes_up_to_recycle_until_and_not_at_the_end():
    # Passes at every multiple of recycle_every up to and including
    # recycle_until * iterations, but none after the last step (it would
    # change the trained model without training it).
    for until, steps in ((0.5, [10, 20]), (1.0, [10, 20, 30])):
        stats = cb.train(_glow(), 40, seed=0, recycle_every=10,
                         recycle_until=until, recycle_batch_size=256,
                         steps_per_call=10, jit_compile=False)
        assert [s for s, _ in stats['recycled_units']] == steps, until


def test_the_init_batch_depends_on_the_seed_and_has_init_size_points():
    # `init_size`: points of the data-dependent init batch, drawn from the
    # model's seed.
    drawn = []
    real = data_lib.sample_checkerboard

    def spy(num_samples, seed=None):
        drawn.append(real(num_samples, seed=seed))
        return drawn[-1]

    with mock.patch.object(cb.data_lib, 'sample_checkerboard', spy):
        cb.build_model('checkerboard_glow_2', seed=1, init_size=64)
        cb.build_model('checkerboard_glow_2', seed=2, init_size=64)
        cb.build_model('checkerboard_glow_2', seed=1, init_size=48)
    assert [d.shape for d in drawn] == [(64, 2), (64, 2), (48, 2)]
    assert not np.array_equal(drawn[0], drawn[1])


def test_a_failed_state_write_keeps_the_previous_checkpoint(tmp_path):
    # The state file names the checkpoint: a write that fails half-way must
    # leave the previous state (and its checkpoint) readable.
    directory = str(tmp_path)
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    first = dict(run_key={}, done=5, history=[[5, -4.0]], recycled=[],
                 seconds=1.0)
    # pylint: disable-next=protected-access
    cb._save_training(checkpoint, directory, first)
    real_dump = json.dump

    def half_then_fail(obj, f, **kwargs):
        f.write(json.dumps(obj, **kwargs)[:10])
        raise OSError('disk full')

    with mock.patch.object(cb.json, 'dump', half_then_fail):
        with pytest.raises(OSError, match='disk full'):
            # pylint: disable-next=protected-access
            cb._save_training(checkpoint, directory, dict(first, done=10))
    assert json.dump is real_dump
    assert cb.checkpointed_iteration(directory) == 5
    with open(os.path.join(directory, 'training_state.json')) as f:
        assert json.load(f) == dict(first, checkpoint='step-5')
    assert os.path.exists(os.path.join(directory, 'step-5.index'))


def test_evaluate_is_model_log_prob_batch_by_batch():
    # Batch i of the points is scored with `model.log_prob` and the seed
    # [seed, i]; each (num_samples, chunk_size) gets its own function.
    model = cb.build_model('checkerboard_vflow_2_4', seed=0, init_size=64)[0]
    points = cb.test_set(6)
    for samples in (6, 4):   # the same chunk_size (3) both times
        got = cb.evaluate(model, points, samples, seed=7, batch_size=4,
                          chunk_size=3)
        want = np.concatenate([
            model.log_prob(tf.constant(points[:4]), samples, chunk_size=3,
                           seed=tf.constant([7, 0])).numpy(),
            model.log_prob(tf.constant(points[4:]), samples, chunk_size=3,
                           seed=tf.constant([7, 1])).numpy()])
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=samples)


def test_histogram_density_is_normalised():
    # Fig. 2's data panel is a density, comparable with the models'
    # exp(log-density): it integrates to 1 over [-4, 4]^2. On a 4x4 grid
    # the cells are the board's 2x2 squares: half of them hold density
    # 1/32 (the true one), the other half nothing.
    hist = cb.histogram_density(num_samples=20_000, resolution=4)
    cell_area = (2 * cb.EXTENT / 4) ** 2
    assert hist.sum() * cell_area == pytest.approx(1.0)
    np.testing.assert_allclose(np.sort(hist.ravel())[8:], 1 / 32, rtol=0.1)
    np.testing.assert_array_equal(np.sort(hist.ravel())[:8], 0)


def test_density_grid_uses_its_importance_samples():
    # The grid is `evaluate` of the grid points with the `num_samples`
    # asked for (bin/toy_experiment.py's --grid_iw_samples), not the
    # default 100.
    model = cb.build_model('checkerboard_vflow_2_4', seed=0, init_size=64)[0]
    _, points = cb.grid_points(2)
    got = cb.density_grid(model, 2, num_samples=3, seed=5)
    want = cb.evaluate(model, points, 3, seed=5, batch_size=2048,
                       chunk_size=25).reshape(2, 2)
    np.testing.assert_array_equal(got, want)


def test_run_scores_the_initialised_model_as_asked():
    # `init_size` points initialise the model and `init_test_log_likelihood`
    # is the same `iw_samples` bound as the final figure: with no training
    # step the two agree, and the init ELBO is that of `build_model`.
    points = cb.test_set(8)
    result, model = cb.run('checkerboard_vflow_2_4', 0, seed=3,
                           test_points=points, iw_samples=3, init_size=64,
                           jit_compile=False, return_model=True)
    assert result['init_test_log_likelihood'] == result['test_log_likelihood']
    assert result['test_log_likelihood'] == np.mean(
        cb.evaluate(model, points, 3, seed=3))
    assert result['init_elbo'] == cb.build_model(
        'checkerboard_vflow_2_4', seed=3, init_size=64)[1]


def test_grid_points_are_cell_centres_in_image_order():
    centres, points = cb.grid_points(4, 4.0)
    np.testing.assert_array_equal(centres, [-3.0, -1.0, 1.0, 3.0])
    assert points.shape == (16, 2) and points.dtype == np.float32
    # Row-major image order: the row index is y, the column index x.
    image = points.reshape(4, 4, 2)
    np.testing.assert_array_equal(image[0, :, 0], [-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_array_equal(image[0, :, 1], [-3.0] * 4)
    np.testing.assert_array_equal(image[:, 0, 1], [-3.0, -1.0, 1.0, 3.0])


def test_script_a_run_in_progress_binds_the_settings(tmp_path):
    # A checkpoint without any finished run is a started run: its
    # directory's settings are compared, not overwritten.
    (tmp_path / 'checkpoints' / 'D2_L2_seed0').mkdir(parents=True)
    (tmp_path / 'config.json').write_text(json.dumps({'iterations': 7}))
    proc = _run_script(f'--output_dir={tmp_path}', '--iterations=5',
                       '--dims=2', '--steps=2', '--seeds=1')
    _assert_one_line_error(proc, 'toy_experiment.py',
                           'holds runs with other settings (--iterations=7')
    assert json.loads((tmp_path / 'config.json').read_text()) == {
        'iterations': 7}


def _fig2_panels(tmp_path, monkeypatch, run, grids, configs):
    """The (title, density) panels the script's Fig. 2 would draw for the
    run result `run` (a dict) and the log-density grids `grids` (file name
    to [4, 4] array) in `tmp_path`, with `configs` its (D, L) pairs."""
    script = _toy_script_module()
    monkeypatch.setattr(script, 'cb', cb)
    monkeypatch.setattr(script, '_GRID', types.SimpleNamespace(value=4))
    panels = []
    monkeypatch.setattr(cb, 'plot_densities',
                        lambda p, path, **kwargs: panels.extend(p))
    monkeypatch.setattr(cb, 'plot_log_likelihood_vs_steps',
                        lambda *args, **kwargs: None)
    for sub in ('runs', 'densities'):
        (tmp_path / sub).mkdir()
    name = f"D{run['dims']}_L{run['steps']}_seed{run['seed']}.json"
    (tmp_path / 'runs' / name).write_text(json.dumps(run))
    for name, log_p in grids.items():
        np.save(tmp_path / 'densities' / name, log_p)
    # pylint: disable-next=protected-access
    script._write_outputs(str(tmp_path), dict(_SCRIPT_SETTINGS), configs)
    return panels


def test_script_density_panels_are_densities(tmp_path, monkeypatch):
    # Fig. 2 shows the data histogram and exp(log-density) of each grid.
    log_p = np.log(np.arange(1.0, 17.0).reshape(4, 4) / 136.0)
    panels = _fig2_panels(
        tmp_path, monkeypatch,
        dict(dims=2, steps=3, seed=0, iterations=1, test_log_likelihood=-3.6),
        {'D2_L3_seed0.npy': log_p}, [(2, 3)])
    assert [title for title, _ in panels] == ['data',
                                              'Glow L=3\ntest LL -3.600']
    np.testing.assert_allclose(panels[0][1], cb.histogram_density(
        resolution=4))
    np.testing.assert_allclose(panels[1][1], np.exp(log_p))


def test_script_writes_its_table_atomically(tmp_path, monkeypatch):
    # A reader, or a sweep killed while writing, never sees half a table:
    # table.md is written as results.json is.
    script = _toy_script_module()
    monkeypatch.setattr(script, 'cb', cb)
    monkeypatch.setattr(script, '_GRID', types.SimpleNamespace(value=4))
    monkeypatch.setattr(cb, 'plot_densities', lambda *args, **kwargs: None)
    monkeypatch.setattr(cb, 'plot_log_likelihood_vs_steps',
                        lambda *args, **kwargs: None)
    written = []
    atomic_write = script._atomic_write  # pylint: disable=protected-access

    def recording(path, mode='w'):
        written.append(os.path.basename(path))
        return atomic_write(path, mode)

    monkeypatch.setattr(script, '_atomic_write', recording)
    for sub in ('runs', 'densities'):
        (tmp_path / sub).mkdir()
    run = dict(dims=2, steps=3, seed=0, iterations=1,
               test_log_likelihood=-3.6)
    (tmp_path / 'runs' / 'D2_L3_seed0.json').write_text(json.dumps(run))
    settings = dict(_SCRIPT_SETTINGS)
    # pylint: disable-next=protected-access
    script._write_outputs(str(tmp_path), settings, [])
    assert written == ['results.json', 'table.md']
    # pylint: disable-next=protected-access
    assert (tmp_path / 'table.md').read_text() == script._table(
        cb.summarize([run]), settings)


def test_script_a_failed_density_grid_write_leaves_no_grid(
        tmp_path, monkeypatch):
    # Every later --resume takes an existing grid file as done: a write
    # that fails half-way must leave none. The run itself is faked.
    script = _toy_script_module()
    out = tmp_path / 'toy'
    result = dict(dims=2, steps=2, seed=0, iterations=1,
                  test_log_likelihood=-3.6, test_log_likelihood_sem=0.01,
                  init_test_log_likelihood=-4.0, train_seconds=0.0,
                  iterations_per_second=float('nan'))
    monkeypatch.setattr(cb, 'run', lambda *args, **kwargs: (result, None))
    monkeypatch.setattr(cb, 'density_grid',
                        lambda *args, **kwargs: np.zeros([2, 2]))

    def half_then_fail(f, array, *args, **kwargs):
        f.write(b'\x93NUMPY')
        raise OSError('disk full')

    monkeypatch.setattr(np, 'save', half_then_fail)
    level = tf.get_logger().level
    try:
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            argv = flags.FLAGS([
                'toy_experiment.py', f'--output_dir={out}', '--iterations=1',
                '--seeds=1', '--dims=2', '--steps=2', '--test_size=4',
                '--density_configs=2:2', '--grid_resolution=2'])
            with pytest.raises(OSError, match='disk full'), \
                    contextlib.ExitStack() as stack:
                script._sweep(argv, stack)  # pylint: disable=protected-access
    finally:
        tf.get_logger().setLevel(level)
    assert os.listdir(out / 'densities') == []


def test_run_trains_with_the_settings_it_is_given():
    # `run`'s training settings are "as in `train`": each reaches the
    # training, none is left at `train`'s default.
    settings = dict(batch_size=16, learning_rate=1e-2, schedule='linear',
                    clip_norm=0.5, gradient_estimator='reparameterization',
                    posterior_samples=3, recycle_every=2, recycle_until=0.5,
                    steps_per_call=2, progress_every=4, jit_compile=False)
    calls = []
    real_train = cb.train

    def train(model, iterations, seed, **kwargs):
        calls.append(kwargs)
        return real_train(model, iterations, seed, **kwargs)

    with mock.patch.object(cb, 'train', train):
        result = cb.run('checkerboard_vflow_2_4', 4, seed=0,
                        test_points=cb.test_set(4), iw_samples=2,
                        init_size=64, **settings)
    (kwargs,) = calls
    for name, value in settings.items():
        assert kwargs.get(name) == value, name
        assert result.get(name, value) == value, name


def test_progress_reports_the_scheduled_learning_rate():
    # A report's `learning_rate` is the schedule's, not the peak: with a
    # linear decay from 1e-2 over 4 steps, the rate its last step took.
    reports = []
    cb.train(_glow(), 4, seed=0, learning_rate=1e-2, schedule='linear',
             steps_per_call=1, progress_every=1, jit_compile=False,
             progress=reports.append)
    np.testing.assert_allclose([r['learning_rate'] for r in reports],
                               [1e-2, 7.5e-3, 5e-3, 2.5e-3], rtol=1e-6)


def _ticking_clock():
    """A stand-in for `cb.time` whose `perf_counter` reads one second after
    its previous reading (from 0)."""
    ticks = iter(range(10**6))
    return types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))


def test_train_times_the_calls_after_the_first_and_the_earlier_sessions(
        tmp_path):
    # `iterations_per_second` leaves out the first call (it traces): on a
    # clock reading start, end of call 1, end of call 2 and end, calls of 2
    # steps give 2 steps in the 1 s from the end of call 1 to the end.
    with mock.patch.object(cb, 'time', _ticking_clock()):
        stats = cb.train(_glow(), 4, seed=0, steps_per_call=2,
                         progress_every=100, jit_compile=False)
    assert stats['iterations_per_second'] == 2.0

    # A run resumed from a checkpoint counts the interrupted session's
    # seconds, in its reports as in its result (the seconds of the run).
    def stop_at_2(info):
        if info['iteration'] == 2:
            raise KeyboardInterrupt

    kwargs = dict(seed=0, steps_per_call=2, progress_every=2,
                  jit_compile=False, checkpoint_dir=str(tmp_path))
    with mock.patch.object(cb, 'time', _ticking_clock()), \
            pytest.raises(KeyboardInterrupt):
        cb.train(_glow(), 4, progress=stop_at_2, **kwargs)
    with open(tmp_path / 'training_state.json') as f:
        earlier = json.load(f)['seconds']
    assert earlier > 0
    reports = []
    with mock.patch.object(cb, 'time', _ticking_clock()):
        resumed = cb.train(_glow(), 4, progress=reports.append, **kwargs)
    assert [r['iteration'] for r in reports] == [4]
    assert reports[0]['seconds'] > earlier
    assert resumed['seconds'] >= reports[0]['seconds']


def test_summarize_lists_the_distinct_iteration_counts_sorted():
    runs = [dict(dims=2, steps=3, seed=s, iterations=n,
                 test_log_likelihood=-3.6) for s, n in enumerate([10, 5, 10])]
    assert cb.summarize(runs)[(2, 3)]['iterations'] == [5, 10]


def test_histogram_density_rows_are_y():
    # Rows = y, columns = x (as `grid_points` and `plot_densities`): all
    # points at (x, y) = (-3, 3) fall in the last row's first column.
    def one_corner(num_samples, seed=None):
        del seed
        return np.tile(np.float32([[-3.0, 3.0]]), [num_samples, 1])

    with mock.patch.object(cb.data_lib, 'sample_checkerboard', one_corner):
        hist = cb.histogram_density(num_samples=10, resolution=4)
    assert hist[3, 0] > 0
    assert np.count_nonzero(hist) == 1


def test_evaluate_takes_its_chunk_size_each_call():
    # The draws per pass decide which draws a pass takes: each
    # (num_samples, chunk_size) gets its own function, also for the same
    # num_samples.
    model = cb.build_model('checkerboard_vflow_2_4', seed=0, init_size=64)[0]
    points = cb.test_set(6)
    for chunk in (3, 2):
        got = cb.evaluate(model, points, 6, seed=7, chunk_size=chunk)
        want = model.log_prob(tf.constant(points), 6, chunk_size=chunk,
                              seed=tf.constant([7, 0])).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=chunk)


def test_evaluate_of_no_points_is_empty():
    # `[N]` for N = 0 too (an empty grid or test set).
    scores = cb.evaluate(_glow(), np.zeros([0, 2], np.float32))
    assert scores.shape == (0,)


def test_fig3_draws_the_true_log_likelihood(tmp_path):
    # Fig. 3's reference line: the true density's -ln 32, what every cell
    # is compared with.
    import matplotlib.axes  # pylint: disable=import-outside-toplevel
    levels = []
    real = matplotlib.axes.Axes.axhline

    def axhline(ax, y=0, *args, **kwargs):
        levels.append(y)
        return real(ax, y, *args, **kwargs)

    summary = {(2, 3): dict(mean=-3.7, std=0.01, seeds=[0, 1])}
    with mock.patch.object(matplotlib.axes.Axes, 'axhline', axhline):
        cb.plot_log_likelihood_vs_steps(summary, str(tmp_path / 'f.png'))
    assert levels == [pytest.approx(-math.log(32.0))]


def test_demo_reports_every_10_s_of_an_iteration_budget_and_its_size():
    # Over an iteration budget (--seconds=inf) a report every 10 s of the
    # (fake) clock, and the header counts the flow's weights.
    proc = _demo_on_a_fake_clock(
        '--max_iterations=30', '--batch_size=8', '--test_size=10',
        '--num_steps=2', '--coupling=affine', '--hidden_units=4')
    times = [float(t) for t in re.findall(r'iter +\d+ +(\S+) s', proc.stdout)]
    assert len(times) >= 2, proc.stdout
    assert min(np.diff(times)) >= 10.0, proc.stdout
    header = re.search(r'\((\S+) parameters\)', proc.stdout)
    weights = re.search(r'flow weights: (\d+)', proc.stdout)
    assert header and weights, proc.stdout
    assert int(header[1].replace(',', '')) == int(weights[1]), proc.stdout


def test_demo_trains_no_step_once_its_time_budget_is_spent():
    # --seconds is the training budget: once a clock reading shows it spent
    # (here exactly 20 s, on the fake clock), no further step is taken;
    # that reading's report is the last.
    proc = _demo_on_a_fake_clock(
        '--seconds=20', '--max_iterations=1000', '--batch_size=8',
        '--test_size=10', '--num_steps=1', '--coupling=additive',
        '--hidden_units=4')
    times = [float(t) for t in re.findall(r'iter +\d+ +(\S+) s', proc.stdout)]
    assert times and times[-1] == 20.0, proc.stdout


@pytest.mark.parametrize('flag, message', [
    ('--batch_size=0', '--batch_size must be >= 1; got 0.'),
    ('--iw_samples=0', '--iw_samples must be >= 1; got 0.'),
    ('--grid_iw_samples=0', '--grid_iw_samples must be >= 1; got 0.'),
    ('--seeds=0', '--seeds must be >= 1; got 0.'),
    ('--first_seed=-1', '--first_seed must be >= 0; got -1.'),
    ('--clip_norm=0', '--clip_norm must be finite and > 0; got 0.0.'),
    ('--recycle_until=-0.5', '--recycle_until must be in [0, 1]; got -0.5.'),
    # D is checked as L is (L alone valid here).
    ('--density_configs=3:3', "--density_configs entry '3:3': D must be"),
    # A stray word (a flag missing its --) is refused, not ignored.
    ('iterations=5', "unexpected arguments ['iterations=5']."),
])
def test_script_refuses_every_setting_out_of_its_range(tmp_path, flag,
                                                       message):
    # As test_script_bad_flags: each count and setting a run needs is
    # checked with the flags, either end of its range, before the
    # directory check (--output_dir names a file).
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    proc = _run_script(f'--output_dir={a_file}', flag)
    _assert_one_line_error(proc, 'toy_experiment.py', message)


@pytest.mark.parametrize('until', ['0', '1'])
def test_script_takes_recycle_until_at_either_end(tmp_path, until):
    # --recycle_until is a fraction in [0, 1], both ends included: the flags
    # pass, and the command stops at the directory check.
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    proc = _run_script(f'--output_dir={a_file}', '--recycle_every=10',
                       f'--recycle_until={until}')
    _assert_one_line_error(proc, 'toy_experiment.py',
                           '--output_dir must be a directory; got')


def test_table_names_a_recycling_cut_off_only_before_the_end():
    # --recycle_until is the fraction of the run after which no recycling
    # happens: the table's note names it when recycling stops early, and
    # not when it goes on to the end (1, the default).
    script = _toy_script_module()
    cell = {(2, 3): dict(mean=-3.6, std=0.0, seeds=[0])}
    for until, note in (
            (0.5, ', dead ReLU units recycled every 100 steps up to 0.5 of '
                  'the run. '),
            (1.0, ', dead ReLU units recycled every 100 steps. ')):
        settings = dict(_SCRIPT_SETTINGS, recycle_every=100,
                        recycle_until=until)
        table = script._table(cell, settings)  # pylint: disable=W0212
        assert note in table, table


def test_script_runs_each_cell_once_seed_by_seed_cheap_cells_first(
        tmp_path, monkeypatch, capsys):
    # Every D in --dims and L in --steps once, whatever their order or
    # repeats on the command line; seed by seed, and within a seed the
    # cells from the fewest steps and dimensions up, so that an interrupted
    # sweep has every cell of its first seeds. (Runs faked: each diverges
    # at once, and the summary outputs are skipped.)
    calls = []

    def run(preset, iterations, seed, *args, **kwargs):
        del iterations, args, kwargs
        calls.append((preset, seed))
        raise FloatingPointError('non-finite loss (faked)')

    _faked_sweep(tmp_path, monkeypatch, run, '--iterations=4', '--seeds=2',
                 '--dims=4,2,4', '--steps=3,2')
    assert calls == [(cb.preset_name(d, s), seed) for seed in (0, 1)
                     for s in (2, 3) for d in (2, 4)]
    out = capsys.readouterr().out
    assert 'Checkerboard sweep: 8 runs (D [2, 4], L [2, 3], seeds [0, 1])' \
        in out, out
    assert '[8/8]' in out and '[9/' not in out, out


@contextlib.contextmanager
def _axes_calls(method):
    """Records the calls of `matplotlib.axes.Axes.<method>` made inside the
    block, as `(axes, args, kwargs, result)`; the real method still runs."""
    import matplotlib.axes  # pylint: disable=import-outside-toplevel
    calls = []
    real = getattr(matplotlib.axes.Axes, method)

    def recording(ax, *args, **kwargs):
        calls.append((ax, args, kwargs, real(ax, *args, **kwargs)))
        return calls[-1][3]

    with mock.patch.object(matplotlib.axes.Axes, method, recording):
        yield calls


def test_fig3_has_the_title_asked_for(tmp_path):
    # `title`: the figure's optional title (the sweep names its iterations
    # and seeds there); without one, none is set.
    summary = {(2, 3): dict(mean=-3.7, std=0.01, seeds=[0, 1])}
    with _axes_calls('set_title') as calls:
        cb.plot_log_likelihood_vs_steps(summary, str(tmp_path / 'f.png'),
                                        title='100 iterations, 2 seeds')
    assert [args[0] for _, args, _, _ in calls] == [
        '100 iterations, 2 seeds']
    with _axes_calls('set_title') as calls:
        cb.plot_log_likelihood_vs_steps(summary, str(tmp_path / 'g.png'))
    assert not calls


def test_fig2_spans_the_extent_asked_for_with_the_panels_titles(tmp_path):
    # `extent` is the half-width of the square each density covers: with
    # extent 2 the image spans [-2, 2]^2, so row 0 is drawn at y = -2 and
    # the last column at x = 2. Each panel carries its title.
    density = np.arange(16.0).reshape(4, 4)
    with _axes_calls('imshow') as calls:
        cb.plot_densities([('data', density), ('model', density + 1)],
                          str(tmp_path / 'f.png'), extent=2.0)
    assert [ax.get_title() for ax, _, _, _ in calls] == ['data', 'model']
    for _, _, _, image in calls:
        assert tuple(image.get_extent()) == (-2.0, 2.0, -2.0, 2.0)


def test_table_states_the_settings_of_its_runs():
    # The table's header says how its numbers were obtained: each setting
    # of the sweep with its own value.
    script = _toy_script_module()
    settings = dict(_SCRIPT_SETTINGS, iterations=123, batch_size=17,
                    learning_rate=0.005, schedule='linear', clip_norm=7.0,
                    gradient_estimator='reparameterization',
                    posterior_samples=3, iw_samples=11, test_size=999,
                    scale_fn='tanh')
    table = script._table(  # pylint: disable=W0212
        {(2, 3): dict(mean=-3.6, std=0.0, seeds=[0])}, settings)
    assert ('on 999 fixed test points; 123 iterations per run, batch 17, '
            'Adam lr 0.005 (linear), grad clip 7, VFlow ELBO gradient '
            'reparameterization with 3 z draw(s) per training point, VFlow '
            'likelihood by 11-sample importance weighting; scale_fn tanh. '
            ) in table, table


def test_evaluate_scores_each_model_with_its_own_likelihood():
    # Two models scored with the same settings in one process: each gets
    # its own log-likelihood, not the first one's. Glow's is exact, and
    # scored with one "sample" whatever `num_samples` says.
    points = cb.test_set(6)
    for seed in (0, 1):
        model = cb.build_model('checkerboard_glow_2', seed=seed,
                               init_size=64)[0]
        asked = []
        real_log_prob = model.log_prob

        def log_prob(x, num_samples, real_log_prob=real_log_prob,
                     asked=asked, **kwargs):
            asked.append(num_samples)
            return real_log_prob(x, num_samples, **kwargs)

        with mock.patch.object(model, 'log_prob', log_prob):
            got = cb.evaluate(model, points, num_samples=5, seed=0)
        assert asked and set(asked) == {1}, asked
        np.testing.assert_allclose(
            got, real_log_prob(tf.constant(points), 1,
                               seed=tf.constant([0, 0])).numpy(),
            rtol=1e-6, err_msg=seed)


def _script_outputs_of(tmp_path, monkeypatch, runs, density_configs=(),
                       final=False):
    """Runs bin/toy_experiment.py's `_write_outputs` on the result files
    `runs` (dicts, written to tmp_path/runs) with the figures faked;
    returns the keyword arguments of its Fig. 3 call."""
    script = _toy_script_module()
    monkeypatch.setattr(script, 'cb', cb)
    monkeypatch.setattr(script, '_GRID', types.SimpleNamespace(value=4))
    fig3 = []
    monkeypatch.setattr(cb, 'plot_densities', lambda *args, **kwargs: None)
    monkeypatch.setattr(cb, 'plot_log_likelihood_vs_steps',
                        lambda *args, **kwargs: fig3.append(kwargs))
    for sub in ('runs', 'densities'):
        (tmp_path / sub).mkdir()
    for run in runs:
        name = f'D{run["dims"]}_L{run["steps"]}_seed{run["seed"]}.json'
        (tmp_path / 'runs' / name).write_text(json.dumps(run))
    script._write_outputs(  # pylint: disable=W0212
        str(tmp_path), dict(_SCRIPT_SETTINGS), list(density_configs),
        final=final)
    (kwargs,) = fig3
    return kwargs


def test_script_says_why_a_cell_has_no_density_grid(
        tmp_path, monkeypatch, capsys):
    # A requested cell without a grid at the end: "its runs diverged" only
    # when all of them did; with one that finished, the grid is missing
    # because the cell was asked for after its runs.
    _script_outputs_of(tmp_path, monkeypatch, [
        dict(dims=2, steps=3, seed=seed, iterations=1,
             test_log_likelihood=value)
        for seed, value in ((0, None), (1, -3.6))], [(2, 3)], final=True)
    assert capsys.readouterr().out == (
        '    no density grid for 2:3: its runs finished before it was '
        'requested (use a new --output_dir)\n')


def test_script_fig3_title_counts_the_seeds_of_its_fullest_cell(
        tmp_path, monkeypatch):
    # Fig. 3's title: the iterations per run and "up to" the most seeds a
    # cell has (here 2 for Glow, 1 for VFlow).
    kwargs = _script_outputs_of(tmp_path, monkeypatch, [
        dict(dims=d, steps=3, seed=seed, iterations=1,
             test_log_likelihood=-3.6)
        for d, seed in ((2, 0), (2, 1), (4, 0))])
    assert kwargs['title'] == 'checkerboard, 1 iterations, up to 2 seeds'


def test_an_infinite_loss_stops_training():
    # "FloatingPointError: if the loss becomes non-finite": an ELBO of -inf
    # (a loss of +inf) stops the run as a NaN does.
    model = _glow()
    real_elbo = model.elbo

    def elbo(x, **kwargs):
        return real_elbo(x, **kwargs) + float('-inf')

    with mock.patch.object(model, 'elbo', elbo):
        with pytest.raises(FloatingPointError, match='non-finite training '
                           'ELBO -inf near iteration 1 '):
            cb.train(model, 2, seed=0, steps_per_call=1, jit_compile=False)


def test_script_a_started_directory_binds_every_setting(tmp_path, capsys):
    # config.json binds a directory with a run started to every setting of
    # the sweep: a command changing any one is refused, naming it with the
    # directory's value. A setting added after the first sweeps and missing
    # from an old config.json is the value those sweeps used (the default):
    # such a directory goes on with the default flags. (Each command stops
    # before TensorFlow: the run in progress needs --resume.)
    script = _toy_script_module()
    (tmp_path / 'checkpoints' / 'D2_L2_seed0').mkdir(parents=True)
    command = ['toy_experiment.py', f'--output_dir={tmp_path}', '--dims=2',
               '--steps=2', '--seeds=1']

    def last_error(*args):
        with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_:
            # pylint: disable-next=W0212
            script.main(script._parse_flags([*command, *args]))
        assert exit_.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    with flagsaver.flagsaver():
        script._parse_flags(command)  # pylint: disable=W0212
        settings = script._settings()  # pylint: disable=W0212
    later = ('linear_top', 'recycle_every', 'recycle_until',
             'grid_resolution', 'grid_iw_samples', 'jit_compile')
    (tmp_path / 'config.json').write_text(json.dumps(
        {k: v for k, v in settings.items() if k not in later}))
    assert 'runs were started before' in last_error()
    (tmp_path / 'config.json').write_text(json.dumps(settings))
    for flag in ('--iterations=7', '--batch_size=32', '--learning_rate=0.001',
                 '--schedule=linear', '--clip_norm=1',
                 '--gradient_estimator=reparameterization',
                 '--posterior_samples=4', '--iw_samples=10',
                 '--test_size=10', '--init_size=64', '--scale_fn=tanh',
                 '--linear_top', '--recycle_every=10',
                 '--recycle_until=0.5', '--grid_resolution=16',
                 '--grid_iw_samples=10', '--nojit_compile'):
        name = flag[2:].split('=')[0].removeprefix('no')
        assert (f'holds runs with other settings (--{name}='
                f'{settings[name] if name != "scale_fn" else "sigmoid"}); '
                ) in last_error(flag), flag


def test_script_results_json_summarises_each_cell(tmp_path, monkeypatch):
    # results.json's summary: one entry per (D, L) cell with its mean and
    # std over seeds, as `summarize` gives them.
    runs = [dict(dims=d, steps=3, seed=seed, iterations=1,
                 test_log_likelihood=value)
            for d, seed, value in ((2, 0, -3.7), (2, 1, -3.6), (4, 0, -3.5))]
    _script_outputs_of(tmp_path, monkeypatch, runs)
    summary = json.loads((tmp_path / 'results.json').read_text())['summary']
    assert [(c['dims'], c['steps'], c['seeds']) for c in summary] == [
        (2, 3, [0, 1]), (4, 3, [0])]
    assert summary[0]['mean'] == pytest.approx(-3.65)
    assert summary[1]['mean'] == pytest.approx(-3.5)


def _faked_sweep(tmp_path, monkeypatch, run, *args):
    """Runs bin/toy_experiment.py's `main` in this process with `cb.run`
    replaced by `run` and the summary outputs skipped, on one Glow cell
    (--dims=2 --steps=2 --seeds=1) unless `args` (given after those, so
    they win) name others."""
    script = _toy_script_module()
    monkeypatch.setattr(cb, 'run', run)
    monkeypatch.setattr(script, '_write_outputs', lambda *a, **k: None)
    tf_level = tf.get_logger().level
    try:
        with flagsaver.flagsaver():
            script.main(script._parse_flags([  # pylint: disable=W0212
                'toy_experiment.py', f'--output_dir={tmp_path / "toy"}',
                '--seeds=1', '--dims=2', '--steps=2', '--test_size=20',
                '--density_configs=', '--nojit_compile', *args]))
    finally:
        tf.get_logger().setLevel(tf_level)


def test_script_progress_lines_show_the_scheduled_learning_rate(
        tmp_path, monkeypatch, capsys):
    # A progress line gives the rate of the run's last step (the schedule's,
    # as `train` reports it), not the peak --learning_rate. (The run is
    # faked: it reports once, then diverges.)
    def run(preset, iterations, seed, *args, progress, **kwargs):
        del preset, iterations, seed, args, kwargs
        progress(dict(iteration=250, iterations=500, train_elbo=-3.9,
                      learning_rate=1.25e-3, seconds=1.0,
                      iterations_per_second=float('nan'), recycled_units=0))
        raise FloatingPointError('non-finite loss (faked)')

    _faked_sweep(tmp_path, monkeypatch, run, '--iterations=500',
                 '--learning_rate=0.004')
    out = capsys.readouterr().out
    assert '    it     250/500  train ELBO  -3.9000  lr 1.25e-03\n' in out, out


def test_script_builds_the_models_its_flags_ask_for(tmp_path, monkeypatch):
    # --scale_fn and --linear_top reach the presets (`run`'s
    # model_overrides); unset, the presets' own models are built.
    overrides = []

    def run(*args, model_overrides, **kwargs):
        del args, kwargs
        overrides.append(model_overrides)
        raise FloatingPointError('non-finite loss (faked)')

    _faked_sweep(tmp_path / 'a', monkeypatch, run, '--iterations=4',
                 '--scale_fn=tanh', '--linear_top')
    _faked_sweep(tmp_path / 'b', monkeypatch, run, '--iterations=4')
    assert overrides == [dict(scale_fn='tanh', linear_top=True), {}]


def test_demo_reports_six_times_over_a_time_budget():
    # Over a time budget, six reports (one every sixth of it: 10 s of the
    # fake clock, on which a step takes 2 s) and the report of the step
    # that spends it. The mixture coupling takes its --num_components.
    proc = _demo_on_a_fake_clock(
        '--seconds=60', '--max_iterations=1000', '--batch_size=8',
        '--test_size=10', '--num_steps=1', '--coupling=mixlogistic',
        '--num_components=2', '--hidden_units=4')
    times = [float(t) for t in re.findall(r'iter +\d+ +(\S+) s', proc.stdout)]
    assert len(times) == 7 and times[-1] == 60.0, proc.stdout
    assert list(np.diff(times[:-1])) == [10.0] * 5, proc.stdout


def test_density_images_cover_the_extent_asked_for():
    # `extent`: both the data histogram and a model's grid cover
    # [-extent, extent]^2. On [-2, 2]^2 in 2x2 cells the histogram's cells
    # are board squares, two of them full (density 1/8 over that square,
    # normalised there) and two empty; the grid's points are its cells'
    # centres (+-1).
    hist = cb.histogram_density(num_samples=20_000, resolution=2, extent=2.0)
    np.testing.assert_allclose(np.sort(hist.ravel()), [0, 0, 1 / 8, 1 / 8],
                               atol=0.01)
    model = _glow()
    _, points = cb.grid_points(2, 2.0)
    np.testing.assert_array_equal(
        cb.density_grid(model, 2, extent=2.0),
        cb.evaluate(model, points, batch_size=2048).reshape(2, 2))


def test_progress_rates_leave_out_the_first_call():
    # A report's `iterations_per_second` is timed as the result's: the
    # steps after the first call (which traces) over the time since that
    # call ended. On a clock reading start (0), end of call 1 (1), then
    # once per report (2, 3, 4): none yet, 2 steps in 2 s, 4 in 3 s.
    reports = []
    with mock.patch.object(cb, 'time', _ticking_clock()):
        cb.train(_glow(), 6, seed=0, steps_per_call=2, progress_every=2,
                 jit_compile=False, progress=reports.append)
    rates = [r['iterations_per_second'] for r in reports]
    assert math.isnan(rates[0]), rates
    assert rates[1:] == [1.0, pytest.approx(4 / 3)], rates


def test_run_counts_the_units_its_recycling_passes_recycled():
    # `recycled_units` of a run is the total of units recycled (the
    # progress reports' count), not the number of passes: passes at steps
    # 2 and 4 of 6 on a freshly initialised Glow.
    reports = []
    result = cb.run('checkerboard_glow_2', 6, seed=0,
                    test_points=cb.test_set(4), iw_samples=1, init_size=64,
                    recycle_every=2, steps_per_call=2, progress_every=6,
                    jit_compile=False, progress=reports.append)
    assert result['recycled_units'] == reports[-1]['recycled_units']


def test_fig3_x_axis_is_labelled_with_the_steps(tmp_path):
    # Fig. 3 plots against L: its ticks are the L values of the cells
    # (not their D).
    summary = {(2, 3): dict(mean=-3.7, std=0.01, seeds=[0, 1]),
               (2, 5): dict(mean=-3.6, std=0.02, seeds=[0, 1]),
               (10, 3): dict(mean=-3.5, std=0.03, seeds=[0, 1])}
    with _axes_calls('set_xticklabels') as calls:
        cb.plot_log_likelihood_vs_steps(summary, str(tmp_path / 'f.png'))
    assert [list(args[0]) for _, args, _, _ in calls] == [['3', '5']]


def test_density_grid_scores_in_the_batches_and_chunks_asked_for():
    # The grid is `evaluate` of the grid points with the batch size and
    # draws per pass asked for (each batch draws from its own seed, and
    # the chunk decides the draws of a pass), not evaluate's defaults.
    model = cb.build_model('checkerboard_vflow_2_4', seed=0, init_size=64)[0]
    _, points = cb.grid_points(2)
    got = cb.density_grid(model, 2, num_samples=4, seed=5, batch_size=2,
                          chunk_size=2)
    want = cb.evaluate(model, points, 4, seed=5, batch_size=2,
                       chunk_size=2).reshape(2, 2)
    np.testing.assert_array_equal(got, want)


def test_recycling_passes_draw_recycle_batch_size_points():
    # "recycled on a fresh batch of `recycle_batch_size` points", not of
    # the training batch's size: one pass, at step 10 of 20.
    model = _glow()
    recycling = []
    real_elbo = model.elbo

    def elbo(x, **kwargs):
        if 'training' not in kwargs:   # the training steps pass it
            recycling.append(int(x.shape[0]))
        return real_elbo(x, **kwargs)

    with mock.patch.object(model, 'elbo', elbo):
        cb.train(model, 20, seed=0, batch_size=16, recycle_every=10,
                 recycle_batch_size=48, steps_per_call=10, jit_compile=False)
    assert recycling == [48]


def test_table_columns_are_the_steps():
    # One column per L of the cells, in order; a row lacking a cell shows
    # a dash in that column.
    script = _toy_script_module()
    cell = dict(mean=-3.6, std=0.0, seeds=[0])
    # pylint: disable-next=protected-access
    table = script._table({(2, 3): cell, (2, 5): cell, (4, 5): cell},
                          dict(_SCRIPT_SETTINGS))
    assert '\n| D \\ L | 3 | 5 |\n|---|---|---|\n' in table, table
    assert '\n| 4 (VFlow) | — | -3.600 ± 0.000 (n=1) |\n' in table, table


def test_script_removes_the_checkpoint_of_a_diverged_run(
        tmp_path, monkeypatch):
    # checkpoints/ holds the run in progress: a run that diverged is a
    # result (runs/...json), and its checkpoint goes as a finished run's
    # does. (The run is faked: it saves a checkpoint, then diverges.)
    def run(*args, checkpoint_dir, **kwargs):
        del args, kwargs
        os.makedirs(checkpoint_dir)
        pathlib.Path(checkpoint_dir, 'training_state.json').write_text('{}')
        raise FloatingPointError('non-finite loss (faked)')

    _faked_sweep(tmp_path, monkeypatch, run, '--iterations=4')
    assert os.listdir(tmp_path / 'toy' / 'runs') == ['D2_L2_seed0.json']
    assert os.listdir(tmp_path / 'toy' / 'checkpoints') == []


def test_script_titles_a_vflow_density_panel_with_its_l_and_d(
        tmp_path, monkeypatch):
    # Fig. 2: a VFlow panel names its L and its D (and its run's score);
    # a grid whose run file is missing is titled without a score.
    panels = _fig2_panels(
        tmp_path, monkeypatch,
        dict(dims=4, steps=3, seed=0, iterations=1, test_log_likelihood=-3.5),
        {name: np.zeros([4, 4]) for name in ('D4_L3_seed0.npy',
                                             'D6_L2_seed1.npy')},
        [(4, 3), (6, 2)])
    assert [title for title, _ in panels[1:]] == [
        'VFlow L=3 D=4\ntest LL -3.500', 'VFlow L=2 D=6']


def test_script_reports_a_finished_run_s_scores(tmp_path, monkeypatch,
                                                capsys):
    # A finished run's line: its test log-likelihood, the standard error
    # over test points, the initialised model's test log-likelihood
    # (`init_test_log_likelihood`, not the init batch's ELBO), the training
    # time and rate. (The run is faked.)
    result = dict(dims=2, steps=2, seed=0, iterations=4,
                  test_log_likelihood=-3.6, test_log_likelihood_sem=0.01,
                  init_test_log_likelihood=-4.0, init_elbo=-5.0,
                  train_seconds=2.5, iterations_per_second=100.0)

    def run(*args, **kwargs):
        del args, kwargs
        return result, None

    _faked_sweep(tmp_path, monkeypatch, run, '--iterations=4')
    out = capsys.readouterr().out
    assert ('    D2_L2_seed0: test log-likelihood -3.6000 (± 0.0100 s.e. '
            'over test points; init -4.0000), 2.5 s, 100 it/s\n') in out, out


def test_demo_refuses_a_stray_argument():
    # A word that is not a flag (a flag missing its --) is refused in one
    # line, not ignored.
    proc = subprocess.run(
        [sys.executable, str(REPO / 'bin' / 'checkerboard_demo.py'),
         '--seconds=0', '--test_size=1', 'max_iterations=5'],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    _assert_one_line_error(proc, 'checkerboard_demo.py',
                           "unexpected arguments ['max_iterations=5']")


def test_demo_coupling_nets_have_the_hidden_units_asked_for():
    # --hidden_units: "Hidden layer sizes of each coupling MLP", for every
    # coupling type.
    demo = cli_helpers.load_script(str(REPO / 'bin' / 'checkerboard_demo.py'),
                                   'checkerboard_demo_script')
    for coupling in ('mixlogistic', 'affine', 'additive'):
        flow = demo.build_flow(coupling, 2, 2, [4, 3])
        mlps = [m for m in flow.submodules if isinstance(m, nets.MLP)]
        assert [m.hidden_units for m in mlps] == [(4, 3)] * 2, coupling


def test_script_counts_the_runs_with_results_when_refusing(
        tmp_path, monkeypatch, capsys):
    # Without --resume, results of some of the runs asked for are refused
    # with the count of those runs out of all. (Runs faked: each diverges,
    # which is a result.)
    def run(*args, **kwargs):
        del args, kwargs
        raise FloatingPointError('non-finite loss (faked)')

    _faked_sweep(tmp_path, monkeypatch, run, '--iterations=4')
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _faked_sweep(tmp_path, monkeypatch, run, '--iterations=4',
                     '--steps=2,3')
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ' 1 of the 2 runs already have results in ' in err, err


def test_train_refuses_a_recycle_until_outside_0_1():
    # `recycle_until` is a fraction of the run: outside [0, 1] it is a bad
    # argument (ValueError), refused before any step.
    for until in (-0.5, 1.5):
        with pytest.raises(ValueError, match=r'recycle_until in \[0, 1\]; '
                           f'got 1, {until}'):
            cb.train(_glow(), 1, seed=0, recycle_every=1,
                     recycle_until=until, jit_compile=False)


@pytest.mark.parametrize('flag, message', [
    ('--steps=two', "--steps must be comma-separated integers; got 'two'."),
    ('--dims=2,x', "--dims must be comma-separated integers; got '2,x'."),
    ('--density_configs=2-3',
     "--density_configs entries must be D:L; got '2-3'."),
    ('--density_configs=2:a',
     "--density_configs entries must be D:L; got '2:a'."),
])
def test_script_refuses_values_that_are_not_integers(
        tmp_path, flag, message):
    # A value that is no integer (or no D:L pair) is a bad flag as any
    # other: one line and exit code 2, not a traceback.
    test_script_bad_flags(tmp_path, flag, message)


def test_reports_are_at_least_a_call_apart_when_recycling_cuts_the_calls():
    # `progress_every` is rounded up to a multiple of `steps_per_call` (10
    # here), also when recycling passes (every 4 steps) cut the calls
    # short: the first report comes once 10 steps have run, at step 12.
    stats = cb.train(_glow(), 24, seed=0, recycle_every=4,
                     recycle_batch_size=64, steps_per_call=10,
                     progress_every=4, jit_compile=False)
    assert [s for s, _ in stats['history']] == [12, 24]


def test_a_save_removes_the_checkpoint_files_of_other_steps(tmp_path):
    # One checkpoint is kept, the one the state names: also the files of a
    # save interrupted before its state was written, whatever their step
    # (here step 400, left by an attempt reporting every 400 steps, then
    # a save at step 40, whose name is a prefix of theirs).
    directory = str(tmp_path)
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    checkpoint.write(os.path.join(directory, 'step-400'))
    # pylint: disable-next=protected-access
    cb._save_training(checkpoint, directory, dict(
        run_key={}, done=40, history=[], recycled=[], seconds=1.0))
    assert sorted(os.listdir(directory)) == [
        'step-40.data-00000-of-00001', 'step-40.index',
        'training_state.json']


if __name__ == '__main__':
    # Pytest-style tests: a plain `python tests/test_experiments.py` (Bazel's
    # py_test) runs them.
    sys.exit(pytest.main([__file__]))
