"""Contract tests run on every bijector of the package, in float32 and float64.

For each case of `bijector_cases`: round trips both ways (through
`tf.identity`, so TFP's cache cannot answer them), log-det against the log
|det| of the autodiff Jacobian, fldj(x) = -ildj(forward(x)), event-shape
functions, finite values and gradients at extreme inputs, and equality of
eager, `tf.function` and XLA results.
"""

import contextlib
import io
import itertools
import re

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from vflow_tfp import bijectors as vb
import bijector_cases
import numerics_report

CASE_NAMES = sorted(bijector_cases.CASES)
DTYPES = (tf.float32, tf.float64)
BATCH = bijector_cases.BATCH


def _product(*lists):
    return [dict(testcase_name=f'{a}_{b.name}', case_name=a, dtype=b)
            for a, b in itertools.product(*lists)]


class BijectorContractTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        tf.random.set_seed(1234)

    def _build(self, case_name, dtype):
        case = bijector_cases.CASES[case_name]
        return case, case.build(dtype)

    @parameterized.named_parameters(_product(CASE_NAMES, DTYPES))
    def test_round_trip_both_ways(self, case_name, dtype):
        case, bij = self._build(case_name, dtype)
        atol = case.atol[0 if dtype == tf.float32 else 1]
        x = bijector_cases.data_points(case, dtype)
        y = bij.inverse(x)
        x_back = bij.forward(tf.identity(y))
        self.assertEqual(y.dtype, dtype)
        self.assertAllClose(x, x_back, atol=atol, rtol=0)
        z = bijector_cases.latent_points(case, bij, dtype)
        z_back = bij.inverse(tf.identity(bij.forward(z)))
        self.assertAllClose(z, z_back, atol=atol, rtol=0)

    @parameterized.named_parameters(_product(CASE_NAMES, DTYPES))
    def test_log_det_matches_autodiff_jacobian(self, case_name, dtype):
        case, bij = self._build(case_name, dtype)
        event_ndims = len(case.event_shape)
        x = bijector_cases.data_points(case, dtype)
        ildj = bij.inverse_log_det_jacobian(x, event_ndims=event_ndims)
        expected = bijector_cases.autodiff_ildj(bij, tf.identity(x),
                                                event_ndims)
        # float64: the 1e-6 bound; float32 with D <= 32 dimensions.
        atol = 1e-6 if dtype == tf.float64 else 2e-3
        self.assertAllClose(expected, ildj * tf.ones([BATCH], dtype),
                            atol=atol, rtol=0)
        # And the forward log-det, with its own (forward) autodiff Jacobian.
        z = tf.identity(bij.inverse(x))
        fldj = bij.forward_log_det_jacobian(z, event_ndims=event_ndims)
        self.assertAllClose(-expected, fldj * tf.ones([BATCH], dtype),
                            atol=10 * atol, rtol=0)

    @parameterized.named_parameters(_product(CASE_NAMES, DTYPES))
    def test_fldj_is_minus_ildj_of_forward(self, case_name, dtype):
        case, bij = self._build(case_name, dtype)
        event_ndims = len(case.event_shape)
        z = bijector_cases.latent_points(case, bij, dtype)
        fldj = bij.forward_log_det_jacobian(z, event_ndims=event_ndims)
        x = tf.identity(bij.forward(z))
        ildj = bij.inverse_log_det_jacobian(x, event_ndims=event_ndims)
        atol = 1e-3 if dtype == tf.float32 else 1e-8
        self.assertAllClose(fldj * tf.ones([BATCH], dtype),
                            -ildj * tf.ones([BATCH], dtype), atol=atol, rtol=0)

    @parameterized.named_parameters(
        dict(testcase_name=n, case_name=n) for n in CASE_NAMES)
    def test_event_shape_functions(self, case_name):
        case, bij = self._build(case_name, tf.float32)
        x = bijector_cases.data_points(case, tf.float32)
        y = bij.inverse(x)
        self.assertEqual(bij.inverse_event_shape(case.event_shape),
                         y.shape[1:])
        self.assertEqual(bij.forward_event_shape(y.shape[1:]),
                         case.event_shape)
        self.assertAllEqual(
            bij.inverse_event_shape_tensor(case.event_shape), y.shape[1:])
        self.assertAllEqual(bij.forward_event_shape_tensor(y.shape[1:]),
                            case.event_shape)
        self.assertEqual(bij.forward_min_event_ndims, case.min_event_ndims)

    @parameterized.named_parameters(_product(CASE_NAMES, DTYPES))
    def test_finite_values_and_gradients_at_extreme_inputs(self, case_name,
                                                           dtype):
        case, bij = self._build(case_name, dtype)
        event_ndims = len(case.event_shape)
        low, high = case.extreme_data
        # Half the entries at each extreme, interleaved.
        x = bijector_cases.data_points(case, dtype, 0.0, 1.0)
        x = tf.where(x > 0.5, tf.cast(high, dtype), tf.cast(low, dtype))
        variables = bij.trainable_variables
        with tf.GradientTape(persistent=True) as inv_tape:
            inv_tape.watch(x)
            y = bij.inverse(x)
            ildj = bij.inverse_log_det_jacobian(x, event_ndims=event_ndims)
            loss_inv = tf.reduce_sum(y) + tf.reduce_sum(ildj)
        self.assertTrue(np.all(np.isfinite(y)), f'inverse not finite: {y}')
        self.assertTrue(np.all(np.isfinite(ildj)))
        for g in inv_tape.gradient(loss_inv, [x] + list(variables)):
            if g is not None:
                self.assertTrue(np.all(np.isfinite(g)))
        # Forward (sampling) direction at extreme latent values.
        zlow, zhigh = case.extreme_latent
        if case.min_event_ndims == 0 and case.name != 'image_logit':
            zlow, zhigh = -30.0, 30.0  # sigmoid's image is (0, 1) in dtype
        z = tf.where(bijector_cases.latent_points(case, bij, dtype) > 0,
                     tf.cast(zhigh, dtype), tf.cast(zlow, dtype))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            xz = bij.forward(z)
            fldj = bij.forward_log_det_jacobian(z, event_ndims=event_ndims)
            loss_fwd = tf.reduce_sum(xz) + tf.reduce_sum(fldj)
        self.assertTrue(np.all(np.isfinite(xz)), f'forward not finite: {xz}')
        self.assertTrue(np.all(np.isfinite(fldj)))
        grads = tape.gradient(loss_fwd, [z] + list(variables))
        for g in grads:
            if g is not None:
                self.assertTrue(np.all(np.isfinite(g)))
        # Every variable influences the log-density direction.
        for v, g in zip(variables,
                        inv_tape.gradient(loss_inv, list(variables))):
            self.assertIsNotNone(g, f'no gradient for {v.name}')

    @parameterized.named_parameters(_product(CASE_NAMES, DTYPES))
    def test_tf_function_and_xla_match_eager(self, case_name, dtype):
        case, bij = self._build(case_name, dtype)
        event_ndims = len(case.event_shape)
        x = bijector_cases.data_points(case, dtype)
        # Away from saturated tails: there the data side is nearly flat in the
        # latent one, and any reordering of float ops moves it visibly.
        z = bijector_cases.latent_points(case, bij, dtype, tails=False)

        def run(x, z):
            return (bij.inverse(x),
                    bij.inverse_log_det_jacobian(x, event_ndims=event_ndims),
                    bij.forward(z),
                    bij.forward_log_det_jacobian(z, event_ndims=event_ndims))

        eager = run(x, z)
        graph = tf.function(run)(x, z)
        xla = tf.function(run, jit_compile=True)(x, z)
        atol = 1e-4 if dtype == tf.float32 else 1e-9
        scale = 256.0 if case.name == 'image_logit' else 1.0
        for a, b, c in zip(eager, graph, xla):
            self.assertAllClose(a, b, atol=atol * scale, rtol=1e-5)
            self.assertAllClose(a, c, atol=atol * scale, rtol=1e-5)

    @parameterized.named_parameters(
        dict(testcase_name=n, case_name=n) for n in CASE_NAMES)
    def test_unknown_batch_traces(self, case_name):
        case, bij = self._build(case_name, tf.float32)
        event_ndims = len(case.event_shape)
        y_shape = bij.inverse_event_shape(case.event_shape)

        @tf.function(input_signature=[
            tf.TensorSpec([None] + list(case.event_shape), tf.float32),
            tf.TensorSpec([None] + list(y_shape), tf.float32)])
        def run(x, z):
            return (bij.inverse(x),
                    bij.inverse_log_det_jacobian(x, event_ndims=event_ndims),
                    bij.forward(z))

        x = bijector_cases.data_points(case, tf.float32)
        latent = bijector_cases.latent_points(case, bij, tf.float32)
        y, ildj, _ = run(x, latent)
        self.assertAllClose(y, bij.inverse(x), atol=1e-5)
        self.assertAllClose(
            ildj * tf.ones([BATCH]),
            bij.inverse_log_det_jacobian(x, event_ndims=event_ndims)
            * tf.ones([BATCH]), atol=1e-4)

    @parameterized.named_parameters(
        dict(testcase_name=n, case_name=n) for n in CASE_NAMES)
    def test_extra_batch_dimensions(self, case_name):
        case, bij = self._build(case_name, tf.float64)
        event_ndims = len(case.event_shape)
        x = bijector_cases.data_points(case, tf.float64)
        x2 = tf.stack([x, x[::-1]])  # [2, BATCH, ...]
        y2 = bij.inverse(x2)
        self.assertAllClose(y2[0], bij.inverse(tf.identity(x)), atol=1e-10)
        ildj2 = bij.inverse_log_det_jacobian(x2, event_ndims=event_ndims)
        ones = tf.ones([BATCH], tf.float64)
        expected = tf.stack([
            ones * bij.inverse_log_det_jacobian(x, event_ndims=event_ndims),
            ones * bij.inverse_log_det_jacobian(x[::-1],
                                                event_ndims=event_ndims)])
        self.assertAllClose(ildj2 * tf.ones([2, BATCH], tf.float64), expected,
                            atol=1e-9)


