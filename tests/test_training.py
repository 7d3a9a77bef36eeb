"""Learning-rate schedules and the weight EMA."""

import numpy as np
import tensorflow as tf

from vflow_tfp import training


class WarmupHoldDecayTest(tf.test.TestCase):

    def _official_vflow(self, steps):
        """The official loop's recurrence (SPEC §3), step by step."""
        lrs, lr = [], 0.0
        for step in range(steps):
            if step < 2000:
                lr = 0.0012 * step / 2000
            elif step <= 50000:
                lr = 0.0012
            elif lr > 3e-4:
                lr *= 0.99999
            lrs.append(lr)
        return np.array(lrs)

    def test_matches_the_official_recurrence(self):
        schedule = training.WarmupHoldDecay(1.2e-3, 2000, 50000, 0.99999,
                                            3e-4)
        steps = 200_000
        expected = self._official_vflow(steps)
        ours = schedule(tf.range(steps)).numpy()
        self.assertAllClose(ours, expected, rtol=2e-5, atol=1e-9)
        # Where the hold ends, one step of decay (1e-5) is within that
        # tolerance: there the rates must be the recurrence's to rounding.
        self.assertAllClose(ours[49_990:50_010], expected[49_990:50_010],
                            rtol=1e-6, atol=0)
        # Frozen at the first value <= 3e-4, reached near step 188,629.
        first = 50_000 + int(np.argmax(expected[50_000:] <= 3e-4))
        self.assertBetween(first, 188_000, 189_000)
        self.assertAllClose(ours[-1], expected[-1], rtol=1e-6)

    def test_floor_when_min_lr_is_an_exact_power_of_decay(self):
        # The rate after k decay steps is min_lr itself: it must freeze
        # there, not one step later (the logs' rounding put it there).
        for max_lr, decay in ((1e-3, 0.99), (1.0, 0.5), (2e-3, 0.9)):
            for k in range(1, 40):
                min_lr = max_lr * decay**k
                schedule = training.WarmupHoldDecay(max_lr, decay=decay,
                                                    min_lr=min_lr)
                self.assertAllClose(schedule(10**6), min_lr, rtol=1e-6,
                                    msg=f'{max_lr} {decay} {k}')

    def test_resume_at_any_step_is_stateless(self):
        schedule = training.WarmupHoldDecay(1.2e-3, 2000, 50000, 0.99999,
                                            3e-4)
        # Past step 50k, where the official schedule crashes on resume.
        for step in (50_001, 123_456, 10**7):
            self.assertAllClose(schedule(step),
                                schedule(tf.constant(step, tf.int64)))
        self.assertAllClose(schedule(10**7), 3e-4, rtol=1e-4)

    def test_flowpp_constant_and_errors(self):
        schedule = training.WarmupHoldDecay(3e-4, 2000)
        self.assertAllClose(schedule(1000), 1.5e-4)
        self.assertAllClose(schedule(10**6), 3e-4)
        with self.assertRaisesRegex(ValueError, 'decay'):
            training.WarmupHoldDecay(1e-3, decay=1.5)
        with self.assertRaisesRegex(ValueError, 'exceeds'):
            training.WarmupHoldDecay(1e-3, min_lr=1e-2)

    def test_decay_inside_the_warm_up_follows_the_formula(self):
        # hold_until < warmup_steps (which TrainConfig refuses, the schedule
        # itself does not): the docstring's formula, with the warm-up ending
        # at warmup_steps exactly and the decay counted from hold_until.
        schedule = training.WarmupHoldDecay(1.0, warmup_steps=4,
                                            hold_until=0, decay=0.5)
        self.assertAllClose(schedule(3), 0.75)
        self.assertAllClose(schedule(4), 0.5**4)
        self.assertAllClose(schedule(5), 0.5**5)

    def test_decay_without_a_floor(self):
        # min_lr=0 (allowed, >= 0): the rate decays for ever, no floor to
        # compute.
        schedule = training.WarmupHoldDecay(1e-3, hold_until=10, decay=0.5,
                                            min_lr=0.0)
        self.assertAllClose(schedule(10), 1e-3)
        self.assertAllClose(schedule(13), 1e-3 * 0.5**3)
        self.assertAllEqual(schedule(10**4), 0.0)

    def test_flowpp_cifar10_schedule_is_constant_after_the_warm_up(self):
        # configs/cifar_flowpp.flags: decay 1 and min_lr = max_lr = 3e-4, the
        # docstring's constant Flow++ schedule. A floor equal to the peak is
        # allowed (min_lr must not exceed max_lr), and without decay there is
        # no floor to reach.
        try:
            schedule = training.WarmupHoldDecay(3e-4, warmup_steps=2000,
                                                hold_until=0, decay=1.0,
                                                min_lr=3e-4)
            rates = [float(schedule(step)) for step in (1000, 2000, 10**6)]
        except (ValueError, ArithmeticError) as e:
            self.fail(f'the Flow++ schedule fails: {e!r}')
        self.assertAllClose(rates, [1.5e-4, 3e-4, 3e-4])

    def test_bad_settings_are_refused_when_made(self):
        # Negative step counts or rates, and a decay of 0 (no rate after the
        # hold), are refused with the setting named when the schedule is
        # made, not at its first step.
        for kwargs, message in (
                (dict(warmup_steps=-1), 'warmup_steps=-1'),
                (dict(hold_until=-1), 'hold_until=-1'),
                (dict(min_lr=-1e-4), 'min_lr=-0.0001'),
                (dict(decay=0.0), r'^decay must be in \(0, 1\]; got 0\.0')):
            with self.subTest(**kwargs):
                with self.assertRaisesRegex(ValueError, message):
                    training.WarmupHoldDecay(1e-3, **kwargs)

    def test_get_config_rebuilds_the_same_schedule(self):
        # Keras's contract for a schedule: from_config(get_config()) is the
        # same schedule, floor included.
        schedule = training.WarmupHoldDecay(1e-3, warmup_steps=2,
                                            hold_until=3, decay=0.5,
                                            min_lr=1e-4, name='lr')
        rebuilt = training.WarmupHoldDecay.from_config(schedule.get_config())
        self.assertEqual(rebuilt.get_config(), schedule.get_config())
        steps = tf.range(12)
        self.assertAllEqual(rebuilt(steps), schedule(steps))

    def test_steps_past_float32_s_integers_are_counted_exactly(self):
        # The rate is a closed-form function of the step counter, also where
        # float32 no longer holds every integer (past 2^24 steps): there
        # each step still decays the rate once.
        schedule = training.WarmupHoldDecay(1.0, hold_until=2**24, decay=0.5)
        steps = tf.constant([2**24, 2**24 + 1, 2**24 + 3], tf.int64)
        self.assertAllEqual(schedule(steps), [1.0, 0.5, 0.125])

    def test_a_negative_max_lr_is_refused_as_negative(self):
        # Negative rates are refused as such, the peak rate included, not
        # blamed on a floor that exceeds it.
        with self.assertRaisesRegex(
                ValueError, r'^Learning rates and step counts must be >= 0; '
                r'got max_lr=-0\.001,'):
            training.WarmupHoldDecay(-1e-3)

    def test_a_peak_rate_of_zero_is_allowed(self):
        # "Learning rates and step counts must be >= 0": 0 is allowed, as
        # the peak rate too (with a floor of 0), and gives a rate of 0 at
        # every step (warm-up, plateau and decay alike).
        try:
            schedule = training.WarmupHoldDecay(0.0, warmup_steps=2,
                                                hold_until=3, decay=0.5)
        except ValueError as e:
            self.fail(f'max_lr=0 refused: {e}')
        self.assertAllEqual(schedule(tf.range(8)), [0.0] * 8)


