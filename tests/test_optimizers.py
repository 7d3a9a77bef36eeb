"""`training.adam`: tf_keras's Adam, one fused kernel a variable."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from vflow_tfp import training
import model_helpers


def _problem(dtype):
    """Starting weights and five steps' gradients, from 1e-6 to 1e2 in
    size (Adam's ε matters for the small ones)."""
    rng = np.random.RandomState(0)
    shapes = [(3, 5), (7,), (2, 2, 4)]
    weights = [rng.randn(*s).astype(dtype) for s in shapes]
    gradients = [[(rng.randn(*s) * 10.0 ** rng.uniform(-6, 2)).astype(dtype)
                  for s in shapes] for _ in range(5)]
    return weights, gradients


def _train(make_optimizer, strategy, dtype, jit_compile=False):
    """The weights after `_problem`'s steps, and the step's traced ops."""
    weights, gradients = _problem(dtype)
    with strategy.scope():
        variables = [tf.Variable(w) for w in weights]
        optimizer = make_optimizer()
        optimizer.jit_compile = jit_compile

    @tf.function
    def step(*grads):
        def replica_step():
            optimizer.apply_gradients(
                zip([tf.identity(g) for g in grads], variables))
        strategy.run(replica_step)

    for grads in gradients:
        step(*grads)
    graph = step.get_concrete_function(*gradients[0]).graph
    ops = {op.type for op in graph.get_operations()}
    # pylint: disable-next=protected-access
    for function in graph._functions.values():
        ops.update(node.op for node in function.definition.node_def)
    return [v.numpy() for v in variables], ops


def _schedule():
    return tf_keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)


def _reference(dtype, replicas):
    """`_train`'s weights by Adam's formula in numpy, in float64, for the
    sum of `replicas` replicas' gradients (`apply_gradients` sums them):
    the rate of `_schedule` (float32, as the schedule computes it: 1e-2
    rounded, times 0.5^k exactly), β₁ 0.9, β₂ 0.999, ε 1e-7."""
    weights, gradients = _problem(dtype)
    weights = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, grads in enumerate(gradients, 1):
        rate = float(np.float32(1e-2)) * 0.5 ** (t - 1)
        alpha = rate * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for w, m_w, v_w, g in zip(weights, m, v, grads):
            g = replicas * g.astype(np.float64)
            m_w += (g - m_w) * (1 - 0.9)
            v_w += (np.square(g) - v_w) * (1 - 0.999)
            w -= alpha * m_w / (np.sqrt(v_w) + 1e-7)
    return weights


class AdamTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.product(strategy=['default', 'mirrored'],
                           jit_compile=[False, True],
                           dtype=[np.float32, np.float64])
    def test_steps_are_adam_in_one_kernel(self, strategy, jit_compile, dtype):
        # Five steps of a decaying rate, on one device and on two replicas,
        # with and without XLA: Adam's formula (in float32, also tf_keras's
        # own Adam's steps to its rounding), by the fused kernel.
        strategy = (model_helpers.mirrored_strategy() if strategy == 'mirrored'
                    else tf.distribute.get_strategy())
        got, ops = _train(lambda: training.adam(_schedule()), strategy, dtype,
                          jit_compile)
        self.assertIn('ResourceApplyAdam', ops)
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        reference = _reference(dtype, strategy.num_replicas_in_sync)
        for r, g, w in zip(reference, got, _problem(dtype)[0]):
            self.assertAllClose(g, r, rtol=tolerance, atol=tolerance)
            self.assertGreater(np.max(np.abs(g - w)), 1e-3)
        if dtype == np.float32:
            expected, reference_ops = _train(
                lambda: tf_keras.optimizers.Adam(_schedule()), strategy,
                dtype, jit_compile)
            self.assertNotIn('ResourceApplyAdam', reference_ops)
            for e, g in zip(expected, got):
                self.assertAllClose(g, e, rtol=1e-6, atol=1e-6)

    def test_amsgrad_takes_tf_keras_update(self):
        expected, _ = _train(
            lambda: tf_keras.optimizers.Adam(_schedule(), amsgrad=True),
            tf.distribute.get_strategy(), np.float32)
        got, ops = _train(lambda: training.adam(_schedule(), amsgrad=True),
                          tf.distribute.get_strategy(), np.float32)
        self.assertNotIn('ResourceApplyAdam', ops)
        for e, g in zip(expected, got):
            self.assertAllEqual(g, e)

    def test_adaptive_epsilon_takes_tf_keras_update(self):
        # As the docstring promises: the fused kernel has no adaptive
        # epsilon, so with adaptive_epsilon the update must be tf_keras's,
        # not the fused kernel's with a fixed epsilon.
        expected, _ = _train(
            lambda: tf_keras.optimizers.Adam(_schedule(),
                                             adaptive_epsilon=True),
            tf.distribute.get_strategy(), np.float32)
        got, ops = _train(
            lambda: training.adam(_schedule(), adaptive_epsilon=True),
            tf.distribute.get_strategy(), np.float32)
        self.assertNotIn('ResourceApplyAdam', ops)
        for e, g in zip(expected, got):
            self.assertAllEqual(g, e)

    def test_sparse_gradients_take_tf_keras_update(self):
        # An embedding lookup's gradient is an IndexedSlices, which the
        # fused dense kernel cannot take.
        results = []
        for optimizer in (tf_keras.optimizers.Adam(1e-2),
                          training.adam(1e-2)):
            table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
            for _ in range(3):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.gather(table, [0, 2]) ** 2)
                gradient = tape.gradient(loss, table)
                self.assertIsInstance(gradient, tf.IndexedSlices)
                optimizer.apply_gradients([(gradient, table)])
            results.append(table.numpy())
        self.assertAllEqual(results[1], results[0])
        self.assertAllEqual(results[1][[1, 3]], [[3, 4, 5], [9, 10, 11]])

    def test_checkpoints_are_tf_keras_adams(self):
        # The slots are tf_keras's own: a run checkpointed with tf_keras's
        # Adam (as before this optimizer) goes on with this one, and the
        # other way round, and the next step is the same.
        weights, gradients = _problem(np.float32)
        for k, (writer, reader) in enumerate([
                (tf_keras.optimizers.Adam, training.adam),
                (training.adam, tf_keras.optimizers.Adam)]):
            saved = [tf.Variable(w) for w in weights]
            old = writer(1e-2)
            old.apply_gradients(zip(gradients[0], saved))
            path = tf.train.Checkpoint(optimizer=old, weights=saved).save(
                f'{self.get_temp_dir()}/ckpt{k}')
            restored = [tf.Variable(tf.zeros_like(w)) for w in weights]
            new = reader(1e-2)
            new.build(restored)
            tf.train.Checkpoint(optimizer=new, weights=restored).restore(
                path).assert_consumed()
            self.assertEqual(int(new.iterations), 1)
            old.apply_gradients(zip(gradients[1], saved))
            new.apply_gradients(zip(gradients[1], restored))
            for a, b in zip(restored, saved):
                self.assertAllClose(a, b, rtol=1e-6, atol=1e-6)

    def test_jit_compile_is_the_caller_s_choice(self):
        # `adam` docstring: XLA iff `jit_compile`, for every device alike;
        # tf_keras's own default would decide from the machine (and ignore
        # True without a GPU, as in these tests).
        for jit_compile in (False, True):
            with self.subTest(jit_compile=jit_compile):
                self.assertIs(
                    training.adam(1e-3, jit_compile=jit_compile).jit_compile,
                    jit_compile)
        self.assertIs(training.adam(1e-3).jit_compile, False)

    def test_beta_and_epsilon_options_reach_the_fused_update(self):
        # `**kwargs`: other arguments of tf_keras's Adam, whose formula the
        # fused kernel computes: β₁, β₂ and ε other than the defaults move
        # the weights as tf_keras's Adam with the same options does.
        options = dict(beta_1=0.5, beta_2=0.9, epsilon=1e-2)
        expected, _ = _train(
            lambda: tf_keras.optimizers.Adam(_schedule(), **options),
            tf.distribute.get_strategy(), np.float32)
        got, ops = _train(lambda: training.adam(_schedule(), **options),
                          tf.distribute.get_strategy(), np.float32)
        self.assertIn('ResourceApplyAdam', ops)
        for e, g in zip(expected, got):
            self.assertAllClose(g, e, rtol=1e-6, atol=1e-6)


if __name__ == '__main__':
    tf.test.main()
