"""The performance paths: hand-written attention gradients, memory-lean
attention, the Glow preset, the sampler's iteration diagnostic, and the
benchmark suite end to end."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras

from vflow_tfp import bijectors as vb
from vflow_tfp import nets
from vflow_tfp.models import presets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _reference_attention(q, k, v):
    return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True)), v)


def _value_and_grads(fn, q, k, v, upstream):
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = fn(q, k, v)
        loss = tf.reduce_sum(out * upstream)
    return out, tape.gradient(loss, [q, k, v])


class AttentionTest(tf.test.TestCase):

    def _inputs(self, dtype, tokens=12, queries=None):
        rng = np.random.RandomState(0)
        queries = queries or tokens
        q = tf.constant(3 * rng.randn(2, 3, queries, 4), dtype)
        k = tf.constant(3 * rng.randn(2, 3, tokens, 4), dtype)
        v = tf.constant(rng.randn(2, 3, tokens, 4), dtype)
        upstream = tf.constant(rng.randn(2, 3, queries, 4), dtype)
        return q, k, v, upstream

    def test_values_and_gradients_match_autodiff(self):
        for dtype, tol in [(tf.float64, 1e-12), (tf.float32, 1e-4)]:
            q, k, v, up = self._inputs(dtype)
            want, want_grads = _value_and_grads(_reference_attention, q, k, v,
                                                up)
            # 5 does not divide 12: the last query block is short.
            for block in (None, 5, 12, 64):
                fn = functools.partial(nets.dot_product_attention,
                                       query_block=block)
                got, grads = _value_and_grads(fn, q, k, v, up)
                self.assertAllClose(want, got, atol=tol, rtol=tol)
                for w, g in zip(want_grads, grads):
                    self.assertAllClose(w, g, atol=tol, rtol=tol)

    def test_cross_attention_shapes_and_xla(self):
        q, k, v, up = self._inputs(tf.float32, tokens=16, queries=8)
        want, want_grads = _value_and_grads(_reference_attention, q, k, v, up)
        for block in (None, 3):
            fn = functools.partial(nets.dot_product_attention,
                                   query_block=block)
            compiled = tf.function(
                lambda q, k, v, up, fn=fn: _value_and_grads(fn, q, k, v, up),
                jit_compile=True)
            got, grads = compiled(q, k, v, up)
            # float32 with logits of size ~30: XLA's op order moves the last
            # bits.
            self.assertAllClose(want, got, atol=1e-4, rtol=1e-4)
            for w, g in zip(want_grads, grads):
                self.assertAllClose(w, g, atol=1e-4, rtol=1e-4)

    def test_rejects_bad_query_block(self):
        q, k, v, _ = self._inputs(tf.float32)
        with self.assertRaisesRegex(ValueError, 'query_block'):
            nets.dot_product_attention(q, k, v, query_block=0)
        with self.assertRaisesRegex(ValueError, 'query_block'):
            nets.GatedAttention(8, query_block=-2)

    def test_lean_network_equals_full_network(self):
        """Same weights, same outputs and gradients, with or without the
        memory-lean attention (switched after construction)."""
        net = nets.ConvAttnNet((4, 6, 3), 5, filters=8, num_blocks=2,
                               num_heads=2, dtype=tf.float64)
        x = tf.constant(np.random.RandomState(1).randn(2, 4, 6, 3))

        def run():
            with tf.GradientTape() as tape:
                y = net(x)
                loss = tf.reduce_sum(tf.sin(y))
            return y, tape.gradient(loss, net.trainable_variables)

        full, full_grads = run()
        self.assertEqual(nets.set_attention_query_block(net, 7), 2)
        lean, lean_grads = run()
        self.assertAllClose(full, lean, atol=1e-12)
        for a, b in zip(full_grads, lean_grads):
            self.assertAllClose(a, b, atol=1e-12)

    def test_lean_attention_needs_far_less_memory(self):
        """TensorFlow's own tensor-memory peak of a training step (the BFC
        allocator, as on GPUs, in a fresh process): recomputing the weights
        in blocks must save most of the T x T memory."""
        script = textwrap.dedent("""
            import tensorflow as tf
            from vflow_tfp import nets
            net = nets.ConvAttnNet((32, 32, 3), 6, filters=32, num_blocks=3,
                                   num_heads=4)
            x = tf.random.normal([2, 32, 32, 3])

            def step_memory():
                @tf.function
                def step(x):
                    with tf.GradientTape() as tape:
                        y = tf.reduce_sum(net(x) ** 2)
                    return tape.gradient(y, net.trainable_variables)
                step(x)
                # The peak depends on the order the executor's threads run
                # independent ops in (by 10 MB under load): the least of
                # three steps.
                peaks = []
                for _ in range(3):
                    now = tf.config.experimental.get_memory_info('CPU:0')
                    tf.config.experimental.reset_memory_stats('CPU:0')
                    step(x)
                    peak = tf.config.experimental.get_memory_info('CPU:0')
                    peaks.append(peak['peak'] - now['current'])
                return min(peaks)

            full = step_memory()
            nets.set_attention_query_block(net, 128)
            print(full, step_memory())
            """)
        env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC='true',
                   TF_CPP_MIN_LOG_LEVEL='2')
        done = subprocess.run([sys.executable, '-c', script], env=env,
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        full, lean = map(int, done.stdout.split())
        # 3 blocks x [2, 4, 1024, 1024] float32 weights = 96 MiB kept by the
        # full attention; the lean one keeps [2, 4, 128, 1024] at a time.
        self.assertGreater(full - lean, 64 * 2**20)

    def test_lean_attention_weights_sum_to_one_in_low_precision(self):
        # With V = 1 the output is each row's sum of weights. Large logits
        # (std 30) make a bfloat16 log-sum-exp round far from its value.
        rng = np.random.RandomState(0)
        q = tf.constant(rng.randn(2, 64, 8) * 30.0 / np.sqrt(8), tf.float32)
        k = tf.constant(rng.randn(2, 64, 8), tf.float32)
        for dtype in (tf.bfloat16, tf.float16):
            ones = tf.ones([2, 64, 8], dtype)
            for block in (None, 16):
                out = nets.dot_product_attention(
                    tf.cast(q, dtype), tf.cast(k, dtype), ones,
                    query_block=block)
                self.assertAllClose(tf.cast(out, tf.float32),
                                    tf.ones([2, 64, 8]), atol=0.02,
                                    msg=f'{dtype.name}, block {block}')

    def test_options_also_set_the_module_they_are_given(self):
        context_net = nets.ContextNet((4, 4, 3), vb.ColumnSplit(), filters=8,
                                      num_blocks=1)
        self.assertEqual(nets.set_compute_dtype(context_net, 'bfloat16'), 1)
        self.assertEqual(context_net.compute_dtype, tf.bfloat16)
        net = nets.ConvAttnNet((4, 6, 3), 5, filters=8, num_blocks=1,
                               num_heads=2)
        block = next(m for m in net.submodules
                     if isinstance(m, nets.GatedAttention))
        self.assertEqual(nets.set_attention_query_block(block, 4), 1)
        self.assertEqual(block.query_block, 4)

    def test_presets_without_the_networks_refuse_the_options(self):
        with self.assertRaisesRegex(ValueError, 'no network that runs in '
                                    'mixed precision'):
            presets.build('checkerboard_glow_2', compute_dtype='bfloat16')
        with self.assertRaisesRegex(ValueError, 'has no attention'):
            presets.build('checkerboard_vflow_3_4', attention_query_block=8)

    def test_preset_option_reaches_every_attention_block(self):
        model = presets.build('tiny_vflow', seed=0, attention_query_block=16)
        blocks = [m for m in model.submodules
                  if isinstance(m, nets.GatedAttention)]
        self.assertNotEmpty(blocks)
        self.assertEqual({b.query_block for b in blocks}, {16})
        self.assertIn('attention_query_block',
                      presets.overridable('flowpp_cifar10'))

    def test_a_bad_query_block_is_refused_by_the_option_itself(self):
        # `None` or a positive int: anything else is refused before any
        # block changes, also by a module with no attention, and the
        # message names the option.
        for module in (nets.GlowNet((4, 4, 3), 6, filters=4),
                       nets.ConvAttnNet((4, 6, 3), 5, filters=8, num_blocks=1,
                                        num_heads=2)):
            with self.assertRaisesRegex(
                    ValueError, 'set_attention_query_block: query_block must '
                    'be None or a positive int'):
                nets.set_attention_query_block(module, 0)

    def test_set_compute_dtype_returns_the_number_of_networks(self):
        # "Returns the number of networks changed": every ConvAttnNet and
        # ContextNet of a model with several.
        model = presets.build('tiny_flowpp', seed=0)
        networks = [m for m in model.submodules
                    if isinstance(m, (nets.ConvAttnNet, nets.ContextNet))]
        self.assertGreater(len(networks), 1)
        self.assertEqual(nets.set_compute_dtype(model, 'bfloat16'),
                         len(networks))

    def test_preset_option_refuses_a_bad_query_block(self):
        # build's `attention_query_block` is `None` or a positive int, as
        # for `set_attention_query_block`: 0 is refused, not ignored.
        with self.assertRaisesRegex(
                ValueError, 'set_attention_query_block: query_block must '
                'be None or a positive int; got 0'):
            presets.build('tiny_vflow', seed=0, attention_query_block=0)

    def test_a_last_query_block_of_one_query(self):
        # query_block need not divide T_q: with 11 queries in blocks of 5
        # the last block holds a single query, and the values and
        # gradients are still those of full attention.
        q, k, v, up = self._inputs(tf.float64, tokens=12, queries=11)
        want, want_grads = _value_and_grads(_reference_attention, q, k, v, up)
        fn = functools.partial(nets.dot_product_attention, query_block=5)
        try:
            got, grads = _value_and_grads(fn, q, k, v, up)
        except (ValueError, tf.errors.OpError) as e:
            self.fail(f'11 queries in blocks of 5 were refused: {e}')
        self.assertAllClose(want, got, atol=1e-12)
        for w, g in zip(want_grads, grads):
            self.assertAllClose(w, g, atol=1e-12)

    def test_lean_backward_weights_sum_to_one_in_low_precision(self):
        # The backward pass recomputes W = exp(Q K^T - L) with L and the
        # exponent in float32 for bfloat16 and float16 (module docstring).
        # With dA = 1, dV = W^T dA sums over the tokens to each row's sum
        # of weights summed over the queries: T_q = 64 when rows sum to 1.
        # Large logits (std 30) make a low-precision L round far off.
        rng = np.random.RandomState(0)
        q = tf.constant(rng.randn(2, 64, 8) * 30.0 / np.sqrt(8), tf.float32)
        k = tf.constant(rng.randn(2, 64, 8), tf.float32)
        v = tf.constant(rng.randn(2, 64, 8), tf.float32)
        for dtype, tolerance in ((tf.bfloat16, 0.5), (tf.float16, 0.05)):
            low = [tf.cast(t, dtype) for t in (q, k, v)]
            fn = functools.partial(nets.dot_product_attention,
                                   query_block=16)
            _, grads = _value_and_grads(fn, *low, tf.ones([2, 64, 8], dtype))
            self.assertAllClose(
                tf.reduce_sum(tf.cast(grads[2], tf.float32), axis=-2),
                tf.fill([2, 8], 64.0), atol=tolerance, msg=dtype.name)

    def test_a_dynamic_query_count_is_refused_naming_q_s_shape(self):
        # query_block needs a static T_q: the error shows the shape of q
        # (the queries), not that of the keys.
        @tf.function(input_signature=[tf.TensorSpec([1, None, 4]),
                                      tf.TensorSpec([1, 5, 4])])
        def lean(q, kv):
            return nets.dot_product_attention(q, kv, kv, query_block=2)

        with self.assertRaisesRegex(
                ValueError, r'static number of queries; got q of shape '
                r'\(1, None, 4\)'):
            lean.get_concrete_function()


class MixedPrecisionTest(tf.test.TestCase):

    def test_elbo_and_gradients_match_float32(self):
        # pylint: disable-next=g-import-not-at-top
        from vflow_tfp.data import photos
        tf.random.set_seed(1)
        model = presets.build('tiny_vflow', seed=0)
        x = tf.constant(photos.photo_patches(8, 'train', max_patches=64),
                        tf.uint8)
        model.initialize(x, seed=tf.constant([0, 1]))
        variables = model.trainable_variables
        optimizer = tf_keras.optimizers.Adam(3e-3)

        def train_step(seed):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(x, training=True,
                                                  seed=seed))
            optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables))
            return loss

        # Trained a little, so that the networks' outputs matter (eagerly:
        # ten steps cost less than tracing the step).
        for i in range(10):
            train_step(tf.constant([i, 7]))
        seed = tf.constant([3, 4])

        def bpd():
            return float(tf.reduce_mean(
                model.bits_per_dim(model.elbo(x, seed=seed))))

        def gradients():
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(x, training=True, seed=seed))
            return tape.gradient(loss, variables)
        reference, reference_grads = bpd(), gradients()
        # Relative error of all gradients together: the rounding of 8 (11)
        # significand bits, 2^-8 (2^-11) per operation, accumulates to about
        # 1% (0.1%) here; a gradient path dropped or cut by a cast would
        # be off by far more.
        for dtype, tolerance in (('bfloat16', 0.05), ('float16', 0.01)):
            self.assertGreater(nets.set_compute_dtype(model, dtype), 0)
            self.assertAllClose(bpd(), reference, atol=0.01)
            grads = gradients()
            for grad in grads:
                self.assertEqual(grad.dtype, tf.float32)
                self.assertTrue(bool(tf.reduce_all(tf.math.is_finite(grad))))
            error = tf.linalg.global_norm(
                [g - r for g, r in zip(grads, reference_grads)])
            self.assertLess(
                float(error / tf.linalg.global_norm(reference_grads)),
                tolerance, dtype)
        nets.set_compute_dtype(model, None)
        self.assertEqual(bpd(), reference)

    def test_networks_compute_low_and_return_float32(self):
        net = nets.ConvAttnNet((4, 4, 3), 6, filters=8, num_blocks=1,
                               num_heads=2, context_channels=4,
                               compute_dtype=tf.bfloat16)
        out = net(tf.random.normal([2, 4, 4, 3]),
                  context=tf.random.normal([2, 4, 4, 4]))
        self.assertEqual(out.dtype, tf.float32)
        for v in net.trainable_variables:
            self.assertEqual(v.dtype, tf.float32)
        with self.assertRaisesRegex(ValueError, 'bfloat16 or float16'):
            net.compute_dtype = tf.float64
        model = presets.build('tiny_flowpp', compute_dtype='float16')
        self.assertEqual(
            {m.compute_dtype for m in model.submodules
             if isinstance(m, (nets.ConvAttnNet, nets.ContextNet))},
            {tf.float16})
        # The ImageNet context net (weight norm, layer norms, attention)
        # takes both options too.
        context = nets.ContextNet((4, 8, 3), vb.ColumnSplit(),
                                  filters=8, num_blocks=1, layer_norm=True,
                                  attention=True, weight_norm=True)
        x = tf.random.normal([2, 4, 8, 3])
        full = context(x)
        self.assertEqual(nets.set_attention_query_block(context, 4), 1)
        self.assertAllClose(context(x), full, atol=1e-5)
        context.compute_dtype = tf.bfloat16
        low = context(x)
        self.assertEqual(low.dtype, tf.float32)
        self.assertAllClose(low, full, atol=0.1)
        self.assertNotAllClose(low, full, atol=1e-6)

    def test_set_compute_dtype_refuses_a_dtype_that_is_not_16_bit(self):
        # `compute_dtype` is tf.bfloat16, tf.float16 or None: the setter
        # refuses another dtype as the networks' constructors do, and leaves
        # the networks as they were.
        model = presets.build('tiny_flowpp', seed=0)
        with self.assertRaisesRegex(ValueError, 'bfloat16 or float16'):
            nets.set_compute_dtype(model, tf.float64)
        self.assertEqual(
            {m.compute_dtype for m in model.submodules
             if isinstance(m, (nets.ConvAttnNet, nets.ContextNet))}, {None})

    def test_conv_attn_net_computes_in_its_compute_dtype(self):
        # compute_dtype runs the coupling network in mixed precision: its
        # output (cast back to float32) is the float32 output up to
        # bfloat16 rounding, not the float32 output itself.
        net = nets.ConvAttnNet((4, 4, 3), 6, filters=8, num_blocks=1,
                               num_heads=2)
        x = tf.random.stateless_normal([2, 4, 4, 3], [1, 2])
        full = net(x)
        net.compute_dtype = tf.bfloat16
        low = net(x)
        self.assertEqual(low.dtype, tf.float32)
        self.assertAllClose(low, full, atol=0.1)
        self.assertNotAllClose(low, full, atol=1e-6)


class GlowTest(tf.test.TestCase):

    def test_glow_net_starts_as_zero_and_counts_parameters(self):
        net = nets.GlowNet((4, 4, 3), 6, filters=10)
        x = tf.random.normal([2, 4, 4, 3])
        self.assertAllEqual(net(x), tf.zeros([2, 4, 4, 6]))
        count = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
        self.assertEqual(count, 9 * 3 * 10 + 10 + 10 * 10 + 10
                         + 9 * 10 * 6 + 6)
        with self.assertRaisesRegex(ValueError, 'takes no context'):
            net(x, context=x)

    def test_glow_preset_is_a_flow_that_learns(self):
        model = presets.build('glow_cifar10', levels=2, steps=2, filters=16,
                              image_shape=(8, 8, 3), seed=0)
        self.assertEqual(tuple(model.latent_shape), (2, 2, 48))
        x = tf.constant(np.random.RandomState(0).randint(
            0, 256, (8, 8, 8, 3)).astype(np.uint8))
        model.initialize(x, seed=tf.constant([0, 1]))
        # The flow is exactly invertible: latent -> data -> latent.
        eps = tf.random.stateless_normal([3, 2, 2, 48], seed=[1, 2])
        data = model.p_bijector.forward(eps)
        back = model.p_bijector.inverse(tf.identity(data))
        self.assertAllClose(eps, back, atol=1e-4)
        # Its likelihood improves with a few Adam steps.
        variables = model.trainable_variables
        optimizer = tf_keras.optimizers.Adam(1e-3)
        seed = tf.constant([3, 4])
        before = float(tf.reduce_mean(model.elbo(x, seed=seed)))
        for _ in range(20):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(x, seed=seed))
            optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables))
        after = float(tf.reduce_mean(model.elbo(x, seed=seed)))
        self.assertGreater(after, before)


class InverseIterationsTest(tf.test.TestCase):

    def test_counts_match_the_forward_pass(self):
        model = presets.build('tiny_flowpp', seed=0)
        x = tf.constant(np.random.RandomState(0).randint(
            0, 256, (4, 8, 8, 3)).astype(np.uint8))
        model.initialize(x, seed=tf.constant([0, 1]))
        coupling = next(b for b in model.p_bijector.bijectors
                        if isinstance(b, vb.MixLogisticCoupling))
        y = tf.random.stateless_normal([4, 8, 4, 3], seed=[1, 1])
        y = tf.concat([y, y], axis=2)
        iterations = coupling.inverse_iterations(y)
        _, trans = coupling.partition.split(y)
        self.assertEqual(iterations.shape, trans.shape)
        self.assertGreaterEqual(int(tf.reduce_min(iterations)), 1)
        # The numerical inverse converged: it round-trips.
        x_back = coupling.forward(y, training=False)
        again = coupling.inverse(tf.identity(x_back), training=False)
        self.assertAllClose(y, again, atol=1e-4)


def _initialized_toy_vflow():
    """A 2-step 4-dim checkerboard VFlow initialised on 8 points, and them."""
    model = presets.build('checkerboard_vflow_2_4', seed=0)
    x = tf.constant(np.random.RandomState(0).uniform(-4, 4, (8, 2)),
                    tf.float32)
    model.initialize(x, seed=tf.constant([0, 1]))
    return model, x


def _bench_module(name):
    """bench/NAME.py, loaded from its file (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f'bench_{name}', os.path.join(ROOT, 'bench', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Runs bench/run.py's command line with fake workers: each writes the
# result a real one would, with the settings its command line gives it
# (`suite.run`'s `jit_compile` and `steps`), and no TensorFlow starts.
_FAKE_WORKERS = textwrap.dedent("""
    import importlib.util, json, os, subprocess, sys, types
    from unittest import mock
    run_py, argv = sys.argv[1], sys.argv[2:]
    # Workers of the benchmarks named here fail, printing an error.
    FAIL = os.environ.get('FAKE_BENCH_FAIL', '').split(',')
    sys.modules['suite'] = types.SimpleNamespace(
        peak_matmul_flops=lambda: 100e9)
    spec = importlib.util.spec_from_file_location('bench_run', run_py)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    SPEED = dict(glow=20.0, tfp_glow=10.0)

    def worker(command, **kwargs):
        args = dict(a[2:].split('=', 1) for a in command[2:])
        name = args['worker']
        if name in FAIL:
            # A traceback longer than run.py shows: its end is the error.
            return subprocess.CompletedProcess(
                command, 1, '', 'Traceback (most recent call last):\\n'
                + '  File "suite.py", line 1, in run\\n' * 200
                + f'RuntimeError: {name} blew up')
        with open(args['json'], 'w') as f:
            json.dump(dict(
                name=name, jit_compile=args.get('xla') == 'True',
                steps=int(args['steps']), parameters=1,
                sampling=args['sampling'] == 'True',
                scoring=args['scoring'] == 'True',
                train_per_second=SPEED.get(name, 5.0), step_seconds=1.0,
                train_gflop_per_item=1.0, achieved_gflops=50.0,
                peak_rss_mb=1.0, train_mb_per_image=None,
                score_per_second_s16=16.0, score_per_second_s128=128.0,
                bfc_allocator=kwargs['env'].get(
                    'TF_CPU_ALLOCATOR_USE_BFC')), f)
        return subprocess.CompletedProcess(command, 0, '', '')

    with mock.patch.object(run.subprocess, 'run', worker):
        run.main(run.FLAGS(['run.py'] + argv))
""")


class BenchSuiteTest(tf.test.TestCase):

    def test_runs_and_reports_consistent_figures(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'bench.json')
            # A scikit-image that cannot be imported fails the image
            # benchmark after the toy one has run: the toy's figures are
            # still reported and written.
            fake = os.path.join(tmp, 'fake', 'skimage')
            os.makedirs(fake)
            with open(os.path.join(fake, '__init__.py'), 'w') as f:
                f.write('raise ImportError("no scikit-image here")\n')
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
                       PYTHONPATH=os.pathsep.join(
                           [os.path.dirname(fake)]
                           + os.environ.get('PYTHONPATH', '').split(
                               os.pathsep)))
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bench', 'run.py'),
                 '--only=toy_vflow,quickstart', '--steps=3',
                 f'--json={out}'],
                env=env, capture_output=True, text=True, timeout=600)
            self.assertEqual(done.returncode, 1, done.stderr[-2000:])
            self.assertIn('1 benchmark(s) failed: quickstart',
                          done.stderr.strip().splitlines()[-1])
            with open(out) as f:
                report = json.load(f)
        self.assertEqual(report['failed'], ['quickstart'])
        self.assertLen(report['results'], 1)
        result = report['results'][0]
        self.assertIn('toy_vflow', done.stdout)
        self.assertEqual(result['name'], 'toy_vflow')
        self.assertAlmostEqual(result['train_per_second'],
                               64 / result['step_seconds'], places=3)
        # Per image: the step's FLOPs counted both ways agree.
        self.assertAllClose(result['train_gflop_per_item'] * 64,
                            result['achieved_gflops']
                            * result['step_seconds'], rtol=1e-6)
        self.assertGreater(result['peak_rss_mb'], result['rss_before_mb'] / 2)
        self.assertLess(result['inverse_max_error'], 1e-4)
        self.assertGreater(result['score_per_second_s16'],
                           result['score_per_second_s128'])

    def test_run_launches_the_default_suite_with_its_settings(self):
        # Fake workers (_FAKE_WORKERS): what run.py launches and what it
        # makes of the results, in a second.
        benchmarks = _bench_module('benchmarks').BENCHMARKS
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'bench.json')
            done = subprocess.run(
                [sys.executable, '-c', _FAKE_WORKERS,
                 os.path.join(ROOT, 'bench', 'run.py'), '--xla', '--steps=2',
                 f'--json={out}'], capture_output=True, text=True,
                timeout=300)
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            with open(out) as f:
                report = json.load(f)
        results = report['results']
        # Without --only: the benchmarks of the default suite, and only
        # those (the slow memory runs are asked for by name).
        self.assertEqual(
            [r['name'] for r in results],
            [name for name, b in benchmarks.items() if b.in_default_suite])
        self.assertTrue(report['xla'])
        for r in results:
            # The settings reach every worker, --xla as well.
            self.assertTrue(r['jit_compile'], r['name'])
            self.assertEqual(r['steps'], 2, r['name'])
            self.assertAlmostEqual(r['fraction_of_matmul_peak'], 0.5)
        ratios = {r['name']: r.get('ratio_to_baseline') for r in results}
        # ours / baseline: glow's 20 per second against tfp_glow's 10.
        self.assertAlmostEqual(ratios.pop('glow'), 2.0)
        self.assertEqual(set(ratios.values()), {None})

    def test_run_figures_from_the_measurements(self):
        # The measurements stubbed, what suite.run makes of them.
        suite = _bench_module('suite')
        benchmark = _bench_module('benchmarks').Benchmark(
            'toy', 'a toy Glow', preset='checkerboard_glow_2', batch_size=8,
            train_only=True)
        measured = dict(step_seconds=0.5, trace_seconds=1.0, step_flops=4e9,
                        tensor_peak_mb=100.0, step_memory_mb=24.0)
        # ru_maxrss is in KiB on Linux: 3 GiB.
        usage = types.SimpleNamespace(ru_maxrss=3 * 2**20)
        with mock.patch.object(suite, 'train_throughput',
                               return_value=measured), \
                mock.patch.object(suite.resource, 'getrusage',
                                  return_value=usage):
            result = suite.run(benchmark, steps=2)
        self.assertEqual(result['train_per_second'], 16.0)
        self.assertEqual(result['peak_rss_mb'], 3 * 1024.0)
        # Per image, the step's memory as its FLOPs are.
        self.assertAllClose(result['train_gflop_per_item'] * 8,
                            result['achieved_gflops']
                            * result['step_seconds'])
        self.assertAllClose(result['train_mb_per_image'] * 8,
                            result['step_memory_mb'])

    def test_matmul_peak_counts_two_flops_per_multiply_add(self):
        suite = _bench_module('suite')

        def one_second_each(fn, repeats):
            for _ in range(repeats):
                fn()
            return [1.0] * repeats
        # A chain of 3 products of 64 x 64 matrices per timed call.
        with mock.patch.object(suite, '_timed', one_second_each):
            self.assertEqual(
                suite.peak_matmul_flops(size=64, chain=3, repeats=2),
                3 * 2 * 64**3)

    def test_per_example_scoring_draws_per_example_seeds(self):
        # The column times scoring as the exported signatures score, with
        # the row-by-row draw of every example's noise from its own seed.
        suite = _bench_module('suite')
        model, x = _initialized_toy_vflow()
        calls = []
        real = model.example_seeds

        def example_seeds(x, seed):
            calls.append(seed)
            return real(x, seed)
        with mock.patch.object(model, 'example_seeds', example_seeds):
            suite.scoring_throughput(model, x, 2)
            self.assertEmpty(calls)
            suite.scoring_throughput(model, x, 2, per_example=True)
        self.assertNotEmpty(calls)

    def test_sampling_stats_report_the_mean_and_the_largest_count(self):
        # toy_vflow above has no mixture coupling; a Flow++ model does.
        suite = _bench_module('suite')
        model = presets.build('tiny_flowpp', seed=0)
        x = tf.constant(np.random.RandomState(0).randint(
            0, 256, (2, 8, 8, 3)).astype(np.uint8))
        model.initialize(x, seed=tf.constant([0, 1]))
        stats = suite.sampling_stats(model, x, num=2)
        self.assertLess(stats['inverse_max_error'], 1e-3)
        self.assertBetween(stats['inverse_mean_iterations'], 1.0,
                           stats['inverse_max_iterations'] - 1e-6)

    def test_unknown_benchmark_is_one_line_error_without_tensorflow(self):
        # The names are checked before TensorFlow is imported (which takes
        # seconds): a TensorFlow that cannot be imported is never reached.
        with tempfile.TemporaryDirectory() as tmp:
            fake = os.path.join(tmp, 'tensorflow')
            os.makedirs(fake)
            with open(os.path.join(fake, '__init__.py'), 'w') as f:
                f.write('raise ImportError("TensorFlow was imported")\n')
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bench', 'run.py'),
                 '--only=toy_glow,nope'], capture_output=True, text=True,
                timeout=300, env=dict(os.environ, PYTHONPATH=tmp))
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        self.assertIn("unknown benchmark(s) ['nope']; choose from "
                      'flowpp_attn,', done.stderr)
        self.assertNotIn('Traceback', done.stderr)

    def test_bad_command_lines_fail_before_any_benchmark(self):
        missing = os.path.join(tempfile.gettempdir(), 'no_such_dir_vflow',
                               'bench.json')
        for args, message in (
                (['--only=,'], '--only names no benchmark'),
                (['--only=toy_glow', '--steps=0'],
                 '--steps must be >= 1; got 0.'),
                (['--only=toy_glow', f'--json={missing}'],
                 f'--json={missing}: no directory'),
                (['--only=toy_glow', f'--json={tempfile.gettempdir()}'],
                 'is a directory; name a file')):
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bench', 'run.py'),
                 *args], capture_output=True, text=True, timeout=300,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
            self.assertEqual(done.returncode, 2, done.stderr[-2000:])
            self.assertIn(message, done.stderr.strip().splitlines()[-1])
            self.assertNotIn('[1/', done.stderr)