class WeightEMATest(tf.test.TestCase):

    def test_update_reset_and_averaged_weights(self):
        v = tf.Variable([1.0, 2.0])
        ema = training.WeightEMA([v], decay=0.9)
        v.assign([11.0, 12.0])
        ema.update()
        self.assertAllClose(ema.shadows[0], [2.0, 3.0])
        with ema.averaged_weights():
            self.assertAllClose(v, [2.0, 3.0])
        self.assertAllClose(v, [11.0, 12.0])
        ema.reset()
        self.assertAllClose(ema.shadows[0], [11.0, 12.0])
        # n updates towards a constant close the gap by decay^n.
        v.assign([21.0, 22.0])
        for _ in range(10):
            ema.update()
        self.assertAllClose(ema.shadows[0],
                            [21.0 - 10.0 * 0.9**10, 22.0 - 10.0 * 0.9**10])

    def test_each_replica_updates_its_own_shadow_from_its_own_variable(self):
        # Copies of a mirrored variable are equal in training; here they are
        # made to differ, so that which copy feeds which shadow shows.
        devices = tf.config.list_logical_devices('CPU')
        if len(devices) < 2:
            self.skipTest('needs two logical CPU devices (tests/conftest.py)')
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in devices[:2]])
        with strategy.scope():
            v = tf.Variable([1.0, 2.0])
            ema = training.WeightEMA([v], decay=0.5)
        first, second = v.values
        first.assign([3.0, 4.0])
        second.assign([5.0, 6.0])
        strategy.run(lambda: None)  # (enters the strategy's runtime)
        tf.function(ema.update)()
        shadows = [s.numpy() for s in ema.shadows[0].values]
        self.assertAllClose(shadows[0], [2.0, 3.0])
        self.assertAllClose(shadows[1], [3.0, 4.0])

    def test_shadows_are_checkpointed_and_untrainable(self):
        v = tf.Variable(3.0)
        ema = training.WeightEMA([v])
        self.assertEmpty(ema.trainable_variables)
        self.assertLen(ema.variables, 1)
        with self.assertRaisesRegex(ValueError, 'decay'):
            training.WeightEMA([v], decay=1.0)

    def test_a_decay_of_zero_is_allowed_and_tracks_the_variables(self):
        # decay is in [0, 1), as TrainConfig.ema_decay: 0 keeps no average,
        # every update copies the variable.
        v = tf.Variable([1.0, 2.0])
        try:
            ema = training.WeightEMA([v], decay=0.0)
        except ValueError as e:
            self.fail(f'decay 0 is refused: {e}')
        v.assign([5.0, -3.0])
        ema.update()
        self.assertAllClose(ema.shadows[0], [5.0, -3.0])

    def test_no_variables_is_refused(self):
        with self.assertRaisesRegex(ValueError, 'at least one variable'):
            training.WeightEMA([])

    def test_averaged_weights_revert_after_an_error(self):
        # "Within the context the variables hold the averages, then revert":
        # also when the body raises (say an evaluation that fails).
        v = tf.Variable([1.0, 2.0])
        ema = training.WeightEMA([v], decay=0.5)
        v.assign([3.0, 4.0])
        with self.assertRaises(KeyError):
            with ema.averaged_weights():
                self.assertAllClose(v, [1.0, 2.0])
                raise KeyError('boom')
        self.assertAllClose(v, [3.0, 4.0])

    def test_a_float64_variable_is_averaged_in_float64(self):
        # The shadows are copies of the variables, of their dtype, and
        # `update` moves every shadow towards its variable: a float64
        # variable is averaged in float64 (2^-41 is below float32's step
        # at 1).
        v = tf.Variable([1.0, 2.0], dtype=tf.float64)
        ema = training.WeightEMA([v], decay=0.5)
        v.assign([1.0 + 2.0**-40, 4.0])
        try:
            ema.update()
        except (TypeError, tf.errors.InvalidArgumentError) as e:
            self.fail(f'a float64 variable is not averaged: {e}')
        self.assertEqual(ema.shadows[0].dtype, tf.float64)
        self.assertAllEqual(ema.shadows[0], [1.0 + 2.0**-41, 3.0])

    def test_variables_given_as_a_generator_are_all_tracked(self):
        # `variables` may be any iterable, read once: each of a generator's
        # variables gets a shadow that `update` moves and
        # `averaged_weights` puts in place, as for a list.
        a, b = tf.Variable(1.0), tf.Variable(2.0)
        ema = training.WeightEMA((v for v in (a, b)), decay=0.5)
        a.assign(3.0)
        b.assign(6.0)
        ema.update()
        self.assertAllClose([s.numpy() for s in ema.shadows], [2.0, 4.0])
        with ema.averaged_weights():
            self.assertAllClose([a.numpy(), b.numpy()], [2.0, 4.0])
        self.assertAllClose([a.numpy(), b.numpy()], [3.0, 6.0])

    def test_a_negative_decay_is_refused(self):
        # decay is in [0, 1): below 0 the "average" would overshoot the
        # variable at every update.
        v = tf.Variable(3.0)
        for decay in (-0.5, -1e-9):
            with self.subTest(decay=decay):
                with self.assertRaisesRegex(
                        ValueError, r'decay must be in \[0, 1\); got '):
                    training.WeightEMA([v], decay=decay)

    def test_the_name_names_the_module_and_its_shadows(self):
        # Like any tf.Module's: the shadow variables are created under it,
        # so two averages in one checkpoint or log are told apart.
        v = tf.Variable([1.0, 2.0], name='w')
        self.assertEqual(training.WeightEMA([v]).name, 'weight_ema')
        ema = training.WeightEMA([v], name='p_ema')
        self.assertEqual(ema.name, 'p_ema')
        self.assertStartsWith(ema.shadows[0].name, 'p_ema/')


if __name__ == '__main__':
    tf.test.main()
