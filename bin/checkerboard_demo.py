"""Fits a flow built from vflow_tfp bijectors to the 2-D checkerboard.

A quick end-to-end check of the bijector core on CPU: a Glow-style stack of
[ActNorm -> invertible linear map -> coupling] steps, trained by maximum
likelihood for a time budget, then scored on a fixed test set against the
true log-likelihood -ln 32 = -3.466.

    python bin/checkerboard_demo.py                       # ~1 minute
    python bin/checkerboard_demo.py --coupling=affine --num_steps=3

The budget is wall time, so a faster machine trains longer; for a result
that does not depend on the machine, budget iterations instead:
`--seconds=inf --max_iterations=20000`.
"""

import math
import sys
import time

from absl import app
from absl import flags
from absl import logging

# TensorFlow and the modules that import it load in the functions that use
# them, once the flags are checked: TF's start takes seconds.

_COUPLING = flags.DEFINE_enum(
    'coupling', 'mixlogistic', ['mixlogistic', 'affine', 'additive'],
    'Coupling type: Flow++ mixture of logistics, RealNVP/Glow affine or NICE '
    'additive.')
_NUM_STEPS = flags.DEFINE_integer(
    'num_steps', 4, 'Flow steps [ActNorm, linear map, coupling].',
    lower_bound=1)
_NUM_COMPONENTS = flags.DEFINE_integer(
    'num_components', 8, 'Logistic components of mixture couplings.',
    lower_bound=1)
_HIDDEN = flags.DEFINE_list(
    'hidden_units', ['64', '64'], 'Hidden layer sizes of each coupling MLP.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Training batch size.',
                              lower_bound=1)
_LR = flags.DEFINE_float(
    'learning_rate', 3e-3,
    'Initial Adam learning rate; annealed linearly towards zero (down to 2% '
    'of it) over the time budget or --max_iterations, whichever runs out '
    'first.', lower_bound=0.0)
_SECONDS = flags.DEFINE_float(
    'seconds', 60.0, 'Training time budget; inf: --max_iterations alone.',
    lower_bound=0.0)
_MAX_ITERS = flags.DEFINE_integer('max_iterations', 100_000,
                                  'Cap on training iterations.', lower_bound=1)
