"""Layer-specific properties: orderings from the spec, initialisation, LU
reconstruction, the image logit constant, and the fused single pass."""

import math
import re
import threading

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util
from absl.testing import parameterized

import vflow_tfp
from vflow_tfp import bijectors as vb
from vflow_tfp import models
from bijector_cases import TinyConditioner
from bijector_cases import randomise

tfb = tfp.bijectors
tfd = tfp.distributions


def _constant_conditioner(params):
    """A conditioner returning the same `params` for every position."""
    def net(c, context=None, training=False):
        del context, training
        return tf.broadcast_to(tf.constant(params, c.dtype), tf.concat(
            [tf.shape(c)[:-1], [len(params)]], 0))
    return net


class ActNormInitTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(True, False)
    def test_explicit_initialize_normalises_the_batch(self, per_channel):
        norm = vb.ActNorm([4, 6, 3], per_channel=per_channel, dtype=tf.float64)
        x = tf.random.normal([16, 4, 6, 3], mean=3.0, stddev=5.0,
                             dtype=tf.float64)
        norm.initialize(x)
        y = norm.inverse(x)
        axes = [0, 1, 2] if per_channel else [0]
        mean, var = tf.nn.moments(y, axes=axes)
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-10)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-6)
        # Every axis in front of the event is a batch axis (e.g. several
        # draws per example): the moments are taken over all of them.
        norm = vb.ActNorm([6, 3], per_channel=per_channel, dtype=tf.float64)
        x = tf.random.normal([4, 16, 6, 3], mean=-2.0, stddev=3.0,
                             dtype=tf.float64)
        norm.initialize(x)
        axes = [0, 1, 2] if per_channel else [0, 1]
        mean, var = tf.nn.moments(norm.inverse(x), axes=axes)
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-10)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-6)

    def test_context_manager_initialises_in_order(self):
        # Two ActNorms in a chain: the second must see the first's output.
        first = vb.ActNorm([5], dtype=tf.float64, name='first')
        second = vb.ActNorm([5], dtype=tf.float64, name='second')
        scale = vb.Invertible1x1Conv([5], dtype=tf.float64)
        chain = tfb.Chain([second, scale, first])
        x = tf.random.normal([64, 5], mean=-2.0, stddev=3.0, dtype=tf.float64)
        with vflow_tfp.data_dependent_init():
            y = chain.inverse(x)
        mean, var = tf.nn.moments(y, axes=[0])
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-10)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-6)
        # Outside the context nothing is re-initialised.
        before = second.log_scale.numpy().copy()
        chain.inverse(2.0 * x)
        self.assertAllEqual(before, second.log_scale.numpy())

    def test_a_pass_through_a_tf_function_warns(self):
        # The switch is read at trace time. A function traced before the
        # context has no initialisation in its graph; one traced inside
        # keeps it, so each later call would initialise again.
        x = tf.random.normal([64, 5], mean=-2.0, stddev=3.0)
        norm = vb.ActNorm([5], name='traced_norm')
        inverse = tf.function(norm.inverse)
        inverse(x)
        with self.assertLogs('absl', 'WARNING') as logs:
            with vflow_tfp.data_dependent_init():
                inverse(x)
        self.assertAllEqual(norm.shift, tf.zeros([5]))
        self.assertIn('no layer initialised itself', logs.output[-1])
        # One warning for the pass, naming the first layer, however many
        # layers initialise in the traced graph.
        second = vb.ActNorm([5], name='second_norm')
        fresh = tf.function(lambda x: second.inverse(norm.inverse(x)))
        with self.assertLogs('absl', 'WARNING') as logs:
            with vflow_tfp.data_dependent_init():
                fresh(x)
        self.assertIn('traced_norm initialises itself while a tf.function '
                      'is traced', logs.output[0])
        self.assertLen(logs.output, 1)
        # Eagerly: initialised, without a warning.
        with self.assertNoLogs('absl', 'WARNING'):
            with vflow_tfp.data_dependent_init():
                norm.inverse(x)
        self.assertAllClose(norm.shift, -tf.reduce_mean(x, 0) * tf.exp(
            norm.log_scale), atol=1e-5)
        # A model made of TFP bijectors alone has nothing to initialise;
        # VFlow.initialize says so by expect_layers=False.
        with self.assertNoLogs('absl', 'WARNING'):
            with vflow_tfp.data_dependent_init(expect_layers=False):
                tfb.Scale(2.0).inverse(x)

    def test_a_nested_pass_leaves_the_outer_one_active(self):
        # A model's `initialize` may run inside a caller's pass (e.g. a
        # wrapper that initialises its own layers too).
        norm = vb.ActNorm([5], dtype=tf.float64)
        x = tf.random.normal([64, 5], mean=-2.0, stddev=3.0,
                             dtype=tf.float64)
        with vflow_tfp.data_dependent_init():
            with vflow_tfp.data_dependent_init(expect_layers=False):
                pass
            self.assertTrue(vflow_tfp.initialization.is_active())
            y = norm.inverse(x)
        self.assertFalse(vflow_tfp.initialization.is_active())
        mean, var = tf.nn.moments(y, axes=[0])
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-10)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-6)

    def test_scale_cannot_reach_zero(self):
        norm = vb.ActNorm([3], dtype=tf.float32)
        norm.log_scale.assign([-80.0, 0.0, 80.0])
        x = tf.ones([2, 3])
        self.assertTrue(np.all(np.isfinite(norm.inverse_log_det_jacobian(
            x, event_ndims=1))))
        self.assertTrue(np.all(norm.forward(x)[:, 1] == 1.0))

    def test_a_constant_channel_gets_a_finite_scale(self):
        # A constant input (an image border, a dead pixel) has variance 0:
        # the init's epsilon gives log_scale = -log(1e-8) / 2, not inf.
        norm = vb.ActNorm([4, 4, 2], per_channel=True)
        x = tf.concat([tf.random.normal([8, 4, 4, 1]),
                       tf.fill([8, 4, 4, 1], 3.0)], axis=-1)
        norm.initialize(x)
        self.assertAllClose(norm.log_scale[1], -0.5 * math.log(1e-8),
                            rtol=1e-5)
        self.assertAllInSet(tf.math.is_finite(norm.inverse(x)), [True])

    def test_huge_values_are_normalised_not_zeroed(self):
        # Beyond about 1e19 the squares overflow float32: the moments' variance
        # is inf, which would give a scale of 0 and a log-det of -inf.
        rng = np.random.default_rng(0)
        values = rng.normal(size=[64, 3]) * [1e19, 1e30, 1.0] + [0, 5e30, 2]
        reference = vb.ActNorm([3], dtype=tf.float64)
        reference.initialize(values)
        for dtype in (tf.float32, tf.float64):
            with self.subTest(dtype=dtype.name):
                norm = vb.ActNorm([3], dtype=dtype)
                norm.initialize(tf.constant(values, dtype))
                self.assertAllClose(norm.log_scale, reference.log_scale,
                                    rtol=1e-5)
                normalised = norm.inverse(tf.constant(values, dtype))
                self.assertAllClose(np.std(normalised, axis=0), [1, 1, 1],
                                    rtol=1e-4)
                self.assertAllClose(np.mean(normalised, axis=0), [0, 0, 0],
                                    atol=1e-4)

    def test_warns_when_initialised_from_a_few_values(self):
        per_element = vb.ActNorm([4, 4, 3], per_channel=False, name='few')
        with self.assertLogs('absl', 'WARNING') as logs:
            per_element.initialize(tf.random.normal([3, 4, 4, 3]))
        self.assertIn('few: initialised from 3 value(s) per parameter',
                      logs.output[0])
        # Per channel, the 3 images give 3 * 16 values per parameter.
        per_channel = vb.ActNorm([4, 4, 3], per_channel=True)
        with self.assertNoLogs('absl', 'WARNING'):
            per_channel.initialize(tf.random.normal([3, 4, 4, 3]))

    def test_initialises_even_when_tfp_has_the_input_cached(self):
        # TFP caches `inverse(x)` while its result is referenced; the init
        # pass must still run the layers (and not keep stale results).
        norm = vb.ActNorm([4], dtype=tf.float64)
        chain_norm = vb.ActNorm([4], dtype=tf.float64)
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0), [4]),
            tfb.Chain([chain_norm]))
        x = tf.random.normal([64, 4], mean=3.0, stddev=5.0, dtype=tf.float64)
        before = norm.inverse(x)
        before_chain = dist.bijector.inverse(x)
        with vflow_tfp.data_dependent_init():
            y = norm.inverse(x)
            dist.log_prob(x)
        mean, var = tf.nn.moments(y, axes=[0])
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-10)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-6)
        self.assertAllClose(chain_norm.log_scale, norm.log_scale, atol=1e-12)
        self.assertAllClose(norm.inverse(x), y, atol=1e-12)  # not `before`
        del before, before_chain

    def test_eager_updates_on_one_input_tensor_after_clearing_caches(self):
        # Eager steps on one fixed batch tensor: while an output of a layer
        # on `x` is alive (here each layer's, kept as a user might keep the
        # latents), TFP answers the next log_prob(x) from its cache, with the
        # old weights; after clear_bijector_caches it cannot. The couplings
        # keep a cache of their own (their fused single pass), which must be
        # emptied as well as TFP's.
        norm = vb.ActNorm([4], dtype=tf.float64)
        conv = vb.Invertible1x1Conv([4], dtype=tf.float64)
        coupling = vb.AffineCoupling(
            TinyConditioner((2,), 4, dtype=tf.float64),
            vb.ChannelSplit(event_ndims=1), dtype=tf.float64)
        flow = tfb.Chain([norm, conv, coupling])
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0), [4]),
            tfb.Invert(flow))
        x = tf.random.normal([8, 4], stddev=3.0, dtype=tf.float64)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(dist.log_prob(x))
            fresh = -tf.reduce_mean(dist.log_prob(tf.identity(x)))
            self.assertAllClose(loss, fresh, atol=1e-12)
            kept = [layer.forward(x) for layer in (norm, conv, coupling)]
            grads = tape.gradient(loss, flow.trainable_variables)
            self.assertNotIn(None, grads)
            for var, grad in zip(flow.trainable_variables, grads):
                var.assign_sub(0.1 * grad)
            vflow_tfp.clear_bijector_caches()
        del kept

    def test_rejects_constant_parameters_on_initialize(self):
        norm = vb.ActNorm([3], log_scale=tf.zeros([3]), shift=tf.zeros([3]))
        with self.assertRaisesRegex(TypeError, 'variable parameters'):
            norm.initialize(tf.ones([2, 3]))

    def test_an_error_in_the_pass_ends_it(self):
        # An exception inside the pass must not leave the switch on: every
        # later call of every layer would re-initialise from its batch.
        with self.assertRaisesRegex(RuntimeError, 'bad batch'):
            with vflow_tfp.data_dependent_init(expect_layers=False):
                raise RuntimeError('bad batch')
        self.assertFalse(vflow_tfp.initialization.is_active())
        norm = vb.ActNorm([3], dtype=tf.float64)
        norm.inverse(tf.random.normal([8, 3], mean=5.0, dtype=tf.float64))
        self.assertAllEqual(norm.shift, tf.zeros([3], tf.float64))

    def test_results_cached_in_the_pass_are_dropped_at_its_end(self):
        # A layer that runs twice in the pass is initialised twice; the
        # first result, cached by TFP under the first batch, was computed
        # with parameters that no longer hold and must not be served after
        # the pass.
        norm = vb.ActNorm([4], dtype=tf.float64)
        x1 = tf.random.normal([64, 4], mean=3.0, stddev=5.0,
                              dtype=tf.float64)
        x2 = tf.random.normal([64, 4], mean=-1.0, stddev=0.5,
                              dtype=tf.float64)
        with vflow_tfp.data_dependent_init():
            stale = norm.inverse(x1)
            norm.inverse(x2)
        self.assertAllClose(norm.inverse(x1), norm.inverse(tf.identity(x1)),
                            atol=1e-12)
        del stale

    def test_clear_empties_the_cache_of_a_class_deep_in_the_hierarchy(self):
        # `clear_bijector_caches` empties every bijector class's cache: also
        # that of a class two levels below `tfb.Bijector` whose parent keeps
        # none, and one that a class takes from a mixin that is no bijector
        # (as a user's subclass of a package layer may).
        calls = []

        class Halving(tfb.Bijector):

            def __init__(self):
                super().__init__(forward_min_event_ndims=0,
                                 parameters={}, name='halving')

            def _inverse(self, y):
                calls.append(y)
                return y / 2.0

        class Deep(Halving):
            _cache = cache_util.BijectorCache()

        class CacheMixin:
            _cache = cache_util.BijectorCache()

        class Mixed(CacheMixin, Halving):
            pass

        for cls in (Deep, Mixed):
            with self.subTest(cls=cls.__name__):
                del calls[:]
                layer = cls()
                x = tf.constant([1.0, 2.0])
                kept = layer.inverse(x)
                layer.inverse(x)
                self.assertLen(calls, 1)  # the second call: the cache's
                vflow_tfp.clear_bijector_caches()
                layer.inverse(x)
                self.assertLen(calls, 2)
                del kept

    def test_a_nested_pass_warns_when_it_initialises_nothing(self):
        # `expect_layers` warns at the end of *the* pass if no layer
        # initialised itself in it: layers the outer pass initialised before
        # do not count for an inner one.
        norm = vb.ActNorm([5], dtype=tf.float64)
        x = tf.random.normal([64, 5], dtype=tf.float64)
        with self.assertLogs('absl', 'WARNING') as logs:
            with vflow_tfp.data_dependent_init():
                norm.inverse(x)
                with vflow_tfp.data_dependent_init():
                    pass
        self.assertLen(logs.output, 1)
        self.assertIn('no layer initialised itself', logs.output[0])

    def test_a_pass_is_active_only_in_the_thread_that_runs_it(self):
        # `is_active()` is true inside the `with` block; a layer that another
        # thread runs meanwhile (e.g. an evaluation) is not inside it and
        # keeps its parameters.
        norm = vb.ActNorm([3], dtype=tf.float64)
        seen = []

        def other_thread():
            seen.append(vflow_tfp.initialization.is_active())
            norm.inverse(tf.random.normal([8, 3], mean=5.0,
                                          dtype=tf.float64))

        with vflow_tfp.data_dependent_init(expect_layers=False):
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
            self.assertTrue(vflow_tfp.initialization.is_active())
        self.assertEqual(seen, [False])
        self.assertAllEqual(norm.shift, tf.zeros([3], tf.float64))

    def test_initialize_converts_arrays_to_the_layer_dtype(self):
        # Arrays are converted to the layer's dtype, as for supplied
        # parameters: a NumPy float64 batch initialises a float32 layer.
        values = np.random.default_rng(0).normal(3.0, 2.0, size=[32, 3])
        norm = vb.ActNorm([3])
        try:
            norm.initialize(values)
        except (TypeError, ValueError) as error:
            self.fail(f'a float64 array was not converted: {error}')
        reference = vb.ActNorm([3])
        reference.initialize(tf.constant(values, tf.float32))
        self.assertAllClose(norm.log_scale, reference.log_scale)
        self.assertAllClose(norm.shift, reference.shift)

    def test_a_function_traced_after_eager_layers_in_the_pass_warns(self):
        # "one traced inside the context keeps the initialisation in its
        # graph ... (a warning says so when it is traced)": also when
        # layers have already initialised themselves eagerly in that pass.
        eager = vb.ActNorm([5], name='eager_norm')
        traced = vb.ActNorm([5], name='later_traced_norm')
        x = tf.random.normal([64, 5], mean=-2.0, stddev=3.0)
        with self.assertLogs('absl', 'WARNING') as logs:
            with vflow_tfp.data_dependent_init():
                y = eager.inverse(x)
                tf.function(traced.inverse)(y)
        self.assertLen(logs.output, 1)
        self.assertIn('later_traced_norm initialises itself while a '
                      'tf.function is traced', logs.output[0])

    def test_a_pass_ended_by_an_error_does_not_warn_of_no_layers(self):
        # `expect_layers` warns "at the end of the pass" that no layer
        # initialised itself, blaming a function traced before the context:
        # a pass cut short by an error reports that error alone, not a
        # diagnosis of a pass that never finished.
        with self.assertNoLogs('absl', 'WARNING'):
            with self.assertRaisesRegex(RuntimeError, 'bad batch'):
                with vflow_tfp.data_dependent_init():
                    raise RuntimeError('bad batch')
        self.assertFalse(vflow_tfp.initialization.is_active())


