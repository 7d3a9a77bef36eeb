"""The 2-D checkerboard experiment of the VFlow paper (§5, Figs. 2-3).

Glow (`D = D_X + D_Z = 2`, preset `checkerboard_glow_L`) and VFlow
(`D > 2`, preset `checkerboard_vflow_L_D`: `L - 1` steps of p over [x, z]
and one step of q(z|x)) are fitted to the checkerboard on [-4, 4]^2 (true
log-likelihood -ln 32 = -3.466) and scored on a fixed test set, VFlow by
importance weighting (`VFlow.log_prob(x, num_samples)`).

Everything here takes plain arguments (no flags); `bin/toy_experiment.py`
is the command-line sweep.

Training (`train`):

* Data-dependent init (`VFlow.initialize`) on one large batch.
* Loss `-mean ELBO` of a fresh batch per step (for Glow the ELBO is the exact
  log-likelihood), gradients clipped to a global norm, `tf_keras` Adam with
  a peak rate of 2e-3.
* Gradient noise from z: a 2-step p over 10 dimensions learns slowly when
  every training point gets one draw of z with the plain reparameterisation
  gradient. The default averages the ELBO over `posterior_samples=8` draws
  per point (the same objective and the same 64 data points per step) and
  uses the sticking-the-landing estimator (`VFlow.elbo`), which drops the
  zero-mean score term of log q. On the 3-step 10-dim VFlow (seeds 0-4,
  100k iterations) this moved the 100-sample test log-likelihood from
  -3.633 +- 0.024 (one draw, reparameterisation, rate 1e-3) through
  -3.575 +- 0.016 (sticking the landing, 2e-3) to -3.541 +- 0.011; Glow
  has no z, so only the rate changes it. `gradient_estimator=
  'reparameterization'`, `posterior_samples=1` and `learning_rate=1e-3`
  give the earlier recipe.
* Learning-rate schedule: `'cosine'` (default) decays the rate from
  `learning_rate` to 0 over the run (Loshchilov & Hutter's cosine annealing
  without restarts). The experiment compares models by their test
  log-likelihood at the end of a fixed budget; with batch 64 the gradient
  noise of a constant rate leaves the parameters jittering around the optimum
  (worth several 0.01 nats here, the size of the differences being
  measured), and annealing removes that without a hand-tuned step schedule
  whose milestones would have to change with `iterations`. `'linear'`
  decays the rate linearly to 0 instead (lower than the cosine in the first
  half of the run, higher in the second); `'constant'` does not decay.
* Dead ReLU units (optional, `recycle_every`): at Adam's peak rates the
  conditioners' ReLU units die steadily (up to twenty per 5k steps on
  the 3-step 10-dim VFlow), and a dead unit never comes back. Every
  `recycle_every` steps a recycling pass (`nets.recycling_dead_units`)
  gives each dead unit new incoming weights and a zero outgoing row, which
  leaves the model's function unchanged on the pass's batch (elsewhere
  too, except where a unit silent on all of that batch was still active:
  3 of 100,000 fresh points moved, by at most 0.02 nats, in one check)
  and lets the unit learn again.
* Speed: the models are tiny, so per-call overhead dominates. One
  `tf.function` runs `steps_per_call` optimisation steps in a `tf.while_loop`
  and draws the training batches in-graph (stateless RNG keyed on the
  optimizer's step counter, so a run is reproducible from its seed), with
  optional XLA compilation (`jit_compile`).
* Interruptions (optional, `checkpoint_dir`): the weights and Adam's state
  are saved at every progress report, and a later `train` with the same
  arguments goes on from there. As the batches and draws are keyed on the
  step, the resumed run is the uninterrupted one.
"""

import glob
import json
import math
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from vflow_tfp import file_io
from vflow_tfp import nets
from vflow_tfp.data import checkerboard as data_lib
from vflow_tfp.models import presets
from vflow_tfp.training import optimizers