def _run_fake_bench(args, fail=()):
    """bench/run.py with fake workers (_FAKE_WORKERS), the workers of the
    benchmarks in `fail` failing; returns the finished process and the
    JSON report (None if none was written)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'bench.json')
        done = subprocess.run(
            [sys.executable, '-c', _FAKE_WORKERS,
             os.path.join(ROOT, 'bench', 'run.py'), *args, f'--json={out}'],
            capture_output=True, text=True, timeout=300,
            env=dict(os.environ, FAKE_BENCH_FAIL=','.join(fail)))
        if not os.path.exists(out):
            return done, None
        with open(out) as f:
            return done, json.load(f)


def _table_cells(printed):
    """`cell(column)`: the first row's entry under `column` in the table
    that `printed` (bench/run.py's output) starts with."""
    header, row = printed.splitlines()[:2]

    def cell(column):
        return row[header.index(column):].split()[0]
    return cell


def _stub_timings(times, calls):
    """A stand-in for suite._timed: runs `fn` as often as asked (recording
    the count in `calls`) and reports `times` as the measured seconds."""
    def timed(fn, repeats):
        calls.append(repeats)
        for _ in range(repeats):
            tf.nest.map_structure(lambda t: t.numpy(), fn())
        return list(times)
    return timed


class BenchReportingTest(tf.test.TestCase):
    """bench/run.py's report and bench/suite.py's figures, with fake workers
    or stubbed measurements (no real benchmark runs)."""

    def test_a_failed_benchmark_is_reported_and_the_others_go_on(self):
        # README: a benchmark that fails is reported and the others go on;
        # the table and the JSON (`failed` lists the rest) hold those that
        # finished, and the exit code is 1.
        done, report = _run_fake_bench(
            ['--only=toy_glow,quickstart,toy_vflow'], fail=['quickstart'])
        self.assertEqual(done.returncode, 1, done.stderr[-2000:])
        self.assertEqual(report['failed'], ['quickstart'])
        self.assertEqual([r['name'] for r in report['results']],
                         ['toy_glow', 'toy_vflow'])
        # Its error is shown ("their errors are above").
        self.assertIn('quickstart blew up', done.stderr)
        self.assertIn('1 benchmark(s) failed: quickstart',
                      done.stderr.strip().splitlines()[-1])
        # The progress counts every benchmark, the failed one as well.
        for i, name in enumerate(['toy_glow', 'quickstart', 'toy_vflow']):
            self.assertIn(f'[{i + 1}/3] {name}:', done.stderr)

    def test_a_run_whose_every_benchmark_fails_writes_nothing(self):
        # README: with every benchmark failed there is no table and no
        # JSON, and the exit code is 2.
        done, report = _run_fake_bench(['--only=toy_glow,toy_vflow'],
                                       fail=['toy_glow', 'toy_vflow'])
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        self.assertIsNone(report)
        self.assertEqual(done.stdout, '')
        self.assertIn('every benchmark failed: toy_glow, toy_vflow.',
                      done.stderr.strip().splitlines()[-1])

    def test_table_columns_hold_their_figures(self):
        # Each figure of the results is printed under its own heading.
        done, report = _run_fake_bench(['--only=toy_glow', '--sampling=false'])
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        # --sampling and --scoring reach the worker, each as given.
        self.assertFalse(report['results'][0]['sampling'])
        self.assertTrue(report['results'][0]['scoring'])
        cell = _table_cells(done.stdout)
        self.assertEqual(cell('benchmark'), 'toy_glow')
        self.assertEqual(cell('peak MiB'), '1')
        self.assertEqual(cell('MiB/img'), '-')  # not measured
        self.assertEqual(cell('IW16/s'), '16.0')
        self.assertEqual(cell('IW128/s'), '128.0')
        self.assertEqual(cell('IW16/s ex'), '-')
        # run.py turns on the BFC allocator for the workers, so that they
        # can read their tensor memory (README: memory).
        self.assertEqual(report['results'][0]['bfc_allocator'], 'true')

    def test_positional_arguments_are_refused(self):
        # run.py takes flags only: a benchmark named without --only is an
        # error before any benchmark runs, not the default suite.
        done, report = _run_fake_bench(['toy_glow'])
        self.assertIsNone(report)
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        self.assertIn("unexpected arguments ['toy_glow']", done.stderr)
        self.assertNotIn('[1/', done.stderr)

    def test_matmul_peak_is_the_fastest_of_the_timed_chains(self):
        # The peak: the FLOPs of the chain of `chain` products over the
        # fastest call, and the chain really multiplies `chain` times.
        suite = _bench_module('suite')
        calls, products = [], []
        real_matmul = tf.matmul

        def matmul(a, b, **kwargs):
            products.append((tuple(a.shape), tuple(b.shape)))
            return real_matmul(a, b, **kwargs)
        with mock.patch.object(suite, '_timed',
                               _stub_timings([2.0, 0.5, 4.0], calls)), \
                mock.patch.object(tf, 'matmul', matmul):
            peak = suite.peak_matmul_flops(size=64, chain=3, repeats=3)
        self.assertEqual(peak, 3 * 2 * 64**3 / 0.5)
        self.assertEqual(products, [((64, 64), (64, 64))] * 3)

    def test_train_throughput_times_steps_after_a_warm_up(self):
        # README: the median of `--steps` timed steps after tracing and one
        # warm-up step; the step's tensor memory is the peak during the
        # timed steps minus what is live between steps.
        suite = _bench_module('suite')
        w = tf.Variable([1.0, 2.0])
        runs = tf.Variable(0)

        def loss_fn(x, seed):
            del seed
            with tf.control_dependencies([runs.assign_add(1)]):
                return tf.reduce_sum((x - w)**2)
        calls, runs_before_timing, resets_before_timing = [], [], []
        timed = _stub_timings([0.3, 0.1, 0.2, 0.9, 0.5], calls)

        def recording_timed(fn, repeats):
            runs_before_timing.append(int(runs.numpy()))
            resets_before_timing.append(reset.call_count)
            return timed(fn, repeats)
        mib = 2**20
        # (current, peak) bytes before the timed steps, then after them.
        memory = [(10 * mib, 50 * mib), (12 * mib, 30 * mib)]
        with mock.patch.object(suite, '_timed', recording_timed), \
                mock.patch.object(suite, '_tensor_memory',
                                  side_effect=memory), \
                mock.patch.object(tf.config.experimental,
                                  'reset_memory_stats') as reset:
            result = suite.train_throughput(loss_fn, [w], tf.zeros([2]),
                                            steps=5, jit_compile=False)
        self.assertEqual(calls, [5])
        # The first (traced) call and the warm-up ran before the timing.
        self.assertEqual(runs_before_timing, [2])
        self.assertEqual(result['step_seconds'], 0.3)
        self.assertEqual(result['tensor_peak_mb'], 30.0)
        self.assertEqual(result['step_memory_mb'], 20.0)
        # The peak is the timed steps' own: the device's count is reset
        # once, just before them (not by the trace and the warm-up).
        self.assertEqual(resets_before_timing, [1])
        # pylint: disable-next=protected-access
        reset.assert_called_once_with(suite._compute_device())

    def test_run_measures_what_the_benchmark_and_flags_ask_for(self):
        suite = _bench_module('suite')
        benchmarks = _bench_module('benchmarks')
        # README: the toy experiment's step, 64 points with 8 draws of z
        # each and the sticking-the-landing estimator, train step only.
        recipe = benchmarks.BENCHMARKS['toy_vflow_recipe']
        self.assertEqual((recipe.batch_size, recipe.draws,
                          recipe.gradient_estimator, recipe.train_only,
                          recipe.in_default_suite),
                         (64, 8, 'sticking_the_landing', True, False))
        measured = dict(step_seconds=0.5, trace_seconds=1.0, step_flops=4e9,
                        tensor_peak_mb=None, step_memory_mb=None)
        elbo_calls, scored = [], []
        real_build = presets.build

        def build(*args, **kwargs):
            model = real_build(*args, **kwargs)
            real_elbo = model.elbo

            def elbo(x, **kw):
                elbo_calls.append(kw)
                return real_elbo(x, **kw)
            model.elbo = elbo
            return model

        def train_throughput(loss_fn, variables, batch, steps, jit_compile):
            del variables, steps, jit_compile
            del elbo_calls[:]  # initialising the model may call elbo
            loss_fn(batch, tf.constant([0, 1]))
            return measured

        def scoring_throughput(model, data, num_samples, per_example=False):
            del model, data
            scored.append((num_samples, per_example))
            return 1.0

        def run(benchmark, **flags):
            del elbo_calls[:], scored[:]
            with mock.patch.object(suite.presets, 'build', build), \
                    mock.patch.object(suite, 'train_throughput',
                                      train_throughput), \
                    mock.patch.object(suite, 'sampling_stats',
                                      return_value=dict(sample_seconds=1.0)), \
                    mock.patch.object(suite, 'scoring_throughput',
                                      scoring_throughput):
                return suite.run(benchmark, steps=2, **flags)
        toy = dict(preset='checkerboard_vflow_2_4', batch_size=8,
                   iw_images=8)
        # The training bound as the benchmark defines it.
        result = run(benchmarks.Benchmark(
            'toy', 'a toy VFlow', draws=3,
            gradient_estimator='sticking_the_landing', train_only=True,
            **toy))
        self.assertEqual(
            [(c.get('draws_per_row', 1),
              c.get('gradient_estimator', 'reparameterization'),
              c.get('training')) for c in elbo_calls],
            [(3, 'sticking_the_landing', True)])
        # train/s counts items (points), not draws (README).
        self.assertEqual(result['train_per_second'], 8 / 0.5)
        # train_only: no sampling and no scoring.
        self.assertEmpty(scored)
        self.assertNotIn('sample_seconds', result)
        # --sampling=false and --scoring=false each turn off their part;
        # scoring at S = 16 and 128, and at 16 with per-example seeds.
        benchmark = benchmarks.Benchmark('toy', 'a toy VFlow', **toy)
        result = run(benchmark, sampling=False)
        self.assertNotIn('sample_seconds', result)
        self.assertEqual(scored, [(16, False), (128, False), (16, True)])
        self.assertEqual(result['score_per_second_s16_per_example'], 1.0)
        result = run(benchmark, scoring=False)
        self.assertEqual(result['sample_seconds'], 1.0)
        self.assertEmpty(scored)

    def test_scoring_throughput_is_items_per_second_of_the_median(self):
        # "IW16/s, IW128/s: images per second of log_prob(x, num_samples=S)",
        # whatever S is.
        suite = _bench_module('suite')
        model, x = _initialized_toy_vflow()
        calls = []
        with mock.patch.object(suite, '_timed',
                               _stub_timings([4.0, 1.0, 2.0], calls)):
            for s in (2, 32):
                self.assertEqual(suite.scoring_throughput(model, x, s),
                                 8 / 2.0)

    def test_progress_reports_each_benchmark_s_own_figures(self):
        # The progress line after each benchmark gives its own train/s and
        # peak memory, not an earlier benchmark's.
        done, _ = _run_fake_bench(['--only=glow,tfp_glow'])
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        lines = done.stderr.splitlines()
        for name, speed in (('glow', '20.00'), ('tfp_glow', '10.00')):
            start = next(i for i, line in enumerate(lines)
                         if line.startswith('[') and f'] {name}:' in line)
            self.assertEqual(lines[start + 1].strip(),
                             f'{speed} per second, peak 1 MiB')

    def test_table_formats_every_column_of_a_full_result(self):
        # A result with every figure (as README's run-1 table shows one):
        # parameters with thousands separators, GF/item and GF/s each
        # under its heading, and the root-finder iterations as mean/max.
        result = dict(
            name='flowpp_attn', parameters=1971216, train_per_second=11.22,
            ratio_to_baseline=0.5, step_seconds=1.426,
            train_gflop_per_item=6.67, achieved_gflops=74.8,
            peak_rss_mb=4969.0, train_mb_per_image=199.0,
            sample_seconds=1.26, inverse_max_error=5.2e-6,
            inverse_mean_iterations=2.3214, inverse_max_iterations=4,
            score_per_second_s16=2.9, score_per_second_s128=0.4,
            score_per_second_s16_per_example=2.5)
        done = subprocess.run(
            [sys.executable, '-c', _PRINT_TABLE,
             os.path.join(ROOT, 'bench', 'run.py'), json.dumps([result])],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        cell = _table_cells(done.stdout)
        self.assertEqual(cell('params'), '1,971,216')
        self.assertEqual(cell('train/s'), '11.22')
        self.assertEqual(cell('ratio'), '0.50')
        self.assertEqual(cell('GF/item'), '6.67')
        self.assertEqual(cell('GF/s'), '74.8')
        self.assertEqual(cell('MiB/img'), '199')
        self.assertEqual(cell('iters'), '2.32/4')
        self.assertEqual(cell('step s'), '1.43')
        self.assertEqual(cell('sample s'), '1.26')
        self.assertEqual(cell('inv err'), '5.2e-06')
        self.assertEqual(cell('IW16/s ex'), '2.5')

    def test_json_under_a_file_is_refused_before_any_benchmark(self):
        # --json's directory is checked before the benchmarks run: a path
        # under a regular file has no directory to write to.
        with tempfile.NamedTemporaryFile() as not_a_dir:
            path = os.path.join(not_a_dir.name, 'bench.json')
            done = subprocess.run(
                [sys.executable, '-c', _FAKE_WORKERS,
                 os.path.join(ROOT, 'bench', 'run.py'), '--only=toy_glow',
                 f'--json={path}'], capture_output=True, text=True,
                timeout=300)
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        self.assertIn(f'--json={path}: no directory',
                      done.stderr.strip().splitlines()[-1])
        self.assertNotIn('[1/', done.stderr)

    def test_an_empty_item_of_only_names_no_benchmark(self):
        # `--only=` takes a comma-separated list, an empty item of which
        # names no benchmark (`--only=,` names none at all): a trailing
        # comma runs the benchmarks that are named.
        done, report = _run_fake_bench(['--only=toy_glow,'])
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertEqual([r['name'] for r in report['results']],
                         ['toy_glow'])

    def test_worker_without_a_known_benchmark_is_a_one_line_error(self):
        # The internal --worker flag needs a benchmark's name and --json;
        # an unknown name is refused in one line, not by a traceback.
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bench', 'run.py'),
                 '--worker=nope', f'--json={os.path.join(tmp, "r.json")}'],
                capture_output=True, text=True, timeout=300,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        self.assertIn('--worker needs a benchmark name and --json',
                      done.stderr.strip().splitlines()[-1])
        self.assertNotIn('Traceback', done.stderr)

    def test_rss_before_training_is_resident_memory(self):
        # "peak resident memory after training (ru_maxrss), and the RSS
        # before it": the current resident set is at most the peak (up to
        # the pages the kernel counts into ru_maxrss later), not the far
        # larger virtual size.
        suite = _bench_module('suite')
        # pylint: disable-next=protected-access
        current, peak = suite._current_rss_mb(), suite._rss_mb()
        self.assertGreater(current, 0.0)
        self.assertLessEqual(current, peak + 64.0)

    def test_sampling_is_timed_after_tracing_and_without_mixtures(self):
        # "wall time of 64 samples (traced beforehand)": the sampler is
        # traced once before the timing starts; a model without mixture
        # couplings has no root-finder iterations to report ('-').
        suite = _bench_module('suite')
        model, x = _initialized_toy_vflow()
        traces, traces_when_timed = [], []
        # pylint: disable-next=protected-access
        real_sample, real_timed = model.sample, suite._timed

        def sample(*args, **kwargs):
            traces.append(1)
            return real_sample(*args, **kwargs)

        def timed(fn, repeats):
            traces_when_timed.append(len(traces))
            return real_timed(fn, repeats)

        with mock.patch.object(model, 'sample', sample), \
                mock.patch.object(suite, '_timed', timed):
            stats = suite.sampling_stats(model, x, num=2)
        self.assertEqual(traces_when_timed, [1])
        self.assertLen(traces, 1)
        self.assertIsNone(stats['inverse_mean_iterations'])
        self.assertIsNone(stats['inverse_max_iterations'])

    def test_the_tfp_baseline_has_glow_s_architecture_and_batch(self):
        # README: the ratio compares with "TFP's own tfb.Glow with the same
        # architecture (2 levels x 8 steps, width 400)", same step.
        benchmarks = _bench_module('benchmarks').BENCHMARKS
        glow, tfp_glow = benchmarks['glow'], benchmarks['tfp_glow']
        self.assertEqual(glow.baseline, 'tfp_glow')
        self.assertEqual(tfp_glow.overrides, glow.overrides)
        self.assertEqual(tfp_glow.overrides,
                         dict(levels=2, steps=8, filters=400))
        self.assertEqual(tfp_glow.batch_size, glow.batch_size)


# bench/run.py's table of the results given as JSON (argv[2]), printed by
# run.py's own `_table`, in a process of its own (run.py defines flags).
_PRINT_TABLE = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location('bench_run', sys.argv[1])
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    print(run._table(json.loads(sys.argv[2])))
""")


class BenchMeasurementsTest(tf.test.TestCase):
    """bench/suite.py's measurements and bench/run.py's settings as
    bench/README.md documents them, with stubbed timings or fake workers."""

    def _train(self, suite, loss_fn, clock=None):
        """`suite.train_throughput` of `loss_fn` on one variable, with stub
        timings, no tensor memory, and (if given) `clock` as perf_counter."""
        w = tf.Variable([1.0, 2.0])
        with mock.patch.object(suite, '_timed', _stub_timings([0.1], [])), \
                mock.patch.object(suite, '_tensor_memory',
                                  return_value=None), \
                mock.patch.object(suite, 'time', types.SimpleNamespace(
                    perf_counter=clock or suite.time.perf_counter)):
            return suite.train_throughput(
                lambda x, seed: loss_fn(x - w), [w], tf.zeros([2]),
                steps=1, jit_compile=False)

    def test_trace_seconds_count_the_trace_and_the_first_call(self):
        # "The trace happens when the FLOPs are counted; the first call
        # reuses it, so both are timed": a clock that advances one second
        # per reading gives one second for each of the two.
        suite = _bench_module('suite')
        ticks = iter(range(100))
        result = self._train(suite, lambda d: tf.reduce_sum(d**2),
                             clock=lambda: float(next(ticks)))
        self.assertEqual(result['trace_seconds'], 2.0)

    def test_an_infinite_training_loss_is_an_error(self):
        # A step whose loss is not finite (inf as well as nan) measures
        # nothing: it fails the benchmark instead of reporting its speed
        # (`train_throughput` raises FloatingPointError).
        suite = _bench_module('suite')
        with self.assertRaisesRegex(FloatingPointError,
                                    'non-finite training loss inf'):
            self._train(suite, lambda d: tf.reduce_sum(d**2) + np.inf)

    def test_tensor_memory_is_the_compute_device_s_current_and_peak(self):
        # `(current, peak)` of the first GPU if any, else of the CPU, and
        # None where the device keeps no count.
        suite = _bench_module('suite')
        asked = []

        def memory_info(device):
            asked.append(device)
            return {'current': 3, 'peak': 7}

        for gpus, device in (([], 'CPU:0'), (['a GPU'], 'GPU:0')):
            with mock.patch.object(tf.config, 'list_logical_devices',
                                   return_value=gpus), \
                    mock.patch.object(tf.config.experimental,
                                      'get_memory_info', memory_info):
                # pylint: disable-next=protected-access
                self.assertEqual(suite._tensor_memory(), (3, 7))
            self.assertEqual(asked.pop(), device)
        with mock.patch.object(tf.config.experimental, 'get_memory_info',
                               side_effect=ValueError('no BFC allocator')):
            # pylint: disable-next=protected-access
            self.assertIsNone(suite._tensor_memory())

    def test_the_tfp_baseline_is_trained_only_and_counts_its_parameters(self):
        # The TFP baseline is measured with the same training step and
        # nothing else (README's tfp_glow row: no sampling or scoring
        # figures); `params` counts its trainable parameters, as for ours.
        suite = _bench_module('suite')
        benchmark = _bench_module('benchmarks').Benchmark(
            'tiny_tfp_glow', 'a small tfb.Glow', tfp_model='tfp_glow',
            overrides=dict(levels=1, steps=1, filters=8), batch_size=2)
        trained = []

        def train_throughput(loss_fn, variables, batch, steps, jit_compile):
            del steps, jit_compile
            self.assertTrue(np.isfinite(loss_fn(batch, tf.constant([0, 1]))))
            trained.append(sum(v.shape.num_elements() for v in variables))
            return dict(step_seconds=0.5, trace_seconds=1.0, step_flops=1e9,
                        tensor_peak_mb=None, step_memory_mb=None)

        with mock.patch.object(suite, 'train_throughput', train_throughput), \
                mock.patch.object(suite, 'sampling_stats') as sampled, \
                mock.patch.object(suite, 'scoring_throughput') as scored:
            result = suite.run(benchmark, steps=2)
        self.assertLen(trained, 1)
        self.assertGreater(trained[0], 100)
        self.assertEqual(result['parameters'], trained[0])
        self.assertEqual(result['train_per_second'], 4.0)
        sampled.assert_not_called()
        scored.assert_not_called()

    def test_benchmarks_are_configured_as_the_readme_describes(self):
        # README: the default suite, the two vflow_cifar10 memory runs
        # (batch 2, train step only, by name only; the lean one with query
        # blocks of 128), and flowpp_attn's variants (query blocks of 64,
        # no attention, bfloat16 networks); the toys at batch 64.
        benchmarks = _bench_module('benchmarks').BENCHMARKS
        self.assertEqual(
            [n for n, b in benchmarks.items() if b.in_default_suite],
            ['flowpp_attn', 'flowpp_attn_lean', 'flowpp_noattn',
             'quickstart', 'glow', 'tfp_glow', 'flowpp_attn_bf16',
             'toy_glow', 'toy_vflow'])
        base = benchmarks['vflow_cifar10_memory']
        lean = benchmarks['vflow_cifar10_memory_lean']
        for b in (base, lean):
            self.assertEqual((b.preset, b.batch_size, b.train_only),
                             ('vflow_cifar10', 2, True))
        self.assertEqual(base.overrides, {})
        self.assertEqual(lean.overrides, dict(attention_query_block=128))
        attn = benchmarks['flowpp_attn'].overrides
        for name, extra in (('flowpp_attn_lean',
                             dict(attention_query_block=64)),
                            ('flowpp_noattn', dict(attention=False)),
                            ('flowpp_attn_bf16',
                             dict(compute_dtype='bfloat16'))):
            self.assertEqual(benchmarks[name].overrides, dict(attn, **extra),
                             name)
        for name in ('toy_glow', 'toy_vflow', 'toy_vflow_recipe'):
            self.assertEqual(benchmarks[name].batch_size, 64, name)

    def test_json_keeps_the_matmul_peak_in_gflops(self):
        # The JSON keeps every figure: the machine's float32 matmul peak in
        # GFLOP/s, as the printed line gives it (the fake workers' machine
        # reads 100 GFLOP/s), and the run's settings.
        done, report = _run_fake_bench(['--only=toy_glow', '--steps=3'])
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertIn('float32 matmul peak of this machine: 100 GFLOP/s',
                      done.stdout)
        self.assertEqual(report['matmul_peak_gflops'], 100.0)
        self.assertEqual((report['steps'], report['xla'], report['failed']),
                         (3, False, []))

    def test_json_may_name_a_file_in_the_working_directory(self):
        # README: `--json=bench.json`, a path relative to the working
        # directory, is written there.
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, '-c', _FAKE_WORKERS,
                 os.path.join(ROOT, 'bench', 'run.py'), '--only=toy_glow',
                 '--json=bench.json'], capture_output=True, text=True,
                timeout=300, cwd=tmp)
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            with open(os.path.join(tmp, 'bench.json')) as f:
                self.assertEqual(json.load(f)['results'][0]['name'],
                                 'toy_glow')


if __name__ == '__main__':
    tf.test.main()