class PositionCountTest(tf.test.TestCase, parameterized.TestCase):
    """The log-det of these layers counts the positions of the event shape
    they were built for, so another shape must be refused, not broadcast."""

    def _layers(self):
        return [vb.ActNorm([4, 4, 2]),
                vb.ActNorm([4, 4, 2], per_channel=False),
                vb.Invertible1x1Conv([4, 4, 2]),
                vb.Invertible1x1ConvLU([4, 4, 2])]

    def test_another_image_size_is_refused_in_every_direction(self):
        x = tf.random.normal([1, 8, 8, 2])
        for layer in self._layers():
            for call in (layer.inverse, layer.forward,
                         lambda v, b=layer: b.inverse_log_det_jacobian(v, 3),
                         lambda v, b=layer: b.forward_log_det_jacobian(v, 3)):
                with self.assertRaisesRegex(ValueError, r'built for events '
                                            r'of shape \[4, 4, 2\]'):
                    call(tf.identity(x))
            # The event-shape functions refuse it as well, and pass the
            # built shape (with any batch axes) through.
            for shape_fn in (layer.forward_event_shape,
                             layer.inverse_event_shape):
                with self.assertRaisesRegex(ValueError, 'built for events'):
                    shape_fn([8, 8, 2])
                self.assertEqual(shape_fn([5, 4, 4, 2]), [5, 4, 4, 2])
            # So do their tensor versions, when traced or, for a shape
            # known only then, when the graph runs.
            for shape_fn in (layer.forward_event_shape_tensor,
                             layer.inverse_event_shape_tensor):
                with self.assertRaisesRegex(ValueError, 'built for events'):
                    shape_fn([8, 8, 2])
                self.assertAllEqual(shape_fn([5, 4, 4, 2]), [5, 4, 4, 2])
                traced = tf.function(shape_fn, input_signature=[
                    tf.TensorSpec([4], tf.int32)])
                self.assertAllEqual(traced(tf.constant([5, 4, 4, 2])),
                                    [5, 4, 4, 2])
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            r'built for events of shape '
                                            r'\[4, 4, 2\]'):
                    traced(tf.constant([5, 8, 8, 2]))
                with self.assertRaisesRegex(ValueError, 'built for events'):
                    tf.function(shape_fn, input_signature=[
                        tf.TensorSpec([2], tf.int32)]).get_concrete_function()

    def test_per_channel_log_det_counts_every_position_of_the_event(self):
        # ActNorm's docstring: the log-det is N * sum(log_scale), N the
        # number of positions sharing one parameter. A per-channel layer on
        # an event [T, C] (a sequence, not an image) shares each channel's
        # parameter over T positions, so the log-det must be the log|det|
        # of the inverse's Jacobian, as TFP's bijector contract requires.
        layer = vb.ActNorm([5, 3], log_scale=tf.constant([0.1, -0.2, 0.3]),
                           shift=tf.constant([0.5, 0., -1.]))
        x = tf.random.stateless_normal([5, 3], seed=[1, 2])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer.inverse(x)
        jacobian = tf.reshape(tape.jacobian(y, x), [15, 15])
        expected = tf.linalg.slogdet(jacobian)[1]
        self.assertAllClose(layer.inverse_log_det_jacobian(x, 2), expected,
                            atol=1e-5)
        self.assertAllClose(layer.forward_log_det_jacobian(y, 2), -expected,
                            atol=1e-5)

    def test_an_unknown_batch_still_traces(self):
        for layer in self._layers():
            fn = tf.function(layer.inverse, input_signature=[
                tf.TensorSpec([None, 4, 4, 2])])
            self.assertEqual(fn(tf.ones([3, 4, 4, 2])).shape, [3, 4, 4, 2])

    def test_supplied_parameters_of_another_dtype_are_refused(self):
        # A float32 variable in a float64 layer: refused by name when the
        # layer is built, not by a conversion error in `inverse` later.
        with self.assertRaisesRegex(
                TypeError, r'Invertible1x1Conv: weights is float32 but the '
                r"layer's dtype is float64"):
            vb.Invertible1x1Conv([3], dtype=tf.float64,
                                 weights=tf.Variable(tf.eye(3)[None]))
        with self.assertRaisesRegex(TypeError, r'ActNorm: shift is float32'):
            vb.ActNorm([3], dtype=tf.float64, shift=tf.Variable(tf.zeros([3])))
        # A plain tensor of another dtype is refused by name too, not only a
        # variable.
        with self.assertRaisesRegex(TypeError,
                                    r'ActNorm: log_scale is float32'):
            vb.ActNorm([3], dtype=tf.float64, log_scale=tf.zeros([3]))
        # Arrays are converted to the layer's dtype, and matching variables
        # are used as they are.
        layer = vb.Invertible1x1Conv([3], dtype=tf.float64,
                                     weights=np.eye(3)[None] * 2.0)
        # (W acts in the data -> latent direction, as in Glow.)
        self.assertAllClose(layer.inverse(tf.ones([1, 3], tf.float64)),
                            2.0 * np.ones([1, 3]))
        vb.ActNorm([3], dtype=tf.float64,
                   shift=tf.Variable(tf.zeros([3], tf.float64)))

    def test_supplied_parameters_of_the_wrong_shape_are_refused(self):
        # A per-element log-scale in a per-channel ActNorm would be applied
        # per element while the log-det multiplied its sum by H * W.
        with self.assertRaisesRegex(ValueError, r'log_scale must have shape '
                                    r'\[2\]'):
            vb.ActNorm([4, 4, 2], log_scale=tf.zeros([4, 4, 2]))
        with self.assertRaisesRegex(ValueError, r'shift must have shape'):
            vb.ActNorm([4, 4, 2], per_channel=False, shift=tf.zeros([5]))
        with self.assertRaisesRegex(ValueError, r'weights must have shape'):
            vb.Invertible1x1Conv([3], weights=tf.Variable(tf.eye(3)))
        # Python numbers and lists are checked like arrays.
        with self.assertRaisesRegex(ValueError, r'log_scale must have shape '
                                    r'\[2\]; got \(\)'):
            vb.ActNorm([2], log_scale=0.0)
        with self.assertRaisesRegex(ValueError, r'weights must have shape '
                                    r'\[1, 2, 2\]; got \(2, 2\)'):
            vb.Invertible1x1Conv([2], weights=[[2.0, 0.0], [0.0, 1.0]])
        layer = vb.Invertible1x1Conv([2], weights=[[[2.0, 0.0], [0.0, 1.0]]])
        self.assertAllClose(layer.inverse(tf.ones([1, 2])), [[2.0, 1.0]])
        layer = vb.ActNorm([2], log_scale=[0.0, 0.0], shift=[1.0, 2.0])
        self.assertAllClose(layer.inverse(tf.ones([1, 2])), [[2.0, 3.0]])
        good = vb.Invertible1x1ConvLU._initial_factors(1, 3, tf.float32)
        # A [1, 1] log_s would broadcast over the diagonal while the log-det
        # summed the one stored value.
        for field, value in (('log_s', tf.Variable([[0.5]])),
                             ('sign', tf.Variable(tf.ones([3]))),
                             ('upper', tf.Variable(tf.zeros([1, 3, 2])))):
            with self.assertRaisesRegex(ValueError,
                                        f'lu_factors.{field} must have'):
                vb.Invertible1x1ConvLU(
                    [3], lu_factors=good._replace(**{field: value}))
        # Factors of another dtype, like the dense layer's weights: its
        # log-det would be float32 in a float64 layer.
        good64 = vb.Invertible1x1ConvLU._initial_factors(1, 3, tf.float64)
        for field in ('sign', 'lower', 'upper', 'log_s'):
            with self.assertRaisesRegex(
                    TypeError, f'Invertible1x1ConvLU: lu_factors.{field} is '
                    "float32 but the layer's dtype is float64"):
                vb.Invertible1x1ConvLU([3], dtype=tf.float64,
                                       lu_factors=good64._replace(
                                           **{field: getattr(good, field)}))
        vb.Invertible1x1ConvLU([3], dtype=tf.float64, lu_factors=good64)

    def test_empty_event_shapes_are_refused(self):
        # A scalar event would make ActNorm and ConditionalAffine act per
        # number and leave the 1x1 convolution without channels.
        for build in (lambda: vb.ActNorm([]),
                      lambda: vb.ConditionalAffine(
                          vflow_tfp.nets.MLP(2, 2), []),
                      lambda: vb.Invertible1x1Conv([])):
            with self.assertRaisesRegex(ValueError, 'non-empty'):
                build()

    def test_initialize_refuses_another_event_shape(self):
        # A per-channel ActNorm would take moments of the other image size
        # without complaint, and its log-det would then count H * W of the
        # built shape for data of another one.
        for per_channel in (True, False):
            norm = vb.ActNorm([4, 4, 2], per_channel=per_channel)
            with self.assertRaisesRegex(ValueError, r'built for events of '
                                        r'shape \[4, 4, 2\]'):
                norm.initialize(tf.random.normal([2, 8, 8, 2]))
            self.assertAllEqual(norm.log_scale, tf.zeros_like(norm.log_scale))

    def test_act_norm_is_affine_for_transformed_distributions(self):
        # ActNorm's docstring: an affine map whose log-det, N *
        # sum(log_scale), is the same for every input; TFP's
        # `is_constant_jacobian` states it, and TransformedDistribution's
        # affine-only moments rely on it: the mean is forward(0) and the
        # entropy the base's plus that constant forward log-det.
        base = tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0),
                          [2, 2, 3])
        for per_channel in (True, False):
            with self.subTest(per_channel=per_channel):
                norm = vb.ActNorm([2, 2, 3], per_channel=per_channel,
                                  dtype=tf.float64)
                norm.log_scale.assign(0.3 * tf.ones_like(norm.log_scale))
                norm.shift.assign(tf.ones_like(norm.shift))
                self.assertTrue(norm.is_constant_jacobian)
                dist = tfd.TransformedDistribution(base, norm)
                self.assertAllClose(dist.mean(), np.full([2, 2, 3],
                                                         -math.exp(-0.3)))
                # 12 positions at log_scale 0.3 either way.
                self.assertAllClose(dist.entropy(),
                                    base.entropy() - 12 * 0.3)


class PartitionTest(tf.test.TestCase):

    def _grid(self):
        # value = 10 * row + column
        return tf.reshape(tf.constant(
            [[10.0 * i + j for j in range(4)] for i in range(4)]),
            [1, 4, 4, 1])

    def test_column_split_is_even_and_odd_columns(self):
        a, b = vb.ColumnSplit().split(self._grid())
        self.assertAllEqual(a[0, :, :, 0], [[0, 2], [10, 12], [20, 22],
                                            [30, 32]])
        self.assertAllEqual(b[0, :, :, 0], [[1, 3], [11, 13], [21, 23],
                                            [31, 33]])

    def test_checkerboard_is_a_true_checkerboard(self):
        a, b = vb.Checkerboard().split(self._grid())
        values_a = a.numpy().ravel()
        for v in values_a:
            self.assertEqual((int(v) // 10 + int(v) % 10) % 2, 0)
        for v in b.numpy().ravel():
            self.assertEqual((int(v) // 10 + int(v) % 10) % 2, 1)

    def test_merge_inverts_split_with_unknown_batch(self):
        for p in [vb.ColumnSplit(), vb.Checkerboard(), vb.ChannelSplit()]:
            fn = tf.function(lambda x, p=p: p.merge(*p.split(x)),
                             input_signature=[tf.TensorSpec([None, 4, 6, 2])])
            x = tf.random.normal([3, 4, 6, 2])
            self.assertAllEqual(fn(x), x)

    def test_channel_blocks_hold_the_halves_side_by_side(self):
        x = tf.random.normal([3, 4, 6, 2])
        for p in [vb.ColumnSplit(), vb.ChannelSplit(),
                  vb.ChannelSplit(first_channels=1)]:
            fn = tf.function(p.as_channel_blocks,
                             input_signature=[tf.TensorSpec([None, 4, 6, 2])])
            v = fn(x)
            a, b = p.split(x)
            c_a = a.shape[-1]
            self.assertAllEqual(v[..., :c_a], a)
            self.assertAllEqual(v[..., c_a:], b)
            self.assertAllEqual(p.from_channel_blocks(v, (4, 6, 2)), x)
        # No reshape puts a true checkerboard's halves side by side.
        self.assertIsNone(vb.Checkerboard().as_channel_blocks(x))

    def test_equal_configuration_means_equal_partition(self):
        self.assertEqual(vb.ChannelSplit(), vb.ChannelSplit(event_ndims=3))
        self.assertNotEqual(vb.ChannelSplit(), vb.ChannelSplit(event_ndims=1))
        self.assertNotEqual(vb.ColumnSplit(), vb.Checkerboard())
        self.assertEqual(hash(vb.ColumnSplit()), hash(vb.ColumnSplit()))
        # Splits at other channels differ, and so do the layers holding
        # them (TFP compares bijectors by their parameters).
        self.assertNotEqual(vb.ChannelSplit(),
                            vb.ChannelSplit(first_channels=1))
        self.assertNotEqual(vb.ChannelSplit(first_channels=1),
                            vb.ChannelSplit(first_channels=2))
        self.assertLen({vb.ChannelSplit(), vb.ChannelSplit(first_channels=1),
                        vb.ChannelSplit(first_channels=1)}, 2)
        self.assertNotEqual(
            vb.SwapHalves(vb.ChannelSplit(event_ndims=1)),
            vb.SwapHalves(vb.ChannelSplit(event_ndims=1, first_channels=1)))

    def test_channel_split_of_odd_channels_gives_b_the_extra_one(self):
        self.assertEqual(vb.ChannelSplit().half_event_shapes((4, 4, 3)),
                         ((4, 4, 1), (4, 4, 2)))
        a, b = vb.ChannelSplit().split(
            tf.reshape(tf.range(3.0), [1, 1, 1, 3]))
        self.assertAllEqual(a[0, 0, 0], [0.0])
        self.assertAllEqual(b[0, 0, 0], [1.0, 2.0])
        for bad in (0, -1):
            with self.assertRaisesRegex(ValueError,
                                        'first_channels must be >= 1'):
                vb.ChannelSplit(first_channels=bad)
        # All channels in the first half would leave the coupling nothing
        # to transform: an identity with log-det 0, refused instead.
        at_data = vb.ChannelSplit(event_ndims=1, first_channels=4)
        self.assertEqual(at_data.half_event_shapes((5,)), ((4,), (1,)))
        for call in (lambda: at_data.half_event_shapes((4,)),
                     lambda: at_data.split(tf.zeros([2, 4]))):
            with self.assertRaisesRegex(ValueError, 'needs more than 4 '
                                        'channels; got 4'):
                call()

    def test_swap_halves_needs_halves_of_equal_shape(self):
        # Unequal halves cannot trade places: the layer would not be its
        # own inverse while reporting a log-det of 0.
        with self.assertRaisesRegex(ValueError, 'halves of equal shape'):
            vb.SwapHalves(vb.ChannelSplit()).forward(tf.zeros([1, 4, 4, 3]))
        vector = vb.SwapHalves(vb.ChannelSplit(event_ndims=1))
        self.assertEqual(vector.forward_min_event_ndims, 1)
        self.assertAllEqual(vector.forward(tf.constant([[1., 2., 3., 4.]])),
                            [[3., 4., 1., 2.]])

    def test_clear_errors_for_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, 'even image width'):
            vb.ColumnSplit().split(tf.zeros([1, 4, 5, 2]))
        with self.assertRaisesRegex(ValueError, 'even image height'):
            vb.Checkerboard().half_event_shapes((3, 4, 2))
        with self.assertRaisesRegex(ValueError, 'at least 2 channels'):
            vb.ChannelSplit().split(tf.zeros([1, 4, 4, 1]))
        # A partition of vectors cannot split an image event (nor the
        # reverse): its halves, and a coupling's log-det reduced over
        # event_ndims axes, would be per pixel instead of per image.
        for partition, shape in ((vb.ChannelSplit(event_ndims=1), (4, 4, 6)),
                                 (vb.ChannelSplit(), (6,))):
            with self.assertRaisesRegex(ValueError, 'got event shape'):
                partition.check_event_shape(shape)
        # A tensor of unknown rank has no event shape to split.
        for layer in (vb.SwapHalves(vb.ChannelSplit()),
                      vb.Invertible1x1Conv([4, 4, 4],
                                           partition=vb.ColumnSplit())):
            traced = tf.function(layer.inverse,
                                 input_signature=[tf.TensorSpec(None)])
            with self.assertRaisesRegex(ValueError, 'last 3 dimensions are '
                                        'statically known; got shape '
                                        '<unknown>'):
                traced.get_concrete_function()

    def test_odd_number_of_steps_swaps_halves_like_tuple_flip(self):
        # The official step: split -> (coupling, TupleFlip) x n -> merge. With
        # a coupling that adds the first half to the second, n = 3 flips
        # leave the halves swapped; our parity + SwapHalves must agree.
        partition = vb.ColumnSplit()
        x = tf.random.normal([2, 4, 4, 2], dtype=tf.float64)

        def official(x, n):
            a, b = partition.split(x)
            for _ in range(n):
                b = b + 2.0 * a  # the coupling transforms the second element
                a, b = b, a  # TupleFlip
            return partition.merge(a, b)

        class AddTwice(tf.Module):
            def __call__(self, c, context=None, training=False):
                return 2.0 * c

        net = AddTwice()
        for n in (2, 3):
            layers = [vb.AdditiveCoupling(net, partition, parity=i % 2,
                                          dtype=tf.float64, name=f'c{i}')
                      for i in range(n)]
            if n % 2:
                layers.append(vb.SwapHalves(partition))
            # tfb.Chain applies its list right to left on `forward`, so the
            # data -> latent `inverse` runs it left to right.
            ours = tfb.Chain(layers)
            self.assertAllClose(official(x, n), ours.inverse(x))

    def test_every_partition_compares_equal_to_its_configuration(self):
        # Module docstring: two partitions with the same configuration
        # compare equal (and hash alike), so the layers holding them do too.
        for build in (vb.ColumnSplit, vb.Checkerboard, vb.ChannelSplit,
                      lambda: vb.ChannelSplit(event_ndims=1,
                                              first_channels=1)):
            self.assertEqual(build(), build())
            self.assertEqual(hash(build()), hash(build()))
            self.assertEqual(vb.SwapHalves(build()), vb.SwapHalves(build()))

    def test_checkerboard_halves_have_the_documented_layout(self):
        # Row i of half a holds the pixels (i, 2k + i mod 2), row i of half
        # b the pixels (i, 2k + 1 - i mod 2): each row of a half comes from
        # the same row of the image.
        a, b = vb.Checkerboard().split(self._grid())  # value 10 i + j
        self.assertAllEqual(a[0, :, :, 0], [[0, 2], [11, 13], [20, 22],
                                            [31, 33]])
        self.assertAllEqual(b[0, :, :, 0], [[1, 3], [10, 12], [21, 23],
                                            [30, 32]])

    def test_split_refuses_shapes_it_cannot_split_by_name(self):
        def assert_refused(call, pattern):
            # A ValueError with the message, not a reshape or int() error.
            with self.assertRaises(Exception) as caught:
                call()
            self.assertIsInstance(caught.exception, ValueError)
            self.assertRegex(str(caught.exception), pattern)

        # The same message as half_event_shapes.
        assert_refused(lambda: vb.Checkerboard().split(tf.zeros([1, 3, 4, 2])),
                       'Checkerboard needs an even image height; got 3')
        # Event dimensions must be static (module docstring): an unknown
        # width is refused with the shape.
        for partition in (vb.ColumnSplit(), vb.Checkerboard()):
            traced = tf.function(partition.split, input_signature=[
                tf.TensorSpec([None, 4, None, 2])])
            assert_refused(traced.get_concrete_function,
                           r'last 3 dimensions are statically known; got '
                           r'shape \(None, 4, None, 2\)')
        # ChannelSplit splits vectors (event_ndims 1) or images (3) only.
        for ndims in (0, 2, 4):
            assert_refused(lambda n=ndims: vb.ChannelSplit(event_ndims=n),
                           r'must be 1 \(vectors\) or 3 \(images\); got '
                           f'{ndims}')


class SqueezeTest(tf.test.TestCase):

    def test_matches_space_to_depth_and_spec_ordering(self):
        x = tf.random.normal([2, 4, 6, 3])
        y = vb.Squeeze().inverse(x)
        self.assertAllEqual(y, tf.nn.space_to_depth(x, 2))
        c = 3
        for dy in range(2):
            for dx in range(2):
                self.assertAllEqual(
                    y[:, 1, 2, (2 * dy + dx) * c:(2 * dy + dx + 1) * c],
                    x[:, 2 + dy, 4 + dx, :])

    def test_channel_split_after_squeeze_takes_top_rows(self):
        x = tf.random.normal([1, 2, 2, 3])
        a, _ = vb.ChannelSplit().split(vb.Squeeze().inverse(x))
        self.assertAllEqual(tf.reshape(a, [-1]), tf.reshape(x[:, 0], [-1]))

    def test_shape_tensors_keep_their_dtype(self):
        # As TFP's bijectors do, known or not: a static int64 shape came
        # back int32, the mix of dtypes that breaks shape arithmetic.
        squeeze = vb.Squeeze()
        for dtype in (tf.int32, tf.int64):
            dynamic = tf.function(squeeze.forward_event_shape_tensor,
                                  input_signature=[tf.TensorSpec([3], dtype)])
            for shape in (squeeze.forward_event_shape_tensor(
                    tf.constant([2, 2, 8], dtype)),
                          squeeze.inverse_event_shape_tensor(
                              tf.constant([4, 4, 2], dtype)),
                          dynamic(tf.constant([2, 2, 8], dtype))):
                self.assertEqual(shape.dtype, dtype)

    def test_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, 'divisible by 2'):
            vb.Squeeze().inverse(tf.zeros([1, 3, 4, 1]))
        spec = tf.TensorSpec([None, None, None, 3])
        traced = tf.function(vb.Squeeze().inverse, input_signature=[spec])
        with self.assertRaisesRegex(ValueError, 'static event shape'):
            traced.get_concrete_function()
        # The shape-tensor methods refuse what the static ones refuse, also
        # for a shape known only when the graph runs.
        squeeze = vb.Squeeze()
        with self.assertRaisesRegex(ValueError, 'divisible by 2'):
            squeeze.inverse_event_shape_tensor([5, 5, 2])
        with self.assertRaisesRegex(ValueError, 'divisible by 4'):
            squeeze.forward_event_shape_tensor([4, 4, 6])
        dynamic = tf.function(squeeze.inverse_event_shape_tensor,
                              input_signature=[tf.TensorSpec([3], tf.int32)])
        self.assertAllEqual(dynamic(tf.constant([4, 6, 2])), [2, 3, 8])
        # Height and width are each checked, statically and when it runs.
        for shape in ([5, 5, 2], [5, 4, 2], [4, 5, 2]):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'not divisible'):
                dynamic(tf.constant(shape))
            with self.assertRaisesRegex(ValueError, 'divisible by 2'):
                squeeze.inverse_event_shape(shape)
        unsqueeze = tf.function(squeeze.forward_event_shape_tensor,
                                input_signature=[tf.TensorSpec([3], tf.int32)])
        self.assertAllEqual(unsqueeze(tf.constant([2, 3, 8])), [4, 6, 2])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'not divisible'):
            unsqueeze(tf.constant([2, 3, 6]))
        # The message shows the whole shape, the offending width too.
        batched = tf.function(squeeze.inverse_event_shape_tensor,
                              input_signature=[tf.TensorSpec([4], tf.int32)])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r'block size 2:\] \[2 4 5 3\]'):
            batched(tf.constant([2, 4, 5, 3]))

    def test_other_block_sizes(self):
        x = tf.random.normal([2, 8, 4, 3])
        squeeze = vb.Squeeze(block_size=4)
        y = squeeze.inverse(x)
        self.assertAllEqual(y, tf.nn.space_to_depth(x, 4))
        self.assertAllEqual(squeeze.forward(tf.identity(y)), x)
        self.assertEqual(squeeze.inverse_event_shape([8, 4, 3]), [2, 1, 48])

    def test_event_shapes_keep_leading_event_axes(self):
        squeeze = vb.Squeeze()
        self.assertEqual(squeeze.forward_event_shape([2, 4, 4, 12]),
                         [2, 8, 8, 3])
        self.assertEqual(squeeze.inverse_event_shape([2, 8, 8, 3]),
                         [2, 4, 4, 12])
        self.assertEqual(squeeze.inverse_event_shape([None, 8, 8, 3]),
                         [None, 4, 4, 12])
        # Each known size maps on its own, as the tensors' static shapes do
        # (an unknown width must not keep the height at 8).
        self.assertEqual(squeeze.inverse_event_shape([8, None, 3]).as_list(),
                         [4, None, 12])
        self.assertEqual(squeeze.forward_event_shape([4, None, 12]).as_list(),
                         [8, None, 3])
        self.assertEqual(
            squeeze.inverse_event_shape([None, 6, None]).as_list(),
            [None, 3, None])
        traced = tf.function(squeeze.inverse, input_signature=[
            tf.TensorSpec([None, 8, 8, 3])]).get_concrete_function()
        self.assertTrue(squeeze.inverse_event_shape(
            [8, None, 3]).is_compatible_with(
                traced.structured_outputs.shape[1:]))
        with self.assertRaisesRegex(ValueError, 'divisible by 2'):
            squeeze.inverse_event_shape([5, None, 3])
        with self.assertRaisesRegex(ValueError, 'divisible by 4'):
            squeeze.forward_event_shape([None, 4, 6])
        self.assertAllEqual(squeeze.forward_event_shape_tensor([2, 4, 4, 12]),
                            [2, 8, 8, 3])
        self.assertAllEqual(squeeze.inverse_event_shape_tensor([2, 8, 8, 3]),
                            [2, 4, 4, 12])
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), [2, 4, 4, 12]), squeeze)
        self.assertEqual(dist.event_shape, [2, 8, 8, 3])
        self.assertEqual(dist.sample(seed=(1, 2)).shape, dist.event_shape)

    def test_fixed_permutations_declare_a_constant_jacobian(self):
        # Squeeze and SwapHalves only move values (log_det_jacobian = 0 for
        # every input), which TFP's `is_constant_jacobian` states.
        for layer in (vb.Squeeze(), vb.Squeeze(block_size=4),
                      vb.SwapHalves(vb.ColumnSplit()),
                      vb.SwapHalves(vb.ChannelSplit(event_ndims=1))):
            with self.subTest(layer=layer.name):
                self.assertTrue(layer.is_constant_jacobian)