class NoCacheConfusionTest(tf.test.TestCase, parameterized.TestCase):
    """Two layers with equal sizes but different weights must not collide."""

    @parameterized.named_parameters(
        dict(testcase_name=n, case_name=n) for n in CASE_NAMES
        if bijector_cases.CASES[n].build(tf.float64).trainable_variables)
    def test_equal_sizes_different_weights(self, case_name):
        case = bijector_cases.CASES[case_name]
        tf.random.set_seed(1)
        a = case.build(tf.float64)
        tf.random.set_seed(2)
        b = case.build(tf.float64)
        for va, vb_ in zip(a.trainable_variables, b.trainable_variables):
            vb_.assign(va + 0.5)
        self.assertNotEqual(a, b)
        x = bijector_cases.data_points(case, tf.float64)
        ya = a.inverse(x)
        yb = b.inverse(x)  # same input tensor: a cache keyed on `==` would hit
        self.assertGreater(float(tf.reduce_max(tf.abs(ya - yb))), 1e-3)
        self.assertEqual(a, a)
        self.assertEqual(a.copy(), a)  # a copy shares the variables: same map

    @parameterized.named_parameters(
        ('actnorm', lambda: vb.ActNorm([4], dtype=tf.float64),
         dict(log_scale=None, shift=None)),
        ('conv', lambda: vb.Invertible1x1Conv([4], dtype=tf.float64),
         dict(weights=None)),
        ('conv_lu', lambda: vb.Invertible1x1ConvLU([4], dtype=tf.float64),
         dict(lu_factors=None)))
    def test_copies_with_new_variables_are_other_layers(self, build,
                                                        overrides):
        # TFP's `copy` gave both copies `parameters` that said None: equal,
        # and the second got the first's cached outputs.
        first, second = (build().copy(**overrides) for _ in range(2))
        for offset, layer in ((0.1, first), (0.7, second)):
            for v in layer.trainable_variables:
                v.assign_add(offset * tf.ones_like(v))
        self.assertNotEqual(first, second)
        self.assertEmpty(set(map(id, first.trainable_variables))
                         & set(map(id, second.trainable_variables)))
        x = tf.constant(np.random.default_rng(0).normal(size=[3, 4]))
        y_first = first.inverse(x)
        y_second = second.inverse(x)  # same input tensor: the cache's key
        self.assertAllClose(y_second,
                            second.copy().inverse(tf.identity(x)))
        self.assertGreater(float(tf.reduce_max(tf.abs(y_first - y_second))),
                           1e-3)

    def test_a_copy_takes_its_overrides_over_the_parameters(self):
        # `copy(**overrides)` builds from `dict(self.parameters, **overrides)`:
        # an override wins, and `None` for a variable makes a new one rather
        # than sharing the original layer's.
        for layer, overrides in (
                (vb.ActNorm([4], dtype=tf.float64),
                 dict(log_scale=None, shift=None)),
                (vb.Invertible1x1Conv([4], dtype=tf.float64),
                 dict(weights=None)),
                (vb.Invertible1x1ConvLU([4], dtype=tf.float64),
                 dict(lu_factors=None))):
            copy = layer.copy(name='renamed', **overrides)
            self.assertEqual(copy.name, 'renamed')
            self.assertEqual(layer.copy().name, layer.name)
            self.assertEmpty(set(map(id, copy.trainable_variables))
                             & set(map(id, layer.trainable_variables)))


