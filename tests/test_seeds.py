"""Per-example seeds: row-wise seed derivation against TF/TFP's own per-seed
functions, and models whose bound for an example does not depend on the
batch, its order or the chunk size once every example has its own seed."""

from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import bijectors as vb
from vflow_tfp import data
from vflow_tfp.models import conditional
from vflow_tfp.models import presets
from vflow_tfp.models import seeds
import model_helpers

tfd = tfp.distributions


class RowSeedTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.rows = tf.constant([[1, 2], [1, 2], [-7, 2**30], [0, 0]],
                                tf.int32)

    def test_fold_in_and_split_equal_the_per_seed_functions(self):
        data_ = tf.constant([0, 5, 5, 9], tf.int32)
        folded = seeds.fold_in_rows(self.rows, data_)
        split = seeds.split_rows(self.rows, 3)
        self.assertLen(split, 3)
        for i in range(4):
            self.assertAllEqual(
                folded[i],
                tf.random.experimental.stateless_fold_in(self.rows[i],
                                                         data_[i]))
            for k, s in enumerate(tfp.random.split_seed(self.rows[i], n=3)):
                self.assertAllEqual(split[k][i], s)
        # A scalar is folded into every row.
        self.assertAllEqual(seeds.fold_in_rows(self.rows, 5)[2], folded[2])

    def test_sample_rows_draws_each_row_from_its_own_seed(self):
        dist = tfd.Sample(tfd.Normal(0.0, 1.0), [3, 2])
        draws = seeds.sample_rows(dist, self.rows)
        self.assertEqual(draws.shape, [4, 3, 2])
        for i in range(4):
            self.assertAllEqual(draws[i], dist.sample(seed=self.rows[i]))
        self.assertAllEqual(draws[0], draws[1])
        self.assertNotAllClose(draws[0], draws[2])
        # Blocks: k rows per seed, the seed's own k draws.
        blocks = seeds.sample_rows(dist, self.rows, 12)
        self.assertEqual(blocks.shape, [12, 3, 2])
        for i in range(4):
            self.assertAllEqual(blocks[3 * i:3 * i + 3],
                                dist.sample(3, seed=self.rows[i]))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'multiple of the number of seeds'):
            seeds.sample_rows(dist, self.rows, 6)
        compiled = tf.function(lambda s: seeds.sample_rows(dist, s, 8),
                               jit_compile=True)
        self.assertEqual(compiled(self.rows).shape, [8, 3, 2])
        with self.assertRaisesRegex(ValueError, 'no batch shape'):
            seeds.sample_rows(tfd.Normal([0.0, 1.0], 1.0), self.rows)

    def test_example_seeds_follow_the_content(self):
        x = tf.constant([[1, 2, 3], [4, 5, 6], [1, 2, 3]], tf.int32)
        a = seeds.example_seeds(x, [0, 0])
        self.assertEqual(a.shape, [3, 2])
        self.assertAllEqual(a[0], a[2])
        self.assertNotAllEqual(a[0], a[1])
        # Independent of the other rows, and a function of the seed.
        self.assertAllEqual(seeds.example_seeds(x[1:2], [0, 0])[0], a[1])
        b = seeds.example_seeds(x, [0, 1])
        self.assertNotAllEqual(a[0], b[0])
        self.assertNotAllEqual(b[0], b[1])
        many = seeds.example_seeds(tf.range(10000)[:, tf.newaxis], [3, 4])
        self.assertLen(np.unique(many.numpy(), axis=0), 10000)

    def test_example_seeds_are_pinned(self):
        # Fingerprint64 is stable across platforms and releases; exported
        # scores stay reproducible only while these values hold.
        self.assertAllEqual(
            seeds.example_seeds(tf.constant([[1, 2, 3]], tf.int32), [0, 0]),
            [[-102602686, -679985162]])
        self.assertAllEqual(
            seeds.example_seeds(tf.constant([[0.5, -2.0]], tf.float32),
                                [7, 9]),
            [[782683018, 256482431]])

    def test_seed_shape_is_checked(self):
        self.assertFalse(seeds.is_per_example(tf.constant([1, 2])))
        self.assertTrue(seeds.is_per_example(tf.zeros([5, 2], tf.int32)))
        with self.assertRaisesRegex(ValueError, r'\[N, 2\]'):
            seeds.is_per_example(tf.zeros([5, 2, 1], tf.int32))
        for shape in ([3], [5, 3]):
            with self.assertRaisesRegex(ValueError, r'\[N, 2\]'):
                seeds.is_per_example(tf.zeros(shape, tf.int32))
        # A seed of unknown rank could be either kind.
        unknown = tf.function(seeds.is_per_example, input_signature=[
            tf.TensorSpec(None, tf.int32)])
        with self.assertRaisesRegex(ValueError, r'\[N, 2\]'):
            unknown.get_concrete_function()
        # example_seeds derives per-example seeds from one seed.
        with self.assertRaises(ValueError):
            seeds.example_seeds(tf.constant([[1, 2, 3]], tf.int32),
                                tf.constant([[0, 0]], tf.int32))

    def test_seed_values_that_int32_would_change_are_refused(self):
        # TF's int32 conversion wraps 2**32 + 1 to 1 and truncates 1.9 to
        # 1: such seeds would draw another seed's noise without a word.
        model = presets.build('checkerboard_vflow_3_4', seed=0)
        x = data.sample_checkerboard(2, seed=0)
        calls = {
            'elbo': lambda seed: model.elbo(x, seed=seed),
            'log_prob': lambda seed: model.log_prob(x, 2, seed=seed),
            'sample': lambda seed: model.sample(2, seed=seed),
            'example_seeds': lambda seed: model.example_seeds(x, seed),
            'posterior': lambda seed: model.posterior.sample_and_log_prob(
                x, seed),
        }
        for seed, message in (
                ((2**32 + 1, 2),
                 r'in \[-2\*\*31, 2\*\*31\); got 4294967297\.'),
                (np.array([-2**31 - 1, 0]),
                 r'in \[-2\*\*31, 2\*\*31\); got -2147483649\.'),
                (np.array([1.9, 2.9]), 'got float64 values'),
                ([True, False], 'got bool values')):
            for name, call in calls.items():
                with self.subTest(seed=seed, call=name):
                    with self.assertRaisesRegex(
                            ValueError, '^a seed must hold int32 integers'
                            + '.*' + message):
                        call(seed)
        # The ends of the range, NumPy integers of any width and tensors
        # pass as before.
        for seed in ((-2**31, 2**31 - 1), np.array([1, 2], np.uint64),
                     tf.constant([1, 2])):
            self.assertEqual(model.elbo(x, seed=seed).shape, [2])
        self.assertAllEqual(model.elbo(x, seed=np.array([1, 2], np.int64)),
                            model.elbo(x, seed=tf.constant([1, 2])))

    def test_as_seed_refuses_the_first_values_past_int32(self):
        # [-2**31, 2**31) is the range: 2**31 itself would wrap to -2**31
        # (another seed's noise) if it were let through.
        for seed, got in (((2**31, 0), 2**31),
                          (np.array([5, 2**31], np.int64), 2**31),
                          (np.array([2**31, 5], np.uint32), 2**31),
                          (np.array([-2**31 - 1, 5], np.int64),
                           -2**31 - 1)):
            with self.subTest(seed=seed):
                with self.assertRaisesRegex(
                        ValueError, rf'2\*\*31\); got {got}\.$'):
                    seeds.as_seed(seed)
        self.assertAllEqual(seeds.as_seed((2**31 - 1, -2**31)),
                            [2**31 - 1, -2**31])

    def test_as_seed_names_the_value_outside_the_range(self):
        # With one end of the range held and the other passed, the message
        # names the value outside [-2**31, 2**31), not the one at its end.
        for seed, got in (((-2**31, 2**31), 2**31),
                          ((2**31 - 1, -2**31 - 1), -2**31 - 1)):
            with self.subTest(seed=seed):
                with self.assertRaisesRegex(
                        ValueError, rf'2\*\*31\); got {got}\.$'):
                    seeds.as_seed(seed)

    def test_a_seed_of_unknown_length_is_taken_by_its_rank(self):
        # Only a last dimension known to differ from 2 is refused: a traced
        # seed of unknown length is [2] or [N, 2] by its rank.
        kinds = []
        for shape in ([None], [None, None]):
            traced = tf.function(
                lambda seed: kinds.append(seeds.is_per_example(seed)),
                input_signature=[tf.TensorSpec(shape, tf.int32)])
            try:
                traced.get_concrete_function()
            except ValueError as e:
                self.fail(f'a seed of shape {shape} is refused: {e}')
        self.assertEqual(kinds, [False, True])

    def test_as_seed_takes_an_empty_array_of_seeds(self):
        # as_seed refuses values that are not integers or not in int32's
        # range; an empty integer array (no examples, no seeds) has none
        # such and is converted as TF would, so that the model, not NumPy,
        # names what is wrong with it.
        for shape in ([0], [0, 2]):
            with self.subTest(shape=shape):
                try:
                    seed = seeds.as_seed(np.zeros(shape, np.int64))
                except ValueError as e:
                    self.fail(f'an empty seed array refused: {e}')
                self.assertEqual(seed.dtype, tf.int32)
                self.assertEqual(seed.shape, shape)