class Invertible1x1Test(tf.test.TestCase):

    def test_lu_reconstructs_an_orthogonal_matrix_at_init(self):
        conv = vb.Invertible1x1ConvLU([2, 2, 5], dtype=tf.float64)
        w, w_inv, log_abs_det = (conv._weight(), conv._inverse_weight(),
                                 conv._log_abs_det())
        self.assertAllClose(tf.matmul(w[0], w[0], transpose_b=True),
                            tf.eye(5, dtype=tf.float64), atol=1e-12)
        self.assertAllClose(tf.matmul(w[0], w_inv[0]),
                            tf.eye(5, dtype=tf.float64), atol=1e-12)
        self.assertAllClose(log_abs_det, [0.0], atol=1e-12)
        # Trainable factors only: the permutation and signs stay fixed.
        names = sorted(v.name.split('/')[-1] for v in conv.trainable_variables)
        self.assertEqual(names, ['log_s:0', 'lower:0', 'upper:0'])

    def test_lu_log_det_is_sum_of_log_s_after_training_moves(self):
        conv = vb.Invertible1x1ConvLU([3], dtype=tf.float64)
        conv.lu_factors.log_s.assign([[0.3, -1.0, 2.0]])
        conv.lu_factors.lower.assign(tf.random.normal([1, 3, 3],
                                                      dtype=tf.float64))
        w = conv._weight()
        sign, logdet = tf.linalg.slogdet(w[0])
        self.assertAllClose(logdet, 1.3)
        self.assertAllClose(
            conv.inverse_log_det_jacobian(tf.zeros([1, 3], tf.float64), 1),
            1.3)
        del sign

    def test_dense_init_is_identity_plus_small_noise(self):
        # VFlow's start, W = I + 0.01 N(0, 1), is also the default.
        for kwargs in ({'noise_scale': 0.01}, {}):
            tf.random.set_seed(3)
            conv = vb.Invertible1x1Conv([8, 8, 6], **kwargs)
            deviation = conv.weights - tf.eye(6)[tf.newaxis]
            self.assertLess(float(tf.reduce_max(tf.abs(deviation))), 0.06)
            self.assertBetween(float(tf.math.reduce_std(deviation)), 0.005,
                               0.02)

    def test_random_orthogonal_init_is_haar(self):
        # `noise_scale=None` (the toy flows' mixing layers) starts at a
        # random rotation or reflection, not at the identity; with QR's
        # signs fixed its entries are symmetric about zero (raw Householder
        # QR would make W[0, 0] negative every time).
        tf.random.set_seed(1)
        first = []
        for _ in range(200):
            w = vb.Invertible1x1Conv([2], noise_scale=None,
                                     dtype=tf.float64).weights[0].numpy()
            self.assertAllClose(w @ w.T, np.eye(2), atol=1e-12)
            first.append(w[0, 0])
        self.assertLess(abs(np.mean(first)), 0.15)
        self.assertBetween(np.mean(np.array(first) > 0), 0.3, 0.7)
        w = vb.Invertible1x1Conv([6], noise_scale=None).weights[0]
        self.assertGreater(float(tf.reduce_max(tf.abs(w - tf.eye(6)))), 0.1)

    def test_sampling_direction_inverts_in_float64(self):
        # SPEC §1.8: W^{-1} in float64 even in a float32 layer. With
        # condition number 1e6, a float32 inverse would be off by about
        # cond * eps = 6% of its largest entries.
        rng = np.random.default_rng(0)
        u = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        v = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        w = ((u * np.logspace(0, -6, 6)) @ v.T).astype(np.float32)
        conv = vb.Invertible1x1Conv([6], weights=tf.Variable(w[None]))
        y = np.eye(6, dtype=np.float32)
        expected = np.linalg.inv(w.astype(np.float64))
        self.assertAllClose(conv.forward(y), expected, rtol=0,
                            atol=1e-6 * np.abs(expected).max())

    def test_per_half_matrices_need_halves_of_equal_channels(self):
        for cls in (vb.Invertible1x1Conv, vb.Invertible1x1ConvLU):
            with self.assertRaisesRegex(ValueError, 'equal channel counts'):
                cls([4, 4, 3], partition=vb.ChannelSplit())

    def test_dense_log_det_of_ill_conditioned_matrix(self):
        # Condition number 1e9: a log-det through W W^T (condition 1e18)
        # was 18 nats off in float64 and NaN for a float32 layer.
        rng = np.random.default_rng(0)
        u = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        v = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        w = (u * np.logspace(0, -9, 6)) @ v.T
        for dtype, rtol in [(tf.float64, 1e-6), (tf.float32, 1e-4)]:
            weights = tf.Variable(tf.constant(w[None], dtype))
            conv = vb.Invertible1x1Conv([4, 4, 6], weights=weights,
                                        dtype=dtype)
            expected = 16 * np.linalg.slogdet(
                weights.numpy()[0].astype(np.float64))[1]
            fn = tf.function(lambda x, conv=conv:
                             conv.inverse_log_det_jacobian(x, 3),
                             jit_compile=True)
            for ildj in [conv.inverse_log_det_jacobian(
                    tf.zeros([1, 4, 4, 6], dtype), 3),
                         fn(tf.ones([1, 4, 4, 6], dtype))]:
                self.assertAllClose(ildj, expected, rtol=rtol)

    def test_per_half_matrices_act_on_their_half(self):
        conv = vb.Invertible1x1Conv([2, 4, 2], partition=vb.ColumnSplit(),
                                    dtype=tf.float64)
        conv.weights.assign(tf.stack([2.0 * tf.eye(2, dtype=tf.float64),
                                      3.0 * tf.eye(2, dtype=tf.float64)]))
        x = tf.ones([1, 2, 4, 2], tf.float64)
        y = conv.inverse(x)
        self.assertAllEqual(y[0, 0, :, 0], [2.0, 3.0, 2.0, 3.0])
        # N_a log 4 + N_b log 9, with N = 2 * 2 positions per half.
        self.assertAllClose(conv.inverse_log_det_jacobian(x, 3),
                            4 * math.log(4.0) + 4 * math.log(9.0))

    def test_block_diagonal_product_equals_per_half_products(self):
        # The fast path (one product with blockdiag(W_a, W_b) on the
        # channel-block layout) against split, W_a / W_b, merge.
        x = tf.random.normal([2, 4, 6, 4], dtype=tf.float64)
        for partition in [vb.ColumnSplit(), vb.ChannelSplit(),
                          vb.Checkerboard()]:
            for cls in [vb.Invertible1x1Conv, vb.Invertible1x1ConvLU]:
                conv = cls([4, 6, 4], partition=partition, dtype=tf.float64)
                for weight, direction in [(conv._weight(), conv.inverse),
                                          (conv._inverse_weight(),
                                           conv.forward)]:
                    a, b = partition.split(x)
                    expected = partition.merge(
                        tf.einsum('...c,cd->...d', a, weight[0]),
                        tf.einsum('...c,cd->...d', b, weight[1]))
                    self.assertAllClose(direction(x), expected, atol=1e-12)

    def test_lu_sampling_direction_inverts_in_float64(self):
        # SPEC §1.8, for the LU layer too: W^{-1} = U^{-1} L^{-1} P^T by
        # triangular solves in float64. Here L^{-1}[2, 0] = a c - b is a
        # small difference of two numbers near 1e6; in float32 the product
        # a c alone is rounded by up to 0.03.
        a, c = np.float32(1000.3), np.float32(1000.7)
        b = np.float32(np.float64(a) * np.float64(c) - 1.0)
        lower = np.zeros([1, 3, 3], np.float32)
        lower[0, 1, 0], lower[0, 2, 1], lower[0, 2, 0] = a, c, b
        factors = vb.LUFactors(
            permutation=tf.Variable([[0, 1, 2]], trainable=False),
            sign=tf.Variable(tf.ones([1, 3]), trainable=False),
            lower=tf.Variable(lower), upper=tf.Variable(tf.zeros([1, 3, 3])),
            log_s=tf.Variable(tf.zeros([1, 3])))
        conv = vb.Invertible1x1ConvLU([3], lu_factors=factors)
        a, b, c = (np.float64(v) for v in (a, b, c))
        expected = [[1.0, 0.0, 0.0], [-a, 1.0, 0.0], [a * c - b, -c, 1.0]]
        # y = x W^{-1}: the rows of the identity give the rows of W^{-1}.
        self.assertAllClose(conv.forward(np.eye(3, dtype=np.float32)),
                            expected, rtol=1e-6, atol=1e-6)

    def test_lu_permutation_vector_is_read_as_documented(self):
        # LUFactors: P = eye(c)[permutation], so the inverse y = x P (L = I,
        # U = diag(1)) moves x_i to position permutation[i]. A 3-cycle
        # tells this from its inverse reading, eye(c)[argsort(permutation)].
        factors = vb.LUFactors(
            permutation=tf.Variable([[1, 2, 0]], trainable=False),
            sign=tf.Variable(tf.ones([1, 3]), trainable=False),
            lower=tf.Variable(tf.zeros([1, 3, 3])),
            upper=tf.Variable(tf.zeros([1, 3, 3])),
            log_s=tf.Variable(tf.zeros([1, 3])))
        conv = vb.Invertible1x1ConvLU([3], lu_factors=factors)
        self.assertAllEqual(conv.inverse([[10.0, 20.0, 30.0]]),
                            [[30.0, 10.0, 20.0]])
        self.assertAllEqual(conv.forward([[30.0, 10.0, 20.0]]),
                            [[10.0, 20.0, 30.0]])

    def test_a_partition_of_another_rank_is_refused_by_name(self):
        # A per-half 1x1 convolution refuses a partition that acts on events
        # of another rank than its event shape, naming itself and the
        # partition's event rank.
        for layer in (vb.Invertible1x1Conv, vb.Invertible1x1ConvLU):
            for event_shape, partition, ndims in (
                    ([4], vb.ColumnSplit(), 3),
                    ([4, 4, 2], vb.ChannelSplit(event_ndims=1), 1)):
                with self.assertRaisesRegex(
                        ValueError, rf'{layer.__name__}: partition .* acts '
                        rf'on {ndims}-d events; got event shape'):
                    layer(event_shape, partition=partition)


class ImageLogitTest(tf.test.TestCase):

    def test_log_det_constant_matches_spec(self):
        # D log(0.9 / 256) = -5.650538 D nats (SPEC §1.11).
        self.assertAllClose(math.log(0.9 / 256), -5.650538, atol=1e-6)
        layer = vb.ImageLogit()
        x = tf.fill([1, 2, 2, 3], 128.0)  # v = 0.5: -log v - log(1-v) = 2 ln 2
        ildj = layer.inverse_log_det_jacobian(x, event_ndims=3)
        self.assertAllClose(ildj, [12 * (2 * math.log(2.0)
                                         + math.log(0.9 / 256))], atol=1e-4)

    def test_other_pixel_levels(self):
        # 5-bit images (num_bins=32): v = 0.05 + 0.9 x / 32 and the
        # constant D log(0.9 / 32); bits/dim depend on both.
        layer = vb.ImageLogit(num_bins=32)
        x = tf.constant([[0.0, 16.0, 31.9]], tf.float64)
        v = 0.05 + 0.9 * x.numpy() / 32
        self.assertAllClose(layer.inverse(x), np.log(v) - np.log1p(-v),
                            rtol=1e-12)
        self.assertAllClose(
            layer.inverse_log_det_jacobian(x, event_ndims=1),
            np.sum(-np.log(v) - np.log1p(-v), -1) + 3 * math.log(0.9 / 32),
            rtol=1e-12)

    def test_no_margin_maps_onto_the_whole_range(self):
        # alpha = 0: x~ = logit(x / num_bins) and back, onto (0, num_bins).
        layer = vb.ImageLogit(num_bins=256, alpha=0.0)
        x = tf.constant([[0.5, 2.0, 128.0, 255.5]], tf.float64)
        latent = layer.inverse(x)
        self.assertAllClose(latent, np.log(x / 256) - np.log1p(-x / 256),
                            rtol=1e-12)
        self.assertAllClose(layer.forward(tf.identity(latent)), x,
                            rtol=1e-12)
        self.assertAllClose(layer.forward(tf.constant([0.0], tf.float64)),
                            [128.0], rtol=1e-12)

    def test_integer_pixels_are_refused_by_name(self):
        layer = vb.ImageLogit(name='logit_in')
        pixels = tf.constant([[0, 128, 255]], tf.uint8)
        for call in (layer.inverse,
                     lambda x: layer.inverse_log_det_jacobian(x, 1)):
            with self.assertRaisesRegex(
                    TypeError, r'logit_in: inverse takes a float tensor; got '
                    r'uint8\. Cast it first'):
                call(pixels)
        with self.assertRaisesRegex(TypeError, 'forward takes a float'):
            vb.Sigmoid().forward(tf.constant([1, 2]))

    def test_range_of_forward(self):
        layer = vb.ImageLogit()
        y = layer.forward(tf.constant([-30.0, 30.0]))
        self.assertAllClose(y, [-0.05 * 256 / 0.9, 0.95 * 256 / 0.9],
                            atol=1e-3)

    def test_transformed_distribution_cdf_and_quantile(self):
        normal = tfd.Normal(tf.constant(0.0, tf.float64), 1.0)
        ours = tfd.TransformedDistribution(normal, vb.Sigmoid())
        theirs = tfd.TransformedDistribution(normal, tfb.Sigmoid())
        y = tf.constant([0.1, 0.3, 0.9], tf.float64)
        self.assertAllClose(ours.cdf(y), theirs.cdf(y), atol=1e-12)
        for layer in (vb.SmoothSigmoid(), vb.ImageLogit()):
            dist = tfd.TransformedDistribution(normal, layer)
            x = tf.constant([-1.0, 0.5, 2.0], tf.float64)
            y = layer.forward(x)
            self.assertAllClose(dist.cdf(y), normal.cdf(x), atol=1e-12)
            self.assertAllClose(dist.quantile(normal.cdf(x)), y, atol=1e-9)

    def test_smooth_sigmoid_bounds_the_coupling_logit(self):
        # Inverse(SmoothSigmoid) maps [0, 1] onto [-ln 19, ln 19].
        layer = vb.SmoothSigmoid()
        self.assertAllClose(layer.inverse(tf.constant([0.0, 1.0])),
                            [-math.log(19.0), math.log(19.0)], atol=1e-5)

    def test_alpha_outside_its_interval_is_refused_by_name(self):
        # alpha in [0, 0.5): at 0.5 the squash (sigmoid - alpha) / (1 - 2
        # alpha) divides by zero, beyond it the map is decreasing.
        for build in (vb.SmoothSigmoid, vb.ImageLogit):
            for alpha in (0.5, 0.7, -0.1):
                with self.assertRaisesRegex(
                        ValueError, re.escape('alpha must be in [0, 0.5); '
                                              f'got {alpha}')):
                    build(alpha=alpha)

    def test_integer_latents_are_refused_by_name_in_the_forward_log_det(self):
        # As `forward` and `inverse` do: a named TypeError, not a kernel
        # error from softplus.
        for build in (vb.Sigmoid, vb.SmoothSigmoid, vb.ImageLogit):
            layer = build(name='squash')
            with self.assertRaises(Exception) as caught:
                layer.forward_log_det_jacobian(tf.constant([1, 2]), 1)
            self.assertIsInstance(caught.exception, TypeError)
            self.assertRegex(str(caught.exception), r'squash: forward takes a '
                             r'float tensor; got int32\. Cast it first')

    def test_num_bins_is_the_python_int_it_was_built_with(self):
        # num_bins is "an integer >= 1" (pixel levels that exports and 8-bit
        # conversions count with), whatever integer type was passed, not
        # the float scale the squash computes with.
        for given in (256, 32, np.int32(16), np.int64(1)):
            num_bins = vb.ImageLogit(num_bins=given).num_bins
            self.assertIsInstance(num_bins, int)
            self.assertEqual(num_bins, int(given))