class NumericsReportTest(tf.test.TestCase):
    """`tests/numerics_report.py`, which the README offers, still runs."""

    def test_report_prints_the_errors_of_the_chosen_bijectors(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            numerics_report.main(['--seeds', '1', '--cases',
                                  'mixlogistic_vflow_vector',
                                  '--mixture_elements', '200'])
        text = out.getvalue()
        rows = re.findall(r'^mixlogistic_vflow_vector\s+(float\d+)\s+(\S+)'
                          r'\s+(\S+)\s+(\S+)$', text, re.MULTILINE)
        self.assertEqual([row[0] for row in rows], ['float32', 'float64'])
        for dtype, *errors in rows:
            bound = 1e-4 if dtype == 'float32' else 1e-12
            for error in map(float, errors):
                self.assertBetween(error, 0.0, bound)
        mixture = re.search(
            r'200 elements.*\n  max latent residual (\S+) \(99\.9th '
            r'percentile (\S+)\); iterations mean (\S+), max (\d+)', text)
        self.assertIsNotNone(mixture, text)
        worst, p999, mean_iterations, max_iterations = (
            float(v) for v in mixture.groups())
        self.assertBetween(p999, 0.0, worst)
        self.assertLess(worst, 1e-3)
        self.assertBetween(mean_iterations, 1.0, max_iterations)
        self.assertLessEqual(max_iterations, 200)  # two passes of 100

    def test_an_unknown_bijector_name_is_refused(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(SystemExit) as exit_:
                numerics_report.main(['--cases', 'no_such_bijector'])
        self.assertEqual(exit_.exception.code, 2)
        self.assertIn('squeeze_block_4', err.getvalue())

    def test_no_draws_are_refused(self):
        # Zero draws would report every error as 0.
        for flag in ('--seeds', '--mixture_elements'):
            with self.subTest(flag=flag):
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    with self.assertRaises(SystemExit) as exit_:
                        numerics_report.main([flag, '0'])
                self.assertEqual(exit_.exception.code, 2)
                self.assertIn(f'{flag} must be at least 1', err.getvalue())


if __name__ == "__main__":
    tf.test.main()