__all__ = [
    'MAX_SEED',
    'TEST_SEED',
    'TRUE_LOG_LIKELIHOOD',
    'density_grid',
    'evaluate',
    'histogram_density',
    'plot_densities',
    'plot_log_likelihood_vs_steps',
    'preset_name',
    'run',
    'sample_checkerboard_tf',
    'summarize',
    'test_set',
    'train',
]

TEST_SEED = 1_000_003
TRUE_LOG_LIKELIHOOD = data_lib.CHECKERBOARD_LOG_LIKELIHOOD
EXTENT = 4.0
SCHEDULES = ('cosine', 'linear', 'constant')
# A run's seed is the first word of int32 stateless seeds.
MAX_SEED = 2**31 - 1


# -- data -------------------------------------------------------------------

def test_set(size=1000, seed=TEST_SEED):
    """The fixed test set: `size` checkerboard points (float32 `[size, 2]`)."""
    return data_lib.sample_checkerboard(size, seed=seed)


def sample_checkerboard_tf(num_samples, seed, dtype=tf.float32):
    """In-graph checkerboard sampler (same law as `sample_checkerboard`).

    Args:
      num_samples: int or int32 scalar tensor.
      seed: stateless seed, int32 `[2]`.
      dtype: float dtype of the result.

    Returns:
      `[num_samples, 2]` tensor.
    """
    seeds = tfp.random.split_seed(seed, n=3)
    shape = tf.reshape(tf.cast(num_samples, tf.int32), [1])
    x = tf.random.stateless_uniform(shape, seeds[0], -4.0, 4.0, dtype=dtype)
    column = tf.floor((x + 4.0) / 2.0)
    parity = column - 2.0 * tf.floor(column / 2.0)
    pair = tf.cast(tf.random.stateless_uniform(shape, seeds[1], 0, 2,
                                               dtype=tf.int32), dtype)
    row = 2.0 * pair + parity
    y = -4.0 + 2.0 * row + tf.random.stateless_uniform(
        shape, seeds[2], 0.0, 2.0, dtype=dtype)
    return tf.stack([x, y], axis=-1)


def preset_name(dims, steps):
    """The preset of `D_X + D_Z = dims` and `L = steps` (Glow for dims 2)."""
    dims, steps = int(dims), int(steps)
    if dims == 2:
        return f'checkerboard_glow_{steps}'
    return f'checkerboard_vflow_{steps}_{dims}'


# -- training ---------------------------------------------------------------

def _learning_rate(learning_rate, schedule, iterations):
    if schedule not in SCHEDULES:
        raise ValueError(f'schedule must be one of {SCHEDULES}; got '
                         f'{schedule!r}.')
    if schedule == 'constant':
        return float(learning_rate)
    if schedule == 'linear':
        return tf_keras.optimizers.schedules.PolynomialDecay(
            float(learning_rate), decay_steps=max(int(iterations), 1),
            end_learning_rate=0.0, power=1.0)
    return tf_keras.optimizers.schedules.CosineDecay(
        float(learning_rate), decay_steps=max(int(iterations), 1), alpha=0.0)