class AffineClosedFormTest(tf.test.TestCase):
    """The affine layers against their documented formulas.

    The networks return fixed (h_s, t) pairs, element-major as documented
    ([h_s(e0), t(e0), h_s(e1), t(e1)]), and each scale function is written
    out; the contract tests cannot see a convention applied consistently.
    """

    H_S, T = np.array([0.5, -0.25]), np.array([3.0, -1.0])
    SCALES = (('tanh', np.tanh(H_S)),
              ('sigmoid', -np.log1p(np.exp(-(H_S + 2.0)))),  # Glow's
              ('exp', H_S))

    def _net(self, c, context=None, training=False):
        row = tf.constant(np.stack([self.H_S, self.T], -1).ravel(), c.dtype)
        return tf.broadcast_to(row, tf.concat([tf.shape(c)[:-1], [4]], 0))

    def test_affine_coupling(self):
        # The second half of the 4 features moves, given the first.
        x = np.random.default_rng(0).normal(size=[3, 4])
        for scale_fn, s in self.SCALES:
            coupling = vb.AffineCoupling(
                self._net, vb.ChannelSplit(event_ndims=1),
                scale_fn=scale_fn, dtype=tf.float64)
            y = coupling.inverse(tf.constant(x))
            self.assertAllEqual(y[:, :2], x[:, :2])
            self.assertAllClose(y[:, 2:], x[:, 2:] * np.exp(s) + self.T,
                                rtol=1e-12, atol=0, msg=scale_fn)
            self.assertAllClose(
                coupling.inverse_log_det_jacobian(tf.constant(x), 1),
                np.full(3, s.sum()), rtol=1e-12, atol=0)

    def test_conditional_affine(self):
        context = tf.zeros([1, 2], tf.float64)
        x = tf.constant([[2.0, 4.0]], tf.float64)
        for scale_fn, s in self.SCALES:
            layer = vb.ConditionalAffine(self._net, [2], scale_fn=scale_fn,
                                         dtype=tf.float64)
            self.assertAllClose(layer.inverse(x, context=context),
                                x * np.exp(s) + self.T, rtol=1e-12, atol=0,
                                msg=scale_fn)
            self.assertAllClose(
                layer.inverse_log_det_jacobian(x, 1, context=context),
                [s.sum()], rtol=1e-12, atol=0)

    def test_conditional_affine_log_det_sums_a_matrix_event(self):
        # The class docstring's log-det is the sum over the *whole* event:
        # for an event of shape [2, 3] one value per example, not one per
        # row of the event.
        h_s = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
        shift = np.arange(6.0).reshape(2, 3)
        row = np.stack([h_s, shift], -1).ravel()  # element-major

        def net(c, training=False):
            return tf.broadcast_to(tf.constant(row, c.dtype),
                                   tf.concat([tf.shape(c)[:-1], [12]], 0))

        layer = vb.ConditionalAffine(net, [2, 3], dtype=tf.float64)
        context = tf.zeros([4, 1], tf.float64)
        x = tf.constant(np.random.default_rng(1).normal(size=[4, 2, 3]))
        s = np.tanh(h_s)
        self.assertAllClose(layer.inverse(x, context=context),
                            x * np.exp(s) + shift, rtol=1e-12, atol=0)
        self.assertAllClose(
            layer.inverse_log_det_jacobian(x, 2, context=context),
            np.full(4, s.sum()), rtol=1e-12, atol=0)
        self.assertAllClose(
            layer.forward_log_det_jacobian(x, 2, context=context),
            np.full(4, -s.sum()), rtol=1e-12, atol=0)

    def test_additive_coupling(self):
        # NICE's documented map: inverse y_e = x_e + t(x_c), forward
        # x_e = y_e - t(y_c), log-det 0 (a sign convention applied in both
        # directions round-trips, so only the formula can tell).
        def net(c, context=None, training=False):
            return tf.broadcast_to(tf.constant(self.T, c.dtype),
                                   tf.concat([tf.shape(c)[:-1], [2]], 0))

        coupling = vb.AdditiveCoupling(net, vb.ChannelSplit(event_ndims=1),
                                       dtype=tf.float64)
        x = np.random.default_rng(2).normal(size=[3, 4])
        for run, sign in ((coupling.inverse, 1.0), (coupling.forward, -1.0)):
            y = run(tf.constant(x))
            self.assertAllEqual(y[:, :2], x[:, :2])
            self.assertAllClose(y[:, 2:], x[:, 2:] + sign * self.T,
                                rtol=1e-12, atol=0)
        self.assertAllEqual(
            coupling.inverse_log_det_jacobian(tf.constant(x), 1), np.zeros(3))


class MixtureLogisticTest(tf.test.TestCase):

    def test_coupling_matches_the_spec_formula(self):
        # SPEC §1.5-§1.6 written out in numpy: which half each parity
        # transforms (ColumnSplit: a = even columns), the conditioner's
        # slots (h_s, t, K logits, K means, K log-scales), s = tanh(h_s),
        # the log-scale floor, and the squash (VFlow: alpha = 0.05).
        params = np.array([0.7, 0.3, 0.9, -0.4, 0.5, -1.5, -3.0, 0.4])

        def net(c, context=None, training=False):
            return tf.broadcast_to(tf.constant(params, c.dtype), tf.concat(
                [tf.shape(c)[:-1], [len(params)]], 0))

        def expected(x, alpha, floor):
            w = np.exp(params[2:4]) / np.exp(params[2:4]).sum()
            scales = np.exp(np.maximum(params[6:8], floor))
            sig = 1.0 / (1.0 + np.exp(-(x[..., None] - params[4:6])
                                      / scales))
            v = alpha + (1 - 2 * alpha) * (w * sig).sum(-1)
            s = np.tanh(params[0])
            y = np.log(v / (1 - v)) * np.exp(s) + params[1]
            log_det = (np.log((w * sig * (1 - sig) / scales).sum(-1))
                       - np.log(v) - np.log1p(-v) + np.log1p(-2 * alpha) + s)
            return y, log_det

        x = np.random.default_rng(0).uniform(-3.0, 3.0, size=[3, 2, 4, 1])
        for variant, alpha in (('flowpp', 0.0), ('vflow', 0.05)):
            for parity in (0, 1):
                coupling = vb.MixLogisticCoupling(
                    net, vb.ColumnSplit(), 2, parity=parity, variant=variant,
                    min_log_scale=-1.0, dtype=tf.float64)
                y = coupling.inverse(tf.constant(x)).numpy()
                kept, moved = slice(parity, None, 2), slice(1 - parity,
                                                            None, 2)
                want_y, want_log_det = expected(x[:, :, moved, 0], alpha,
                                                -1.0)
                self.assertAllEqual(y[:, :, kept], x[:, :, kept])
                self.assertAllClose(y[:, :, moved, 0], want_y, rtol=1e-10,
                                    atol=0, msg=f'{variant} {parity}')
                self.assertAllClose(
                    coupling.inverse_log_det_jacobian(tf.constant(x), 3),
                    want_log_det.sum(axis=(1, 2)), rtol=1e-10, atol=0)

    def test_iterations_of_both_passes_are_counted(self):
        # The root finder's coarse and fine passes each run up to
        # `max_iterations`; the count it reports is their sum.
        rng = np.random.default_rng(0)
        params = [tf.constant(v, tf.float64) for v in (
            rng.standard_normal([50, 4]), 2 * rng.standard_normal([50, 4]),
            rng.uniform(-3, 1, [50, 4]))]
        tau = tf.constant(rng.uniform(-5, 5, [50]), tf.float64)
        _, capped = vb.inverse_logit_cdf(tau, *params, max_iterations=1)
        self.assertAllEqual(capped, np.full(50, 2))
        _, full = vb.inverse_logit_cdf(tau, *params)
        self.assertAllInRange(full, 2, 200)

    def test_terms_match_numpy_reference(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(-10, 10, size=[50])
        logits = rng.standard_normal([50, 4])
        means = rng.standard_normal([50, 4])
        log_scales = rng.uniform(-3, 1, size=[50, 4])
        terms = vb.mixture_logistic_terms(
            *[tf.constant(v) for v in (x, logits, means, log_scales)])
        w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        z = (x[:, None] - means) / np.exp(log_scales)
        sig = 1.0 / (1.0 + np.exp(-z))
        cdf = (w * sig).sum(-1)
        pdf = (w * sig * (1 - sig) / np.exp(log_scales)).sum(-1)
        self.assertAllClose(np.exp(terms.log_cdf), cdf, atol=1e-12)
        self.assertAllClose(np.exp(terms.log_survival), 1 - cdf, atol=1e-12)
        self.assertAllClose(np.exp(terms.log_pdf), pdf, atol=1e-12)

    def test_spec_inverse_cdf_target_float64(self):
        # SPEC §10, verification target 2: logits [.1, .2, 4], means
        # [-1, 0, 1], log-scales [-5, 0, .2]; error < 1e-5 over [-30, 30].
        x = tf.linspace(tf.constant(-30.0, tf.float64), 30.0, 2001)
        params = [tf.broadcast_to(tf.constant(v, tf.float64), [2001, 3])
                  for v in ([.1, .2, 4.], [-1., 0., 1.], [-5., 0., .2])]
        terms = vb.mixture_logistic_terms(x, *params)
        tau = terms.log_cdf - terms.log_survival
        x_back, _ = vb.inverse_logit_cdf(tau, *params)
        self.assertLess(float(tf.reduce_max(tf.abs(x_back - x))), 1e-5)

    def _realistic(self, n, k=32, seed=0):
        rng = np.random.default_rng(seed)
        return [tf.constant(v, tf.float32) for v in (
            rng.standard_normal([n, k]), 2.0 * rng.standard_normal([n, k]),
            rng.uniform(-4.0, 1.0, [n, k]))]

    def test_float32_latent_round_trip_including_saturated_tails(self):
        # tau up to ±30 means F within 1e-13 of 0 or 1: in float32 the
        # official bisection sees F == 1 there.
        n = 20000
        logits, means, log_scales = self._realistic(n)
        tau = tf.random.stateless_uniform([n], [1, 2], -30.0, 30.0)
        x, iterations = vb.inverse_logit_cdf(tau, logits, means, log_scales)
        terms = vb.mixture_logistic_terms(x, logits, means, log_scales)
        err = tf.abs(terms.log_cdf - terms.log_survival - tau)
        # |d y| = |d logit| e^s <= e |d logit| for the coupling's latent.
        self.assertLess(float(tf.reduce_max(err)) * math.e, 1e-4)
        # Per-element stopping: far fewer than the official ~50 iterations.
        self.assertLess(float(tf.reduce_mean(tf.cast(iterations, tf.float32))),
                        15.0)
        self.assertLessEqual(int(tf.reduce_max(iterations)), 60)

    def test_float32_root_accurate_when_one_component_is_wide(self):
        # Two narrow components (scale e^-5 at 0 and 1) and one wide one of
        # tiny weight: the bracket spans thousands of times the root, which
        # must still come out at rounding level, not bracket-ulps away.
        taus = np.linspace(-4.0, 4.0, 81)
        for wide in (4.0, 8.0):
            params = [tf.constant(np.broadcast_to(v, [81, 3]), tf.float32)
                      for v in ([0.0, 0.0, -8.0], [0.0, 1.0, 0.0],
                                [-5.0, -5.0, wide])]
            tau = tf.constant(taus, tf.float32)
            x, _ = vb.inverse_logit_cdf(tau, *params)
            terms = vb.mixture_logistic_terms(x, *params)
            err = np.abs((terms.log_cdf - terms.log_survival - tau).numpy())
            self.assertLess(err.max(), 3e-5, msg=f'wide log-scale {wide}')

    def test_float32_root_near_0_accurate_for_narrow_components(self):
        # inverse_logit_cdf's docstring: for a root nearer 0 than the
        # narrowest scale s_min, a few ulps of min(s_min, 1). logit F moves
        # by up to 2 / s_min per unit of x, so the residual then stays at
        # rounding level; a floor of a few ulps of 1 (4.8e-7) left it at
        # 3e-5 for s_min = e^-9 and at 3e-2 for e^-12.
        rng = np.random.RandomState(0)
        for log_scale in (-9.0, -12.0, -14.0):
            tau = tf.constant(rng.uniform(-5.0, 5.0, 500), tf.float32)
            params = [tf.constant(v, tf.float32) for v in (
                rng.randn(500, 4), rng.randn(500, 4) * np.exp(log_scale),
                np.full([500, 4], log_scale))]
            x, _ = vb.inverse_logit_cdf(tau, *params)
            terms = vb.mixture_logistic_terms(x, *params)
            err = np.abs((terms.log_cdf - terms.log_survival - tau).numpy())
            self.assertLess(err.max(), 1e-5, msg=f'log-scale {log_scale}')

    def test_a_root_on_a_bracket_end_is_taken_without_a_search(self):
        # The docstring: an end with the sign of the root's side "is taken
        # as the root without a search". A dominant narrow component far
        # from a wide one puts the root on an end; the solver, seeing two
        # ends of one sign, would search the bracket to its cap, and the
        # whole batch waits for the slowest element (up to 127 iterations
        # here in float32 before; about 25 where a search is needed).
        taus = np.linspace(-5.0, 5.0, 101)
        for far in (-1000.0, 1000.0):
            for dtype in (tf.float32, tf.float64):
                params = [tf.constant(np.broadcast_to(v, [len(taus), 2]),
                                      dtype)
                          for v in ([0.0, 9.0], [0.0, far], [0.0, -7.0])]
                x, iterations = vb.inverse_logit_cdf(
                    tf.constant(taus, dtype), *params)
                # The dominant component alone: x = mu + s tau.
                self.assertAllClose(x, far + np.exp(-7.0) * taus, rtol=0,
                                    atol=1e-3)
                self.assertLessEqual(int(tf.reduce_max(iterations)), 40,
                                     msg=f'{dtype.name}, far at {far}')

    def test_root_on_a_bracket_end_with_one_dominant_component(self):
        # Weights ~(1, 4e-18) put the root on the bracket's lower end, where
        # logit F - tau is 0 up to rounding and came out positive: the
        # solver, seeing two ends of one sign, returned a point near the
        # upper end, 10 away, in float32 and float64 alike.
        for dtype in (tf.float32, tf.float64):
            taus = np.array([0.001, -30.0, 1.0, 3.0, 0.5, -2.0])
            params = [tf.constant(np.broadcast_to(v, [len(taus), 2]), dtype)
                      for v in ([20.0, -20.0], [0.0, 10.0], [-2.0, -2.0])]
            tau = tf.constant(taus, dtype)
            x, _ = vb.inverse_logit_cdf(tau, *params)
            terms = vb.mixture_logistic_terms(x, *params)
            self.assertAllClose(terms.log_cdf - terms.log_survival, tau,
                                atol=1e-5 if dtype == tf.float32 else 1e-12)
            # The dominant component alone: x = mu + s tau.
            self.assertAllClose(x, np.exp(-2.0) * taus, atol=1e-5)
            # The implicit gradients are still finite there.
            with tf.GradientTape() as tape:
                tape.watch(tau)
                x, _ = vb.inverse_logit_cdf(tau, *params)
            self.assertAllClose(tape.gradient(x, tau),
                                np.full(len(taus), np.exp(-2.0)), rtol=1e-4)

    def test_implicit_gradient_matches_inverse_function_rule(self):
        logits, means, log_scales = [tf.cast(v, tf.float64)
                                     for v in self._realistic(10, k=5)]
        tau = tf.constant(np.linspace(-5, 5, 10), tf.float64)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([tau, means, logits])
            x, _ = vb.inverse_logit_cdf(tau, logits, means, log_scales)
        dx_dtau = tape.gradient(x, tau)
        with tf.GradientTape() as t2:
            t2.watch(x)
            terms = vb.mixture_logistic_terms(x, logits, means, log_scales)
            g = terms.log_cdf - terms.log_survival
        self.assertAllClose(dx_dtau, 1.0 / t2.gradient(g, x), rtol=1e-8)
        # d x / d mu by central finite differences of the whole solve.
        h = 1e-6
        delta = tf.one_hot(2, 5, dtype=tf.float64) * h
        x_plus, _ = vb.inverse_logit_cdf(tau, logits, means + delta,
                                         log_scales)
        x_minus, _ = vb.inverse_logit_cdf(tau, logits, means - delta,
                                          log_scales)
        numeric = (x_plus - x_minus) / (2 * h)
        self.assertAllClose(tape.gradient(x, means)[:, 2], numeric, atol=1e-6)
        # d x / d logits likewise; adding one constant to every logit leaves
        # the mixture, hence the root, unchanged (sum_k dx/dlogit_k = 0).
        dx_dlogits = tape.gradient(x, logits)
        x_plus, _ = vb.inverse_logit_cdf(tau, logits + delta, means,
                                         log_scales)
        x_minus, _ = vb.inverse_logit_cdf(tau, logits - delta, means,
                                          log_scales)
        numeric = (x_plus - x_minus) / (2 * h)
        self.assertGreater(float(tf.reduce_max(tf.abs(numeric))), 1e-2)
        self.assertAllClose(dx_dlogits[:, 2], numeric, atol=1e-6)
        self.assertAllClose(tf.reduce_sum(dx_dlogits, -1), tf.zeros(10),
                            atol=1e-10)

    def test_one_feature_halves_keep_their_static_shape_in_a_graph(self):
        # TFP's root finder returns a [None, 1] target as [None, None]: the
        # next layer, which needs its event shape, then refused to trace.
        # Two mixture couplings on 2-D vectors, each transforming one
        # feature, sampled with an unknown count.
        layers = []
        for parity in (0, 1):
            net = vflow_tfp.nets.MLP(
                1, vb.MixLogisticCoupling.num_params(2), hidden_units=(8,),
                name=f'net{parity}')
            layers.append(vb.MixLogisticCoupling(
                net, vb.ChannelSplit(event_ndims=1), 2, parity=parity,
                name=f'mix{parity}'))
        flow = tfp.distributions.TransformedDistribution(
            tfp.distributions.Sample(tfp.distributions.Normal(0.0, 1.0), [2]),
            tfp.bijectors.Chain(layers))
        sample = tf.function(lambda n: flow.sample(n, seed=[1, 2]))
        self.assertEqual(sample(tf.constant(3)).shape, [3, 2])
        root = tf.function(
            lambda tau: vb.inverse_logit_cdf(
                tau, *[tf.zeros(tf.concat([tf.shape(tau), [2]], 0))] * 3),
            input_signature=[tf.TensorSpec([None, 1])])
        x, iterations = root.get_concrete_function().structured_outputs
        self.assertEqual(x.shape.as_list(), [None, 1])
        self.assertEqual(iterations.shape.as_list(), [None, 1])

    def test_root_between_separated_components_has_finite_gradients(self):
        # Components at -1 and +1 with log-scales at the -7 clamp: near
        # tau = 0 the root lies between them, where the mixture density
        # underflows to exactly 0 in float32 and float64.
        for dtype in (tf.float32, tf.float64):
            logits = tf.zeros([4, 2], dtype)
            means = tf.constant([[-1.0, 1.0]] * 4, dtype)
            log_scales = tf.fill([4, 2], tf.constant(-7.0, dtype))
            tau = tf.constant([0.0, 1e-7, -2e-7, 3.0], dtype)
            with tf.GradientTape() as tape:
                tape.watch([tau, means, log_scales])
                x, _ = vb.inverse_logit_cdf(tau, logits, means, log_scales)
            grads = tape.gradient(x, [tau, means, log_scales])
            terms = vb.mixture_logistic_terms(x, logits, means, log_scales)
            # At x ~ 1 one float32 ulp of x moves the logit by ~1e-4.
            self.assertAllClose(terms.log_cdf - terms.log_survival, tau,
                                atol=1e-4 if dtype == tf.float32 else 1e-6)
            self.assertGreater(float(x[3]), 1.0)
            for g in grads:
                self.assertTrue(np.all(np.isfinite(g)), (dtype, g))
            # Shifting every mean shifts the root by as much, on the
            # plateau too.
            self.assertAllClose(tf.reduce_sum(grads[1], axis=-1),
                                np.ones(4), rtol=1e-4)
            # Off the plateau the implicit gradient is the usual 1 / g'.
            slope = tf.exp(terms.log_pdf - terms.log_cdf - terms.log_survival)
            self.assertAllClose(grads[0][3], 1.0 / slope[3], rtol=1e-4)

    def test_implicit_gradients_where_the_density_is_tiny(self):
        # Between two narrow components the density at the root is tiny but
        # a normal float (about 4e-35 in float32, 1e-300 in float64): the
        # gradients for the means and log-scales came out 0 there, ratios
        # of sums that underflow sooner. F is flat there to rounding, so the
        # root is any point of the plateau, but two identities hold at any
        # root: shifting every mean by d moves it by d (sum dx/dmu = 1),
        # and scaling the mixture by e^d about 0 scales it by e^d
        # (sum dx/dlog s + sum mu dx/dmu = x).
        for dtype, separation in ((tf.float32, 0.082), (tf.float64, 0.63)):
            logits = tf.constant([[0.0, 0.0], [0.1, -0.1]], dtype)
            means = tf.constant([[-separation, separation]] * 2, dtype)
            log_scales = tf.constant([[-7.0, -6.95]] * 2, dtype)
            # The plateau's logit F: logit(pi_0).
            tau = tf.constant([0.0, 0.2], dtype)
            with tf.GradientTape() as tape:
                tape.watch([means, log_scales])
                x, _ = vb.inverse_logit_cdf(tau, logits, means, log_scales)
            d_means, d_log_scales = tape.gradient(x, [means, log_scales])
            terms = vb.mixture_logistic_terms(x, logits, means, log_scales)
            density = tf.exp(terms.log_pdf)
            self.assertAllInRange(density, 1e-307, 1e-33)
            self.assertAllClose(tf.reduce_sum(d_means, -1), [1.0, 1.0],
                                rtol=1e-4)
            self.assertAllClose(
                tf.reduce_sum(d_log_scales + means * d_means, -1), x,
                rtol=1e-4)

    def test_component_log_scales_are_floored_at_min_log_scale(self):
        # A conditioner asking for components of scale e^-20 gets e^-7 (the
        # floor of both papers' code), in both directions and log-dets.
        def coupling(log_scale):
            params = tf.constant([0.3, 0.1, 0.2, -0.1, 0.5, -0.5] +
                                 [log_scale] * 2)

            def net(c, context=None, training=False):
                del context, training
                return tf.broadcast_to(params, tf.concat(
                    [tf.shape(c)[:-1], [8]], axis=0))
            return vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2)

        # Within a few component scales of the first mean, 0.5.
        x = 0.5 + tf.reshape(tf.linspace(-3e-3, 3e-3, 24), [3, 2, 4, 1])
        tiny, floor, wider = coupling(-20.0), coupling(-7.0), coupling(-6.0)
        y = floor.inverse(x)
        self.assertAllEqual(tiny.inverse(x), y)
        self.assertAllEqual(tiny.inverse_log_det_jacobian(x, 3),
                            floor.inverse_log_det_jacobian(x, 3))
        self.assertAllEqual(tiny.forward(tf.identity(y)),
                            floor.forward(tf.identity(y)))
        self.assertAllEqual(
            tiny.forward_log_det_jacobian(tf.identity(y), 3),
            floor.forward_log_det_jacobian(tf.identity(y), 3))
        # The scale matters at these points: the floor is what acts.
        self.assertNotAllClose(wider.inverse(x), y)

    def test_flowpp_variant_stays_finite_where_naive_logit_overflows(self):
        net = TinyConditioner((2, 1, 1), vb.MixLogisticCoupling.num_params(2))
        coupling = vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2)
        x = tf.constant([[[[0.0], [200.0]], [[0.0], [-200.0]]]])
        y = coupling.inverse(x)
        self.assertTrue(np.all(np.isfinite(y)))
        self.assertTrue(np.all(np.isfinite(
            coupling.inverse_log_det_jacobian(x, 3))))

    def test_the_second_pass_never_undoes_the_first(self):
        # inverse_logit_cdf's docstring: a first pass of Chandrupatla's
        # method on the exact bracket (stopping at a few ulps of its ends or
        # at rounding-level residuals), refined by a second pass, keeping
        # the better estimate. Capped at a few iterations, so that the first
        # pass stops short and the second one's bracket misses the root,
        # the result is never further from the target than that first pass.
        logits, means, log_scales = self._realistic(2000, k=4, seed=3)
        tau = tf.random.stateless_uniform([2000], [3, 4], -30.0, 30.0)
        eps = np.finfo(np.float32).eps
        ends = means + tf.exp(log_scales) * tau[:, tf.newaxis]
        low, high = tf.reduce_min(ends, -1), tf.reduce_max(ends, -1)

        def objective(x):
            terms = vb.mixture_logistic_terms(x, logits, means, log_scales)
            return terms.log_cdf - terms.log_survival - tau

        rounding = 4.0 * eps * (np.abs(tau) + 1.0)
        for cap in (2, 3, 5):
            first = tfp.math.find_root_chandrupatla(
                objective, low=low, high=high,
                position_tolerance=4.0 * eps * (
                    tf.maximum(tf.abs(low), tf.abs(high)) + 1.0),
                value_tolerance=rounding, max_iterations=cap)
            x, _ = vb.inverse_logit_cdf(tau, logits, means, log_scales,
                                        max_iterations=cap)
            self.assertAllLessEqual(
                np.abs(objective(x)) - np.abs(objective(first.estimated_root))
                - rounding, 0.0)

    def test_forward_log_det_at_a_clamped_latent_is_the_unclamped_map_s(self):
        # MixLogisticCoupling's docstring: the 'vflow' variant's forward
        # clamps a latent outside the image t ± ln(19) e^s to just inside,
        # and at such an element its log-det is that of the unclamped map,
        # -s + log sigmoid'(u) - log(1 - 2 alpha) - log f(x), u = (y - t)
        # e^-s (the chain rule of the class docstring, at the latent given).
        params = np.array([0.7, 0.3, 0.9, -0.4, 0.5, -1.5, -1.0, 0.4])
        coupling = vb.MixLogisticCoupling(
            _constant_conditioner(params), vb.ChannelSplit(event_ndims=1), 2,
            variant='vflow', dtype=tf.float64)
        s = np.tanh(params[0])
        u = np.array([-40.0, -3.0, 0.0, 2.0, 40.0])  # |u| > ln 19: clamped
        y = tf.constant(np.stack([np.zeros(5), params[1] + u * np.exp(s)],
                                 -1))
        x = coupling.forward(y)[:, 1]
        terms = vb.mixture_logistic_terms(
            x, *[tf.constant(np.broadcast_to(params[i:i + 2], [5, 2]))
                 for i in (2, 4, 6)])
        log_sigmoid_slope = -np.logaddexp(0.0, u) - np.logaddexp(0.0, -u)
        self.assertAllClose(
            coupling.forward_log_det_jacobian(tf.identity(y), 1),
            -s + log_sigmoid_slope - np.log(0.9) - terms.log_pdf,
            rtol=1e-9, atol=1e-9)

    def test_a_fractional_min_log_scale_is_the_floor(self):
        # min_log_scale is a float: the component log-scales are floored at
        # -6.5 itself, not at a rounded -6 or -7.
        def coupling(log_scale, floor):
            return vb.MixLogisticCoupling(
                _constant_conditioner([0.3, 0.1, 0.2, -0.1, 0.5, -0.5]
                                      + [log_scale] * 2),
                vb.ChannelSplit(event_ndims=1), 2, min_log_scale=floor,
                dtype=tf.float64)

        x = tf.constant(np.stack([np.zeros(5), np.linspace(0.49, 0.51, 5)],
                                 -1))
        floored = coupling(-20.0, -6.5)
        self.assertAllClose(floored.inverse(x),
                            coupling(-6.5, -20.0).inverse(x), atol=0, rtol=0)
        self.assertAllClose(floored.inverse_log_det_jacobian(x, 1),
                            coupling(-6.5, -20.0).inverse_log_det_jacobian(
                                x, 1), atol=0, rtol=0)
        for other in (-6.0, -7.0):
            self.assertNotAllClose(floored.inverse(x),
                                   coupling(other, -20.0).inverse(x))

    def test_both_passes_stop_in_ulps_of_roots_far_from_the_origin(self):
        # inverse_logit_cdf's docstring: the first pass stops when the
        # bracket is a few ulps of its ends wide, the second a few ulps of
        # the root itself, so neither runs to its cap, whichever side of 0
        # the root lies on and however far the bracket spans. Two narrow
        # components (scale e^-7), at 0 and at -1000 or +1000: one ulp of x
        # there moves the logit by far more than its rounding, so only the
        # position tolerances (in ulps of magnitudes) can stop the search.
        taus = np.linspace(-5.0, 5.0, 401)
        for far in (-1000.0, 1000.0):
            params = [tf.constant(np.broadcast_to(v, [len(taus), 2]),
                                  tf.float32)
                      for v in ([0.0, 0.0], [0.0, far], [-7.0, -7.0])]
            _, iterations = vb.inverse_logit_cdf(
                tf.constant(taus, tf.float32), *params)
            # As for realistic mixtures: far fewer than the official ~50,
            # let alone the cap of 100 per pass.
            self.assertLessEqual(int(tf.reduce_max(iterations)), 60,
                                 msg=f'components at 0 and {far}')