_TEST_SIZE = flags.DEFINE_integer('test_size', 1000,
                                  'Points in the fixed test set.',
                                  lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


def build_flow(coupling, num_steps, num_components, hidden_units):
    """A 2-D flow: p(x) = N(z; 0, I) |det dz/dx|, z = flow.inverse(x)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    # pylint: disable-next=g-import-not-at-top
    from vflow_tfp import bijectors as vb
    from vflow_tfp import nets  # pylint: disable=g-import-not-at-top
    partition = vb.ChannelSplit(event_ndims=1)
    layers = []  # data -> latent order
    for i in range(num_steps):
        if coupling == 'mixlogistic':
            width = vb.MixLogisticCoupling.num_params(num_components)
        else:
            width = {'affine': 2, 'additive': 1}[coupling]
        net = nets.MLP(1, width, hidden_units=hidden_units,
                       activation=tf.nn.relu, name=f'net_{i}')
        if coupling == 'mixlogistic':
            layer = vb.MixLogisticCoupling(net, partition, num_components,
                                           parity=i % 2, name=f'coupling_{i}')
        elif coupling == 'affine':
            layer = vb.AffineCoupling(net, partition, parity=i % 2,
                                      name=f'coupling_{i}')
        else:
            layer = vb.AdditiveCoupling(net, partition, parity=i % 2,
                                        name=f'coupling_{i}')
        layers += [vb.ActNorm([2], name=f'norm_{i}'),
                   vb.Invertible1x1Conv([2], noise_scale=None,
                                        name=f'linear_{i}'),
                   layer]
    return tfp.bijectors.Chain(layers)


def _fail(message):
    # One line, like the other scripts: app.UsageError would print the
    # whole usage text above it.
    print(f'checkerboard_demo.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with a bad flag refused as every bad setting is (one
    line, exit code 2) rather than absl's two lines and code 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}')
    try:
        hidden_units = [int(h) for h in _HIDDEN.value]
    except ValueError:
        hidden_units = None
    if not hidden_units or min(hidden_units) < 1:
        _fail(f'--hidden_units must be comma-separated positive integers; '
              f'got {",".join(_HIDDEN.value)!r}.')
    _fit(hidden_units)


def _fit(hidden_units):
    """Trains and scores the flow of the flags, printing its progress."""
    # pylint: disable=g-import-not-at-top
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import vflow_tfp
    from vflow_tfp import data
    from vflow_tfp import training
    # pylint: enable=g-import-not-at-top
    tfd = tfp.distributions
    tf.random.set_seed(_SEED.value)
    rng = np.random.default_rng(_SEED.value)

    flow = build_flow(_COUPLING.value, _NUM_STEPS.value,
                      _NUM_COMPONENTS.value, hidden_units)
    model = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(0.0, 1.0), [2]), flow)
    test_points = tf.constant(
        data.sample_checkerboard(_TEST_SIZE.value, seed=12345))

    # Data-dependent initialisation of every ActNorm on one large batch.
    with vflow_tfp.data_dependent_init():
        model.log_prob(data.sample_checkerboard(4096, seed=rng))

    optimizer = training.adam(_LR.value)
    variables = flow.trainable_variables

    @tf.function(autograph=False)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_prob(x))
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(autograph=False)
    def test_log_likelihood():
        return tf.reduce_mean(model.log_prob(test_points))

    budget = (f'up to {_SECONDS.value:.0f} s'
              if math.isfinite(_SECONDS.value)
              else f'{_MAX_ITERS.value:,} iterations')
    print(f'Fitting a {_NUM_STEPS.value}-step {_COUPLING.value} flow '
          f'({sum(int(np.prod(v.shape)) for v in variables):,} parameters) to '
          f'the 2-D checkerboard for {budget}.')
    # Six reports over a time budget; every 10 s over an iteration budget.
    report_every = (max(_SECONDS.value / 6.0, 1.0)
                    if math.isfinite(_SECONDS.value) else 10.0)
    start = time.time()
    next_report = start
    iteration = 0
    while iteration < _MAX_ITERS.value:
        progress = max((time.time() - start) / max(_SECONDS.value, 1e-9),
                       iteration / _MAX_ITERS.value)
        optimizer.learning_rate.assign(_LR.value * max(1.0 - progress, 0.02))
        batch = data.sample_checkerboard(_BATCH.value, seed=rng)
        loss = float(train_step(batch))
        iteration += 1
        if not np.isfinite(loss):
            _fail(f'non-finite loss {loss} at iteration {iteration}; try a '
                  f'lower --learning_rate (now {_LR.value}).')
        now = time.time()
        if now >= next_report or now - start >= _SECONDS.value:
            print(f'  iter {iteration:6d}  {now - start:6.1f} s  '
                  f'train log-lik {-loss:7.4f}  '
                  f'test log-lik {float(test_log_likelihood()):7.4f}',
                  flush=True)
            next_report = now + report_every
        if now - start >= _SECONDS.value:
            break
    elapsed = time.time() - start
    final = float(test_log_likelihood())
    print(f'Done: {iteration} iterations in {elapsed:.1f} s '
          f'({iteration * _BATCH.value / elapsed:,.0f} points/s).')
    normal = float(
        tf.reduce_mean(tfd.Normal(0., 1.).log_prob(test_points)) * 2)
    print(f'Test log-likelihood: {final:.4f} nats '
          f'(true density: {data.CHECKERBOARD_LOG_LIKELIHOOD:.4f}; '
          f'a standard normal scores {normal:.4f})')
    logging.info('final test log-likelihood %.4f', final)


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