def train(model, iterations, seed, batch_size=64, learning_rate=2e-3,
          schedule='cosine', clip_norm=100.0,
          gradient_estimator='sticking_the_landing', posterior_samples=8,
          recycle_every=0, recycle_until=1.0, recycle_batch_size=4096,
          steps_per_call=250,
          jit_compile=True, progress=None, progress_every=5000,
          checkpoint_dir=None):
    """Trains an initialised `model` for `iterations` Adam steps.

    Args:
      model: a `VFlow` on `[2]` vectors, already `initialize`d.
      iterations: number of optimisation steps.
      seed: int in [0, `MAX_SEED`]; keys the training batches and the
        (u, z) draws.
      batch_size: points per step.
      learning_rate: peak Adam learning rate.
      schedule: `'cosine'` or `'linear'` (decay to 0 over `iterations`), or
        `'constant'`.
      clip_norm: global gradient-norm clip.
      gradient_estimator: of the ELBO, one of
        `vflow_tfp.models.vflow.GRADIENT_ESTIMATORS` (see `VFlow.elbo`).
      posterior_samples: draws of z per training point; the loss is the
        ELBO averaged over them (the same objective, with less gradient
        noise from z). Ignored by Glow, which has no z.
      recycle_every: if > 0, every this many steps (up to `recycle_until`
        of the run) the MLPs' dead ReLU units are recycled on a fresh batch
        of `recycle_batch_size` points (`nets.recycling_dead_units`): new
        incoming weights, zero outgoing weights, the same function on that
        batch. 0 (the default) never recycles.
      recycle_until: fraction of `iterations` after which no recycling
        happens.
      recycle_batch_size: points of each recycling pass.
      steps_per_call: optimisation steps per `tf.function` call.
      jit_compile: XLA-compile the training function.
      progress: optional callable `progress(info)` with a dict of
        `iteration`, `iterations`, `train_elbo` (mean over the steps since the
        last report), `learning_rate` (the rate of the last step),
        `seconds`, `iterations_per_second`, `recycled_units` (total so
        far).
      progress_every: report about every this many steps (rounded up to a
        multiple of `steps_per_call`).
      checkpoint_dir: optional directory. At every report before the end,
        the weights and Adam's state are saved there (with the history so
        far), and a run that finds a checkpoint there goes on from it:
        since batches and draws are keyed on the step, it gives the result
        of the uninterrupted run. The checkpoint must come from the same
        model and arguments (else `ValueError`); the caller deletes the
        directory once it has the result.

    Returns:
      dict with `history` (list of `(iteration, train_elbo)`), `seconds`,
      `iterations_per_second` (excluding the first call, which traces and
      compiles), `final_train_elbo` and `recycled_units` (list of
      `(iteration, units recycled)` per recycling pass).

    Raises:
      FloatingPointError: if the loss becomes non-finite.
      ValueError: for bad arguments or a checkpoint of another run.
    """
    iterations = int(iterations)
    posterior_samples = int(posterior_samples)
    if posterior_samples < 1:
        raise ValueError(f'posterior_samples must be >= 1; got '
                         f'{posterior_samples}.')
    if not model.augment_channels:
        posterior_samples = 1
    recycle_every = int(recycle_every)
    if recycle_every < 0 or not 0.0 <= float(recycle_until) <= 1.0:
        raise ValueError(f'recycle_every must be >= 0 and recycle_until in '
                         f'[0, 1]; got {recycle_every}, {recycle_until}.')
    recycle_last = int(float(recycle_until) * iterations)
    steps_per_call = max(1, min(int(steps_per_call), max(iterations, 1)))
    variables = model.trainable_variables
    # With `jit_compile`, the update is compiled with the rest of the step.
    optimizer = optimizers.adam(
        _learning_rate(learning_rate, schedule, iterations))
    optimizer.build(variables)
    base_seed = tf.constant([_seed_word(seed), 0x5eed], tf.int32)
    recycle_seed = tf.constant([_seed_word(seed), 0xDEAD], tf.int32)
    dtype = variables[0].dtype

    def one_step(total):
        step = tf.cast(optimizer.iterations, tf.int32)
        step_seed = tf.random.experimental.stateless_fold_in(base_seed, step)
        data_seed, model_seed = tf.unstack(tfp.random.split_seed(step_seed, 2))
        x = sample_checkerboard_tf(batch_size, data_seed, dtype)
        with tf.GradientTape() as tape:
            elbo = tf.reduce_mean(model.elbo(
                x, training=True, seed=model_seed,
                gradient_estimator=gradient_estimator,
                draws_per_row=posterior_samples))
            loss = -elbo
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        optimizer.apply_gradients(zip(grads, variables))
        return total + tf.cast(elbo, tf.float64)

    @tf.function(jit_compile=bool(jit_compile), autograph=False)
    def train_steps(num):
        _, total = tf.while_loop(
            lambda i, _: i < num, lambda i, t: (i + 1, one_step(t)),
            (tf.constant(0), tf.constant(0.0, tf.float64)))
        return total / tf.cast(num, tf.float64)

    def recycle(step):
        pass_seeds = tfp.random.split_seed(
            tf.random.experimental.stateless_fold_in(recycle_seed, step), 3)
        x = sample_checkerboard_tf(int(recycle_batch_size), pass_seeds[0],
                                   dtype)
        with nets.recycling_dead_units(pass_seeds[1]) as report:
            model.elbo(x, seed=pass_seeds[2])
        return report.total

    history = []
    recycled = []
    start = time.perf_counter()
    timed_start, timed_steps = None, 0
    done = 0
    earlier_seconds = 0.0
    if checkpoint_dir is not None:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        run_key = dict(
            model=model.name, variables=[v.shape.as_list() for v in variables],
            iterations=iterations, seed=int(seed), batch_size=int(batch_size),
            learning_rate=float(learning_rate), schedule=schedule,
            clip_norm=float(clip_norm), gradient_estimator=gradient_estimator,
            posterior_samples=posterior_samples, recycle_every=recycle_every,
            recycle_until=float(recycle_until),
            recycle_batch_size=int(recycle_batch_size))
        state = _restore_training(checkpoint, checkpoint_dir, run_key)
        if state is not None:
            done, earlier_seconds = state['done'], state['seconds']
            history = [tuple(h) for h in state['history']]
            recycled = [tuple(r) for r in state['recycled']]
    since_report, report_sum = 0, 0.0
    report_every = max(steps_per_call, int(progress_every or 0))
    while done < iterations:
        num = min(steps_per_call, iterations - done)
        if recycle_every:
            num = min(num, recycle_every - done % recycle_every)
        mean_elbo = float(train_steps(tf.constant(num, tf.int32)))
        done += num
        if timed_start is None:
            timed_start = time.perf_counter()
        else:
            timed_steps += num
        if not math.isfinite(mean_elbo):
            raise FloatingPointError(
                f'{model.name}: non-finite training ELBO {mean_elbo} near '
                f'iteration {done} (seed {seed}).')
        if (recycle_every and done % recycle_every == 0
                and done <= recycle_last and done < iterations):
            recycled.append((done, recycle(done)))
        since_report += num
        report_sum += mean_elbo * num
        if since_report >= report_every or done == iterations:
            train_elbo = report_sum / since_report
            history.append((done, train_elbo))
            since_report, report_sum = 0, 0.0
            if checkpoint_dir is not None and done < iterations:
                _save_training(checkpoint, checkpoint_dir, dict(
                    run_key=run_key, done=done, history=history,
                    recycled=recycled,
                    seconds=earlier_seconds + time.perf_counter() - start))
            if progress is not None:
                now = time.perf_counter()
                rate = (timed_steps / (now - timed_start)
                        if timed_steps else float('nan'))
                lr = optimizer.learning_rate
                lr = float(lr(optimizer.iterations) if callable(lr) else lr)
                progress(dict(iteration=done, iterations=iterations,
                              train_elbo=train_elbo, learning_rate=lr,
                              seconds=earlier_seconds + now - start,
                              iterations_per_second=rate,
                              recycled_units=sum(n for _, n in recycled)))
    end = time.perf_counter()
    return dict(
        history=history,
        seconds=earlier_seconds + end - start,
        iterations_per_second=(timed_steps / (end - timed_start)
                               if timed_steps else float('nan')),
        final_train_elbo=history[-1][1] if history else float('nan'),
        recycled_units=recycled)