class FusedSinglePassTest(tf.test.TestCase):

    def test_log_prob_runs_each_conditioner_once(self):
        nets = [TinyConditioner((4, 2, 2), 2 * 2) for _ in range(2)]
        chain = tfb.Chain([
            vb.AffineCoupling(nets[1], vb.ColumnSplit(), parity=1, name='c1'),
            vb.ActNorm([4, 4, 2]),
            vb.AffineCoupling(nets[0], vb.ColumnSplit(), parity=0, name='c0'),
        ])
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), [4, 4, 2]), chain)
        dist.log_prob(tf.random.normal([3, 4, 4, 2]))
        self.assertEqual([n.calls for n in nets], [1, 1])

    def test_sample_and_log_prob_runs_each_conditioner_once(self):
        nets = [TinyConditioner((4, 2, 2), 2 * 2) for _ in range(2)]
        flow = tfb.Chain([
            vb.AffineCoupling(nets[1], vb.ColumnSplit(), parity=1, name='c1'),
            vb.AffineCoupling(nets[0], vb.ColumnSplit(), parity=0, name='c0'),
        ])
        # r/q style: the closed-form direction is the sampling direction.
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), [4, 4, 2]), tfb.Invert(flow))
        _, log_prob = dist.experimental_sample_and_log_prob(3, seed=(1, 2))
        self.assertEqual([n.calls for n in nets], [1, 1])
        self.assertTrue(np.all(np.isfinite(log_prob)))

    def test_one_pass_answers_the_other_direction_s_log_det(self):
        # `inverse_log_det_jacobian(forward(x))` (and the converse) come
        # from the pass's cache, without running the network again.
        net = TinyConditioner((2,), 4, dtype=tf.float64)
        coupling = vb.AffineCoupling(net, vb.ChannelSplit(event_ndims=1),
                                     dtype=tf.float64)
        passes = [(coupling.forward, coupling.forward_log_det_jacobian,
                   coupling.inverse_log_det_jacobian),
                  (coupling.inverse, coupling.inverse_log_det_jacobian,
                   coupling.forward_log_det_jacobian)]
        for calls, (run, log_det, other_log_det) in enumerate(passes, 1):
            x = tf.random.stateless_normal([3, 4], [1, calls],
                                           dtype=tf.float64)
            y = run(x)
            self.assertAllClose(other_log_det(y, event_ndims=1),
                                -log_det(x, event_ndims=1), rtol=1e-12)
            self.assertEqual(net.calls, calls)

    def test_cached_log_det_is_that_of_the_kwargs_asked_for(self):
        # The cache answers a log-det only for the pass that had the same
        # conditioning kwargs: after `inverse(y)` (training=False), a log-det
        # asked with training=True is that of the training-mode map, not
        # the cached inference one; likewise forward.
        def net(c, context=None, training=False):
            del context
            params = [0.2, 0.9] if training else [-0.3, 0.1]
            return tf.broadcast_to(tf.constant(params, c.dtype), tf.concat(
                [tf.shape(c)[:-1], [2]], 0))

        def coupling(conditioner):
            return vb.AffineCoupling(conditioner,
                                     vb.ChannelSplit(event_ndims=1),
                                     dtype=tf.float64)

        layer = coupling(net)
        training_only = coupling(
            lambda c, context=None, training=False: net(c, training=True))
        x = tf.constant([[0.5, -1.0], [2.0, 0.3]], tf.float64)
        for run, log_det in ((layer.inverse, 'inverse_log_det_jacobian'),
                             (layer.forward, 'forward_log_det_jacobian')):
            run(x)
            self.assertAllClose(
                getattr(layer, log_det)(x, 1, training=True),
                getattr(training_only, log_det)(tf.identity(x), 1),
                rtol=1e-12)
            self.assertNotAllClose(getattr(layer, log_det)(x, 1),
                                   getattr(training_only, log_det)(x, 1))