class PerExampleConditionalFlowTest(tf.test.TestCase):

    def test_log_prob_is_the_density_of_the_sample(self):
        model = presets.build('checkerboard_vflow_3_6', seed=0,
                              dtype=tf.float64)
        flow = model.posterior
        x = tf.constant(data.sample_checkerboard(5, seed=1), tf.float64)
        model.initialize(x, seed=[1, 1])
        row_seeds = model.example_seeds(x, [2, 3])
        z, log_q = flow.sample_and_log_prob(x, row_seeds)
        # Row i alone, with its seed, draws the same z.
        z1, log_q1 = flow.sample_and_log_prob(x[3:4], row_seeds[3:4])
        self.assertAllClose(z1[0], z[3], atol=0, rtol=0)
        self.assertAllClose(log_q1[0], log_q[3], atol=0, rtol=0)
        # log q(z|x) from the density direction (a fresh tensor, no cache).
        kwargs = flow.conditioning_kwargs(x)
        direct = flow.distribution.log_prob(tf.identity(z) + 0.0,
                                            bijector_kwargs=kwargs)
        self.assertAllClose(log_q, direct, atol=1e-10, rtol=0)
        # Sticking the landing keeps the value on this path too.
        _, held = flow.sample_and_log_prob(x, row_seeds, stop_score=True)
        self.assertAllClose(held, log_q, atol=1e-12, rtol=0)

    def test_draws_per_row_are_those_of_the_repeated_condition(self):
        # k draws per row are the draws for the condition repeated k times
        # (row i's block from seed[i] alone), but the network of the
        # context alone (q's conditional normalisation) sees each row once.
        model = presets.build('checkerboard_vflow_3_6', seed=0,
                              dtype=tf.float64)
        flow = model.posterior
        x = data.sample_checkerboard(5, seed=1)  # a float32 array: converted
        model.initialize(x, seed=[1, 1])
        # As after training: the couplings' output layers start at zero,
        # where the condition would not matter to the couplings.
        model_helpers.perturb(flow.trainable_variables, 0.1)
        norm, = [layer for layer in flow.bijector.bijector.bijectors
                 if isinstance(layer, vb.ConditionalAffine)]
        network, rows = norm.network, []

        def counting(context, training=False):
            rows.append(int(context.shape[0]))
            return network(context, training=training)

        repeated = np.repeat(x, 3, axis=0)
        for condition in (x, tf.constant(x, tf.float64)):
            for seed in (tf.constant([2, 3]), model.example_seeds(x, [2, 3])):
                for stop_score in (False, True):
                    with mock.patch.object(norm, '_network', counting):
                        z, log_q = flow.sample_and_log_prob(
                            condition, seed, stop_score=stop_score,
                            draws_per_row=3)
                        z3, log_q3 = flow.sample_and_log_prob(
                            repeated, seed, stop_score=stop_score)
                    self.assertEqual(rows, [5, 15])
                    rows.clear()
                    self.assertAllClose(z, z3, atol=1e-12, rtol=0)
                    self.assertAllClose(log_q, log_q3, atol=1e-12, rtol=0)
        self.assertNotAllClose(z[0], z[1])
        # The condition matters: other rows' x give other draws.
        self.assertNotAllClose(z3, flow.sample_and_log_prob(
            np.tile(x, [3, 1]), seed)[0])
        # So does the model's bound on vectors, whose x~ = x conditions q.
        with mock.patch.object(norm, '_network', counting):
            elbo = model.elbo(x, seed=[4, 5], draws_per_row=3)
        self.assertEqual(rows, [5])
        self.assertAllClose(elbo, model.elbo(repeated, seed=[4, 5]),
                            atol=1e-12, rtol=0)
        # Seeds for blocks of the repeated rows: 3 seeds for 2 x 3 rows.
        blocks = tf.constant([[1, 2], [3, 4], [5, 6]])
        self.assertAllClose(
            model.elbo(x[:2], seed=blocks, draws_per_row=3),
            model.elbo(np.repeat(x[:2], 3, axis=0), seed=blocks),
            atol=1e-12, rtol=0)
        for bad, error in ((0, ValueError), (2.5, ValueError),
                           (True, TypeError)):
            with self.assertRaisesRegex(error, 'draws_per_row must be an '
                                        'integer >= 1'):
                flow.sample_and_log_prob(x, [2, 3], draws_per_row=bad)

    def test_uniform_dequantizer(self):
        uniform = conditional.UniformDequantizer([2, 2, 1])
        row_seeds = tf.constant([[1, 1], [2, 2], [1, 1]], tf.int32)
        u, log_r = uniform.sample_and_log_prob(tf.zeros([3, 2, 2, 1]),
                                               row_seeds)
        self.assertAllEqual(u[0], u[2])
        self.assertNotAllClose(u[0], u[1])
        self.assertAllEqual(log_r, tf.zeros([3]))
        self.assertTrue(np.all((u.numpy() >= 0) & (u.numpy() < 1)))
        # Two draws per row: row i's block of two from seed[i].
        u2, log_r2 = uniform.sample_and_log_prob(
            tf.zeros([3, 2, 2, 1]), row_seeds, draws_per_row=2)
        self.assertAllEqual(u2, uniform.sample_and_log_prob(
            tf.zeros([6, 2, 2, 1]), row_seeds)[0])
        self.assertAllEqual(u2[:2], u2[4:])
        self.assertAllEqual(log_r2, tf.zeros([6]))