_TRAINING_STATE = 'training_state.json'


def checkpointed_iteration(checkpoint_dir):
    """The iteration at which `train` saved `checkpoint_dir`, or None."""
    path = os.path.join(checkpoint_dir, _TRAINING_STATE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return int(json.load(f)['done'])


def _restore_training(checkpoint, directory, run_key):
    """Restores the checkpoint `train` left in `directory`, if any; returns
    its state (`done`, `history`, `recycled`, `seconds`) or None."""
    path = os.path.join(directory, _TRAINING_STATE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if state['run_key'] != run_key:
        differ = sorted(k for k in run_key
                        if state['run_key'].get(k) != run_key[k])
        raise ValueError(
            f'{directory} holds a checkpoint of another run (it differs in '
            f'{", ".join(differ)}); delete it or use another directory.')
    checkpoint.read(os.path.join(directory, state['checkpoint'])
                    ).assert_consumed()
    return state


def _save_training(checkpoint, directory, state):
    """Saves a checkpoint, then the state naming it: an interruption at any
    point leaves the previous pair or the new one, never a mix."""
    os.makedirs(directory, exist_ok=True)
    name = f'step-{state["done"]}'
    checkpoint.write(os.path.join(directory, name))
    with file_io.atomic_write(os.path.join(directory,
                                           _TRAINING_STATE)) as f:
        json.dump(dict(state, checkpoint=name), f)
    for old in glob.glob(os.path.join(directory, 'step-*')):
        if not os.path.basename(old).startswith(name + '.'):
            os.remove(old)


# -- evaluation -------------------------------------------------------------

def evaluate(model, points, num_samples=100, seed=0, batch_size=1000,
             chunk_size=25):
    """Per-point test log-likelihood, `[N]` float64 numpy array.

    VFlow: importance weighting with `num_samples` draws of z
    (`model.log_prob`); a plain flow (Glow) has an exact likelihood, so one
    "sample" is used whatever `num_samples` says. Points are processed
    `batch_size` at a time, each with `chunk_size` draws per pass; batch
    `i` draws from the stateless seed `[seed, i]` (`seed` in [0,
    `MAX_SEED`]).
    """
    points = np.asarray(points, np.float32)
    samples = int(num_samples) if model.augment_channels else 1
    chunk = max(1, min(int(chunk_size), samples))
    fn = _log_prob_fn(model, samples, chunk)
    out = []
    for i, start in enumerate(range(0, len(points), int(batch_size))):
        batch = tf.constant(points[start:start + int(batch_size)])
        out.append(fn(batch, tf.constant([_seed_word(seed), i],
                                         tf.int32)).numpy())
    return np.concatenate(out) if out else np.zeros([0])


def _log_prob_fn(model, num_samples, chunk_size):
    cache = model.__dict__.setdefault('_experiment_log_prob_fns', {})
    key = (num_samples, chunk_size)
    if key not in cache:
        cache[key] = tf.function(
            lambda x, seed: model.log_prob(x, num_samples,
                                           chunk_size=chunk_size, seed=seed),
            reduce_retracing=True, autograph=False)
    return cache[key]


def _seed_word(seed):
    """`seed` as the first int32 word of the stateless seeds it keys.

    Refused outside int32's non-negative range rather than reduced: a seed
    of 2**31 - 1 reduced modulo 2**31 - 1 would train, draw and evaluate
    exactly as seed 0.
    """
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f'seed must be in [0, {MAX_SEED}]; got {seed}.')
    return int(seed)


def _stats(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(
        values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1
        else float('nan'))


def build_model(preset, seed, init_size=4096, **overrides):
    """Builds preset `preset` with weights from `seed` and initialises it.

    `seed` is an int in [0, `MAX_SEED`]. Returns `(model, init_elbo)`, the
    mean ELBO of the init batch after the data-dependent initialisation.
    """
    _seed_word(seed)  # Refused before anything is built.
    tf.random.set_seed(int(seed))
    model = presets.build(preset, seed=int(seed), **overrides)
    batch = data_lib.sample_checkerboard(int(init_size),
                                         seed=[int(seed), 0xD1])
    elbo = model.initialize(batch, seed=tf.constant(
        [_seed_word(seed), 0xD1], tf.int32))
    return model, float(tf.reduce_mean(elbo))


def run(preset, iterations, seed, test_points, batch_size=64,
        learning_rate=2e-3, schedule='cosine', clip_norm=100.0,
        gradient_estimator='sticking_the_landing', posterior_samples=8,
        recycle_every=0, recycle_until=1.0,
        iw_samples=100, init_size=4096, steps_per_call=250, jit_compile=True,
        progress=None, progress_every=5000, model_overrides=None,
        checkpoint_dir=None, return_model=False):
    """Builds, initialises, trains and evaluates one preset.

    Args:
      preset: preset name (`preset_name(dims, steps)`).
      iterations: training steps.
      seed: int in [0, `MAX_SEED`], the seed of the weights, the init
        batch, the training batches, the (u, z) draws and the evaluation
        draws.
      test_points: `[N, 2]` test set (`test_set()`).
      batch_size, learning_rate, schedule, clip_norm, gradient_estimator,
        posterior_samples, recycle_every, recycle_until, steps_per_call,
        jit_compile, progress, progress_every, checkpoint_dir: as in
        `train` (an interrupted run goes on from its checkpoint).
      iw_samples: importance samples of the test likelihood.
      init_size: points of the data-dependent init batch.
      model_overrides: dict of extra `presets.build` arguments (e.g.
        `scale_fn`).
      return_model: also return the trained model.

    Returns:
      A JSON-serialisable dict (and the model if `return_model`): `preset`,
      `dims`, `steps`, `seed`, the settings, `num_params`,
      `init_test_log_likelihood` (after DDI, before training),
      `test_log_likelihood` (mean over the test set) and its standard error
      `test_log_likelihood_sem` (over test points), `train_seconds`,
      `iterations_per_second`, `final_train_elbo`, `history`.
    """
    overrides = dict(model_overrides or {})
    model, init_elbo = build_model(preset, seed, init_size, **overrides)
    init_ll = evaluate(model, test_points, iw_samples, seed=seed)
    stats = train(model, iterations, seed, batch_size=batch_size,
                  learning_rate=learning_rate, schedule=schedule,
                  clip_norm=clip_norm, gradient_estimator=gradient_estimator,
                  posterior_samples=posterior_samples,
                  recycle_every=recycle_every, recycle_until=recycle_until,
                  steps_per_call=steps_per_call,
                  jit_compile=jit_compile, progress=progress,
                  progress_every=progress_every,
                  checkpoint_dir=checkpoint_dir)
    start = time.perf_counter()
    ll = evaluate(model, test_points, iw_samples, seed=seed)
    eval_seconds = time.perf_counter() - start
    mean, sem = _stats(ll)
    dims = 2 + model.augment_channels
    result = dict(
        preset=preset, model=model.name, dims=dims,
        steps=int(preset.split('_')[2]), seed=int(seed),
        iterations=int(iterations), batch_size=int(batch_size),
        learning_rate=float(learning_rate), schedule=schedule,
        clip_norm=float(clip_norm),
        gradient_estimator=gradient_estimator,
        posterior_samples=int(posterior_samples) if model.augment_channels
        else 1,
        recycle_every=int(recycle_every), recycle_until=float(recycle_until),
        recycled_units=int(sum(n for _, n in stats['recycled_units'])),
        iw_samples=int(iw_samples),
        iw_samples_used=int(iw_samples) if model.augment_channels else 1,
        init_size=int(init_size), test_size=int(len(test_points)),
        jit_compile=bool(jit_compile), model_overrides=overrides,
        num_params=model.count_params(), init_elbo=init_elbo,
        init_test_log_likelihood=float(np.mean(init_ll)),
        test_log_likelihood=mean, test_log_likelihood_sem=sem,
        true_log_likelihood=TRUE_LOG_LIKELIHOOD,
        train_seconds=stats['seconds'],
        iterations_per_second=stats['iterations_per_second'],
        eval_seconds=eval_seconds,
        final_train_elbo=stats['final_train_elbo'],
        history=[list(h) for h in stats['history']])
    return (result, model) if return_model else result


def summarize(results):
    """Mean and std over seeds of the test log-likelihood per (dims, steps).

    Args:
      results: iterable of `run` result dicts.

    Returns:
      dict `{(dims, steps): dict(mean, std, seeds, iterations, values)}`;
      `std` is the sample standard deviation (ddof 1; NaN for one seed) and
      `iterations` the sorted distinct iteration counts of the cell.
    """
    cells = {}
    for r in results:
        cells.setdefault((int(r['dims']), int(r['steps'])), []).append(r)
    out = {}
    for key, runs in sorted(cells.items()):
        # `values[i]` is the run of `seeds[i]`.
        runs = sorted(runs, key=lambda r: int(r['seed']))
        values = np.array([r['test_log_likelihood'] for r in runs])
        out[key] = dict(
            mean=float(values.mean()),
            std=float(values.std(ddof=1)) if len(values) > 1
            else float('nan'),
            seeds=[int(r['seed']) for r in runs],
            iterations=sorted({int(r['iterations']) for r in runs}),
            values=[float(v) for v in values])
    return out


# -- densities and plots ----------------------------------------------------

def grid_points(resolution=128, extent=EXTENT):
    """Cell centres of a `resolution`^2 grid on [-extent, extent]^2.

    Returns `(centres, points)`: the 1-D centres and `[R * R, 2]` points in
    row-major image order (row index = y, column index = x).
    """
    step = 2.0 * extent / resolution
    centres = -extent + step * (np.arange(resolution) + 0.5)
    xs, ys = np.meshgrid(centres, centres)
    return centres, np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)


def density_grid(model, resolution=128, extent=EXTENT, num_samples=100,
                 seed=0, batch_size=2048, chunk_size=25):
    """Model log-density on a grid: `[R, R]` float64 array (rows = y).

    VFlow's marginal density is the importance-weighted estimate with
    `num_samples` draws (a stochastic lower bound in expectation).
    """
    _, points = grid_points(resolution, extent)
    log_p = evaluate(model, points, num_samples, seed=seed,
                     batch_size=batch_size, chunk_size=chunk_size)
    return log_p.reshape(resolution, resolution)


def histogram_density(num_samples=200_000, resolution=128, extent=EXTENT,
                      seed=0):
    """Normalised 2-D histogram of checkerboard samples, `[R, R]`, rows = y."""
    points = data_lib.sample_checkerboard(num_samples, seed=seed)
    edges = np.linspace(-extent, extent, resolution + 1)
    hist, _, _ = np.histogram2d(points[:, 1], points[:, 0],
                                bins=[edges, edges], density=True)
    return hist


def _pyplot():
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    return plt


def plot_log_likelihood_vs_steps(summary, path, title=None):
    """Fig. 3: test log-likelihood against L, one line per D (PNG at `path`).

    Args:
      summary: `summarize` output.
      path: output file.
      title: optional title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for dims in sorted({d for d, _ in summary}):
        keys = sorted(k for k in summary if k[0] == dims)
        steps = [k[1] for k in keys]
        means = np.array([summary[k]['mean'] for k in keys])
        stds = np.nan_to_num(np.array([summary[k]['std'] for k in keys]))
        label = 'Glow (D=2)' if dims == 2 else f'VFlow D={dims}'
        ax.errorbar(steps, means, yerr=stds, marker='o', capsize=3,
                    label=label)
    ax.axhline(TRUE_LOG_LIKELIHOOD, color='k', linestyle='--', linewidth=1,
               label=f'true ({TRUE_LOG_LIKELIHOOD:.3f})')
    ax.set_xlabel('number of flow steps L')
    ax.set_ylabel('test log-likelihood (nats)')
    all_steps = sorted({s for _, s in summary})
    if all_steps:
        ax.set_xscale('log')
        ax.set_xticks(all_steps)
        ax.set_xticklabels([str(s) for s in all_steps])
        ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_densities(panels, path, extent=EXTENT):
    """Fig. 2: density images side by side (PNG at `path`).

    Args:
      panels: list of `(title, density)` with `density` an `[R, R]` array of
        densities (not log), rows = y from -extent up.
      path: output file.
      extent: half-width of the square.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4),
                             squeeze=False)
    for ax, (title, density) in zip(axes[0], panels):
        ax.imshow(density, origin='lower', cmap='viridis',
                  extent=(-extent, extent, -extent, extent),
                  interpolation='nearest')
        ax.set_title(title, fontsize=9)
        ax.set_xticks([-4, -2, 0, 2, 4])
        ax.set_yticks([-4, -2, 0, 2, 4])
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