class ConditioningTest(tf.test.TestCase):

    def _conditional_chain(self, dtype=tf.float64):
        half = (4, 2, 2)

        def make(i):
            return vb.AffineCoupling(
                TinyConditioner(half, 4, context_channels=3, dtype=dtype),
                vb.ColumnSplit(), parity=i % 2, dtype=dtype,
                name=f'coupling_{i}')

        inner = tfb.Chain([make(2), vb.ActNorm([4, 4, 2], dtype=dtype)],
                          name='inner')
        return tfb.Chain([tfb.Invert(inner, name='inv_inner'), make(1),
                          make(0)])

    def test_chain_kwargs_nests_by_name(self):
        chain = self._conditional_chain()
        ctx = tf.zeros([1, 4, 2, 3], tf.float64)
        kw = vb.chain_kwargs(chain, context=ctx, training=True, unused=None)
        self.assertEqual(set(kw), {'coupling_0', 'coupling_1', 'inv_inner'})
        self.assertIs(kw['coupling_0']['context'], ctx)
        self.assertEqual(kw['inv_inner'], {'coupling_2': {'context': ctx,
                                                          'training': True}})

    def test_chain_kwargs_leaves_out_accepted_kwargs_that_are_none(self):
        # chain_kwargs' docstring: keyword arguments whose value is None are
        # left out, even those the couplings accept (so `context=None`
        # never reaches a layer as an explicit None, and a chain given only
        # Nones gets no kwargs at all).
        chain = self._conditional_chain()
        kw = vb.chain_kwargs(chain, context=None, training=True)
        self.assertEqual(kw['coupling_0'], {'training': True})
        self.assertEqual(kw['inv_inner'],
                         {'coupling_2': {'training': True}})
        self.assertEqual(vb.chain_kwargs(chain, context=None, training=None),
                         {})

    def test_context_reaches_every_coupling_through_distribution(self):
        chain = self._conditional_chain()
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0),
                       [4, 4, 2]), chain)
        x = tf.random.normal([2, 4, 4, 2], dtype=tf.float64)
        ctx = tf.random.normal([2, 4, 2, 3], dtype=tf.float64)
        lp = dist.log_prob(
            x, bijector_kwargs=vb.chain_kwargs(chain, context=ctx))
        lp2 = dist.log_prob(x, bijector_kwargs=vb.chain_kwargs(
            chain, context=ctx + 1.0))
        self.assertTrue(np.all(np.abs(lp - lp2) > 1e-6))
        # Without a context the conditioners refuse to run.
        with self.assertRaisesRegex(ValueError, 'needs a context'):
            dist.log_prob(x)

    def test_context_broadcasts_over_sample_axes(self):
        # Two draws per conditioning example: x [2, 3, ...], context [3, ...].
        chain = self._conditional_chain()
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0),
                       [4, 4, 2]), chain)
        x = tf.random.normal([2, 3, 4, 4, 2], dtype=tf.float64)
        ctx = tf.random.normal([3, 4, 2, 3], dtype=tf.float64)
        lp = dist.log_prob(
            x, bijector_kwargs=vb.chain_kwargs(chain, context=ctx))
        self.assertEqual(lp.shape, [2, 3])
        for i in range(2):
            self.assertAllClose(lp[i], dist.log_prob(
                x[i], bijector_kwargs=vb.chain_kwargs(chain, context=ctx)),
                atol=1e-10)

    def test_precomputed_conditional_affine_runs_its_network_once(self):
        # A chain holding a ConditionalAffine (context-only parameters) and
        # a coupling (parameters from input and context), sampled and then
        # scored at the sample: the affine's network runs once, the
        # coupling's twice (once per input), and the numbers are those of
        # the context kwargs.
        class Counted(tf.Module):
            def __init__(self, net):
                super().__init__()
                self.net, self.calls = net, 0

            def __call__(self, c, training=False):
                self.calls += 1
                return self.net(c, training=training)

        net = Counted(vflow_tfp.nets.MLP(3, 8, dtype=tf.float64))
        for v in net.trainable_variables:
            v.assign(tf.random.stateless_normal(v.shape, [1, v.shape[-1]],
                                                dtype=tf.float64))
        affine = vb.ConditionalAffine(net, [4], dtype=tf.float64,
                                      name='norm')
        coupling = vb.AffineCoupling(
            vflow_tfp.nets.MLP(2, 4, context_features=3, dtype=tf.float64),
            vb.ChannelSplit(event_ndims=1), dtype=tf.float64,
            name='coupling')
        flow = tfb.Invert(tfb.Chain([coupling, affine]))
        ctx = tf.random.stateless_normal([5, 3], [2, 3], dtype=tf.float64)
        eps = tf.random.stateless_normal([5, 4], [3, 4], dtype=tf.float64)
        plain = vb.chain_kwargs(flow, context=ctx)
        kwargs = vb.precompute_conditioning(flow, plain)
        self.assertEqual(net.calls, 1)
        self.assertEqual(set(kwargs['norm']), {'log_scale', 'shift'})
        self.assertIs(kwargs['coupling'], plain['coupling'])
        y = flow.forward(eps, **kwargs)
        fldj = flow.forward_log_det_jacobian(eps, 1, **kwargs)
        back = flow.inverse(tf.identity(y), **kwargs)
        ildj = flow.inverse_log_det_jacobian(tf.identity(y), 1, **kwargs)
        self.assertEqual(net.calls, 1)
        self.assertAllClose(y, flow.forward(eps, **plain), atol=0, rtol=0)
        self.assertAllClose(fldj, flow.forward_log_det_jacobian(
            eps, 1, **plain), atol=0, rtol=0)
        self.assertAllClose(back, eps, atol=1e-12)
        self.assertAllClose(ildj, -fldj, atol=1e-12)
        self.assertGreater(net.calls, 1)  # The context kwargs run it again.
        # Parameters for another batch are refused like such a context.
        with self.assertRaisesRegex(ValueError, r'log_scale \(5, 4\).*'
                                    r'\(3, 4\)'):
            affine.forward(eps[:3], **kwargs['norm'])
        with self.assertRaisesRegex(ValueError, 'both log_scale and shift'):
            affine.forward(eps, log_scale=kwargs['norm']['log_scale'])
        # Kwargs of other structures pass through unchanged.
        self.assertEqual(vb.precompute_conditioning(flow, {}), {})
        self.assertEqual(vb.precompute_conditioning(affine, {}), {})
        maf_kwargs = {'conditional_input': ctx}
        self.assertIs(vb.precompute_conditioning(tfb.Exp(), maf_kwargs),
                      maf_kwargs)

    def test_conditional_affine_without_context_is_a_clear_error(self):
        layer = vb.ConditionalAffine(vflow_tfp.nets.MLP(3, 4), [2])
        with self.assertRaisesRegex(ValueError, 'needs a context'):
            layer.forward(tf.zeros([1, 2]))
        narrow = vb.ConditionalAffine(vflow_tfp.nets.MLP(3, 6), [4])
        with self.assertRaisesRegex(ValueError, r'returned 6 values per '
                                    r'example.*needs 2 x 4 = 8'):
            narrow.inverse(tf.zeros([2, 4]), context=tf.zeros([2, 3]))

    def test_a_context_may_be_a_python_list_as_for_the_couplings(self):
        # ConditionalAffine converts its context to its dtype, as the
        # couplings convert theirs: a nested Python list maps as the
        # tensor it stands for.
        layer = vb.ConditionalAffine(vflow_tfp.nets.MLP(3, 8), [4])
        randomise(layer, tf.float32, 2)
        context = [[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]]
        x = tf.random.stateless_normal([2, 4], [1, 2])
        for method in (layer.inverse, layer.forward):
            with self.subTest(method=method.__name__):
                self.assertAllClose(method(x, context=context),
                                    method(x, context=tf.constant(context)),
                                    atol=0, rtol=0)
        self.assertAllClose(
            layer.inverse_log_det_jacobian(x, 1, context=context),
            layer.inverse_log_det_jacobian(x, 1,
                                           context=tf.constant(context)),
            atol=0, rtol=0)

    def test_joint_map_and_blockwise_route_by_name(self):
        # As tfb.Chain does: each child gets the kwargs under its name, so
        # a VFlow's p may factor dimensions out the TFP way.
        net = vflow_tfp.nets.MLP(2, 8)
        for v in net.trainable_variables:
            v.assign(tf.random.stateless_normal(v.shape, [3, 4]))
        affine = vb.ConditionalAffine(net, [4], name='affine')
        ctx = tf.random.stateless_normal([3, 2], [5, 6])
        x = tf.random.stateless_normal([3, 6], [7, 8])
        expected = affine.forward(x[:, :4], context=ctx)
        joint = tfb.JointMap([affine, tfb.Identity()], name='joint')
        kw = vb.chain_kwargs(joint, context=ctx)
        self.assertEqual(list(kw), ['affine'])
        parts = joint.forward([x[:, :4], x[:, 4:]], **kw)
        self.assertAllClose(parts[0], expected)
        block = tfb.Blockwise([affine, tfb.Identity()], block_sizes=[4, 2])
        kw = vb.chain_kwargs(block, context=ctx)
        self.assertEqual(list(kw), ['affine'])
        self.assertAllClose(block.forward(x, **kw)[:, :4], expected)
        self.assertAllClose(
            block.forward_log_det_jacobian(x, 1, **kw),
            affine.forward_log_det_jacobian(x[:, :4], 1, context=ctx))
        self.assertEqual(vb.chain_kwargs(tfb.Blockwise([tfb.Exp()]),
                                         context=ctx), {})

    def test_composites_that_do_not_route_by_name_are_refused(self):
        # A composite of another kind may hand its kwargs to no child: the
        # context and `training` would be dropped without a word.

        class Stack(tfb.Bijector):
            def __init__(self, bijectors):
                self.bijectors = bijectors
                super().__init__(forward_min_event_ndims=1, name='stack')

        affine = vb.ConditionalAffine(vflow_tfp.nets.MLP(2, 8), [4],
                                      name='affine')
        with self.assertRaisesRegex(ValueError, "Stack 'stack' contains "
                                    'conditional layers but does not route '
                                    'kwargs by child name'):
            vb.chain_kwargs(Stack([affine]), context=tf.zeros([1, 2]))
        # Also when other children are not conditional.
        with self.assertRaisesRegex(ValueError, "Stack 'stack' contains "):
            vb.chain_kwargs(Stack([tfb.Exp(), affine]),
                            context=tf.zeros([1, 2]))
        self.assertEqual(vb.chain_kwargs(Stack([tfb.Exp()]),
                                         context=tf.zeros([1, 2])), {})

    def test_each_layer_gets_the_kwargs_it_accepts_through_any_nest(self):
        # A layer that lists only `context` gets only `context` (a
        # `training=` it does not take would be a TypeError in TFP's call),
        # and a JointMap of a dict or of nested lists routes as a flat one.
        class ContextOnly(tfb.Shift):
            conditioning_kwargs = ('context',)

            def __init__(self, name):
                super().__init__(tf.constant(0.0), name=name)

            def _forward(self, x, context=None):
                return x + context

            def _inverse(self, y, context=None):
                return y - context

        only = ContextOnly('only')
        context = tf.constant([[1.0, 2.0]])
        kw = vb.chain_kwargs(tfb.Chain([only, tfb.Exp()]), context=context,
                             training=True, unknown=3)
        self.assertEqual(list(kw), ['only'])
        self.assertEqual(list(kw['only']), ['context'])
        self.assertAllClose(tfb.Chain([only, tfb.Exp()]).forward(
            tf.zeros([1, 2]), **kw), [[2.0, 3.0]])
        for joint in (tfb.JointMap({'x': only, 'z': tfb.Exp()}),
                      tfb.JointMap([[only], [tfb.Exp()]])):
            kw = vb.chain_kwargs(joint, context=context, training=True)
            self.assertEqual(kw, {'only': {'context': context}})

    def test_duplicate_names_are_refused(self):
        net = TinyConditioner((4, 2, 2), 4, context_channels=1)
        chain = tfb.Chain([
            vb.AffineCoupling(net, vb.ColumnSplit(), name='same'),
            vb.AffineCoupling(net, vb.ColumnSplit(), parity=1, name='same')])
        with self.assertRaisesRegex(ValueError, 'unique names'):
            vb.chain_kwargs(chain, context=tf.zeros([1, 4, 2, 1]))

    def test_a_conditioner_without_context_is_named(self):
        # A tf_keras model's call(x) takes no `context`: the error names
        # the calling convention instead of Keras's bare keyword error.
        import tf_keras  # pylint: disable=import-outside-toplevel
        net = tf_keras.Sequential([tf_keras.layers.Dense(4)])
        coupling = vb.AffineCoupling(net, vb.ChannelSplit(event_ndims=1),
                                     name='keras_coupling')
        with self.assertRaisesRegex(
                TypeError, r'^keras_coupling: its conditioner must take '
                r'net\(c, context=None, training=False\) \(.*unexpected '
                r"keyword argument 'context'\); wrap a network"):
            coupling.inverse(tf.zeros([3, 4]))

    def test_wrong_conditioner_width_is_a_clear_error(self):
        coupling = vb.MixLogisticCoupling(
            TinyConditioner((4, 2, 2), 7), vb.ColumnSplit(), num_components=4)
        with self.assertRaisesRegex(ValueError,
                                    r'2 transformed channels x 14'):
            coupling.inverse(tf.zeros([1, 4, 4, 2]))

    def test_bad_constructor_arguments(self):
        net = TinyConditioner((4, 2, 2), 4)
        with self.assertRaisesRegex(TypeError, 'Partition'):
            vb.AffineCoupling(net, 'checkerboard')
        with self.assertRaisesRegex(ValueError, 'parity'):
            vb.AffineCoupling(net, vb.ColumnSplit(), parity=2)
        with self.assertRaisesRegex(ValueError, 'variant'):
            vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2, variant='glow')
        with self.assertRaisesRegex(ValueError, 'scale_fn'):
            vb.AffineCoupling(net, vb.ColumnSplit(), scale_fn='softplus')
        with self.assertRaisesRegex(TypeError, 'conditioner must be callable'):
            vb.AffineCoupling('net', vb.ColumnSplit())

    def test_shape_errors_name_the_coupling(self):
        cond, trans = vb.ColumnSplit().half_event_shapes((4, 4, 2))
        net = vflow_tfp.nets.ConvAttnNet(
            cond, trans[-1] * vb.MixLogisticCoupling.num_params(2),
            filters=8, num_blocks=1)
        coupling = vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2,
                                          name='coupling_7')
        for x, message in (
                (tf.zeros([2, 6, 6, 2]),
                 r'coupling_7: its conditioner refused the conditioning half '
                 r'of shape \(2, 6, 3, 2\): conv_attn_net expects inputs of '
                 r'shape \[B, 4, 2, 2\]'),
                (tf.zeros([2, 4, 5, 2]),
                 'coupling_7: ColumnSplit needs an even image width; got 5')):
            for call in (coupling.inverse, tf.function(coupling.inverse)):
                with self.assertRaisesRegex(ValueError, message):
                    call(x)

    def test_a_plain_conditioner_s_kernel_error_names_the_coupling(self):
        # A hand-written network has no input check: run eagerly, its
        # matmul fails in the kernel (an InvalidArgumentError).
        class MatMulNet(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.Variable(tf.zeros([2, 4]))

            def __call__(self, c, context=None, training=False):
                return tf.matmul(c, self.w)

        coupling = vb.AffineCoupling(MatMulNet(), vb.ChannelSplit(1),
                                     name='coupling_3')
        self.assertEqual(coupling.inverse(tf.ones([3, 4])).shape, [3, 4])
        with self.assertRaisesRegex(
                ValueError, r'coupling_3: its conditioner refused the '
                            r'conditioning half of shape \(3, 3\): .*Matrix '
                            r'size-incompatible'):
            coupling.inverse(tf.ones([3, 6]))

    def test_keras3_networks_are_refused(self):
        # Keras 3 layers are not tf.Modules: a layer built on one would list
        # none of its variables and never train. They are found in a
        # module's attributes, lists, tuples and dicts, and in those of the
        # modules it holds (a list of a held module: three levels down).
        import keras  # pylint: disable=g-import-not-at-top
        import tf_keras  # pylint: disable=g-import-not-at-top

        class Wrapper(tf.Module):
            def __init__(self, layers):
                super().__init__()
                self.layers = layers

            def __call__(self, c, context=None, training=False):
                layers = self.layers
                for layer in (layers.values() if isinstance(layers, dict)
                              else layers):
                    c = layer(c)
                return c

        for network in (keras.Sequential([keras.layers.Dense(4)]),
                        Wrapper([keras.layers.Dense(4)]),
                        Wrapper((keras.layers.Dense(4),)),
                        Wrapper({'dense': keras.layers.Dense(4)}),
                        Wrapper(Wrapper([keras.layers.Dense(4)]))):
            with self.assertRaisesRegex(TypeError, 'holds a Keras 3 layer'):
                vb.AffineCoupling(network, vb.ColumnSplit())
            with self.assertRaisesRegex(TypeError, 'holds a Keras 3 layer'):
                vb.ConditionalAffine(network, [2])
        with self.assertRaisesRegex(TypeError, 'context_net is or holds'):
            models.ConditionalFlow(vb.Sigmoid(), [2],
                                   context_net=keras.layers.Dense(2))
        # The same network from tf_keras is tracked, and accepted.
        coupling = vb.AffineCoupling(Wrapper([tf_keras.layers.Dense(4)]),
                                     vb.ColumnSplit())
        coupling.inverse(tf.ones([1, 2, 2, 2]))
        self.assertLen(coupling.trainable_variables, 2)


class ArgumentValidationTest(tf.test.TestCase):
    """Bad sizes, shapes and partitions are refused with a clear error."""

    def test_mix_logistic_max_iterations_must_be_a_positive_integer(self):
        net = TinyConditioner((4, 2, 2),
                              2 * vb.MixLogisticCoupling.num_params(2))
        for bad in (0, -5, 2.5):
            with self.assertRaisesRegex(ValueError, 'max_iterations'):
                vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2,
                                       max_iterations=bad)
        layer = vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2,
                                       max_iterations=np.int64(100))
        x = tf.random.stateless_normal([1, 4, 4, 2], seed=(1, 2))
        self.assertAllClose(layer.forward(layer.inverse(x)), x, atol=1e-4)

    def test_squeeze_refuses_events_without_three_image_axes(self):
        squeeze = vb.Squeeze()
        for call in (lambda: squeeze.inverse(tf.ones([2, 8])),
                     lambda: squeeze.forward(tf.ones([2, 8])),
                     lambda: squeeze.inverse_event_shape([4, 2]),
                     lambda: squeeze.forward_event_shape([4, 8]),
                     lambda: squeeze.inverse_event_shape_tensor([4, 2]),
                     lambda: squeeze.forward_event_shape_tensor([4, 8])):
            with self.assertRaisesRegex(ValueError, r'\[H, W, C\]'):
                call()
        # A shape tensor of static length 2 is refused while tracing.
        dynamic = tf.function(squeeze.inverse_event_shape_tensor,
                              input_signature=[tf.TensorSpec([2], tf.int32)])
        with self.assertRaisesRegex(ValueError, r'\[H, W, C\]'):
            dynamic.get_concrete_function()

    def test_conditional_affine_checks_event_and_context_shapes(self):
        layer = vb.ConditionalAffine(vflow_tfp.nets.MLP(2, 8), [4])
        with self.assertRaisesRegex(ValueError,
                                    r'events of shape \[4\].*\(3, 5\)'):
            layer.inverse(tf.ones([3, 5]), context=tf.ones([3, 2]))
        with self.assertRaisesRegex(ValueError,
                                    r'\(5, 2\).*\(3, 4\)'):
            layer.inverse(tf.ones([3, 4]), context=tf.ones([5, 2]))
        with self.assertRaisesRegex(ValueError,
                                    r'\(5, 2\).*\(3, 4\)'):
            layer.forward(tf.ones([3, 4]), context=tf.ones([5, 2]))
        # Contexts still broadcast over leading sample axes and size-1 batches.
        self.assertEqual(layer.inverse(tf.ones([2, 3, 4]),
                                       context=tf.ones([3, 2])).shape,
                         [2, 3, 4])
        self.assertEqual(layer.inverse(tf.ones([3, 4]),
                                       context=tf.ones([1, 2])).shape, [3, 4])
        # So do the log-dets: one per input, whatever the context's batch
        # (a sum over the batch then counts every input once).
        for shape, context in (([3, 4], [1, 2]), ([2, 3, 4], [3, 2])):
            for log_det in (layer.inverse_log_det_jacobian,
                            layer.forward_log_det_jacobian):
                self.assertEqual(log_det(tf.ones(shape), 1,
                                         context=tf.ones(context)).shape,
                                 shape[:-1])

    def test_coupling_context_batch_must_broadcast(self):
        coupling = vb.AffineCoupling(
            TinyConditioner((4, 2, 2), 4, context_channels=3),
            vb.ColumnSplit())
        with self.assertRaisesRegex(ValueError,
                                    r'\(5, 4, 2, 3\).*\(3, 4, 4, 2\)'):
            coupling.inverse(tf.ones([3, 4, 4, 2]),
                             context=tf.ones([5, 4, 2, 3]))
        self.assertEqual(coupling.inverse(
            tf.ones([2, 3, 4, 4, 2]), context=tf.ones([3, 4, 2, 3])).shape,
                         [2, 3, 4, 4, 2])

    def test_contexts_of_other_dtypes_and_unbatched_inputs(self):
        # A NumPy float64 context (NumPy's default) conditions a float32
        # coupling as its float32 tensor does; a single event without a
        # batch axis is row 0 of its batch of one; and the mixture's
        # iteration count is that of the solve under the given context.
        rng = np.random.default_rng(1)
        net = vflow_tfp.nets.MLP(2, 2 * vb.MixLogisticCoupling.num_params(3),
                                 hidden_units=(8,), context_features=3,
                                 output_init_scale=1.0, name='ctx_net')
        for v in net.trainable_variables:
            v.assign(0.3 * rng.normal(size=v.shape))
        partition = vb.ChannelSplit(event_ndims=1)
        mixture = vb.MixLogisticCoupling(net, partition, 3)
        x = tf.constant(rng.normal(size=[5, 4]), tf.float32)
        context = rng.normal(size=[5, 3])
        self.assertAllClose(mixture.inverse(x, context=context),
                            mixture.inverse(x, context=tf.constant(
                                context, tf.float32)))
        fixed = context[:1].astype(np.float32)

        def baked(c, context=None, training=False):
            del context
            return net(c, context=tf.broadcast_to(
                fixed, [tf.shape(c)[0], 3]), training=training)

        same = vb.MixLogisticCoupling(baked, partition, 3)
        self.assertAllEqual(mixture.inverse_iterations(x, context=fixed),
                            same.inverse_iterations(x))
        plain = vb.AffineCoupling(vflow_tfp.nets.MLP(2, 4, hidden_units=(8,),
                                                     output_init_scale=1.0),
                                  partition)
        for layer in (plain, same):
            for run in (layer.inverse, layer.forward):
                self.assertAllClose(run(x[0]), run(x[:1])[0])
            self.assertAllClose(
                layer.inverse_log_det_jacobian(x[0], 1),
                layer.inverse_log_det_jacobian(x[:1], 1)[0])

    def test_an_input_broadcasts_against_a_wider_context_batch(self):
        # One point under several contexts, as TFP's conditional bijectors
        # (and ConditionalAffine) take it: one result per context.
        rng = np.random.default_rng(0)
        for kind in ('affine', 'mixture'):
            net = vflow_tfp.nets.MLP(
                2, 2 * (2 if kind == 'affine' else
                        vb.MixLogisticCoupling.num_params(3)),
                hidden_units=(8,), context_features=3, output_init_scale=1.0,
                dtype=tf.float64, name=f'{kind}_net')
            for v in net.trainable_variables:
                v.assign(0.3 * rng.normal(size=v.shape))
            partition = vb.ChannelSplit(event_ndims=1)
            coupling = (
                vb.AffineCoupling(net, partition, dtype=tf.float64)
                if kind == 'affine' else vb.MixLogisticCoupling(
                    net, partition, 3, dtype=tf.float64))
            x = tf.constant(rng.normal(size=[4]))
            contexts = tf.constant(rng.normal(size=[2, 5, 3]))
            for run in (coupling.inverse, coupling.forward):
                with self.subTest(kind=kind, direction=run.__name__):
                    y = run(x, context=contexts)
                    self.assertEqual(y.shape, [2, 5, 4])
                    one = run(x[tf.newaxis], context=contexts[1, 3:4])
                    self.assertAllClose(y[1, 3], one[0])
            ildj = coupling.inverse_log_det_jacobian(x, 1, context=contexts)
            self.assertEqual(ildj.shape, [2, 5])
            self.assertAllClose(ildj[0, 2], coupling.inverse_log_det_jacobian(
                x[tf.newaxis], 1, context=contexts[0, 2:3])[0])

    def test_every_partition_argument_is_type_checked(self):
        net = TinyConditioner((4, 2, 2), 4)
        for build in (lambda: vb.AffineCoupling(net, 'column'),
                      lambda: vb.Invertible1x1Conv([4, 4, 2],
                                                   partition='column'),
                      lambda: vb.Invertible1x1ConvLU([4, 4, 2],
                                                     partition='column'),
                      lambda: vb.SwapHalves('column')):
            with self.assertRaisesRegex(TypeError,
                                        'partition must be a .*Partition'):
                build()

    def test_sizes_are_refused_not_truncated(self):
        net = TinyConditioner((4, 2, 2), 4)
        for name, build in (
                ('num_bins', lambda: vb.ImageLogit(num_bins=2.5)),
                ('num_bins', lambda: vb.ImageLogit(num_bins=True)),
                ('block_size', lambda: vb.Squeeze(2.5)),
                (r'event_shape\[0\]', lambda: vb.ActNorm([4.7, 4, 2])),
                (r'event_shape\[0\]', lambda: vb.ActNorm([0, 4, 2])),
                (r'event_shape\[1\]',
                 lambda: vb.ConditionalAffine(net, [2, 2.5])),
                (r'event_shape\[2\]',
                 lambda: vb.Invertible1x1Conv([4, 4, 2.5])),
                (r'event_shape\[2\]',
                 lambda: vb.Invertible1x1ConvLU([4, 4, 2.5])),
                ('num_components',
                 lambda: vb.MixLogisticCoupling(net, vb.ColumnSplit(), 2.5))):
            with self.assertRaisesRegex((ValueError, TypeError), name):
                build()
        # Integers of any kind are accepted, and kept as Python ints.
        self.assertEqual(vb.ImageLogit(num_bins=np.int32(16)).num_bins, 16)
        self.assertEqual(vb.Squeeze(np.int64(2)).block_size, 2)
        self.assertEqual(vb.ActNorm(tf.TensorShape([4, 4, 2])).event_shape,
                         (4, 4, 2))

    def test_a_string_is_not_read_as_a_sequence_of_sizes(self):
        # as_sizes refuses a string as a whole: bytes would otherwise read
        # as their byte values (b'\x04\x04\x02' as [4, 4, 2]) and an empty
        # string as an empty shape.
        for value in (b'\x04\x04\x02', '442', ''):
            with self.assertRaisesRegex(TypeError, 'the string'):
                vb.ActNorm(value)

    def test_validate_args_checks_the_inverse_domain(self):
        # The domain is forward's image: 256 * (-1/18, 19/18) for the image
        # logit, (-1/18, 19/18) for VFlow's sigmoid.
        checked = ((vb.ImageLogit(validate_args=True),
                    [300.0, -15.0, -14.23, 270.23],
                    [-14.2, 0.0, 128.0, 256.0, 270.2],
                    '(-14.2222, 270.222)'),
                   (vb.Sigmoid(validate_args=True), [1.5, 0.0, 1.0],
                    [0.25, 0.5], '(0, 1)'),
                   (vb.SmoothSigmoid(validate_args=True),
                    [1.5, -0.5, -0.0556, 1.0556], [-0.0555, 0.0, 1.0, 1.0555],
                    '(-0.0555556, 1.05556)'))
        for layer, bad, good, interval in checked:
            for y in bad:
                with self.assertRaisesOpError(
                        'must lie in ' + re.escape(interval)):
                    layer.inverse(tf.constant([y]))
                with self.assertRaisesOpError('must lie in'):
                    layer.inverse_log_det_jacobian(tf.constant([y]),
                                                   event_ndims=1)
            self.assertTrue(np.all(np.isfinite(
                layer.inverse(tf.constant(good)))))
            # What forward returns is accepted: sampling then scoring works.
            x = tf.constant([-8.0, -2.0, 0.0, 3.0, 8.0])
            self.assertAllClose(layer.inverse(layer.forward(x)), x,
                                rtol=1e-3, atol=1e-3)
        # Without validate_args the default path builds no assertion.
        graph = tf.function(vb.ImageLogit().inverse).get_concrete_function(
            tf.TensorSpec([3], tf.float32)).graph
        self.assertNotIn('Assert',
                         {op.type for op in graph.get_operations()})