class PerExampleModelTest(tf.test.TestCase):
    """Per-example seeds make an example's bound independent of batching."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = model_helpers.initialized_tiny_vflow(17, [1, 2])
        cls.images = data.photo_patches(8, 'test', max_patches=6, seed=3)

    def _log_prob(self, x, chunk_size, seed=(4, 5), num_samples=5):
        return self.model.log_prob(
            x, num_samples, chunk_size=chunk_size,
            seed=self.model.example_seeds(x, seed)).numpy()

    def test_log_prob_independent_of_the_batch_and_its_order(self):
        x = self.images
        together = self._log_prob(x, chunk_size=2)
        alone = np.concatenate([self._log_prob(x[i:i + 1], chunk_size=2)
                                for i in range(len(x))])
        reversed_ = self._log_prob(x[::-1], chunk_size=2)[::-1]
        # Same draws in another batch: only float32 kernel rounding differs.
        self.assertAllClose(alone, together, atol=1e-3, rtol=0)
        self.assertAllClose(reversed_, together, atol=1e-3, rtol=0)
        # With one seed for the batch, the draws move with the batch.
        batch_seed = self.model.log_prob(x, 5, chunk_size=2,
                                         seed=[4, 5]).numpy()
        shifted = self.model.log_prob(x[1:], 5, chunk_size=2,
                                      seed=[4, 5]).numpy()
        self.assertGreater(np.abs(shifted - batch_seed[1:]).max(), 0.1)
        # Another seed, other draws.
        other = self._log_prob(x, chunk_size=2, seed=(4, 6))
        self.assertGreater(np.abs(other - together).max(), 0.1)
        # An equal image scores equally anywhere in the batch.
        dup = self._log_prob(np.concatenate([x[:1], x[2:4], x[:1]]), 2)
        self.assertAllClose(dup[0], dup[3], atol=1e-6, rtol=0)
        self.assertAllClose(dup[0], together[0], atol=1e-3, rtol=0)

    def test_log_prob_is_still_the_importance_weighted_bound(self):
        x = self.images[:3]
        row_seeds = self.model.example_seeds(x, [8, 8])
        # One draw per pass: draw s is the ELBO with seeds fold_in(seed, s).
        one = self.model.log_prob(x, 1, chunk_size=1, seed=row_seeds)
        first = self.model.elbo(x, seed=seeds.fold_in_rows(row_seeds, 0))
        self.assertAllClose(one, first, atol=1e-3, rtol=0)
        # S = 3 is the log-mean-exp of draws 0, 1, 2.
        three = self.model.log_prob(x, 3, chunk_size=1, seed=row_seeds)
        draws = np.stack([
            self.model.elbo(x, seed=seeds.fold_in_rows(row_seeds, s)).numpy()
            for s in range(3)]).astype(np.float64)
        expected = np.log(np.mean(np.exp(draws - draws.max(0)), 0)) + (
            draws.max(0))
        self.assertAllClose(three, expected, atol=1e-3, rtol=0)

    def test_elbo_and_uint8_or_int32_pixels(self):
        x = self.images
        as_int = x.astype(np.int32)
        self.assertAllEqual(self.model.example_seeds(x, [1, 1]),
                            self.model.example_seeds(as_int, [1, 1]))
        a = self.model.elbo(x, seed=self.model.example_seeds(x, [1, 1]))
        b = self.model.elbo(x[2:4], seed=self.model.example_seeds(x[2:4],
                                                                  [1, 1]))
        self.assertAllClose(a[2:4], b, atol=1e-3, rtol=0)

    def test_seed_rows_must_match_the_batch(self):
        x = self.images[:3]
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'none given'):
            self.model.elbo(x, seed=tf.zeros([0, 2], tf.int32))
        bad = self.model.example_seeds(self.images[:2], [1, 1])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'one row per example'):
            self.model.elbo(x, seed=bad)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'one row per example'):
            self.model.log_prob(x, 2, seed=bad)

    def test_each_pass_draws_its_chunk_from_the_seed_folded_with_it(self):
        # `log_prob` docstring: with per-example seeds, pass c draws the
        # chunk_size samples of example i as one block from
        # fold_in(seed[i], c).
        x = self.images[:2]
        row_seeds = self.model.example_seeds(x, [8, 9])
        got = self.model.log_prob(x, 4, chunk_size=2, seed=row_seeds)
        draws = np.concatenate([
            self.model.elbo(x, seed=seeds.fold_in_rows(row_seeds, c),
                            draws_per_row=2).numpy().reshape(2, 2)
            for c in range(2)], axis=1).astype(np.float64)
        expected = np.log(np.mean(np.exp(draws - draws.max(1, keepdims=True)),
                                  1)) + draws.max(1)
        self.assertAllClose(got, expected, atol=1e-3, rtol=0)

    def test_vectors_are_hashed_in_the_model_s_dtype(self):
        # `example_seeds` docstring: vectors are hashed in the model's
        # dtype, so the same data in float32 or float64 gets the same
        # per-example seeds, and the same bound, from a float64 model.
        model = presets.build('checkerboard_vflow_3_4', seed=0,
                              dtype=tf.float64)
        x = data.sample_checkerboard(4, seed=1)
        wide = x.astype(np.float64)
        row_seeds = model.example_seeds(wide, [1, 2])
        self.assertAllEqual(model.example_seeds(x, [1, 2]), row_seeds)
        self.assertAllEqual(
            model.example_seeds(tf.constant(x), [1, 2]), row_seeds)
        self.assertAllEqual(
            model.log_prob(x, 3, seed=model.example_seeds(x, [1, 2])),
            model.log_prob(wide, 3, seed=row_seeds))

    def test_the_per_example_seed_of_a_batch_of_one_is_its_seed(self):
        # `seeds` module: a per-example seed gives its block the noise of
        # its own seed, split for r and q as `tfp.random.split_seed` splits
        # it (`split_rows`). So for a batch of one, seed [[a, b]] draws
        # what seed [a, b] draws: u and z from two different seeds, not
        # both from the one given.
        x = self.images[:1]
        for seed in ([4, 5], [8, 9]):
            self.assertAllClose(self.model.elbo(x, seed=[seed]),
                                self.model.elbo(x, seed=seed),
                                atol=1e-3, rtol=0)

    def test_vectors_float32_cannot_tell_apart_get_their_own_seeds(self):
        # `example_seeds` docstring: vectors are hashed in the model's dtype.
        # For a float64 model, two examples that differ below float32's
        # resolution are different examples (other bytes), so they get
        # other seeds; equal examples get equal ones.
        model = presets.build('checkerboard_vflow_3_4', seed=0,
                              dtype=tf.float64)
        x = np.array([[1.0, 0.5], [1.0 + 1e-12, 0.5], [1.0, 0.5]])
        row_seeds = model.example_seeds(x, [1, 2])
        self.assertAllEqual(row_seeds,
                            seeds.example_seeds(tf.constant(x), [1, 2]))
        self.assertAllEqual(row_seeds[0], row_seeds[2])
        self.assertNotAllEqual(row_seeds[0], row_seeds[1])


class RowSeedArgumentTest(tf.test.TestCase):
    """What `as_seed` and `sample_rows` take and refuse."""

    def test_a_seed_variable_is_taken_as_a_tensor_in_a_function(self):
        # as_seed: "A tensor is taken as it is"; a tf.Variable too, also
        # inside a tf.function, where it has no NumPy value to check.
        variable = tf.Variable([3, 4])
        try:
            traced = tf.function(lambda: seeds.as_seed(variable))()
        except (NotImplementedError, TypeError, ValueError) as e:
            self.fail(f'a seed variable refused in a function: {e}')
        self.assertAllEqual(traced, [3, 4])

    def test_sample_rows_refuses_a_dynamic_event_shape_by_name(self):
        # sample_rows raises "ValueError: for a distribution with ... a
        # dynamic event shape", at trace time.
        def draw(loc):
            return seeds.sample_rows(tfd.MultivariateNormalDiag(loc),
                                     tf.constant([[1, 2], [3, 4]]))

        traced = tf.function(draw, input_signature=[
            tf.TensorSpec([None], tf.float32)])
        with self.assertRaises(Exception) as raised:
            traced.get_concrete_function()
        self.assertIsInstance(raised.exception, ValueError)
        self.assertIn('static event shape', str(raised.exception))


if __name__ == '__main__':
    tf.test.main()