class ConditioningDeliveryTest(tf.test.TestCase):
    """What reaches the networks: the `training` flag, the context in the
    layer's dtype, the root finder's cap, errors of the network's own; and
    context broadcasting when the batch sizes are traced unknown."""

    class _Spy(tf.Module):
        """Records the `training` flag of each call of the network."""

        def __init__(self, net):
            super().__init__()
            self.net, self.seen = net, []

        def __call__(self, *args, training=False, **kwargs):
            self.seen.append(training)
            return self.net(*args, training=training, **kwargs)

    def test_training_reaches_every_network_through_chain_kwargs(self):
        # `context` and `training` are bijector kwargs of the couplings and
        # of ConditionalAffine (their `conditioning_kwargs`), and their
        # networks take `training` (dropout acts only when it is True).
        affine_net = self._Spy(vflow_tfp.nets.MLP(3, 8))
        coupling_net = self._Spy(vflow_tfp.nets.MLP(2, 4, context_features=3))
        chain = tfb.Chain([
            vb.AffineCoupling(coupling_net, vb.ChannelSplit(event_ndims=1),
                              name='coupling'),
            vb.ConditionalAffine(affine_net, [4], name='affine')])
        x, ctx = tf.zeros([2, 4]), tf.zeros([2, 3])
        for training in (True, False):
            kw = vb.chain_kwargs(chain, context=ctx, training=training)
            for run in (chain.forward, chain.inverse):
                affine_net.seen.clear()
                coupling_net.seen.clear()
                run(tf.identity(x), **kw)
                self.assertEqual(affine_net.seen, [training])
                self.assertEqual(coupling_net.seen, [training])

    def test_inverse_iterations_are_those_of_forward(self):
        # `inverse_iterations(y)` reports the solve of `forward(y)`: its
        # network runs as forward's does by default (training=False), and
        # `max_iterations` caps each of the solver's two passes.
        partition = vb.ChannelSplit(event_ndims=1)
        net = self._Spy(TinyConditioner(
            (2,), 2 * vb.MixLogisticCoupling.num_params(3)))
        y = tf.random.stateless_normal([5, 4], [3, 4])
        for cap, most in ((1, 2), (100, 200)):
            coupling = vb.MixLogisticCoupling(net, partition, 3,
                                              max_iterations=cap)
            net.seen.clear()
            coupling.forward(y)
            iterations = coupling.inverse_iterations(tf.identity(y))
            self.assertEqual(net.seen, [False, False])
            self.assertAllInRange(iterations, 2, most)
            if cap == 1:
                self.assertAllEqual(iterations, np.full([5, 2], 2))
            else:
                self.assertGreater(int(tf.reduce_max(iterations)), 2)

    def test_a_network_s_own_errors_are_not_renamed(self):
        # Only a conditioner that refuses `context` is a calling-convention
        # error; a TypeError raised inside the network propagates as it is.
        # A shape it refuses is reported as the (batch-folded) shape the
        # network was given: networks take one batch axis.
        def raising(c, context=None, training=False):
            raise TypeError('a bug inside the network')

        def matmul(c, context=None, training=False):
            return tf.matmul(c, tf.zeros([2, 4]))

        coupling = vb.AffineCoupling(raising, vb.ChannelSplit(event_ndims=1))
        with self.assertRaisesRegex(TypeError, '^a bug inside the network$'):
            coupling.inverse(tf.zeros([3, 4]))
        coupling = vb.AffineCoupling(matmul, vb.ChannelSplit(event_ndims=1),
                                     name='coupling_5')
        with self.assertRaisesRegex(
                ValueError, r'coupling_5: its conditioner refused the '
                r'conditioning half of shape \(6, 3\): '):
            coupling.inverse(tf.ones([2, 3, 6]))

    def test_conditional_affine_converts_contexts_and_parameters(self):
        # A NumPy float64 context, or float64 parameters from
        # `conditioning_parameters`, condition a float32 layer as their
        # float32 tensors do (as the couplings convert their contexts).
        layer = vb.ConditionalAffine(randomise(
            vflow_tfp.nets.MLP(3, 8, output_init_scale=1.0), tf.float32, 0),
            [4])
        rng = np.random.default_rng(1)
        context = rng.normal(size=[2, 3])
        x = tf.constant(rng.normal(size=[2, 4]), tf.float32)
        params = layer.conditioning_parameters(tf.constant(context,
                                                           tf.float32))
        expected = layer.inverse(x, **params)
        self.assertAllClose(layer.inverse(x, context=context), expected)
        self.assertAllClose(layer.inverse(x, **{
            k: v.numpy().astype(np.float64) for k, v in params.items()}),
                            expected)

    def test_contexts_broadcast_when_traced_with_unknown_batch_sizes(self):
        # A context batch of one serves every input, and one input serves
        # every context, also traced with unknown batch sizes: the results
        # are the eager ones.
        coupling = vb.AffineCoupling(
            randomise(vflow_tfp.nets.MLP(
                2, 4, hidden_units=(8,), context_features=3,
                output_init_scale=1.0, dtype=tf.float64), tf.float64, 2),
            vb.ChannelSplit(event_ndims=1), dtype=tf.float64)
        rng = np.random.default_rng(3)
        x = tf.constant(rng.normal(size=[3, 4]))
        contexts = tf.constant(rng.normal(size=[5, 3]))
        traced = tf.function(
            lambda x, c: coupling.inverse(x, context=c),
            input_signature=[tf.TensorSpec([None, 4], tf.float64),
                             tf.TensorSpec([None, 3], tf.float64)])
        for inputs, context in ((x, contexts[:1]), (x[:1], contexts)):
            self.assertAllClose(traced(inputs, context),
                                coupling.inverse(inputs, context=context))

    def test_only_conditional_layers_need_unique_names(self):
        # chain_kwargs refuses a conditional layer that shares its name with
        # a sibling, saying how many children bear it; layers that get no
        # kwargs may share a name (TFP's defaults, e.g. two 'exp').
        net = TinyConditioner((2,), 2, context_channels=1)

        def coupling(name):
            return vb.AdditiveCoupling(net, vb.ChannelSplit(event_ndims=1),
                                       name=name)

        context = tf.zeros([1, 1])
        kw = vb.chain_kwargs(tfb.Chain([coupling('c'), tfb.Exp(), tfb.Exp()]),
                             context=context)
        self.assertEqual(list(kw), ['c'])
        with self.assertRaisesRegex(ValueError,
                                    "has 2 children named 'same'"):
            vb.chain_kwargs(tfb.Chain([coupling('same'), tfb.Exp(),
                                       coupling('same')]), context=context)

    def test_a_conditional_layer_may_not_share_a_plain_sibling_s_name(self):
        # chain_kwargs' docstring: a conditional layer that shares its name
        # with a sibling is refused, since TFP would hand both the same
        # kwargs; the sibling need not be conditional (tfb.Exp would get
        # the context and refuse it).
        coupling = vb.AdditiveCoupling(
            TinyConditioner((2,), 2, context_channels=1),
            vb.ChannelSplit(event_ndims=1), name='exp')
        with self.assertRaisesRegex(ValueError,
                                    "has 2 children named 'exp'"):
            vb.chain_kwargs(tfb.Chain([coupling, tfb.Exp()]),
                            context=tf.zeros([1, 1]))

    def test_layers_route_under_their_documented_default_names(self):
        # The constructors' documented default names are the keys under
        # which chain_kwargs delivers each layer its kwargs.
        net = TinyConditioner((2,), 2)
        partition = vb.ChannelSplit(event_ndims=1)
        for layer, name in (
                (vb.AdditiveCoupling(net, partition), 'additive_coupling'),
                (vb.AffineCoupling(net, partition), 'affine_coupling'),
                (vb.MixLogisticCoupling(net, partition, 2),
                 'mix_logistic_coupling'),
                (vb.ConditionalAffine(net, [4]), 'conditional_affine')):
            self.assertEqual(layer.name, name)
            self.assertEqual(
                vb.chain_kwargs(tfb.Chain([layer, tfb.Exp()]),
                                training=True), {name: {'training': True}})

    def test_precomputed_parameters_run_the_network_as_the_maps_do(self):
        # conditioning_parameters(context, training) stands in for the
        # maps' `context` and `training` kwargs, whose `training` defaults
        # to False: kwargs without `training` (chain_kwargs(context=...))
        # run the network in inference mode both ways.
        net = self._Spy(vflow_tfp.nets.MLP(3, 8))
        layer = vb.ConditionalAffine(net, [4], name='affine')
        chain = tfb.Chain([layer, tfb.Exp()])
        context = tf.zeros([2, 3])
        chain.forward(tf.zeros([2, 4]), **vb.chain_kwargs(chain,
                                                          context=context))
        vb.precompute_conditioning(chain, vb.chain_kwargs(chain,
                                                          context=context))
        layer.conditioning_parameters(context)
        self.assertEqual(net.seen, [False, False, False])

    def test_precompute_conditioning_goes_through_every_routing_composite(
            self):
        # precompute_conditioning's docstring: like chain_kwargs, it goes
        # through nests of Chain, JointMap (lists, nested lists, dicts),
        # Blockwise and Invert, and gives a context-only layer its
        # parameters, which map as its context does.
        net = randomise(vflow_tfp.nets.MLP(2, 8, output_init_scale=1.0),
                        tf.float32, 5)
        affine = vb.ConditionalAffine(net, [4], name='affine')
        context = tf.random.stateless_normal([3, 2], [1, 2])
        x = tf.random.stateless_normal([3, 4], [3, 4])
        expected = affine.forward(x, context=context)
        for composite in (tfb.JointMap({'x': affine, 'z': tfb.Exp()}),
                          tfb.JointMap([[tfb.Exp()], [affine]]),
                          tfb.Invert(tfb.Blockwise([affine, tfb.Exp()],
                                                   block_sizes=[4, 1]))):
            with self.subTest(composite=composite.name):
                kwargs = vb.precompute_conditioning(
                    composite, vb.chain_kwargs(composite, context=context))
                self.assertEqual(set(kwargs), {'affine'})
                self.assertEqual(set(kwargs['affine']),
                                 {'log_scale', 'shift'})
                self.assertAllClose(affine.forward(x, **kwargs['affine']),
                                    expected, atol=0, rtol=0)

    def test_a_wrong_conditioner_width_is_reported_as_returned(self):
        # The error names the width the conditioner returned and the one
        # the coupling needs (transformed channels x parameters).
        coupling = vb.MixLogisticCoupling(
            TinyConditioner((4, 2, 2), 7), vb.ColumnSplit(), num_components=4,
            name='mix_3')
        with self.assertRaisesRegex(
                ValueError, r'^mix_3: the conditioner returned 7 channels; '
                r'this coupling needs 2 transformed channels x 14 parameters '
                r'= 28\.$'):
            coupling.inverse(tf.zeros([1, 4, 4, 2]))

    def test_duplicate_name_error_names_the_composite_as_built(self):
        # chain_kwargs' ValueError for a shared name names the composite by
        # the class the user built (tfb.Chain, tfb.JointMap), not TFP's
        # private `_Chain` / `_JointMap` that holds non-CompositeTensor
        # layers, and by its name.
        net = TinyConditioner((2,), 2, context_channels=1)
        layers = [vb.AdditiveCoupling(net, vb.ChannelSplit(event_ndims=1),
                                      name='same') for _ in range(2)]
        for composite, prefix in (
                (tfb.Chain(layers, name='flow'), "Chain 'flow'"),
                (tfb.JointMap(layers, name='parts'), "JointMap 'parts'")):
            with self.assertRaisesRegex(
                    ValueError, '^' + re.escape(prefix)
                    + " has 2 children named 'same'"):
                vb.chain_kwargs(composite, context=tf.zeros([1, 1]))


class StructuralLayerEdgeCaseTest(tf.test.TestCase):
    """Documented edge cases of the structural layers: boundary sizes,
    half-variable parameters, traced shapes and the fused pass's cache."""

    def _assert_no_error(self, call, what):
        # The layer's own error would otherwise end the test as a crash.
        try:
            return call()
        except (TypeError, ValueError,
                tf.errors.InvalidArgumentError) as error:
            self.fail(f'{what}: {type(error).__name__}: {error}')

    def test_initialize_refuses_a_half_constant_layer_by_name(self):
        # `initialize` needs *both* parameters to be variables: a layer with
        # a constant log-scale and a created shift is refused with the
        # TypeError, before anything is assigned.
        norm = vb.ActNorm([3], log_scale=tf.zeros([3]))
        with self.assertRaises(Exception) as caught:
            norm.initialize(tf.random.normal([32, 3], mean=4.0))
        self.assertIsInstance(caught.exception, TypeError)
        self.assertRegex(str(caught.exception), 'variable parameters')
        self.assertAllEqual(norm.shift, tf.zeros([3]))

    def test_sixteen_values_per_parameter_are_enough(self):
        # ActNorm warns when *fewer* than 16 values per parameter set its
        # scale: 16 are enough, 15 are not.
        norm = vb.ActNorm([2], name='edge')
        with self.assertNoLogs('absl', 'WARNING'):
            norm.initialize(tf.random.normal([16, 2]))
        with self.assertLogs('absl', 'WARNING') as logs:
            norm.initialize(tf.random.normal([15, 2]))
        self.assertIn('edge: initialised from 15 value(s)', logs.output[0])

    def test_a_pass_traced_with_an_unknown_batch_initialises(self):
        # initialization module: a tf.function traced inside the pass keeps
        # the initialisation in its graph (with a warning), also when it is
        # traced for any batch size, where the number of values per
        # parameter is unknown.
        norm = vb.ActNorm([5], name='unknown_batch_norm')
        inverse = tf.function(norm.inverse, input_signature=[
            tf.TensorSpec([None, 5])])
        x = tf.random.normal([64, 5], mean=-2.0, stddev=3.0)
        with self.assertLogs('absl', 'WARNING') as logs:
            with vflow_tfp.data_dependent_init():
                y = self._assert_no_error(lambda: inverse(x),
                                          'traced initialisation')
        self.assertIn('unknown_batch_norm initialises itself while a '
                      'tf.function is traced', logs.output[0])
        mean, var = tf.nn.moments(y, axes=[0])
        self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-4)
        self.assertAllClose(var, tf.ones_like(var), atol=1e-3)

    def test_each_half_starts_from_its_own_noise(self):
        # W = I + noise_scale N(0, 1), one matrix per half: the halves' noise
        # is drawn independently, not shared.
        conv = vb.Invertible1x1Conv([2, 4, 3], partition=vb.ColumnSplit())
        difference = conv.weights[0] - conv.weights[1]
        self.assertGreater(float(tf.reduce_max(tf.abs(difference))), 1e-4)

    def test_zero_noise_starts_at_the_identity(self):
        # W = I + noise_scale N(0, 1): noise_scale=0 is exactly I; only
        # `None` draws a random orthogonal matrix.
        for noise_scale in (0.0, 0):
            conv = vb.Invertible1x1Conv([4], partition=None,
                                        noise_scale=noise_scale)
            self.assertAllEqual(conv.weights, tf.eye(4)[tf.newaxis])

    def test_a_fused_pass_does_not_answer_the_log_det_at_its_input(self):
        # After `inverse(x)` the cache holds the log-dets of the inverse pass
        # at x; `forward_log_det_jacobian(x)` is the log-det of forward at
        # x, another quantity (and conversely after `forward(x)`). A
        # mixture's log-det depends on the transformed half, so the two
        # differ (an affine coupling's would not).
        net = TinyConditioner((2,), 2 * vb.MixLogisticCoupling.num_params(3),
                              dtype=tf.float64)
        partition = vb.ChannelSplit(event_ndims=1)
        coupling, fresh = (vb.MixLogisticCoupling(net, partition, 3,
                                                  dtype=tf.float64, name=name)
                           for name in ('mixture', 'fresh'))
        for seed, (run, log_det, fresh_log_det) in enumerate(
                ((coupling.inverse, coupling.forward_log_det_jacobian,
                  fresh.forward_log_det_jacobian),
                 (coupling.forward, coupling.inverse_log_det_jacobian,
                  fresh.inverse_log_det_jacobian))):
            x = tf.random.stateless_normal([3, 4], [3, seed],
                                           dtype=tf.float64)
            # The pass's output is held, so that its cache entry stays.
            kept = run(x)
            self.assertAllClose(log_det(x, event_ndims=1),
                                fresh_log_det(tf.identity(x), event_ndims=1),
                                rtol=1e-12)
            del kept

    def test_squeeze_shape_tensors_keep_leading_event_axes_when_traced(self):
        # Axes in front of the three image axes pass through unchanged, also
        # for a shape tensor known only when the graph runs.
        squeeze = vb.Squeeze()
        spec = [tf.TensorSpec([4], tf.int32)]
        inverse = tf.function(squeeze.inverse_event_shape_tensor,
                              input_signature=spec)
        forward = tf.function(squeeze.forward_event_shape_tensor,
                              input_signature=spec)
        self.assertAllEqual(inverse(tf.constant([2, 8, 8, 3])), [2, 4, 4, 12])
        self.assertAllEqual(forward(tf.constant([2, 4, 4, 12])), [2, 8, 8, 3])

    def test_block_size_one_is_the_identity(self):
        # Squeeze's block_size is an int >= 1; with 1 nothing moves.
        squeeze = self._assert_no_error(lambda: vb.Squeeze(block_size=1),
                                        'Squeeze(block_size=1)')
        x = tf.random.normal([2, 3, 5, 2])
        self.assertAllEqual(squeeze.inverse(x), x)
        self.assertEqual(squeeze.inverse_event_shape([3, 5, 2]), [3, 5, 2])

    def test_column_split_refuses_an_odd_width_event_shape(self):
        # ColumnSplit needs an even width; check_event_shape raises
        # ValueError for an event shape it cannot split, and so does a
        # per-half layer built for one.
        with self.assertRaisesRegex(ValueError, 'even image width; got 5'):
            vb.ColumnSplit().check_event_shape((4, 5, 2))
        with self.assertRaisesRegex(ValueError, 'even image width'):
            vb.Invertible1x1Conv([4, 5, 2], partition=vb.ColumnSplit())

    def test_image_logit_of_one_bin(self):
        # num_bins is an integer >= 1: with one bin,
        # v = alpha + (1 - 2 alpha) x.
        layer = self._assert_no_error(lambda: vb.ImageLogit(num_bins=1),
                                      'ImageLogit(num_bins=1)')
        x = tf.constant([[0.25, 0.5]], tf.float64)
        v = 0.05 + 0.9 * x.numpy()
        self.assertAllClose(layer.inverse(x), np.log(v) - np.log1p(-v),
                            rtol=1e-12)

    def test_validate_args_checks_float64_inputs(self):
        # The domain assertion works in the input's dtype: float64 points
        # inside the image pass, those outside are refused.
        for layer in (vb.Sigmoid(validate_args=True),
                      vb.SmoothSigmoid(validate_args=True),
                      vb.ImageLogit(validate_args=True)):
            good = tf.constant([0.5], tf.float64)
            latent = self._assert_no_error(
                lambda layer=layer, good=good: layer.inverse(good),
                layer.name)
            self.assertTrue(np.all(np.isfinite(latent)))
            with self.assertRaisesOpError('must lie in'):
                layer.inverse(tf.constant([-1.0e3], tf.float64))

    def test_sizes_take_their_minimum(self):
        # as_sizes: each item an `as_size` int >= `minimum`, which may be 0.
        sizes = self._assert_no_error(
            lambda: vb.shape_checks.as_sizes([0, 2], 'dims', minimum=0),
            'as_sizes with minimum=0')
        self.assertEqual(sizes, (0, 2))
        with self.assertRaisesRegex(ValueError, r'dims\[1\] must be an '
                                    r'integer >= 3; got 2'):
            vb.shape_checks.as_sizes([4, 2], 'dims', minimum=3)

    def test_int64_shape_tensors_of_a_fixed_shape_layer_pass_through(self):
        # BuiltForOneEventShape: the event-shape functions pass the built
        # shape through unchanged, also a traced int64 shape tensor.
        for layer in (vb.ActNorm([4, 4, 2]), vb.Invertible1x1Conv([4, 4, 2])):
            for shape_fn in (layer.forward_event_shape_tensor,
                             layer.inverse_event_shape_tensor):
                traced = tf.function(shape_fn, input_signature=[
                    tf.TensorSpec([4], tf.int64)])
                shape = self._assert_no_error(
                    lambda t=traced: t(tf.constant([5, 4, 4, 2], tf.int64)),
                    f'{layer.name}: an int64 shape tensor')
                self.assertEqual(shape.dtype, tf.int64)
                self.assertAllEqual(shape, [5, 4, 4, 2])

    def test_inputs_of_unknown_rank_pass_the_event_checks(self):
        # check_event_shape refuses only a shape known to be incompatible,
        # and check_image_rank passes an unknown rank: such an input is
        # left to run time, and an unknown event shape maps to itself.
        unknown = [tf.TensorSpec(None)]
        x = tf.ones([3, 4])
        norm = vb.ActNorm([4])
        affine = vb.ConditionalAffine(vflow_tfp.nets.MLP(2, 8), [4])
        for layer, inverse in (
                (norm, tf.function(norm.inverse, input_signature=unknown)),
                (affine, tf.function(lambda v: affine.inverse(
                    v, context=tf.ones([3, 2])), input_signature=unknown))):
            y = self._assert_no_error(lambda f=inverse: f(x),
                                      f'{layer.name} of unknown rank')
            self.assertEqual(y.shape, [3, 4])
        for layer in (norm, vb.Squeeze()):
            for shape_fn in (layer.forward_event_shape,
                             layer.inverse_event_shape):
                shape = self._assert_no_error(
                    lambda f=shape_fn: f(tf.TensorShape(None)),
                    f'{layer.name}: an event shape of unknown rank')
                self.assertIsNone(shape.rank)

    def test_squeeze_maps_an_unknown_channel_count_on_its_own(self):
        # Each known dimension maps on its own, the channels too.
        squeeze = vb.Squeeze()
        for shape_fn, shape, expected in (
                (squeeze.forward_event_shape, [4, 4, None], [8, 8, None]),
                (squeeze.inverse_event_shape, [8, 8, None], [4, 4, None])):
            mapped = self._assert_no_error(lambda f=shape_fn, v=shape: f(v),
                                           f'{shape_fn.__name__}({shape})')
            self.assertEqual(mapped.as_list(), expected)

    def test_one_by_one_convolutions_take_an_unbatched_event(self):
        # Like every bijector (and the couplings), a single event without a
        # batch axis is row 0 of its batch of one, in both directions.
        for cls in (vb.Invertible1x1Conv, vb.Invertible1x1ConvLU):
            layer = cls([3], dtype=tf.float64)
            x = tf.constant([1.0, -2.0, 0.5], tf.float64)
            for run in (layer.inverse, layer.forward):
                single = self._assert_no_error(
                    lambda run=run: run(tf.identity(x)),
                    f'{cls.__name__}.{run.__name__} of an unbatched event')
                self.assertAllClose(single, run(x[tf.newaxis])[0],
                                    rtol=1e-12)

    def test_one_by_one_convolutions_declare_a_constant_jacobian(self):
        # Their log-det is N log|det W| (resp. N sum(log_s)) whatever the
        # input, which TFP's `is_constant_jacobian` states.
        for layer in (vb.Invertible1x1Conv([4, 4, 2]),
                      vb.Invertible1x1Conv([4], noise_scale=None),
                      vb.Invertible1x1ConvLU([4, 4, 2])):
            with self.subTest(layer=layer.name):
                self.assertTrue(layer.is_constant_jacobian)

    def test_each_half_starts_from_its_own_random_rotation(self):
        # With a partition each half gets its own matrix; the random
        # orthogonal start (noise_scale=None, and the LU layer's factors of
        # a random orthogonal matrix) is drawn per half, not shared.
        tf.random.set_seed(5)
        for layer in (vb.Invertible1x1Conv([2, 4, 3], noise_scale=None,
                                           partition=vb.ColumnSplit(),
                                           dtype=tf.float64),
                      vb.Invertible1x1ConvLU([2, 4, 3],
                                             partition=vb.ColumnSplit(),
                                             dtype=tf.float64)):
            w = layer._weight()
            for half in w:
                self.assertAllClose(tf.matmul(half, half, transpose_b=True),
                                    tf.eye(3, dtype=tf.float64), atol=1e-12)
            self.assertGreater(float(tf.reduce_max(tf.abs(w[0] - w[1]))),
                               1e-3, layer.name)

    def test_inverse_iterations_are_those_of_each_element(self):
        # `inverse_iterations(y)` has the transformed half's shape: entry i
        # is the count of element i's solve, logit F(x_i) = (y_i - t) e^-s
        # (here s = t = 0, 'flowpp'), whatever its neighbours need.
        params = np.array([0.0, 0.0, 0.3, -0.2, -1.0, 2.0, 0.0, -1.0])
        coupling = vb.MixLogisticCoupling(
            _constant_conditioner(np.tile(params, 2)),
            vb.ChannelSplit(event_ndims=1), 2, dtype=tf.float64)
        y = tf.constant([[0.0, 0.0, 0.1, 25.0], [0.0, 0.0, -30.0, 0.5]],
                        tf.float64)
        mixture = [tf.broadcast_to(tf.constant(v, tf.float64), [2, 2, 2])
                   for v in (params[2:4], params[4:6], params[6:8])]
        _, expected = vb.inverse_logit_cdf(y[:, 2:], *mixture)
        self.assertNotAllEqual(expected[:, 0], expected[:, 1])
        self.assertAllEqual(coupling.inverse_iterations(y), expected)

    def test_channel_blocks_refuse_what_split_refuses(self):
        # `as_channel_blocks(x)` holds the halves of `split(x)` side by
        # side: an event that cannot be split has no such layout, and is
        # refused with split's message rather than returned as it is.
        for partition, x, message in (
                (vb.ChannelSplit(), tf.zeros([1, 4, 4, 1]),
                 'at least 2 channels; got 1'),
                (vb.ChannelSplit(event_ndims=1, first_channels=4),
                 tf.zeros([2, 4]), 'needs more than 4 channels; got 4'),
                (vb.ColumnSplit(), tf.zeros([1, 4, 5, 2]),
                 'even image width; got 5')):
            for call in (partition.split, partition.as_channel_blocks):
                with self.assertRaisesRegex(ValueError, message):
                    call(x)

    def test_a_partition_refuses_an_input_of_lower_rank_than_its_event(self):
        # A partition of images (event_ndims 3) cannot split a batch of
        # vectors: the tensor has no three event axes to split.
        for partition in (vb.ChannelSplit(), vb.ColumnSplit(),
                          vb.Checkerboard()):
            with self.assertRaisesRegex(ValueError, r'last 3 dimensions are '
                                        r'statically known; got shape '
                                        r'\(2, 4\)'):
                partition.split(tf.zeros([2, 4]))

    def test_a_context_batch_error_gives_the_shapes_in_the_named_order(self):
        # The message names the context's batch shape, then the input's,
        # and gives them in that order.
        coupling = vb.AffineCoupling(
            TinyConditioner((4, 2, 2), 4, context_channels=3),
            vb.ColumnSplit())
        with self.assertRaisesRegex(
                ValueError, r'context of shape \(5, 4, 2, 3\) does not '
                r'broadcast against that of an input of shape '
                r'\(3, 4, 4, 2\); got \(5,\) and \(3,\)'):
            coupling.inverse(tf.ones([3, 4, 4, 2]),
                             context=tf.ones([5, 4, 2, 3]))

    def test_image_partitions_refuse_other_event_ranks_by_name(self):
        # `check_event_shape` raises a ValueError that says what the
        # partition splits, not an unpacking error, for fewer and for more
        # than the three image axes.
        for partition in (vb.ColumnSplit(), vb.Checkerboard()):
            name = type(partition).__name__
            for shape in ((4, 4), (2, 4, 4, 2)):
                with self.assertRaisesRegex(
                        ValueError, rf'{name} splits images of event shape '
                        rf'\[H, W, C\]; got event shape '
                        rf'{re.escape(str(list(shape)))}'):
                    partition.check_event_shape(shape)

    def test_a_context_of_unknown_event_shape_is_refused_by_name(self):
        # Event dimensions must be static (the batch alone may be unknown):
        # a context traced with an unknown feature axis is refused with its
        # shape, also under two sample axes.
        coupling = vb.AffineCoupling(
            vflow_tfp.nets.MLP(2, 4, hidden_units=(8,), context_features=3),
            vb.ChannelSplit(event_ndims=1))
        traced = tf.function(
            lambda x, c: coupling.inverse(x, context=c),
            input_signature=[tf.TensorSpec([2, None, 4]),
                             tf.TensorSpec([2, None, None])])
        with self.assertRaises(Exception) as caught:
            traced.get_concrete_function()
        self.assertIsInstance(caught.exception, ValueError)
        self.assertIn('Event dimensions must be static; got shape '
                      '(2, None, None)', str(caught.exception))

    def test_an_empty_init_batch_warns_of_its_zero_values(self):
        # ActNorm warns when fewer than 16 values per parameter set its
        # scale; an empty batch (0 values, no moments at all) is the
        # extreme case, not an exception to it.
        norm = vb.ActNorm([2], name='empty_edge')
        with self.assertLogs('absl', 'WARNING') as logs:
            norm.initialize(tf.zeros([0, 2]))
        self.assertIn('empty_edge: initialised from 0 value(s)',
                      logs.output[0])


class ShapeCheckEdgeCaseTest(tf.test.TestCase):
    """The shared shape and argument checks on their rarer inputs: partly
    known batches, matrix events, `validate_args=True`, lone precomputed
    parameters, and the shapes, names and dtypes their messages give."""

    def _affine(self, **kwargs):
        return vb.ConditionalAffine(vflow_tfp.nets.MLP(2, 8), [4], **kwargs)

    def _assert_refused(self, call, pattern):
        # A ValueError with the message, not a kernel or unpacking error.
        with self.assertRaises(Exception) as caught:
            call()
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception), pattern)

    def test_a_dtype_error_suggests_the_supplied_value_s_dtype(self):
        # The message offers the two fixes: build the layer in the value's
        # dtype, or supply a value of the layer's.
        with self.assertRaisesRegex(
                TypeError, r"ActNorm: shift is float32 but the layer's dtype "
                r'is float64; pass dtype=tf.float32 or a shift of float64'):
            vb.ActNorm([3], dtype=tf.float64, shift=tf.Variable(tf.zeros([3])))

    def test_a_broadcast_error_names_each_batch_after_its_description(self):
        # "<parameters> does not broadcast against <input>; got <parameters'
        # batch> and <input's batch>": the parameters' (5,) comes first.
        with self.assertRaisesRegex(ValueError, r'context of shape \(5, 2\) '
                                    r'.*input of shape \(3, 4\); got \(5,\) '
                                    r'and \(3,\)\.'):
            self._affine().inverse(tf.ones([3, 4]), context=tf.ones([5, 2]))

    def test_a_matrix_event_s_broadcast_error_names_the_batch_shapes(self):
        # The batch shapes are what is left in front of the whole event
        # [2, 3], not in front of its last axis only.
        layer = vb.ConditionalAffine(vflow_tfp.nets.MLP(1, 12), [2, 3])
        with self.assertRaisesRegex(ValueError, r'got \(5,\) and \(3,\)\.$'):
            layer.inverse(tf.ones([3, 2, 3]), context=tf.ones([5, 1]))

    def test_conditional_affine_names_a_mismatch_of_a_partly_known_batch(self):
        # An unknown number of draws per example: the known example axis
        # still cannot broadcast against the context's batch, and the error
        # names both, not an AddV2 shape error.
        layer = self._affine()
        inverse = tf.function(
            lambda x, c: layer.inverse(x, context=c),
            input_signature=[tf.TensorSpec([None, 3, 4]),
                             tf.TensorSpec([5, 2])])
        self._assert_refused(inverse.get_concrete_function,
                             r'context of shape \(5, 2\) does not broadcast '
                             r'against that of an input of shape '
                             r'\(None, 3, 4\)')

    def test_conditional_affine_refuses_a_shift_without_its_log_scale(self):
        # Precomputed parameters come in pairs: a shift alone must not be
        # dropped for parameters computed from the context.
        layer = self._affine()
        randomise(layer, tf.float32, 3)
        context = tf.random.stateless_normal([3, 2], [1, 2])
        shift = layer.conditioning_parameters(context)['shift'] + 1.0
        for method in (layer.inverse, layer.forward):
            with self.assertRaisesRegex(ValueError,
                                        'both log_scale and shift'):
                method(tf.ones([3, 4]), context=context, shift=shift)

    def test_validate_args_keeps_the_static_shape_checks(self):
        # Squeeze: "this layer's shape checks are static and run
        # regardless" of validate_args; so do the other layers' static
        # checks, which validate_args=True must not turn off.
        squeeze = vb.Squeeze(validate_args=True)
        for call, pattern in (
                (lambda: squeeze.inverse(tf.zeros([1, 3, 4, 1])),
                 'divisible by 2'),
                (lambda: squeeze.inverse_event_shape([4, 5, 2]),
                 'divisible by 2'),
                (lambda: squeeze.inverse(tf.ones([2, 8])), r'\[H, W, C\]'),
                (lambda: vb.SwapHalves(vb.ChannelSplit(), validate_args=True)
                 .forward(tf.zeros([1, 4, 4, 3])), 'halves of equal shape'),
                (lambda: self._affine(validate_args=True).inverse(
                    tf.ones([3, 4]), context=tf.ones([5, 2])),
                 r'\(5, 2\).*\(3, 4\)')):
            self._assert_refused(call, pattern)

    def test_event_shape_errors_name_the_layer_s_type_as_when_traced(self):
        # A refused event shape is named with the layer's type, statically
        # as in the assertion of a shape tensor known only when it runs.
        for layer in (vb.ActNorm([4, 4, 2], name='norm'),
                      vb.Invertible1x1ConvLU([4, 4, 2], name='conv')):
            owner = type(layer).__name__
            with self.assertRaisesRegex(ValueError, f'^{owner} was built for '
                                        r'events of shape \[4, 4, 2\]'):
                layer.inverse(tf.zeros([1, 8, 8, 2]))
            traced = tf.function(
                layer.inverse_event_shape_tensor,
                input_signature=[tf.TensorSpec([3], tf.int32)])
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        f'{owner} was built for events'):
                traced(tf.constant([8, 8, 2]))

    def test_conditional_affine_names_its_network_argument(self):
        # Its constructor raises TypeError "if `network` is not callable".
        with self.assertRaisesRegex(TypeError, '^network must be callable'):
            vb.ConditionalAffine('net', [2])

    def test_precomputed_parameters_see_the_context_in_the_layer_s_dtype(self):
        # conditioning_parameters, as forward and inverse, hands the network
        # its context as a tensor of the layer's dtype (a NumPy float64
        # array or a Python list for a float32 layer).
        seen = []

        def net(c, training=False):
            seen.append(c.dtype)
            return tf.zeros(tf.concat([tf.shape(c)[:-1], [8]], 0), c.dtype)

        layer = vb.ConditionalAffine(net, [4])
        for context in (np.ones([2, 3]), [[1.0, 2.0, 3.0]]):
            params = layer.conditioning_parameters(context)
            self.assertEqual(params['log_scale'].dtype, tf.float32)
        self.assertEqual(seen, [tf.float32, tf.float32])

    def test_squeeze_errors_name_the_event_shape_as_given(self):
        # [height, width, channels] in that order: a height of 5 is named
        # as the height.
        for shape in ([5, 4, 2], [4, 5, 2]):
            with self.assertRaisesRegex(
                    ValueError, re.escape(f'got event shape {shape}')):
                vb.Squeeze().inverse_event_shape(shape)


if __name__ == "__main__":
    tf.test.main()
