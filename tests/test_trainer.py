"""The distributed training loop: replica equivalence, exact resume and
outputs."""

import dataclasses
import gc
import glob
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from unittest import mock

from absl import logging as absl_logging
import numpy as np
import tensorflow as tf
import tf_keras

from vflow_tfp import data
from vflow_tfp import export
from vflow_tfp import file_io
from vflow_tfp import training
from vflow_tfp.training import loop
import lost_signals
import model_helpers

GLOBAL_BATCH = 8
_mirrored = model_helpers.mirrored_strategy


def _fixed_batch_input_fn(batch, repeat=True):
    """Every step sees the same global batch, split over the replicas."""
    def input_fn(input_context, start_step=0):
        del start_step  # The same batch at every step.
        per_replica = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
        ds = tf.data.Dataset.from_tensor_slices(batch).batch(
            per_replica, drop_remainder=True)
        return ds.repeat() if repeat else ds
    return input_fn


def _config(output_dir, **kwargs):
    defaults = dict(preset='checkerboard_glow_3', output_dir=output_dir,
                    global_batch_size=GLOBAL_BATCH, train_steps=6,
                    max_lr=1e-3, warmup_steps=0, checkpoint_every=3,
                    eval_every=3, log_every=3, num_samples=0,
                    init_batch_size=64, ema_decay=0.9, seed=3)
    defaults.update(kwargs)
    return training.TrainConfig(**defaults)


class _TrainerFixture:
    """Checkerboard batches and fresh run directories for each test; a
    mixin, so that the two classes below are separate pytest-xdist scopes
    (see pytest.ini)."""

    def setUp(self):
        super().setUp()
        self.dirs = []
        self.batch = data.sample_checkerboard(GLOBAL_BATCH, seed=1)
        self.init = data.sample_checkerboard(64, seed=2)
        self.eval_fn = _fixed_batch_input_fn(self.batch, repeat=False)

    def tearDown(self):
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        super().tearDown()

    def _dir(self):
        d = tempfile.mkdtemp(prefix='vflow_tfp_trainer_')
        self.dirs.append(d)
        return d

    def _trainer(self, strategy, **kwargs):
        return self._trainer_at(self._dir(), strategy, **kwargs)

    def _trainer_at(self, output_dir, strategy, **kwargs):
        return training.Trainer(_config(output_dir, **kwargs), strategy,
                                _fixed_batch_input_fn(self.batch),
                                self.eval_fn, self.init)

    def _assert_stopped_after_step_4(self, trainer, results, signum):
        """The run stopped for `signum`, its request read after step 4 (it
        travels with step 3's all-reduce): not completed, saved at step 4."""
        self.assertEqual(trainer.stop_signal, signum)
        self.assertFalse(results['completed'])
        self.assertEqual(results['step'], 4)
        self.assertEqual(os.path.basename(results['latest_checkpoint']),
                         'ckpt-4')

    def _count_bounds(self, trainer):
        """A list that gets an entry whenever `trainer` computes its final
        importance-weighted bound."""
        calls = []
        real_bound = trainer.evaluate_importance_weighted

        def counted_bound():
            calls.append(1)
            return real_bound()

        trainer.evaluate_importance_weighted = counted_bound
        return calls

    def _stepper(self, trainer):
        """`step()` runs one train step of `trainer` on the fixed batch and
        returns its outputs (loss, gradient norm, stop votes)."""
        batches = iter(trainer.strategy.distribute_datasets_from_function(
            _fixed_batch_input_fn(self.batch)))
        # pylint: disable-next=protected-access
        return lambda: trainer._train_step(batches, tf.constant(0.0))


class TrainerTest(_TrainerFixture, tf.test.TestCase):
    """Steps, averages, evaluation and progress output."""

    def test_two_replicas_equal_one_replica(self):
        # A deterministic ELBO (Glow on continuous 2-D data: no sampled
        # noise, no dropout) isolates the distributed arithmetic: loss
        # scaling, one gradient all-reduce, clipping, the update and the EMA.
        mirrored = self._trainer(_mirrored(), clip_norm=0.5)
        single = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                               clip_norm=0.5)
        self.assertEqual(mirrored.strategy.num_replicas_in_sync, 2)
        mirrored.restore_or_initialize()
        single.restore_or_initialize()
        for a, b in zip(single.variables, mirrored.variables):
            a.assign(b.numpy())  # identical starting points
        single.ema.reset()
        mirrored.ema.reset()
        results = []
        for trainer in (mirrored, single):
            step = self._stepper(trainer)
            losses = [float(step()[0]) for _ in range(2)]
            results.append((losses, [v.numpy() for v in trainer.variables],
                            [s.numpy() for s in trainer.ema.shadows]))
        (loss_m, vars_m, ema_m), (loss_s, vars_s, ema_s) = results
        self.assertAllClose(loss_m, loss_s, rtol=1e-5)
        for a, b in zip(vars_m, vars_s):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        for a, b in zip(ema_m, ema_s):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        # Something actually moved.
        self.assertGreater(max(float(np.max(np.abs(a - b)))
                               for a, b in zip(vars_m, ema_m)), 1e-6)

    def test_xla_steps_compile_the_update_too_on_every_device(self):
        # jit_compile: the replica's loss and gradients, and the optimizer's
        # per-variable update, which runs outside them, are compiled, on
        # this CPU as on a GPU (tf_keras alone compiles the update on GPUs
        # only, whatever the setting); without it nothing is. Both give
        # the same steps on two replicas.
        results = []
        for jit_compile in (False, True):
            trainer = self._trainer(_mirrored(), jit_compile=jit_compile)
            trainer.restore_or_initialize()
            if results:
                for v, start in zip(trainer.variables, results[0][2]):
                    v.assign(start)
            start = [v.numpy() for v in trainer.variables]
            step = self._stepper(trainer)
            losses = [float(step()[0]) for _ in range(2)]
            # pylint: disable-next=protected-access
            compiled = trainer.optimizer._update_step_xla
            self.assertEqual(compiled.experimental_get_tracing_count() > 0,
                             jit_compile)
            results.append((losses, [v.numpy() for v in trainer.variables],
                            start))
        (loss_plain, vars_plain, start), (loss_xla, vars_xla, _) = results
        self.assertAllClose(loss_plain, loss_xla, rtol=1e-5)
        for a, b in zip(vars_plain, vars_xla):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        self.assertGreater(max(float(np.max(np.abs(a - b)))
                               for a, b in zip(vars_xla, start)), 1e-4)

    def test_the_average_starts_at_the_initialised_weights(self):
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                ema_decay=0.999)
        before = [v.numpy() for v in trainer.variables]
        trainer.restore_or_initialize()
        moved = [v for v, b in zip(trainer.variables, before)
                 if np.any(v.numpy() != b)]
        self.assertNotEmpty(moved)  # the data-dependent init set them
        for v, shadow in zip(trainer.variables, trainer.ema.shadows):
            self.assertAllEqual(shadow, v)

    def test_the_average_moves_after_each_update(self):
        # The EMA update runs after the optimiser step (SPEC §9.12): one
        # step from w0 to w1 leaves each shadow at decay * w0 + (1 - decay)
        # * w1. An update ordered before the step would leave it at w0.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                ema_decay=0.9, max_lr=1e-2)
        trainer.restore_or_initialize()
        before = [v.numpy() for v in trainer.variables]
        self._stepper(trainer)()
        after = [v.numpy() for v in trainer.variables]
        self.assertGreater(max(float(np.max(np.abs(a - b)))
                               for a, b in zip(after, before)), 1e-3)
        for shadow, w0, w1 in zip(trainer.ema.shadows, before, after):
            self.assertAllClose(shadow, 0.9 * w0 + 0.1 * w1, rtol=1e-5,
                                atol=1e-6)

    def test_an_update_is_adam_on_the_clipped_gradient(self):
        # Against a reference Adam fed the gradient clipped by hand. With a
        # large epsilon Adam's first step scales with the gradient, so an
        # unclipped update would land elsewhere. A clip_norm of 0 turns
        # clipping off (TrainConfig allows it): Adam on the whole gradient.
        for clip in (0.05, 0.0):
            trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                    clip_norm=clip, max_lr=1e-2,
                                    adam_epsilon=1e-3)
            trainer.restore_or_initialize()
            model, variables = trainer.model, trainer.variables
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(self.batch, training=True))
            grads = tape.gradient(loss, variables)
            norm = float(tf.linalg.global_norm(grads))
            self.assertGreater(norm, 10 * 0.05)
            rate = float(trainer.schedule(0))

            def reference(gradients, variables=variables, trainer=trainer,
                          rate=rate):
                copies = [tf.Variable(v.numpy()) for v in variables]
                config = trainer.config
                optimizer = tf_keras.optimizers.Adam(
                    rate, beta_1=config.adam_beta1, beta_2=config.adam_beta2,
                    epsilon=config.adam_epsilon)
                optimizer.apply_gradients(zip(gradients, copies))
                return [c.numpy() for c in copies]

            unclipped = reference(grads)
            expected = (reference(tf.clip_by_global_norm(grads, clip)[0])
                        if clip else unclipped)
            _, step_norm = self._stepper(trainer)()[:2]
            self.assertAllClose(float(step_norm), norm, rtol=1e-5)
            for v, e in zip(variables, expected):
                self.assertAllClose(v, e, rtol=1e-4, atol=1e-7)
            if clip:
                self.assertGreater(max(float(np.max(np.abs(a - b)))
                                       for a, b in zip(expected, unclipped)),
                                   1e-3)

    def test_updates_take_the_rate_of_the_schedule(self):
        # The optimiser's rate is the schedule's at its own step counter:
        # the first warm-up update (rate 0) leaves every weight as it was,
        # the second (a quarter of the peak) moves them.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                warmup_steps=4, max_lr=1e-2)
        trainer.restore_or_initialize()
        step = self._stepper(trainer)
        before = [v.numpy() for v in trainer.variables]
        step()
        for v, b in zip(trainer.variables, before):
            self.assertAllEqual(v, b)
        step()
        self.assertGreater(max(float(np.max(np.abs(v.numpy() - b)))
                               for v, b in zip(trainer.variables, before)),
                           1e-4)

    def test_train_bpd_is_the_mean_over_the_logging_window(self):
        # At a negligible rate the weights stay put, so each of the three
        # steps in the window scores what the final evaluation scores.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3, log_every=3, eval_every=3,
                                max_lr=1e-12, min_lr=0.0)
        results = trainer.train()
        self.assertAllClose(results['train_bpd'], results['test_bpd'],
                            rtol=1e-5)

    def test_the_last_window_is_logged_however_short(self):
        # train_steps=4 with log_every=3: the final step ends a window of
        # one step, which is logged, summarised and recorded like the full
        # window before it (results.json's train_bpd is the run's last).
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=4, log_every=3, eval_every=1000,
                                max_lr=5e-2, export=False)
        with self.assertLogs('absl', 'INFO') as logs:
            results = trainer.train()
        self.assertEqual([int(m[1]) for m in (
            re.search(r'step (\d+)/4 \| train bpd', r) for r in logs.output)
            if m], [3, 4])
        summarised = {
            event.step: float(tf.make_ndarray(value.tensor))
            for path in glob.glob(os.path.join(
                trainer.config.output_dir, 'summaries', 'events*'))
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value if value.tag == 'train/bpd'}
        self.assertEqual(sorted(summarised), [3, 4])
        # The two windows score different weights, so the figures differ.
        self.assertNotAllClose(summarised[3], summarised[4], rtol=1e-4)
        self.assertAllClose(results['train_bpd'], summarised[4], rtol=1e-6)

    def test_numpy_values_and_dtypes_are_recorded_as_plain_settings(self):
        # A sweep's numpy values and a dtype override used to train up to
        # the first results.json, then fail there on every rerun.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=np.int64(3),
                                max_lr=np.float32(1e-3),
                                preset_overrides={'dtype': tf.float64})
        self.assertEqual(trainer.model.p.dtype, tf.float64)
        results = trainer.train()
        with open(os.path.join(trainer.config.output_dir,
                               'results.json')) as f:
            recorded = json.load(f)['config']
        self.assertEqual(results['step'], 3)
        self.assertEqual(recorded['preset_overrides'], {'dtype': 'float64'})
        self.assertEqual(recorded['train_steps'], 3)
        self.assertAllClose(recorded['max_lr'], 1e-3)
        with self.assertRaisesRegex(
                ValueError, r"preset_overrides\['name'\] must be a value "
                'results.json can record'):
            self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                          preset_overrides={'name': object()})

    def test_input_pipelines_that_break_the_loss_are_one_error(self):
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        points = data.sample_checkerboard(16, seed=1)
        cases = [
            # Batches of 16 for a global batch of 8: the loss, averaged over
            # 8, would double without a word.
            (lambda context, start_step: tf.data.Dataset.from_tensor_slices(
                points).batch(16).repeat(),
             r'At step 1: Every training batch must hold global_batch_size '
             r'/ replicas = 8 examples on each replica'),
            # Of unknown size (a generator): found when it runs out.
            (lambda context, start_step: tf.data.Dataset.from_generator(
                lambda: iter(points[:8]),
                output_signature=tf.TensorSpec([2], tf.float32)).batch(
                    8, drop_remainder=True),
             'The training data ran out after step 1: train_input_fn must '
             'give a repeating dataset'),
        ]
        for input_fn, message in cases:
            trainer = training.Trainer(_config(self._dir()), strategy,
                                       input_fn, self.eval_fn, self.init)
            with self.assertRaisesRegex(ValueError, message):
                trainer.train()

    def test_inputs_that_would_fail_later_are_refused_at_once(self):
        # Checked when the trainer is built (by the datasets' static specs
        # and sizes, nothing read): not at the first evaluation or the end
        # of the first epoch, and before any output directory is made.
        points = data.sample_checkerboard(16, seed=1)
        slices = tf.data.Dataset.from_tensor_slices(points)
        good_train = _fixed_batch_input_fn(self.batch)
        labelled = {'x': points, 'label': tf.zeros([16], tf.int64)}
        cases = [
            (_fixed_batch_input_fn(self.batch, repeat=False), self.eval_fn,
             ValueError, r'train_input_fn gives 1 batch\(es\) and then ends; '
             r'it must repeat'),
            (lambda c, s: slices.take(5).batch(8, drop_remainder=True)
             .repeat(), self.eval_fn, ValueError,
             r'train_input_fn gives no batch: its data holds fewer examples '
             r'than one per-replica batch \(8\)'),
            (lambda c, s: slices.batch(4, drop_remainder=True).repeat(),
             self.eval_fn, ValueError, r'Every training batch must hold '
             r'global_batch_size / replicas = 8 .*; train_input_fn gives 4'),
            (lambda c, s: slices.map(lambda x: x[:1]).batch(
                8, drop_remainder=True).repeat(), self.eval_fn, ValueError,
             r'train_input_fn gives batches of shape \(8, 1\); the model of '
             r"preset 'checkerboard_glow_3' takes \[batch\] \+ \[2\]\.$"),
            (lambda c: slices.batch(8).repeat(), self.eval_fn, TypeError,
             r'train_input_fn must be a function \(input_context, '
             r'start_step\) returning a tf.data.Dataset: '),
            (slices.batch(8), self.eval_fn, TypeError,
             r'train_input_fn must be a function .* got a _BatchDataset'),
            (good_train, lambda c: slices.batch(8).repeat(), ValueError,
             r'eval_input_fn gives an endless dataset \(it repeats\)'),
            (good_train, lambda c: slices.take(0).batch(8), ValueError,
             r'eval_input_fn gives no batch: the test data is empty'),
            (good_train, lambda c: tf.data.Dataset.from_tensor_slices(
                labelled).batch(8), ValueError,
             r"eval_input_fn must give batches of the data alone; .* e\.g\. "
             r"`ds\.map\(lambda example: example\['x'\]\)`\.$"),
        ]
        for train_fn, eval_fn, error, message in cases:
            output_dir = os.path.join(self._dir(), 'run')
            with self.assertRaisesRegex(error, message):
                training.Trainer(_config(output_dir), tf.distribute.
                                 OneDeviceStrategy('/cpu:0'), train_fn,
                                 eval_fn, self.init)
            self.assertFalse(os.path.exists(output_dir))
        with self.assertRaisesRegex(
                ValueError, r"the model of preset 'tiny_vflow' takes data "
                            r'of shape \[8, 8, 3\]; init_batch holds examples '
                            r'of shape \[8, 8, 1\]\. .*preset_overrides='
                            r"\{'image_shape': \(height, width, channels\)"
                            r'\}'):
            training.Trainer(
                _config(self._dir(), preset='tiny_vflow'),
                tf.distribute.OneDeviceStrategy('/cpu:0'), good_train,
                self.eval_fn, np.zeros([4, 8, 8, 1], np.uint8))
        output_dir = os.path.join(self._dir(), 'run')
        with self.assertRaisesRegex(ValueError, r'^init_batch is empty: the '
                                    r'data-dependent initialisation needs '
                                    r'examples\.$'):
            training.Trainer(_config(output_dir),
                             tf.distribute.OneDeviceStrategy('/cpu:0'),
                             good_train, self.eval_fn, self.init[:0])
        self.assertFalse(os.path.exists(output_dir))
        # Pixels the model would refuse in the first step, refused here.
        pixels = np.random.RandomState(0).randint(0, 256, (4, 8, 8, 3))
        for init, example in ((pixels / 255.0, r'0\.\d+'),
                              (pixels + 256, r'\d{3}'),
                              (pixels - 256, r'-\d+'),
                              # Levels counted from 1: 256 is one too many.
                              (pixels + 1, '256')):
            with self.assertRaisesRegex(
                    ValueError, r'^init_batch holds pixel values that are not '
                                r"integers in \[0, 256\) \(the model's "
                                rf'levels\), e\.g\. {example}: images scaled'):
                training.Trainer(_config(output_dir, preset='tiny_vflow'),
                                 tf.distribute.OneDeviceStrategy('/cpu:0'),
                                 good_train, self.eval_fn, init)
            self.assertFalse(os.path.exists(output_dir))
        with self.assertRaisesRegex(TypeError, r'init_batch must be the '
                                    r'examples themselves'):
            training.Trainer(_config(self._dir()),
                             tf.distribute.OneDeviceStrategy('/cpu:0'),
                             good_train, self.eval_fn, slices.batch(8))
        # A batch of unknown size is allowed (all may be full) with a
        # warning, since a partial one stops the run.
        with self.assertLogs('absl', 'WARNING') as logs:
            training.Trainer(_config(self._dir()),
                             tf.distribute.OneDeviceStrategy('/cpu:0'),
                             lambda c, s: slices.repeat().batch(8),
                             self.eval_fn, self.init)
        self.assertIn('drop_remainder=True', logs.output[0])
        with self.assertRaisesRegex(ValueError, 'global_batch_size \\(7\\) '
                                    'must be divisible by the 2 replicas'):
            self._trainer(_mirrored(), global_batch_size=7)

    def test_data_dependent_init_is_identical_on_every_replica(self):
        trainer = self._trainer(_mirrored())
        trainer.restore_or_initialize()
        norms = [v for v in trainer.variables if 'norm' in v.name]
        self.assertNotEmpty(norms)
        for v in norms:
            values = [t.numpy() for t in v.values]
            self.assertLen(values, 2)
            self.assertAllEqual(values[0], values[1])
            self.assertGreater(float(np.max(np.abs(values[0]))), 0.0)

    def test_data_dependent_init_runs_with_dropout(self):
        # SPEC §3: dropout is active in the init pass. Its masks come from
        # the model's seeded generator, so two replicas assign what one
        # does, on both; without dropout the statistics differ.
        rs = np.random.RandomState(0)
        images = rs.randint(0, 256, (16, 8, 8, 3)).astype(np.uint8)

        def initialised(strategy, dropout):
            trainer = training.Trainer(
                _config(self._dir(), preset='tiny_vflow',
                        preset_overrides={'dropout': dropout},
                        init_batch_size=16),
                strategy, _fixed_batch_input_fn(images[:8]),
                _fixed_batch_input_fn(images[:8], repeat=False), images)
            trainer.restore_or_initialize()
            return trainer

        two = initialised(_mirrored(), 0.2)
        one = initialised(tf.distribute.OneDeviceStrategy('/cpu:0'), 0.2)
        plain = initialised(tf.distribute.OneDeviceStrategy('/cpu:0'), 0.0)
        differs = 0
        for v2, v1, v0 in zip(two.variables, one.variables, plain.variables):
            replicas = [t.numpy() for t in v2.values]
            self.assertAllEqual(replicas[0], replicas[1])
            self.assertAllClose(replicas[0], v1, atol=1e-6, msg=v1.name)
            differs += not np.allclose(v1.numpy(), v0.numpy(), atol=1e-6)
        self.assertGreater(differs, 10)

    def test_an_empty_replica_share_of_the_last_batch_is_skipped(self):
        # 12 test images in per-replica batches of 4 on two replicas: the
        # second step's second replica gets none. In a graph, TF's oneDNN
        # convolution (CPUs) gives such a batch the wrong channel count,
        # which failed the model's next layer.
        rs = np.random.RandomState(0)
        images = rs.randint(0, 256, (16, 8, 8, 3)).astype(np.uint8)

        def batches(data):
            def input_fn(input_context):
                return tf.data.Dataset.from_tensor_slices(data).batch(
                    input_context.get_per_replica_batch_size(GLOBAL_BATCH))
            return input_fn

        trainer = training.Trainer(
            _config(self._dir(), preset='tiny_vflow', init_batch_size=16,
                    iw_samples=2, iw_images=16),
            _mirrored(), _fixed_batch_input_fn(images[:8]),
            batches(images[:12]), images)
        trainer.restore_or_initialize()
        bpd = trainer.evaluate()
        self.assertEqual(trainer.evaluated_images, 12)
        iw_bpd, count = trainer.evaluate_importance_weighted()
        self.assertEqual(count, 12)
        self.assertTrue(np.isfinite(bpd) and np.isfinite(iw_bpd))
        # Plausible bounds: from the initialised model, near its 8-bit start
        # (both far from 0, the value a skipped share would pull toward).
        self.assertBetween(bpd, 7.0, 11.0)
        self.assertBetween(iw_bpd, 7.0, bpd)

    def test_data_of_other_pixel_levels_is_refused_on_resume(self):
        # 5-bit data in an 8-bit run would change what every figure means
        # part way (the variables would fit).
        images = np.random.RandomState(1).randint(
            0, 32, (16, 8, 8, 3)).astype(np.uint8)

        def trainer(**overrides):
            return training.Trainer(
                _config(out, preset='tiny_vflow', train_steps=1,
                        eval_every=1, init_batch_size=16, export=False,
                        preset_overrides=dict(filters=8, **overrides)),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(images[:8]),
                _fixed_batch_input_fn(images[:8], repeat=False), images)

        out = self._dir()
        trainer().train()
        with self.assertRaisesRegex(ValueError, 'holds a run on data of 256 '
                                    'levels, not 32; use another output '
                                    'directory'):
            trainer(num_bins=32).restore_or_initialize()
        self.assertEqual(trainer().restore_or_initialize(), 'restored')

    def test_training_improves_and_writes_outputs(self):
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=60, eval_every=60, log_every=20,
                                checkpoint_every=30, max_lr=5e-3,
                                iw_samples=8, iw_images=8)
        trainer.restore_or_initialize()
        before = trainer.evaluate()
        results = trainer.train()
        self.assertLess(results['test_bpd'], before - 0.05)
        self.assertTrue(os.path.isdir(os.path.join(
            trainer.config.output_dir, 'summaries')))
        # Glow's bound is exact, so the importance-weighted figure on the
        # same 8 points is the ELBO's, both with the EMA weights, which
        # score differently from the last iterate.
        self.assertAllClose(results['test_bpd_iw'], results['test_bpd'],
                            rtol=1e-5)
        raw = float(trainer.model.bits_per_dim(tf.reduce_mean(
            trainer.model.elbo(self.batch))))
        self.assertGreater(abs(raw - results['test_bpd']), 1e-3)
        # Flow++'s val_inverr of the EMA model on the evaluation batch.
        with trainer.ema.averaged_weights():
            expected = float(tf.reduce_max(trainer.model.reconstruction_error(
                self.batch, seed=[3, 556])))
        self.assertEqual(results['test_reconstruction_error'], expected)
        self.assertLess(expected, 1e-5)

    def test_evaluations_report_the_reconstruction_error(self):
        # A forward map that is 0.01 off its inverse shows in the log, the
        # summaries and results.json; 0 images turn the check off.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3, eval_every=3, export=False)
        forward = trainer.model.p_bijector.forward
        with mock.patch.object(trainer.model.p_bijector, 'forward',
                               lambda y, **kw: forward(y, **kw) + 0.01):
            with self.assertLogs('absl', 'INFO') as logs:
                results = trainer.train()
        self.assertAllClose(results['test_reconstruction_error'], 0.01,
                            rtol=1e-3)
        self.assertTrue(any('reconstruction error 0.01' in line
                            for line in logs.output), logs.output)
        events = glob.glob(os.path.join(trainer.config.output_dir,
                                        'summaries', 'events*'))
        tags = {v.tag for e in events
                for event in tf.compat.v1.train.summary_iterator(e)
                for v in event.summary.value}
        self.assertIn('test/reconstruction_error', tags)
        # A non-finite error (an inverse that overflowed) is warned about
        # and recorded as null: JSON has no NaN.
        nan = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                            train_steps=3, eval_every=3, export=False)
        with mock.patch.object(nan.model, 'reconstruction_error',
                               lambda x, seed=None: tf.fill(
                                   tf.shape(x)[:1], float('nan'))):
            with self.assertLogs('absl', 'WARNING') as logs:
                self.assertIsNone(nan.train()['test_reconstruction_error'])
        self.assertTrue(any("p's inverse gave non-finite" in line
                            for line in logs.output), logs.output)
        with open(os.path.join(nan.config.output_dir, 'results.json')) as f:
            on_disk = json.loads(f.read(), parse_constant=self.fail)
        self.assertIsNone(on_disk['test_reconstruction_error'])
        off = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                            train_steps=3, eval_every=3, export=False,
                            inverse_check_images=0)
        with self.assertLogs('absl', 'INFO') as logs:
            self.assertIsNone(off.train()['test_reconstruction_error'])
        self.assertFalse(any('reconstruction error' in line
                             for line in logs.output))

    def test_evaluation_scores_every_point_without_training_noise(self):
        # 1,000 test points in per-replica batches of 48: 21 batches, so the
        # last step gives one replica 40 points and the other none.
        strategy = _mirrored()
        inputs = training.training_inputs('checkerboard', 96,
                                          init_batch_size=64, seed=7)
        config = _config(self._dir(), global_batch_size=96, train_steps=2,
                         warmup_steps=4, log_every=1, eval_every=1000,
                         export=False)
        trainer = training.Trainer(config, strategy, inputs.train_input_fn,
                                   inputs.eval_input_fn, inputs.init_batch)
        with self.assertLogs('absl', 'INFO') as logs:
            trainer.train()
        # Each logged rate is that of the update just applied: the first
        # update (iteration 0) warms up from a rate of 0.
        self.assertLen([r for r in logs.output
                        if 'step 1/2' in r and 'lr 0.00e+00' in r], 1)
        self.assertLen([r for r in logs.output
                        if 'step 2/2' in r and 'lr 2.50e-04' in r], 1)
        # Evaluation draws its noise from stateless seeds: the generator
        # that feeds training is untouched (the model asks it for a seed
        # even when, as this Glow, it has no latent noise).
        rng_state = trainer.model.rng.state.numpy()
        bpd = trainer.evaluate()
        self.assertAllEqual(trainer.model.rng.state, rng_state)
        # Glow's ELBO is exact: the mean over all 1,000 points.
        test = data.sample_checkerboard(
            1000, seed=training.inputs.CHECKERBOARD_TEST_SEED)
        with trainer.ema.averaged_weights():
            expected = trainer.model.bits_per_dim(tf.reduce_mean(
                trainer.model.elbo(test)))
        self.assertAllClose(bpd, expected, rtol=1e-5)
        # One trace for full and partial batches, and none for a second
        # evaluation.
        self.assertAllClose(trainer.evaluate(), bpd, rtol=1e-12)
        self.assertEqual(trainer._eval_step.experimental_get_tracing_count(),
                         1)

    def test_rates_leave_out_evaluation_and_saving_but_the_eta_not(self):
        # Evaluation made slow (1 s); a checkerboard step takes about a
        # millisecond. Timed over whole windows, the window after each
        # evaluation would show >= 1 s / 3 steps per step.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=12, log_every=3, eval_every=3,
                                checkpoint_every=3, export=False)
        real_evaluate = trainer.evaluate

        def slow_evaluate():
            time.sleep(1.0)
            return real_evaluate()

        trainer.evaluate = slow_evaluate
        with self.assertLogs('absl', 'INFO') as logs:
            trainer.train()
        rates = [float(re.search(r'\| ([0-9.]+) img/s', r).group(1))
                 for r in logs.output if 'img/s' in r]
        self.assertLen(rates, 4)
        # 8 images a step at well under 0.1 s a step.
        self.assertGreater(min(rates), 80.0)
        # The ETA predicts wall time: at step 6, the 5 steps since the
        # first took >= 1 s with the evaluation, so 6 more take >= 1.2 s
        # (training steps alone would say 0).
        etas = {int(m.group(1)): m.group(2) for m in (
            re.search(r'step (\d+)/12 .*\| ETA (\S+)$', r)
            for r in logs.output) if m}
        hours, minutes, seconds = (int(t) for t in etas[6].split(':'))
        self.assertBetween(3600 * hours + 60 * minutes + seconds, 1, 10)
        self.assertEqual(etas[12], '00:00:00')

    def test_images_per_second_count_the_global_batch(self):
        # Two replicas share each step's 8 images. On a fake clock that
        # moves one second within each step and stands still between
        # them, every window runs at 8 images/s, not one replica's 4.
        trainer = self._trainer(_mirrored(), train_steps=6, log_every=3,
                                export=False)
        clock = [1000.0]
        real_step = trainer._run_train_step  # pylint: disable=protected-access

        def one_second_step(*args):
            clock[0] += 1.0
            return real_step(*args)

        fake_time = types.SimpleNamespace(time=lambda: clock[0])
        with mock.patch.object(trainer, '_run_train_step', one_second_step), \
                mock.patch.object(training.loop, 'time', fake_time), \
                self.assertLogs('absl', 'INFO') as logs:
            results = trainer.train()
        rates = [float(re.search(r'\| ([0-9.]+) img/s', r).group(1))
                 for r in logs.output if 'img/s' in r]
        self.assertEqual(rates, [8.0, 8.0])
        self.assertEqual(results['images_per_second'], 8.0)

    def _bound_trainer(self, points, iw_images):
        """One step, then the 2-sample bound on `points` in batches of 8."""
        return training.Trainer(
            _config(self._dir(), train_steps=1, eval_every=1000,
                    iw_samples=2, iw_images=iw_images, export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch),
            _fixed_batch_input_fn(points, repeat=False), self.init)

    def test_long_passes_report_their_progress(self):
        # 40 test points in batches of 8: the importance-weighted pass takes
        # five batches, and reports after each but the first (it traces the
        # step, so it has no rate yet) and the last.
        points = data.sample_checkerboard(40, seed=4)
        trainer = self._bound_trainer(points, iw_images=40)
        with mock.patch.object(training.loop, '_IW_PROGRESS_SECONDS', 0.0), \
                self.assertLogs('absl', 'INFO') as logs:
            results = trainer.train()
        self.assertLen([r for r in logs.output if 'Tracing the training '
                        'step: step 1 includes' in r], 1)
        lines = [r for r in logs.output
                 if '2-sample importance-weighted bound:' in r]
        self.assertEqual([int(re.search(r'bound: (\d+) of 40 images',
                                        r).group(1)) for r in lines],
                         [16, 24, 32])
        for line in lines:
            self.assertRegex(line, r'bits/dim so far \| ETA \d\d:\d\d:\d\d$')
        # Glow's bound is its exact likelihood: the running figure is that
        # of the points scored so far.
        with trainer.ema.averaged_weights():
            log_p = trainer.model.log_prob(points, 1)
        so_far = float(re.search(r'images, (\S+) bits/dim', lines[-1])[1])
        self.assertAllClose(
            so_far, trainer.model.bits_per_dim(tf.reduce_mean(log_p[:32])),
            atol=1e-4)
        self.assertAllClose(
            results['test_bpd_iw'],
            trainer.model.bits_per_dim(tf.reduce_mean(log_p)), rtol=1e-6)

    def test_the_bound_stops_at_iw_images(self):
        # 40 test points in batches of 8 and iw_images=16: the bound takes
        # two batches, the first 16 points, and says so.
        points = data.sample_checkerboard(40, seed=4)
        trainer = self._bound_trainer(points, iw_images=16)
        results = trainer.train()
        self.assertEqual(results['iw_images'], 16)
        with trainer.ema.averaged_weights():
            log_p = trainer.model.log_prob(points[:16], 1)  # Glow: exact
        self.assertAllClose(
            results['test_bpd_iw'],
            trainer.model.bits_per_dim(tf.reduce_mean(log_p)), rtol=1e-6)

    def test_routine_notes_of_tf_and_tfds_stay_out_of_the_log(self):
        # bin/train.py logs at INFO; TF's checkpoint saver and TFDS (for
        # every evaluation pipeline) would add a note each time.
        self.addCleanup(absl_logging.set_verbosity,
                        absl_logging.get_verbosity())
        absl_logging.set_verbosity(absl_logging.INFO)

        def eval_fn(input_context):
            absl_logging.info('Constructing tf.data.Dataset (as TFDS does)')
            return self.eval_fn(input_context)

        trainer = training.Trainer(
            _config(self._dir(), train_steps=2, checkpoint_every=1,
                    eval_every=1, log_every=1, export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch), eval_fn, self.init)
        with self.assertLogs(level='INFO') as logs:  # Any logger.
            trainer.train()
        self.assertLen([r for r in logs.output
                        if 'test bpd (ELBO, EMA)' in r], 2)
        self.assertEqual([r for r in logs.output if 'Sharding' in r
                          or 'Constructing' in r], [])
        # Saved at steps 0, 1 and 2: the saver ran.
        self.assertLen(trainer.manager.checkpoints, 3)
        self.assertEqual(absl_logging.get_verbosity(), absl_logging.INFO)

    def test_eta_beyond_a_day_shows_days(self):
        format_duration = training.loop.format_duration
        self.assertEqual(format_duration(0.4), '00:00:00')
        self.assertEqual(format_duration(3599.6), '01:00:00')
        self.assertEqual(format_duration(86399), '23:59:59')
        self.assertEqual(format_duration(86400), '1d 00:00:00')
        self.assertEqual(format_duration(3 * 86400 + 17 * 3600 + 2 * 60 + 11),
                         '3d 17:02:11')

    def test_eval_batches_limits_the_evaluation(self):
        # 24 points in batches of 8 and eval_batches=1: the first batch
        # alone is scored (Glow's ELBO is exact), and counted.
        points = data.sample_checkerboard(24, seed=4)
        trainer = training.Trainer(
            _config(self._dir(), eval_batches=1, export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch),
            _fixed_batch_input_fn(points, repeat=False), self.init)
        trainer.restore_or_initialize()
        bpd = trainer.evaluate()
        self.assertEqual(trainer.evaluated_images, 8)
        with trainer.ema.averaged_weights():
            expected = trainer.model.bits_per_dim(tf.reduce_mean(
                trainer.model.elbo(points[:8])))
        self.assertAllClose(bpd, expected, rtol=1e-5)

    def test_the_gradient_norm_is_the_global_batch_s_on_two_replicas(self):
        # The step's gradient norm (logged, and in the summaries) is that
        # of the gradient of the global-batch mean loss, however many
        # replicas share the batch.
        trainer = self._trainer(_mirrored())
        trainer.restore_or_initialize()
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(trainer.model.elbo(self.batch,
                                                      training=True))
        norm = float(tf.linalg.global_norm(
            tape.gradient(loss, trainer.variables)))
        _, step_norm = self._stepper(trainer)()[:2]
        self.assertAllClose(float(step_norm), norm, rtol=1e-5)

    def test_samples_are_the_ema_model_s_with_the_step_s_seed(self):
        # The samples of step s (samples.png for image models) are drawn
        # with the EMA weights and the seed (seed, s): the batch s of
        # bin/sample.py.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                num_samples=4, ema_decay=0.5, max_lr=1e-2)
        trainer.restore_or_initialize()
        step = self._stepper(trainer)
        for _ in range(3):
            step()
        variables = trainer.model.trainable_variables
        raw = [v.numpy() for v in variables]
        with trainer.ema.averaged_weights():
            averaged = [v.numpy() for v in variables]
        real = trainer.model.sample
        calls = []

        def recording(n, seed=None, **kwargs):
            calls.append((n, np.asarray(seed), [v.numpy() for v in variables]))
            return real(n, seed=seed, **kwargs)

        with mock.patch.object(trainer.model, 'sample', recording):
            trainer.write_samples(7)
        (n, seed, weights), = calls
        self.assertEqual(n, 4)
        self.assertAllEqual(seed, [3, 7])
        self.assertFalse(all(np.array_equal(a, b)
                             for a, b in zip(raw, averaged)))
        for used, expected in zip(weights, averaged):
            self.assertAllEqual(used, expected)
        for v, before in zip(variables, raw):  # Restored afterwards.
            self.assertAllEqual(v, before)

    def test_the_last_step_is_evaluated_between_evaluation_steps(self):
        # train_steps=4 with eval_every=3: evaluated at 3 and, as the final
        # figure, at 4.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=4, eval_every=3, export=False)
        results = trainer.train()
        self.assertEqual((results['test_bpd_step'], results['test_images']),
                         (4, 8))
        with trainer.ema.averaged_weights():
            expected = trainer.model.bits_per_dim(tf.reduce_mean(
                trainer.model.elbo(self.batch)))
        self.assertAllClose(results['test_bpd'], expected, rtol=1e-5)

    def test_the_last_step_is_saved_between_checkpoint_steps(self):
        # train_steps=4 with checkpoint_every=3: the final step is saved
        # too, so the results, the export and a rerun all have the trained
        # model of step 4, not that of step 3.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=4, checkpoint_every=3,
                                eval_every=1000, export=False)
        results = trainer.train()
        ckpts = os.path.join(trainer.config.output_dir, 'checkpoints')
        self.assertEqual(tf.train.latest_checkpoint(ckpts),
                         os.path.join(ckpts, 'ckpt-4'))
        self.assertTrue(results['latest_checkpoint'].endswith('ckpt-4'))

    def test_the_reconstruction_error_is_of_the_first_images_only(self):
        # inverse_check_images=2: p is inverted on the evaluation batch's
        # first two images only, and their largest error is the figure;
        # on two replicas too, where each holds 4 of the batch's 8.
        for strategy in (tf.distribute.OneDeviceStrategy('/cpu:0'),
                         _mirrored()):
            trainer = self._trainer(strategy, inverse_check_images=2,
                                    export=False)
            trainer.restore_or_initialize()
            real = trainer.model.reconstruction_error
            checked = []

            def recording(x, real=real, checked=checked, **kwargs):
                checked.append(np.asarray(x))
                return real(x, **kwargs)

            with mock.patch.object(trainer.model, 'reconstruction_error',
                                   recording):
                error = trainer.reconstruction_error()
            self.assertLen(checked, 1)
            self.assertAllEqual(checked[0], self.batch[:2])
            with trainer.ema.averaged_weights():
                expected = float(tf.reduce_max(real(self.batch[:2],
                                                    seed=[3, 556])))
            self.assertEqual(error, expected)

    def test_every_evaluation_batch_draws_its_own_noise(self):
        # Batch i of an evaluation draws from the seed (seed, 555) folded
        # with i (then with the replica): VFlow's ELBO is stochastic, so a
        # seed shared by the batches would give another figure.
        points = data.sample_checkerboard(16, seed=4)
        trainer = training.Trainer(
            _config(self._dir(), preset='checkerboard_vflow_3_4',
                    export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch),
            _fixed_batch_input_fn(points, repeat=False), self.init)
        trainer.restore_or_initialize()
        bpd = trainer.evaluate()
        fold = tf.random.experimental.stateless_fold_in
        seed = tf.constant([3, 555], tf.int32)
        with trainer.ema.averaged_weights():
            elbo = tf.concat([trainer.model.elbo(
                points[8 * i:8 * (i + 1)], training=False,
                seed=fold(fold(seed, i), 0)) for i in range(2)], 0)
        self.assertAllClose(
            bpd, trainer.model.bits_per_dim(tf.reduce_mean(elbo)), rtol=1e-5)

    def test_replicas_draw_their_own_importance_samples(self):
        # Replicas never share noise (README): batch i of the bound draws
        # from (seed, 777) folded with i, then with the replica. One point
        # 8 times, 4 to each of two replicas: VFlow's bound is stochastic,
        # so the two shares score differently, and a seed shared by the
        # replicas would give the first share's figure twice.
        point = np.repeat(data.sample_checkerboard(1, seed=5), 8, axis=0)
        trainer = training.Trainer(
            _config(self._dir(), preset='checkerboard_vflow_3_4',
                    iw_samples=2, iw_images=8, export=False),
            _mirrored(), _fixed_batch_input_fn(self.batch),
            _fixed_batch_input_fn(point, repeat=False), self.init)
        trainer.restore_or_initialize()
        bpd, images = trainer.evaluate_importance_weighted()
        self.assertEqual(images, 8)
        fold = tf.random.experimental.stateless_fold_in
        seed = fold(tf.constant([3, 777], tf.int32), 0)
        with trainer.ema.averaged_weights():
            shares = [trainer.model.log_prob(
                point[:4], 2, trainer.config.iw_chunk_size,
                seed=fold(seed, replica)) for replica in range(2)]
        self.assertNotAllClose(shares[0], shares[1], rtol=1e-3)
        self.assertAllClose(bpd, trainer.model.bits_per_dim(
            tf.reduce_mean(tf.concat(shares, 0))), rtol=1e-6)

    def test_the_bound_s_eta_is_its_remaining_images_at_the_measured_rate(
            self):
        # On a clock that moves one second at each reading, every batch of
        # 8 after the first (which traces the step) takes one second: 1/8 s
        # an image. The lines after 16, 24 and 32 of the 40 images predict
        # the 24, 16 and 8 images still to score: 3, 2 and 1 s.
        trainer = self._bound_trainer(data.sample_checkerboard(40, seed=4),
                                      iw_images=40)
        trainer.restore_or_initialize()
        clock = [0.0]

        def tick():
            clock[0] += 1.0
            return clock[0]

        with mock.patch.object(training.loop, '_IW_PROGRESS_SECONDS', 0.0), \
                mock.patch.object(training.loop, 'time',
                                  types.SimpleNamespace(time=tick)), \
                self.assertLogs('absl', 'INFO') as logs:
            trainer.evaluate_importance_weighted()
        self.assertEqual(
            [re.search(r'bound: (\d+) of 40 images.*\| ETA (\S+)$', r).groups()
             for r in logs.output if 'importance-weighted bound:' in r],
            [('16', '00:00:03'), ('24', '00:00:02'), ('32', '00:00:01')])

    def test_evaluations_of_the_validation_split_are_logged_as_such(self):
        # With validation_size the evaluations run on held-out training
        # images (`eval_split`): the log names that split, not the test's.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=1, eval_every=1, validation_size=8,
                                export=False)
        with self.assertLogs('absl', 'INFO') as logs:
            trainer.train()
        self.assertLen([r for r in logs.output
                        if 'step 1 | validation bpd (ELBO, EMA)' in r], 1)
        self.assertEqual([r for r in logs.output if 'test bpd' in r], [])


class TrainerSafetyTest(_TrainerFixture, tf.test.TestCase):
    """Checkpoints, resuming, stopping and refusing bad runs."""

    def test_a_stopped_trainer_goes_on_when_called_again(self):
        # A stop during training, then one during the final bound; the same
        # trainer called again goes on each time (a stop request belongs to
        # the call it stopped), and results.json names the final checkpoint
        # even while the bound is still to come.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=8, checkpoint_every=3,
                                eval_every=4, iw_samples=4, iw_images=8,
                                export=False)
        results_path = os.path.join(trainer.config.output_dir,
                                    'results.json')
        real_evaluate = trainer.evaluate
        stop_at = [4, 8]

        def evaluate_then_signal():
            bpd = real_evaluate()
            if stop_at and trainer.step == stop_at[0]:
                stop_at.pop(0)
                trainer.request_stop()
            return bpd

        trainer.evaluate = evaluate_then_signal
        results = trainer.train()
        self.assertFalse(results['completed'])
        # The request travels with step 5's all-reduce, read after step 6.
        self.assertEqual(results['step'], 6)
        wall_time = results['wall_time']
        results = trainer.train()
        self.assertFalse(results['completed'])
        self.assertEqual(results['step'], 8)
        self.assertNotIn('test_bpd_iw', results)
        # The results go on from the first call's, as from a new trainer's.
        self.assertGreater(results['wall_time'], wall_time)
        with open(results_path) as f:
            on_disk = json.load(f)
        self.assertEqual(
            (on_disk['step'], os.path.basename(on_disk['latest_checkpoint']),
             on_disk['completed']), (8, 'ckpt-8', False))
        results = trainer.train()
        self.assertTrue(results['completed'])
        self.assertTrue(np.isfinite(results['test_bpd_iw']))
        self.assertEqual(results['test_bpd_step'], 8)  # kept from before
        with open(results_path) as f:
            self.assertTrue(json.load(f)['completed'])

    def test_a_stop_between_saves_and_logs_is_saved_and_recorded(self):
        # Stops at steps that are neither checkpoint nor log steps: each
        # saves its step and rewrites results.json for it, and the wall
        # time adds up over the calls. The first signal is the one kept.
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        settings = dict(train_steps=20, checkpoint_every=100, log_every=100,
                        eval_every=4, export=False)
        trainer = self._trainer(strategy, **settings)
        out = trainer.config.output_dir
        real_evaluate = trainer.evaluate

        def evaluate_then_signal():
            time.sleep(0.5)  # Time that the second call must add.
            bpd = real_evaluate()
            if trainer.step == 4:
                trainer.request_stop(signal.SIGTERM)
                trainer.request_stop(signal.SIGINT)
            elif trainer.step == 8:
                trainer.request_stop()
            return bpd

        trainer.evaluate = evaluate_then_signal
        wall_times = []
        for stopped_at in (6, 10):
            results = trainer.train()
            self.assertFalse(results['completed'])
            self.assertEqual(results['step'], stopped_at)
            with open(os.path.join(out, 'results.json')) as f:
                on_disk = json.load(f)
            self.assertEqual(
                (on_disk['step'],
                 os.path.basename(on_disk['latest_checkpoint']),
                 on_disk['wall_time']),
                (stopped_at, f'ckpt-{stopped_at}', results['wall_time']))
            wall_times.append(results['wall_time'])
        self.assertEqual(trainer.stop_signal, signal.SIGTERM)
        self.assertGreater(wall_times[1], wall_times[0] + 0.5)
        resumed = self._trainer_at(out, strategy, **settings)
        self.assertEqual(resumed.restore_or_initialize(), 'restored')
        self.assertEqual(resumed.step, 10)

    def test_only_the_newest_checkpoints_are_kept(self):
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=6, checkpoint_every=1,
                                keep_checkpoints=2, eval_every=1000,
                                export=False)
        trainer.train()
        ckpts = os.path.join(trainer.config.output_dir, 'checkpoints')
        self.assertEqual(sorted(n for n in os.listdir(ckpts)
                                if n.endswith('.index')),
                         ['ckpt-5.index', 'ckpt-6.index'])
        self.assertEqual([os.path.basename(p)
                          for p in trainer.manager.checkpoints],
                         ['ckpt-5', 'ckpt-6'])

    def test_a_non_finite_init_batch_is_refused_by_name(self):
        init = np.array(self.init)
        init[5, 1] = np.nan
        output_dir = os.path.join(self._dir(), 'run')
        # When the trainer is built: no output directory, no checkpoint.
        with self.assertRaisesRegex(ValueError, r'init_batch holds 1 '
                                    r'non-finite value\(s\)'):
            training.Trainer(
                _config(output_dir, export=False),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(self.batch), self.eval_fn, init)
        self.assertFalse(os.path.exists(output_dir))

    def test_labelled_batches_are_refused_by_name(self):
        labelled = tf.data.Dataset.from_tensor_slices(
            (self.batch, tf.zeros([GLOBAL_BATCH], tf.int64)))

        def train_input_fn(context, start_step=0):
            del start_step
            return labelled.batch(context.get_per_replica_batch_size(
                GLOBAL_BATCH), drop_remainder=True).repeat()

        with self.assertRaisesRegex(
                ValueError, r'train_input_fn must give batches of the data '
                r'alone; its elements are \(TensorSpec.*'
                r'`ds\.map\(lambda x, \*_: x\)`\.$'):
            training.Trainer(
                _config(self._dir(), export=False),
                tf.distribute.OneDeviceStrategy('/cpu:0'), train_input_fn,
                self.eval_fn, self.init)

    def test_the_seed_fixes_the_initial_weights(self):
        # They come from TF's global random state, which the trainer seeds:
        # random ops in between (or another process) do not move them.
        def weights(seed):
            trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                    preset='checkerboard_vflow_3_4', seed=seed)
            return [v.numpy() for v in trainer.model.trainable_variables]

        first = weights(3)
        tf.random.normal([7])
        again = weights(3)
        for a, b in zip(first, again):
            self.assertAllEqual(a, b)
        other = weights(4)
        self.assertFalse(all(np.array_equal(a, b)
                             for a, b in zip(first, other)))

    def test_damaged_checkpoints_never_restart_the_run(self):
        # A damaged newest checkpoint or state file falls back to the newest
        # checkpoint that loads; with none readable the run is refused and
        # the files stay as they are. Before, it started over from step 0
        # and its saves overwrote the good checkpoints.
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        first = self._trainer(strategy, train_steps=6)  # ckpt-0, -3, -6
        first.train()
        weights_at = {6: [v.numpy() for v in first.variables]}
        pristine = os.path.join(self._dir(), 'pristine')
        shutil.copytree(first.config.output_dir, pristine)

        def resume(damage):
            out = os.path.join(self._dir(), 'run')
            shutil.copytree(pristine, out)
            ckpts = os.path.join(out, 'checkpoints')
            damage(ckpts)
            trainer = training.Trainer(_config(out, train_steps=6), strategy,
                                       _fixed_batch_input_fn(self.batch),
                                       self.eval_fn, self.init)
            with self.assertLogs('absl', 'INFO') as logs:
                self.assertEqual(trainer.restore_or_initialize(),
                                 'restored')
            return trainer, '\n'.join(logs.output), ckpts

        def write(name, text):
            return lambda d: open(os.path.join(d, name), 'w').write(text)

        data = 'ckpt-6.data-00000-of-00001'
        for label, damage, step in [
                ('garbage state file', write('checkpoint', 'garbage {{'), 6),
                ('empty state file', write('checkpoint', ''), 6),
                ('no state file',
                 lambda d: os.remove(os.path.join(d, 'checkpoint')), 6),
                ('no index', lambda d: os.remove(
                    os.path.join(d, 'ckpt-6.index')), 3),
                ('truncated data', lambda d: os.truncate(
                    os.path.join(d, data), 100), 3),
                ('overwritten data', write(data, 'x' * 4096), 3),
                ('overwritten index', write('ckpt-6.index', 'x' * 300), 3),
                ('rolled back by hand', lambda d: [
                    os.remove(os.path.join(d, n)) for n in os.listdir(d)
                    if n.startswith('ckpt-6.')], 3),
                # What TF leaves when a save is killed: a part-written shard
                # in ckpt-N_temp/ and a state file not yet renamed.
                ('a save cut short', lambda d: [
                    os.makedirs(os.path.join(d, 'ckpt-9_temp')),
                    write(os.path.join('ckpt-9_temp', 'part-00000-of-00001'
                                       '.data-00000-of-00001.tempstate12'),
                          'x' * 4096)(d),
                    write('checkpoint.tmp0a9f', 'model_checkpoint_path')(d)],
                 6)]:
            with self.subTest(label):
                trainer, logs, ckpts = resume(damage)
                self.assertEqual(trainer.step, step)
                if step == 6:
                    for a, b in zip(trainer.variables, weights_at[6]):
                        self.assertAllEqual(a, b)
                if label in ('truncated data', 'overwritten data',
                             'overwritten index'):
                    self.assertIn('ckpt-6 cannot be read', logs)
                    self.assertIn('the newest checkpoint that can be read',
                                  logs)
                self.assertNotIn('Data-dependent initialisation', logs)
                if label == 'a save cut short':
                    self.assertIn('Removed what an interrupted save left',
                                  logs)
                self.assertEqual([n for n in os.listdir(ckpts)
                                  if 'temp' in n or 'tmp' in n], [])
                # The state file names the restored checkpoint (the export
                # and the rotation read it).
                self.assertEqual(tf.train.latest_checkpoint(ckpts),
                                 os.path.join(ckpts, f'ckpt-{step}'))
                # The rotation holds the readable ones, not the damaged.
                self.assertEqual(
                    [os.path.basename(p) for p in trainer.manager.checkpoints],
                    [f'ckpt-{s}' for s in range(0, step + 1, 3)])
                # The run goes on from there and saves.
                self.assertTrue(trainer.save().endswith('ckpt-' + str(step)))
                self.assertIn('ckpt-0.index', os.listdir(ckpts))
        # Nothing readable (data truncated, or every index gone): refused
        # by name, nothing written.
        for suffix in ('.data-00000-of-00001', '.index'):
            out = os.path.join(self._dir(), 'none')
            shutil.copytree(pristine, out)
            ckpts = os.path.join(out, 'checkpoints')
            for name in os.listdir(ckpts):
                if name.endswith(suffix):
                    if suffix == '.index':
                        os.remove(os.path.join(ckpts, name))
                    else:
                        os.truncate(os.path.join(ckpts, name), 10)
            before = sorted(os.listdir(ckpts))
            trainer = training.Trainer(_config(out, train_steps=6), strategy,
                                       _fixed_batch_input_fn(self.batch),
                                       self.eval_fn, self.init)
            with self.assertRaisesRegex(
                    ValueError, r'holds checkpoints but none can be read '
                    r'\(ckpt-6: .*; ckpt-3: .*; ckpt-0: .*\)\. Move them '
                    'away to start over, or use another output directory.'):
                trainer.restore_or_initialize()
            self.assertEqual(sorted(os.listdir(ckpts)), before)
            del trainer

    def test_a_first_save_cut_short_is_removed_before_the_init(self):
        # A new run killed in its first save leaves a part-written shard and
        # no checkpoint: the rerun initialises, and the shard goes.
        out = self._dir()
        partial = os.path.join(out, 'checkpoints', 'ckpt-0_temp')
        os.makedirs(partial)
        with open(os.path.join(partial, 'part-00000-of-00001.data-00000-'
                               'of-00001.tempstate7'), 'w') as f:
            f.write('x' * 4096)
        trainer = self._trainer_at(out, tf.distribute.OneDeviceStrategy(
            '/cpu:0'), train_steps=3)
        with self.assertLogs('absl', 'WARNING') as logs:
            self.assertEqual(trainer.restore_or_initialize(), 'initialized')
        self.assertIn('ckpt-0_temp', '\n'.join(logs.output))
        self.assertEqual(sorted(os.listdir(os.path.join(out, 'checkpoints'))),
                         ['checkpoint', 'ckpt-0.data-00000-of-00001',
                          'ckpt-0.index'])

    def test_resume_restores_step_lr_ema_and_weights(self):
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        first = self._trainer(strategy, train_steps=6)
        results = first.train()
        out = first.config.output_dir
        self.assertEqual(results['step'], 6)
        saved = ([v.numpy() for v in first.variables],
                 [s.numpy() for s in first.ema.shadows],
                 float(first.schedule(first.optimizer.iterations)),
                 [s.numpy() for s in first.optimizer.variables])
        # A new process-like trainer on the same directory.
        second = training.Trainer(_config(out, train_steps=9), strategy,
                                  _fixed_batch_input_fn(self.batch),
                                  self.eval_fn, self.init)
        self.assertEqual(second.restore_or_initialize(), 'restored')
        self.assertEqual(second.step, 6)
        self.assertAllClose(float(second.schedule(
            second.optimizer.iterations)), saved[2])
        for a, b in zip(second.variables, saved[0]):
            self.assertAllEqual(a, b)
        for a, b in zip(second.ema.shadows, saved[1]):
            self.assertAllEqual(a, b)
        for a, b in zip(second.optimizer.variables, saved[3]):
            self.assertAllEqual(a, b)
        with self.assertLogs('absl', 'INFO') as logs:
            results = second.train()
        self.assertEqual(results['step'], 9)
        with open(os.path.join(out, 'results.json')) as f:
            on_disk = json.load(f)
        self.assertEqual(on_disk['step'], 9)
        # The first run's settings are kept beside the new ones, and the
        # change is logged.
        self.assertEqual(on_disk['config']['train_steps'], 9)
        self.assertEqual(
            [(c['config']['train_steps'], c['until_step'])
             for c in on_disk['earlier_configs']], [(6, 6)])
        self.assertTrue(any('other settings than before: train_steps 6 -> 9'
                            in line for line in logs.output), logs.output)
        for key in ('train_bpd', 'test_bpd', 'wall_time', 'images_per_second',
                    'latest_checkpoint'):
            self.assertIn(key, on_disk)
        self.assertTrue(on_disk['latest_checkpoint'].endswith('-9'))

    def test_op_determinism_on_several_inter_op_threads_is_warned(self):
        # (Op determinism cannot be turned off again in a process; the
        # runs it makes identical are in test_train_cli.)
        with mock.patch.object(loop.tf_config, 'is_op_determinism_enabled',
                               return_value=True):
            with self.assertLogs('absl', 'WARNING') as logs:
                # pylint: disable-next=protected-access
                loop._warn_if_op_order_varies()
            self.assertIn('set_inter_op_parallelism_threads(1)',
                          logs.output[0])
            with mock.patch.dict(os.environ, TF_NUM_INTEROP_THREADS='1'):
                with self.assertNoLogs('absl', 'WARNING'):
                    # pylint: disable-next=protected-access
                    loop._warn_if_op_order_varies()
        with self.assertNoLogs('absl', 'WARNING'):
            loop._warn_if_op_order_varies()  # pylint: disable=protected-access

    def test_tensorboard_shows_the_rerun_after_a_hard_kill(self):
        # A process killed after its checkpoint of step 3 may have written
        # the summaries of steps 4-6; its rerun writes them again. The event
        # files then hold both; TensorBoard's Python loader shows the
        # rerun's because the rerun's file starts with a SessionLog.START.
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.backend.event_processing import (
            plugin_event_accumulator)
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        out = self._dir()
        kwargs = dict(log_every=1, eval_every=1000, export=False)
        self._trainer_at(out, strategy, train_steps=3, **kwargs).train()
        before = os.path.join(self._dir(), 'before')
        shutil.copytree(out, before)
        self._trainer_at(out, strategy, train_steps=6, **kwargs).train()
        # The kill: nothing of step 6 but its summaries reached the disk.
        for name in ('checkpoints', 'results.json'):
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
                shutil.copytree(os.path.join(before, name), path)
            else:
                shutil.copy(os.path.join(before, name), path)
        time.sleep(1.1)  # A new process: its event file's name sorts last.
        self._trainer_at(out, strategy, train_steps=6, max_lr=2e-3,
                         **kwargs).train()

        summaries = os.path.join(out, 'summaries')
        written = sorted(
            event.step
            for path in glob.glob(os.path.join(summaries, 'events.*'))
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value
            if value.tag == 'train/learning_rate')
        self.assertEqual(written, [1, 2, 3, 4, 4, 5, 5, 6, 6])
        loaded = plugin_event_accumulator.EventAccumulator(summaries)
        loaded.Reload()
        shown = [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                 for e in loaded.Tensors('train/learning_rate')]
        self.assertEqual([step for step, _ in shown], [1, 2, 3, 4, 5, 6])
        self.assertAllClose([rate for _, rate in shown],
                            [1e-3] * 3 + [2e-3] * 3)

    def test_non_finite_loss_stops_without_saving_it(self):
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=6, checkpoint_every=3)
        trainer.restore_or_initialize()
        first = trainer.manager.latest_checkpoint
        weights = [v for v in trainer.variables if 'linear' in v.name
                   or 'mix' in v.name][0]
        weights.assign(tf.fill(weights.shape, float('nan')))
        # ckpt-0 holds the initialisation, which a rerun does not redo.
        with self.assertRaisesRegex(FloatingPointError,
                                    'last good checkpoint is .*-0. It holds '
                                    'the initialisation, so a rerun starts '
                                    'from it again; to initialise anew'):
            trainer.train()
        self.assertEqual(trainer.manager.latest_checkpoint, first)

    def test_a_degenerate_initialisation_is_refused_and_not_saved(self):
        # One image gives every per-element ActNorm (Flow++'s) one value per
        # parameter, so its scales blow up and the mean bound goes below 0
        # bits/dim, which a normalised model of 8-bit data cannot reach. Saved,
        # it would be the checkpoint that every rerun resumes from.
        images = np.random.RandomState(1).randint(
            0, 256, (16, 8, 8, 3)).astype(np.uint8)

        def trainer(init):
            return training.Trainer(
                _config(out, preset='tiny_flowpp', train_steps=1,
                        eval_every=1, init_batch_size=len(init),
                        export=False),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(images[:8]),
                _fixed_batch_input_fn(images[:8], repeat=False), init)

        out = self._dir()
        with self.assertRaisesRegex(
                FloatingPointError, r'initialisation on 1 examples gives '
                r'-\d+\.\d+ bits/dim; a normalised model of discrete data '
                r'cannot go below 0, .* Not saved; use a larger '
                r'init batch'):
            trainer(images[:1]).restore_or_initialize()
        self.assertFalse(os.path.exists(os.path.join(out, 'checkpoints',
                                                     'checkpoint')))
        # The same run directory then starts afresh from a proper batch.
        self.assertEqual(trainer(images).restore_or_initialize(),
                         'initialized')

    def _poisoned_trainer(self, target, norm=None, **settings):
        """A trainer whose third step fills `target(trainer)` with NaN.

        With `norm`, that step also reports `norm` as its gradient norm.
        `settings` override the trainer's config.
        Returns the trainer, its initial checkpoint and the list of steps.
        """
        config = dict(train_steps=6, checkpoint_every=3, eval_every=1000,
                      export=False)
        config.update(settings)
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                **config)
        trainer.restore_or_initialize()
        real_step, calls = trainer._train_step, []
        variable = target(trainer)

        def poisoned_step(iterator, stop_vote):
            loss, step_norm, votes = real_step(iterator, stop_vote)
            calls.append(None)
            if len(calls) == 3:
                variable.assign(tf.fill(variable.shape, float('nan')))
                if norm is not None:
                    step_norm = tf.constant(norm)
            return loss, step_norm, votes

        trainer._train_step = poisoned_step
        return trainer, trainer.manager.latest_checkpoint, calls

    def _assert_stopped_at_step_3(self, poisoned, message):
        """`train()` of a `_poisoned_trainer(...)` (given as the triple it
        returns) raises FloatingPointError matching `message` at the third
        step, and its initial checkpoint stays the newest."""
        trainer, first, calls = poisoned
        with self.assertRaisesRegex(FloatingPointError, message):
            trainer.train()
        self.assertLen(calls, 3)
        self.assertEqual(trainer.manager.latest_checkpoint, first)

    def test_non_finite_update_is_never_saved(self):
        # An infinite gradient at the last step before a save: clipping turns
        # every gradient into NaN and the update poisons the weights, while
        # that step's loss (computed before the update) is finite.
        self._assert_stopped_at_step_3(
            self._poisoned_trainer(lambda t: t.variables[0],
                                   norm=float('inf')),
            'gradient norm between steps 1 and 3; the last good checkpoint '
            'is .*-0')

    def test_non_finite_weights_after_a_finite_step_are_never_saved(self):
        # An update can turn finite gradients into NaN weights (Adam's
        # epsilon underflowing to 0 makes a zero gradient's update 0/0):
        # that step's loss and gradient norm are finite, and a NaN EMA never
        # shows in the loss at all. Only the saved values themselves tell.
        for target in (lambda t: t.variables[0], lambda t: t.ema.shadows[0]):
            self._assert_stopped_at_step_3(
                self._poisoned_trainer(target),
                'Non-finite model, optimizer or EMA values at step 3; not '
                'saved. The last good checkpoint is .*-0')

    def test_resume_continues_the_checkerboard_stream_exactly(self):
        # Two replicas, so one step takes two batches of the input pipeline.
        strategy = _mirrored()
        inputs = training.training_inputs('checkerboard', GLOBAL_BATCH,
                                          init_batch_size=64, seed=7)

        def run(out, steps, input_fn):
            config = _config(out, preset='checkerboard_vflow_3_4',
                             train_steps=steps, eval_every=1000,
                             eval_batches=1, export=False)
            tf.random.set_seed(11)  # The same initial weights every run.
            trainer = training.Trainer(config, strategy, input_fn,
                                       inputs.eval_input_fn,
                                       inputs.init_batch)
            trainer.train()
            return [v.numpy() for v in trainer.variables]

        whole = run(self._dir(), 6, inputs.train_input_fn)
        out = self._dir()
        run(out, 3, inputs.train_input_fn)
        copy = os.path.join(self._dir(), 'copy')
        shutil.copytree(out, copy)
        resumed = run(out, 6, inputs.train_input_fn)
        for a, b in zip(whole, resumed):
            self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)
        # Replaying the stream from its start instead trains other weights.
        replayed = run(copy, 6, lambda context, start_step:
                       inputs.train_input_fn(context))
        self.assertGreater(max(float(np.max(np.abs(a - b)))
                               for a, b in zip(whole, replayed)), 1e-4)

    def test_a_signal_during_the_export_interrupts_it_cleanly(self):
        # The export cannot stop at a step: SIGTERM interrupts it like
        # Ctrl-C, so its staging directory is removed (the default SIGTERM
        # would end the process and leave it), and the handlers return.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3, export=True)
        out = trainer.config.output_dir
        before = signal.getsignal(signal.SIGTERM)

        def export_run(run_dir, **kwargs):
            del kwargs
            with file_io.staged_directory(
                    os.path.join(run_dir, 'saved_model')):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # Interrupted well before the end.

        with mock.patch.object(export, 'export_run', export_run):
            with self.assertRaises(KeyboardInterrupt):
                trainer.train()
        self.assertEqual(trainer.stop_signal, signal.SIGTERM)
        self.assertIs(signal.getsignal(signal.SIGTERM), before)
        self.assertEqual([n for n in os.listdir(out)
                          if 'saved_model' in n], [])
        with open(os.path.join(out, 'results.json')) as f:
            self.assertFalse(json.load(f)['completed'])

        # The handler's raise lost on the way (in a finalizer), so the
        # export ends as if no signal came, or turned by C into another
        # error: the signal interrupts all the same, and the run is not
        # taken for finished.
        before = signal.getsignal(signal.SIGINT)

        def lost(run_dir, **kwargs):
            del run_dir, kwargs
            self.assertTrue(lost_signals.send_lost_signal(signal.SIGINT))
            return 'an export'

        def turned_into_an_error(run_dir, **kwargs):
            del run_dir, kwargs
            lost_signals.send_signal_turned_into_an_error(signal.SIGINT)

        for export_run in (lost, turned_into_an_error):
            with self.subTest(export_run.__name__):
                again = self._trainer(
                    tf.distribute.OneDeviceStrategy('/cpu:0'),
                    train_steps=3, export=True)
                with mock.patch.object(export, 'export_run', export_run):
                    with self.assertRaises(KeyboardInterrupt):
                        again.train()
                self.assertEqual(again.stop_signal, signal.SIGINT)
                self.assertIs(signal.getsignal(signal.SIGINT), before)
                with open(os.path.join(again.config.output_dir,
                                       'results.json')) as f:
                    results = json.load(f)
                self.assertFalse(results['completed'])
                self.assertNotIn('saved_model', results)

    def test_a_signal_before_the_first_step_is_a_stop(self):
        # From the call on, `train` takes a signal for a stop request (the
        # caller's handler, which raises, could have its exception dropped
        # by C code): one while it reads the earlier results stops the run
        # as a request made before the call does.
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        out = self._dir()
        self._trainer_at(out, strategy, train_steps=2,
                         export=False).train()
        trainer = self._trainer_at(out, strategy, train_steps=8,
                                   export=False)
        self.assertEqual(trainer.restore_or_initialize(), 'restored')
        real_read_json = file_io.read_json

        def read_json_then_signal(path):
            os.kill(os.getpid(), signal.SIGTERM)
            return real_read_json(path)

        caller_saw = []

        def caller_handler(signum, frame):
            del frame
            caller_saw.append(signum)

        before = signal.signal(signal.SIGTERM, caller_handler)
        try:
            with mock.patch.object(file_io, 'read_json',
                                   read_json_then_signal):
                results = trainer.train()
            self.assertIs(signal.getsignal(signal.SIGTERM), caller_handler)
        finally:
            signal.signal(signal.SIGTERM, before)
        self.assertEqual(caller_saw, [])
        self._assert_stopped_after_step_4(trainer, results, signal.SIGTERM)

    def test_results_name_no_export_of_an_earlier_step(self):
        # Trained on with --noexport, results.json no longer names the
        # export of the earlier step as the run's model.
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        first = self._trainer(strategy, train_steps=3, export=True)
        out = first.config.output_dir
        self.assertIn('saved_model', first.train())
        again = training.Trainer(_config(out, train_steps=3, export=False),
                                 strategy, _fixed_batch_input_fn(self.batch),
                                 self.eval_fn, self.init)
        self.assertIn('saved_model', again.train())  # nothing trained
        on = training.Trainer(_config(out, train_steps=6, export=False),
                              strategy, _fixed_batch_input_fn(self.batch),
                              self.eval_fn, self.init)
        self.assertNotIn('saved_model', on.train())
        with open(os.path.join(out, 'results.json')) as f:
            self.assertNotIn('saved_model', json.load(f))

    def test_a_signal_stops_the_final_bound_and_a_rerun_finishes_it(self):
        config = dict(train_steps=3, eval_every=3, iw_samples=4,
                      iw_images=8, export=True)
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                **config)
        out = trainer.config.output_dir
        real_evaluate = trainer.evaluate

        def evaluate_then_signal():
            # As if SIGINT arrived once training had finished.
            bpd = real_evaluate()
            trainer.request_stop()
            return bpd

        trainer.evaluate = evaluate_then_signal
        results = trainer.train()
        self.assertEqual(results['step'], 3)
        self.assertNotIn('test_bpd_iw', results)
        self.assertFalse(os.path.exists(os.path.join(out, 'saved_model')))
        # The same command again: only the bound and the export remain.
        rerun = training.Trainer(_config(out, **config),
                                 tf.distribute.OneDeviceStrategy('/cpu:0'),
                                 _fixed_batch_input_fn(self.batch),
                                 self.eval_fn, self.init)
        results = rerun.train()
        self.assertTrue(np.isfinite(results['test_bpd_iw']))
        self.assertEqual(results['test_bpd_iw_step'], 3)
        saved_model = os.path.join(out, 'saved_model')
        self.assertTrue(os.path.exists(saved_model))
        # And once more: the bound of this checkpoint is in results.json
        # and is not computed again; the export of it is kept (an export
        # replaces the directory, so a new one has another inode).
        exported = os.stat(saved_model).st_ino
        again = training.Trainer(_config(out, **config),
                                 tf.distribute.OneDeviceStrategy('/cpu:0'),
                                 _fixed_batch_input_fn(self.batch),
                                 self.eval_fn, self.init)

        def must_not_run():
            raise AssertionError('the bound was computed again')

        again.evaluate_importance_weighted = must_not_run
        # absl's logger: its own level (set by absl's verbosity, which
        # other tests change) would keep INFO records from the root.
        with self.assertLogs('absl', 'INFO') as logs:
            self.assertEqual(again.train()['test_bpd_iw'],
                             results['test_bpd_iw'])
        self.assertEqual(os.stat(saved_model).st_ino, exported)
        self.assertTrue(any('already holds the export' in line
                            for line in logs.output), logs.output)
        # Another sample count is another computation.
        other = training.Trainer(
            _config(out, **dict(config, iw_samples=2)),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch), self.eval_fn, self.init)
        calls = self._count_bounds(other)
        self.assertEqual(other.train()['test_bpd_iw_step'], 3)
        self.assertLen(calls, 1)
        # ... and another export, with its own default sample count.
        self.assertNotEqual(os.stat(saved_model).st_ino, exported)
        self.assertEqual(
            export.load_metadata(saved_model)['default_num_samples'], 2)
        # Fewer steps than the checkpoint's: nothing trains, and the log
        # says whose results these are.
        fewer = training.Trainer(
            _config(out, **dict(config, train_steps=2)),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch), self.eval_fn, self.init)
        with self.assertLogs(level='WARNING') as logs:
            self.assertEqual(fewer.train()['step'], 3)
        self.assertTrue(any('The checkpoint is at step 3, past train_steps=2'
                            in line for line in logs.output), logs.output)

    def test_another_model_in_the_same_directory_is_refused(self):
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3, export=False,
                                dataset='checkerboard')
        trainer.train()
        out = trainer.config.output_dir

        def resume(**kwargs):
            return training.Trainer(
                _config(out, train_steps=3, export=False, **kwargs),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(self.batch), self.eval_fn,
                self.init).restore_or_initialize()

        with self.assertRaisesRegex(ValueError, "holds a run of preset "
                                    "'checkerboard_glow_3', not "
                                    "'checkerboard_glow_2'"):
            resume(preset='checkerboard_glow_2')
        # Overrides that change the variables: the checkpoint does not fit.
        # The error says it all: TF's restore stops part-way, and no warning
        # of each value left in the checkpoint follows when the refused
        # trainer is collected.
        with self.assertNoLogs('tensorflow', level='WARNING'):
            with self.assertRaisesRegex(
                    ValueError, r'ckpt-3 is not a checkpoint of preset '
                    r"'checkerboard_glow_3' with overrides \{'hidden_units': "
                    r"\(8, 8\)\} \(results.json: overrides \{\}\)"):
                resume(preset_overrides={'hidden_units': (8, 8)})
            gc.collect()
        # The message names another data set too.
        with self.assertRaisesRegex(ValueError, r'\(trained on checkerboard, '
                                    r'not checkerboard_large\): Received'):
            resume(preset_overrides={'hidden_units': (8, 8)},
                   dataset='checkerboard_large')
        # Without results.json the checkpoint itself does not match.
        os.remove(os.path.join(out, 'results.json'))
        with self.assertRaisesRegex(ValueError, r'ckpt-3 is not a checkpoint '
                                    r"of preset 'checkerboard_glow_2'"):
            resume(preset='checkerboard_glow_2')
        self.assertEqual(resume(), 'restored')

    def test_bad_config_is_one_clear_error(self):
        with self.assertRaisesRegex(ValueError, 'global_batch_size must be'):
            _config(self._dir(), global_batch_size=-4).validate()
        with self.assertRaisesRegex(ValueError, 'Unknown preset'):
            _config(self._dir(), preset='nope').validate()
        with self.assertRaisesRegex(ValueError,
                                    r"no setting.*'width'.*valid "
                                    r'overrides: .*hidden_units'):
            _config(self._dir(), preset_overrides={'width': 3}).validate()
        # The valid overrides listed are those a config can set: not seed.
        with self.assertRaises(ValueError) as refused:
            _config(self._dir(), preset_overrides={'width': 3}).validate()
        self.assertNotIn("'seed'", str(refused.exception))
        self.assertIn("'scale_fn'", str(refused.exception))
        # The run's seed seeds the model; one among the overrides used to
        # reach `presets.build` twice and fail there.
        with self.assertRaisesRegex(ValueError, 'seed is not a preset '
                                    r'override.*--seed'):
            _config(self._dir(), preset_overrides={'seed': 5}).validate()
        with self.assertRaisesRegex(ValueError, 'optimizer must be one of'):
            _config(self._dir(), optimizer='sgd').validate()
        with self.assertRaisesRegex(ValueError, 'iw_images must be positive'):
            _config(self._dir(), iw_samples=4, iw_images=0).validate()
        with self.assertRaisesRegex(ValueError, r'adam_beta1 must be in '
                                    r'\[0, 1\); got 1.5'):
            _config(self._dir(), adam_beta1=1.5).validate()
        # The edges of each range: a decay of 1 never moves the average (or
        # divides Adam's bias correction by 0), and no checkpoint kept or
        # no importance sample per pass is no run.
        for field, edge, rule in (
                ('adam_beta2', 1.0, r'must be in \[0, 1\); got 1.0'),
                ('ema_decay', 1.0, r'must be in \[0, 1\); got 1.0'),
                ('keep_checkpoints', 0, 'must be positive; got 0'),
                ('iw_chunk_size', 0, 'must be positive; got 0')):
            with self.assertRaisesRegex(ValueError, f'{field} {rule}'):
                _config(self._dir(), **{field: edge}).validate()
        for field, edge in (('adam_beta2', 0.0), ('ema_decay', 0.0),
                            ('keep_checkpoints', 1), ('iw_chunk_size', 1)):
            _config(self._dir(), **{field: edge}).validate()
        with self.assertRaisesRegex(ValueError, 'adam_epsilon must be '
                                    'positive'):
            _config(self._dir(), adam_epsilon=-1.0).validate()
        # Positive, but 0 or inf in the float32 optimiser: NaN updates.
        with self.assertRaisesRegex(ValueError, 'adam_epsilon must be '
                                    'positive and representable in float32'
                                    r'.*got 1e-50\.$'):
            _config(self._dir(), adam_epsilon=1e-50).validate()
        with self.assertRaisesRegex(ValueError, 'max_lr must be positive and '
                                    r'representable in float32.*got 1e\+39'):
            _config(self._dir(), max_lr=1e39).validate()
        # The decay counts from hold_until: ending the warm-up after it
        # would drop the rate ~1,000x in one step.
        with self.assertRaisesRegex(ValueError, r'hold_until \(10\) must be '
                                    r'>= warmup_steps \(100\) when lr_decay '
                                    '< 1'):
            _config(self._dir(), warmup_steps=100, hold_until=10,
                    lr_decay=0.9, min_lr=1e-6).validate()
        with self.assertRaisesRegex(ValueError, r'lr_decay must be in'):
            _config(self._dir(), lr_decay=0.0).validate()
        # Evaluation and sampling seeds are int32 pairs (seed, n).
        for seed in (-1, 2**31):
            with self.assertRaisesRegex(ValueError, r'^seed must be in '
                                        rf'\[0, 2\*\*31\); got {seed}\.$'):
                _config(self._dir(), seed=seed).validate()
        _config(self._dir(), seed=2**31 - 1).validate()
        # Flow++ (configs/cifar_flowpp.flags): no decay, so no hold needed.
        _config(self._dir(), warmup_steps=2000, hold_until=0, lr_decay=1.0,
                max_lr=3e-4, min_lr=3e-4).validate()

    def test_negative_counts_and_sizes_are_refused(self):
        # Each of these is a count, size or bound that 0 switches off or
        # makes trivial; below 0 it has no meaning, and a negative
        # inverse_check_images would slice all but the last images
        # (x[:-1]) rather than stop. bin/train.py's flags have no lower
        # bounds for them: check_settings is the only guard.
        for name in ('eval_batches', 'num_samples', 'inverse_check_images',
                     'iw_samples', 'iw_images', 'warmup_steps',
                     'hold_until', 'clip_norm', 'min_lr',
                     'validation_size'):
            value = -1.0 if name in ('clip_norm', 'min_lr') else -1
            with self.assertRaisesRegex(
                    ValueError, rf'^{name} must be >= 0; got -1'):
                _config(self._dir(), **{name: value}).check_settings()

    def test_non_finite_float_settings_are_refused(self):
        # NaN fails every comparison, so `clip_norm < 0` let it through
        # (clipping silently off), as it did for the min_lr floor.
        float_fields = [f.name for f in dataclasses.fields(
            training.TrainConfig) if f.type in (float, 'float')]
        self.assertContainsSubset(['clip_norm', 'min_lr', 'max_lr',
                                   'lr_decay', 'ema_decay'], float_fields)
        # The two that NaN used to pass first; the others had range checks
        # that refused it under other messages.
        first = ['clip_norm', 'min_lr']
        for name in first + [n for n in float_fields if n not in first]:
            for value in (math.nan, math.inf, -math.inf):
                with self.assertRaisesRegex(
                        ValueError, rf'^{name} must be a finite number; '
                                    rf'got {value!r}\.$'):
                    _config(self._dir(), **{name: value}).validate()

    def test_settings_of_the_wrong_type_are_refused(self):
        # 2.5 steps would train 3, export='no' would export, and a float
        # batch size would fail deep inside TF.
        for name, value, wanted in (
                ('train_steps', 2.5, 'an integer'),
                ('global_batch_size', 8.0, 'an integer'),
                ('eval_batches', True, 'an integer'),
                ('export', 'no', 'True or False'),
                ('jit_compile', 1, 'True or False'),
                ('dataset', 3, 'a string')):
            with self.assertRaisesRegex(
                    ValueError, rf'^{name} must be {wanted}; got '
                                rf'{re.escape(repr(value))}\.$'):
                _config(self._dir(), **{name: value}).check_settings()
        # NumPy integers (a sweep's values) and paths are what they stand
        # for.
        config = _config(pathlib.Path(self._dir()), train_steps=np.int64(5))
        config.validate()
        self.assertEqual((type(config.train_steps), type(config.output_dir)),
                         (int, str))

    def test_output_dir_that_cannot_be_a_directory(self):
        a_file = os.path.join(self._dir(), 'a_file')
        with open(a_file, 'w') as f:
            f.write('x')
        for output_dir, message in (
                ('', "output_dir must name a directory; got ''"),
                (a_file, 'output_dir must be a directory; got .*a_file'),
                (os.path.join(a_file, 'run'),
                 'output_dir must be a directory that can be created'),
                # The same through tf.io.gfile, as for gs://.
                ('file://' + a_file,
                 'output_dir must be a directory; got .*a_file.*a file'),
                ('file://' + os.path.join(a_file, 'run'),
                 'output_dir must be a directory that can be created and '
                 'written; got .*a_file/run')):
            with self.assertRaisesRegex(ValueError, message):
                self._trainer_at(output_dir,
                                 tf.distribute.OneDeviceStrategy('/cpu:0'))

    def test_a_url_output_dir_holds_the_whole_run(self):
        # file:// takes tf.io.gfile's path, as gs:// does; Python's file
        # functions would write into a local "file:" directory instead.
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self._dir())
        run_dir = os.path.join(self._dir(), 'run')
        url = 'file://' + run_dir
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        results = self._trainer_at(url, strategy).train()
        self.assertEqual(os.listdir('.'), [])
        self.assertEqual(sorted(os.listdir(run_dir)),
                         ['checkpoints', 'results.json', 'saved_model',
                          'summaries'])
        self.assertEqual(results['latest_checkpoint'],
                         url + '/checkpoints/ckpt-6')
        self.assertEqual(results['saved_model'], url + '/saved_model')
        with open(os.path.join(run_dir, 'results.json')) as f:
            self.assertEqual(json.load(f)['step'], 6)
        self.assertEqual(export.load_metadata(url + '/saved_model')['step'],
                         6)
        # A rerun with more steps resumes from the URL's checkpoint and
        # replaces the export.
        with self.assertLogs('absl', 'INFO') as logs:
            results = self._trainer_at(url, strategy, train_steps=9).train()
        self.assertTrue(any(f'Resumed from {url}/checkpoints/ckpt-6' in line
                            for line in logs.output), logs.output)
        self.assertEqual(results['latest_checkpoint'],
                         url + '/checkpoints/ckpt-9')
        self.assertEqual(export.load_metadata(url + '/saved_model')['step'],
                         9)
        self.assertEqual(sorted(os.listdir(run_dir)),
                         ['checkpoints', 'results.json', 'saved_model',
                          'summaries'])
        self.assertEqual(os.listdir('.'), [])

    def test_latest_checkpoint_is_absolute_for_a_relative_output_dir(self):
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self._dir())
        trainer = self._trainer_at(
            'rel_run', tf.distribute.OneDeviceStrategy('/cpu:0'),
            train_steps=3, checkpoint_every=3, eval_every=3)
        results = trainer.train()
        with open(os.path.join('rel_run', 'results.json')) as f:
            on_disk = json.load(f)
        os.chdir(cwd)  # Elsewhere, the recorded path must still hold.
        for latest in (results['latest_checkpoint'],
                       on_disk['latest_checkpoint']):
            self.assertTrue(os.path.isabs(latest), latest)
            self.assertTrue(latest.endswith(
                os.path.join('rel_run', 'checkpoints', 'ckpt-3')), latest)
            self.assertTrue(os.path.exists(latest + '.index'), latest)

    def test_bad_step_group_override_names_the_setting(self):
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        for overrides, error, message in (
                ({'blocks': -1}, ValueError,
                 r'^blocks must be an integer >= 0; got -1\.$'),
                ({'filters': 0}, ValueError,
                 r'^filters must be an integer >= 1; got 0\.$'),
                ({'filters': 'abc'}, TypeError,
                 r"^filters must be an integer >= 1; got 'abc'\.$")):
            with self.assertRaisesRegex(error, message):
                self._trainer_at(self._dir(), strategy, preset='tiny_vflow',
                                 preset_overrides=overrides)

    def test_a_rerun_of_a_finished_run_rewrites_no_checkpoint(self):
        # Its final checkpoint stays as it is (a rewritten one would look
        # newer than the run's export, which would then be made again).
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        self._trainer_at(out, strategy, export=False).train()
        index = os.path.join(out, 'checkpoints', 'ckpt-6.index')
        before = os.stat(index).st_mtime_ns
        results = self._trainer_at(out, strategy, export=False).train()
        self.assertTrue(results['completed'])
        self.assertEqual(os.stat(index).st_mtime_ns, before)

    def test_a_rerun_of_a_finished_run_keeps_its_training_figures(self):
        # Nothing is trained again, so the figures of the training that
        # results.json holds stay as they were (not null or 0).
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        first = self._trainer_at(out, strategy, train_steps=3,
                                 export=False).train()
        again = self._trainer_at(out, strategy, train_steps=3,
                                 export=False).train()
        self.assertTrue(again['completed'])
        with open(os.path.join(out, 'results.json')) as f:
            on_disk = json.load(f)
        for key in ('train_bpd', 'images_per_second'):
            self.assertEqual(again[key], first[key], key)
            self.assertEqual(on_disk[key], first[key], key)

    def test_a_finished_run_s_lost_results_are_made_again(self):
        # results.json damaged, deleted, or without the final evaluation (a
        # kill between the last save and it): a rerun of the finished run
        # evaluates its final checkpoint again instead of reporting the run
        # completed without its test bits/dim, or with an earlier step's.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        settings = dict(iw_samples=2, export=False)
        first = self._trainer_at(out, strategy, **settings).train()
        path = os.path.join(out, 'results.json')

        def damage():
            with open(path, 'w') as f:
                f.write('{"step": 6, "conf')

        def earlier_evaluation():
            with open(path) as f:
                results = json.load(f)
            results.update(test_bpd=99.0, test_bpd_step=3)
            with open(path, 'w') as f:
                json.dump(results, f)

        for change in (damage, lambda: os.remove(path), earlier_evaluation):
            change()
            with self.assertLogs('absl', 'INFO') as logs:
                results = self._trainer_at(out, strategy, **settings).train()
            self.assertTrue(results['completed'])
            self.assertEqual((results['step'], results['test_bpd_step']),
                             (6, 6))
            # The same checkpoint, evaluated with the same fixed noise.
            self.assertEqual(results['test_bpd'], first['test_bpd'])
            self.assertEqual(results['test_bpd_iw'], first['test_bpd_iw'])
            with open(path) as f:
                self.assertEqual(json.load(f)['test_bpd'], first['test_bpd'])
            self.assertTrue(any('step 6 | test bpd (ELBO, EMA)' in line
                                for line in logs.output))
            self.assertEqual(
                any(re.search(r'results.json cannot be read \(.*\); moved '
                              r'to .*unreadable-\d+, the run goes on from '
                              r'its checkpoints', line)
                    for line in logs.output), change is damage)
        # The damaged file is kept aside, as it was.
        aside = glob.glob(path + '.unreadable-*')
        self.assertLen(aside, 1)
        with open(aside[0]) as f:
            self.assertEqual(f.read(), '{"step": 6, "conf')

    def test_a_checkpoint_of_another_dtype_is_another_model_s(self):
        # A float64 run's checkpoint does not load into the float32 model
        # (TF's restore says InvalidArgumentError): that is another model's
        # checkpoint, not a damaged one to skip for an older one.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        self._trainer_at(out, strategy, train_steps=3, export=False,
                         preset_overrides={'dtype': 'float64'}).train()
        with self.assertRaisesRegex(ValueError, r'ckpt-3 is not a checkpoint '
                                    r"of preset 'checkerboard_glow_3' with "
                                    r'overrides \{\} \(results.json: '
                                    r"overrides \{'dtype': 'float64'\}\)"):
            self._trainer_at(out, strategy, train_steps=3,
                             export=False).restore_or_initialize()

    def test_a_stop_between_log_steps_logs_and_records_its_window(self):
        # The steps since the last log line end with the stop: they are
        # logged and their training bits/dim recorded, as at a log step.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=20, checkpoint_every=100,
                                log_every=100, eval_every=4, export=False)
        real_evaluate = trainer.evaluate

        def evaluate_then_signal():
            bpd = real_evaluate()
            if trainer.step == 4:
                trainer.request_stop()
            return bpd

        trainer.evaluate = evaluate_then_signal
        with self.assertLogs('absl', 'INFO') as logs:
            results = trainer.train()
        self.assertEqual(results['step'], 6)
        self.assertLen([r for r in logs.output if 'step 6/20 | train bpd'
                        in r], 1)
        self.assertTrue(math.isfinite(results['train_bpd']))

    def test_a_non_finite_gradient_norm_stops_a_save_between_log_steps(self):
        # A non-finite loss or gradient norm stops the run before the next
        # save (module docstring), also at a checkpoint step that is neither
        # a log nor an evaluation step, and the error names the steps.
        self._assert_stopped_at_step_3(
            self._poisoned_trainer(lambda t: t.variables[0],
                                   norm=float('inf'), log_every=100),
            'Non-finite loss or gradient norm between steps 1 and 3; the '
            'last good checkpoint is .*-0')

    def test_only_the_step_0_checkpoint_is_called_the_initialisation(self):
        # The note that a rerun starts from the initialisation again is for
        # ckpt-0 alone; ckpt-10 holds ten steps of training.
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=10, checkpoint_every=5,
                                log_every=5, eval_every=1000, export=False)
        trainer.train()
        weights = trainer.variables[0]
        weights.assign(tf.fill(weights.shape, float('nan')))
        with self.assertRaisesRegex(FloatingPointError,
                                    r'last good checkpoint is \S*ckpt-10\.'
                                    ) as raised:
            trainer.save()
        self.assertNotIn('initialisation', str(raised.exception))

    def test_tensorboard_shows_the_rerun_after_a_kill_before_any_save(self):
        # Killed after its initial checkpoint (ckpt-0) but after writing
        # the summaries of steps 1 and 2: the rerun resumes at step 0, and
        # its file starts with a SessionLog.START at step 1 all the same,
        # so TensorBoard's Python loader shows the rerun's summaries.
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.backend.event_processing import (
            plugin_event_accumulator)
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        out = self._dir()
        kwargs = dict(train_steps=2, log_every=1, checkpoint_every=100,
                      eval_every=1000, export=False)
        self._trainer_at(out, strategy, **kwargs).restore_or_initialize()
        before = os.path.join(self._dir(), 'before')
        shutil.copytree(os.path.join(out, 'checkpoints'), before)
        self._trainer_at(out, strategy, **kwargs).train()
        # The kill: nothing but the summaries reached the disk.
        shutil.rmtree(os.path.join(out, 'checkpoints'))
        shutil.copytree(before, os.path.join(out, 'checkpoints'))
        os.remove(os.path.join(out, 'results.json'))
        time.sleep(1.1)  # A new process: its event file's name sorts last.
        self._trainer_at(out, strategy, max_lr=2e-3, **kwargs).train()
        loaded = plugin_event_accumulator.EventAccumulator(
            os.path.join(out, 'summaries'))
        loaded.Reload()
        shown = [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                 for e in loaded.Tensors('train/learning_rate')]
        self.assertEqual([step for step, _ in shown], [1, 2])
        self.assertAllClose([rate for _, rate in shown], [2e-3] * 2)

    def test_a_rerun_of_a_finished_run_is_not_past_train_steps(self):
        # The checkpoint is at train_steps, not past it: a rerun of the
        # same command gives no warning that the results are another
        # step's.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        self._trainer_at(out, strategy, train_steps=3, export=False).train()
        with self.assertLogs('absl', 'INFO') as logs:
            self.assertTrue(self._trainer_at(
                out, strategy, train_steps=3, export=False).train()[
                    'completed'])
        self.assertEqual([r for r in logs.output if 'past train_steps' in r],
                         [])


class RecordedResultsTest(_TrainerFixture, tf.test.TestCase):
    """What results.json records, and when a rerun reuses its final bound."""

    def test_the_bound_is_made_again_when_its_step_was_trained_again(self):
        # The final checkpoint damaged: the rerun falls back to step 3 and
        # trains steps 4-6 again (to other weights if its input order
        # differs), so the recorded bound of step 6 is not this model's.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        config = dict(iw_samples=2, iw_images=8, export=False)
        self._trainer_at(out, strategy, **config).train()
        os.truncate(os.path.join(out, 'checkpoints',
                                 'ckpt-6.data-00000-of-00001'), 100)
        rerun = self._trainer_at(out, strategy, **config)
        calls = self._count_bounds(rerun)
        self.assertEqual(rerun.train()['test_bpd_iw_step'], 6)
        self.assertLen(calls, 1)

    def test_settings_are_compared_as_results_json_holds_them(self):
        # A tuple setting is recorded as a list, and the run's directory may
        # be named another way: neither is a change of settings, so the
        # bound is reused and no earlier config is recorded. (Recomputing
        # it takes hours at the paper's 4,096 samples.)
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        config = dict(iw_samples=2, iw_images=8, export=False,
                      preset_overrides={'hidden_units': (16, 16)})
        trainer = self._trainer_at(out, strategy, **config)
        trainer.train()
        # One list of bound computations per trainer, each to stay empty.
        counts = [self._count_bounds(trainer)]
        trainer.train()  # called again, as after a stop
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(os.path.dirname(out))
        for name in (out + os.sep, os.path.basename(out)):
            rerun = self._trainer_at(name, strategy, **config)
            counts.append(self._count_bounds(rerun))
            self.assertTrue(rerun.train()['completed'])
        self.assertEqual(counts, [[], [], []])
        with open(os.path.join(out, 'results.json')) as f:
            self.assertNotIn('earlier_configs', json.load(f))
        # Bookkeeping and the schedule are other settings, recorded as such,
        # but not the bound's: the finished run's bound is reused.
        rerun = self._trainer_at(out, strategy, **dict(
            config, log_every=2, checkpoint_every=2, max_lr=5e-4))
        calls = self._count_bounds(rerun)
        self.assertTrue(rerun.train()['completed'])
        self.assertEmpty(calls)
        with open(os.path.join(out, 'results.json')) as f:
            self.assertLen(json.load(f)['earlier_configs'], 1)

    def test_a_change_of_what_the_bound_depends_on_makes_it_again(self):
        # The finished run's bound depends on its noise (seed, and XLA's
        # other draws), its sample counts and its passes: a rerun with any
        # of them changed computes the bound again rather than keep the
        # recorded one next to a config that did not produce it.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        config = dict(iw_samples=2, iw_images=8, iw_chunk_size=2,
                      export=False)
        self._trainer_at(out, strategy, **config).train()
        for change in (dict(seed=4), dict(iw_samples=3), dict(iw_images=4),
                       dict(iw_chunk_size=1), dict(jit_compile=True)):
            config.update(change)
            rerun = self._trainer_at(out, strategy, **config)
            calls = self._count_bounds(rerun)
            self.assertTrue(rerun.train()['completed'])
            self.assertLen(calls, 1, change)

    def test_results_without_checkpoints_are_not_replaced(self):
        # Checkpoints removed to free space, or another tool's directory:
        # a new run there replaced results.json (and the export) unasked.
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        out = self._dir()
        self._trainer_at(out, strategy, export=False).train()
        shutil.rmtree(os.path.join(out, 'checkpoints'))
        results = os.path.join(out, 'results.json')
        with open(results) as f:
            before = f.read()
        with self.assertRaisesRegex(
                ValueError, r'holds the results of a run \(results.json, step '
                r'6\) but no checkpoint to resume it from'):
            self._trainer_at(out, strategy).restore_or_initialize()
        with open(results) as f:
            self.assertEqual(f.read(), before)
        self.assertFalse(os.path.exists(os.path.join(out, 'checkpoints')))
        foreign = self._dir()
        with open(os.path.join(foreign, 'results.json'), 'w') as f:
            json.dump({'runs': []}, f)
        with self.assertRaisesRegex(ValueError, 'holds a results.json that '
                                    "is not a training run's"):
            self._trainer_at(foreign, strategy).restore_or_initialize()
        self.assertFalse(os.path.exists(os.path.join(foreign, 'checkpoints')))

    def test_a_figure_that_is_not_finite_is_recorded_as_null(self):
        # One evaluation point the model cannot score: results.json stays
        # JSON (no bare Infinity or NaN tokens), and the log says why.
        test = np.concatenate([self.batch[:-1], [[1e30, 0.0]]])
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        out = self._dir()

        def trainer():
            return training.Trainer(
                _config(out, train_steps=3, iw_samples=2, iw_images=8,
                        export=False),
                strategy, _fixed_batch_input_fn(self.batch),
                _fixed_batch_input_fn(test.astype(np.float32), repeat=False),
                self.init)

        with self.assertLogs('absl', 'WARNING') as logs:
            results = trainer().train()
        self.assertTrue(results['completed'])
        self.assertIsNone(results['test_bpd'])
        self.assertIsNone(results['test_bpd_iw'])
        self.assertLen([line for line in logs.output
                        if 'recorded as null' in line], 2, logs.output)

        def refuse(token):
            raise ValueError(f'not JSON: {token}')

        with open(os.path.join(out, 'results.json')) as f:
            recorded = json.load(f, parse_constant=refuse)
        self.assertIsNone(recorded['test_bpd'])
        self.assertEqual(recorded['test_bpd_iw_step'], 3)
        # A rerun reuses the recorded (null) bound and says so.
        rerun = trainer()
        calls = self._count_bounds(rerun)
        with self.assertLogs('absl', 'INFO') as logs:
            self.assertTrue(rerun.train()['completed'])
        self.assertEmpty(calls)
        self.assertTrue(any('not finite, from results.json' in line
                            for line in logs.output), logs.output)

    def test_every_earlier_config_is_kept(self):
        # Resumed twice with other settings: results.json keeps each config
        # the checkpoints came from, with the step it trained to.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        for steps in (3, 4, 5):
            self._trainer_at(out, strategy, train_steps=steps,
                             export=False).train()
        with open(os.path.join(out, 'results.json')) as f:
            on_disk = json.load(f)
        self.assertEqual(
            [(c['config']['train_steps'], c['until_step'])
             for c in on_disk['earlier_configs']], [(3, 3), (4, 4)])

    def test_a_reused_bound_logs_the_images_it_scored(self):
        # iw_images=16 on an evaluation split of 8 points: the bound scored
        # 8, and a rerun that reuses it from results.json says 8.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        config = dict(train_steps=3, iw_samples=2, iw_images=16, export=False)
        self.assertEqual(self._trainer_at(out, strategy, **config).train()[
            'iw_images'], 8)
        rerun = self._trainer_at(out, strategy, **config)
        calls = self._count_bounds(rerun)
        with self.assertLogs('absl', 'INFO') as logs:
            rerun.train()
        self.assertEmpty(calls)
        self.assertLen([r for r in logs.output if 'EMA, 8 images) ' in r
                        and 'from results.json (step 3)' in r], 1)

    def test_the_bound_is_reused_for_its_own_settings_only(self):
        # Bookkeeping and the schedule are not the bound's settings: a rerun
        # with other ones reuses it. Another evaluation split (more or
        # fewer held-out images) is other data: the bound is made again.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        config = dict(iw_samples=2, iw_images=8, export=False)
        self._trainer_at(out, strategy, **config).train()
        for change, bounds in ((dict(log_every=2, checkpoint_every=2,
                                     eval_every=2, max_lr=5e-4), 0),
                               (dict(validation_size=8), 1)):
            config.update(change)
            rerun = self._trainer_at(out, strategy, **config)
            calls = self._count_bounds(rerun)
            self.assertTrue(rerun.train()['completed'])
            self.assertLen(calls, bounds, change)

    def test_an_earlier_config_records_the_step_it_trained_to(self):
        # `until_step` is the step the checkpoints reached under that
        # config, not the train_steps it asked for: a rerun with a smaller
        # train_steps trains nothing, and its config held step 6.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        for steps in (6, 3, 7):
            self._trainer_at(out, strategy, train_steps=steps,
                             eval_every=1000, export=False).train()
        with open(os.path.join(out, 'results.json')) as f:
            on_disk = json.load(f)
        self.assertEqual(
            [(c['config']['train_steps'], c['until_step'])
             for c in on_disk['earlier_configs']], [(6, 6), (3, 6)])


class TaskTest(tf.test.TestCase):

    def test_the_chief_is_worker_0_unless_the_cluster_names_one(self):
        # The chief alone writes checkpoints, summaries and results
        # (README, Multi-worker): worker 0 is it only in a cluster without
        # a 'chief' task, or two processes would write the same files.
        task_of = loop._task  # pylint: disable=protected-access
        workers = ['host0:2222', 'host1:2222']
        for cluster, task, expected in (
                ({'worker': workers}, ('worker', 0), (True, 0)),
                ({'worker': workers}, ('worker', 1), (False, 1)),
                ({'chief': ['host2:2222'], 'worker': workers},
                 ('chief', 0), (True, 0)),
                ({'chief': ['host2:2222'], 'worker': workers},
                 ('worker', 0), (False, 0)),
                ({'chief': ['host2:2222'], 'worker': workers},
                 ('worker', 1), (False, 1))):
            tf_config = json.dumps({'cluster': cluster, 'task': {
                'type': task[0], 'index': task[1]}})
            with self.subTest(cluster=sorted(cluster), task=task), \
                    mock.patch.dict(os.environ, {'TF_CONFIG': tf_config}):
                strategy = types.SimpleNamespace(
                    cluster_resolver=tf.distribute.cluster_resolver
                    .TFConfigClusterResolver())
                self.assertEqual(task_of(strategy), expected)
        # One process without a cluster is the chief.
        self.assertEqual(task_of(tf.distribute.OneDeviceStrategy('/cpu:0')),
                         (True, 0))

    def test_a_process_without_tf_config_is_the_chief(self):
        # MultiWorkerMirroredStrategy without TF_CONFIG trains in one
        # process, which must write the run (README, Multi-worker): its
        # resolver names no task.
        with mock.patch.dict(os.environ):
            os.environ.pop('TF_CONFIG', None)
            strategy = types.SimpleNamespace(
                cluster_resolver=tf.distribute.cluster_resolver
                .TFConfigClusterResolver())
            task = loop._task  # pylint: disable=protected-access
            self.assertEqual(task(strategy), (True, 0))


class WriteJsonTest(tf.test.TestCase):

    def test_results_get_the_permissions_of_any_new_file(self):
        # Others (an exporting user, a serving container) read results.json.
        directory = self.get_temp_dir()
        path = os.path.join(directory, 'results.json')
        for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
            previous = os.umask(mask)
            try:
                training.write_json_atomic(path, {'mask': mask})
            finally:
                os.umask(previous)
            self.assertEqual(os.stat(path).st_mode & 0o777, mode)
            with open(path) as f:
                self.assertEqual(json.load(f), {'mask': mask})
        self.assertEqual(os.listdir(directory), ['results.json'])

    def test_values_that_are_not_json_are_refused(self):
        # Python would write bare NaN / Infinity tokens, which strict JSON
        # readers (jq, JavaScript) refuse; the earlier file stays.
        path = os.path.join(self.get_temp_dir(), 'results.json')
        training.write_json_atomic(path, {'test_bpd': 3.5})
        for value in (math.nan, math.inf):
            with self.assertRaisesRegex(ValueError, 'not JSON compliant'):
                training.write_json_atomic(path, {'test_bpd': value})
            with open(path) as f:
                self.assertEqual(json.load(f), {'test_bpd': 3.5})


class SharedRunDirectoryTest(_TrainerFixture, tf.test.TestCase):
    """What a worker other than the chief does with the chief's run
    directory (README, Multi-worker): it resumes from the chief's
    checkpoints and writes nothing there, its share of each checkpoint in a
    scratch directory that it removes. One process plays the worker (its
    task faked) and, for the workers' check, the other worker's values.
    Also how any process finds the checkpoints to resume from."""

    def _chief_run(self, **kwargs):
        """A chief's run directory, trained to step 3 (ckpt-0 and -3); the
        chief is gone, as if it ran in another process."""
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3, export=False, **kwargs)
        trainer.train()
        out = trainer.config.output_dir
        del trainer
        gc.collect()  # Releases its lock of the run directory.
        return out

    def _as_worker(self, build, scratch=None):
        """`build()`'s trainer as worker 1's (not the chief's), its scratch
        checkpoints under `scratch` (default: the process's temp dir)."""
        with mock.patch.object(loop, '_task', return_value=(False, 1)), \
                mock.patch.object(tempfile, 'tempdir',
                                  scratch or tempfile.gettempdir()):
            trainer = build()
        self.assertFalse(trainer.is_chief)
        return trainer

    def _worker(self, output_dir, scratch=None, **kwargs):
        """A worker's trainer on `output_dir` (see `_as_worker`)."""
        return self._as_worker(lambda: self._trainer_at(
            output_dir, tf.distribute.OneDeviceStrategy('/cpu:0'),
            **kwargs), scratch)

    def _snapshot(self, directory):
        """Every file under `directory` with its size and modification."""
        snapshot = {}
        for root, _, files in os.walk(directory):
            for name in files:
                info = os.stat(os.path.join(root, name))
                snapshot[os.path.relpath(os.path.join(root, name),
                                         directory)] = (info.st_size,
                                                        info.st_mtime_ns)
        return snapshot

    def test_a_worker_trains_from_the_chief_s_run_and_writes_nothing_there(
            self):
        out = self._chief_run()
        before = self._snapshot(out)
        scratch = self._dir()
        time.sleep(0.01)  # Any rewrite has a later modification time.
        worker = self._worker(out, scratch, train_steps=5)
        results = worker.train()
        self.assertTrue(results['completed'])
        self.assertEqual(results['step'], 5)
        self.assertEqual(worker.restore_or_initialize(), 'restored')
        # Its results name the chief's final checkpoint, not its own
        # scratch copy (gone now).
        self.assertEqual(results['latest_checkpoint'],
                         os.path.join(out, 'checkpoints', 'ckpt-5'))
        self.assertEqual(os.listdir(scratch), [])
        # No checkpoint, results, summaries, export or lock of its own.
        self.assertEqual(self._snapshot(out), before)

    def test_a_worker_leaves_what_it_cannot_read_to_the_chief(self):
        # An unreadable state file or results.json, or a save under way,
        # are the chief's to repair or remove: a worker resumes all the
        # same and changes none of them.
        out = self._chief_run()
        ckpts = os.path.join(out, 'checkpoints')
        for path, text in ((os.path.join(ckpts, 'checkpoint'), 'garbage {{'),
                           (os.path.join(out, 'results.json'), '{"step": 3'),
                           (os.path.join(ckpts, 'ckpt-6_temp', 'part-00000-'
                                         'of-00001.data-00000-of-00001'
                                         '.tempstate7'), 'x' * 64)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
        before = self._snapshot(out)
        time.sleep(0.01)
        worker = self._worker(out, train_steps=6)
        self.assertEqual(worker.restore_or_initialize(), 'restored')
        self.assertEqual(worker.step, 3)
        self.assertEqual(self._snapshot(out), before)

    def _sent(self, trainer):
        """The values `trainer` gives the all-reduce of the workers' check
        (`restore_or_initialize`'s first collective); it stops there."""
        sent = []

        class Sent(Exception):
            pass

        def record(values):
            sent.append(list(values))
            raise Sent()

        with mock.patch.object(trainer, '_sum_over_replicas', record), \
                self.assertRaises(Sent):
            trainer.restore_or_initialize()
        return sent[0]

    def _restore_beside(self, trainer, other):
        """`trainer.restore_or_initialize()` with `other` as a second
        worker: the all-reduce adds the values `other` gives it."""
        sent = self._sent(other)
        with mock.patch.object(trainer, '_sum_over_replicas',
                               lambda values: np.add(values,
                                                     sent[:len(values)])):
            return trainer.restore_or_initialize()

    def test_workers_agree_on_the_newest_checkpoint_not_its_path(self):
        # The workers' check compares the settings without output_dir (the
        # run may be mounted under other paths) and the step of the newest
        # checkpoint each found, and names the refusing worker's checkpoint
        # and where it looked.
        out = self._chief_run()
        mount = os.path.join(self._dir(), 'mount')
        shutil.copytree(out, mount)
        stale = os.path.join(self._dir(), 'stale')  # ckpt-3 not seen yet
        shutil.copytree(out, stale)
        for name in os.listdir(os.path.join(stale, 'checkpoints')):
            if name.startswith('ckpt-3.'):
                os.remove(os.path.join(stale, 'checkpoints', name))
        empty = self._dir()
        chief = self._trainer_at(out, tf.distribute.OneDeviceStrategy(
            '/cpu:0'))
        self.assertEqual(self._restore_beside(chief, self._worker(mount)),
                         'restored')
        ckpts = os.path.join(out, 'checkpoints')
        for this_dir, other_dir, latest in (
                (out, stale, os.path.join(ckpts, 'ckpt-3')),
                (out, empty, os.path.join(ckpts, 'ckpt-3')),
                (empty, out, 'none')):
            with self.subTest(this=os.path.basename(this_dir),
                              other=os.path.basename(other_dir)):
                searched = os.path.join(this_dir, 'checkpoints')
                with self.assertRaisesRegex(
                        RuntimeError,
                        r'The workers found different checkpoints to resume '
                        rf'from \(this one: {re.escape(latest)} in '
                        rf'{re.escape(searched)}\)'):
                    self._restore_beside(self._worker(this_dir),
                                         self._worker(other_dir))
        with self.assertRaisesRegex(RuntimeError, 'different settings'):
            self._restore_beside(self._worker(out),
                                 self._worker(mount, train_steps=9))

    def test_only_the_chief_writes_the_sample_grid(self):
        # samples.png and its summary are the chief's (README,
        # Multi-worker); a worker draws its share of the samples only.
        images = np.random.RandomState(0).randint(
            0, 256, (16, 8, 8, 3)).astype(np.uint8)
        out = self._dir()

        def build():
            return training.Trainer(
                _config(out, preset='tiny_vflow', init_batch_size=16,
                        num_samples=2, preset_overrides={'filters': 8}),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(images[:8]),
                _fixed_batch_input_fn(images[:8], repeat=False), images)

        worker = self._as_worker(build, self._dir())
        worker.restore_or_initialize()
        self.assertIsNone(worker.write_samples(1))
        self.assertEqual(os.listdir(out), [])
        chief = build()
        chief.restore_or_initialize()
        self.assertEqual(chief.write_samples(1),
                         os.path.join(out, 'samples.png'))

    def test_a_state_file_that_fails_to_read_hides_no_checkpoint(self):
        # Reading the checkpoints' state file can fail (say a bucket's
        # transient error): the checkpoints are found without it, and the
        # run resumes from the newest.
        out = self._chief_run()
        chief = self._trainer_at(out, tf.distribute.OneDeviceStrategy(
            '/cpu:0'))
        with mock.patch.object(tf.train, 'latest_checkpoint', side_effect=(
                tf.errors.UnavailableError(None, None, 'unavailable'))):
            self.assertEqual(chief.restore_or_initialize(), 'restored')
        self.assertEqual(chief.step, 3)

    def test_a_url_run_leaves_a_local_look_alike_alone(self):
        # Python's file functions take a URL for a relative local path
        # (file:///run is ./file:/run): a run in a URL removes nothing there,
        # here what looks like a save cut short.
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self._dir())
        run_dir = os.path.join(self._dir(), 'run')
        look_alike = os.path.join('file:' + run_dir, 'checkpoints',
                                  'ckpt-0_temp')
        os.makedirs(look_alike)
        chief = self._trainer_at('file://' + run_dir,
                                 tf.distribute.OneDeviceStrategy('/cpu:0'))
        self.assertEqual(chief.restore_or_initialize(), 'initialized')
        self.assertTrue(os.path.isdir(look_alike))

    def test_a_worker_s_refused_save_names_the_chief_s_last_checkpoint(self):
        # The last good checkpoint that a refused save names is the one a
        # rerun resumes from: the chief's, not the worker's scratch copy
        # (none yet, and gone when `train` returns).
        out = self._chief_run()
        worker = self._worker(out, self._dir())
        self.assertEqual(worker.restore_or_initialize(), 'restored')
        weights = worker.variables[0]
        weights.assign(tf.fill(weights.shape, float('nan')))
        chief_s = os.path.join(out, 'checkpoints', 'ckpt-3')
        with self.assertRaisesRegex(
                FloatingPointError,
                rf'last good checkpoint is {re.escape(chief_s)}\.'):
            worker.save()

    def test_a_worker_without_a_checkpoint_disagrees_with_one_at_step_0(
            self):
        # "None" is not step 0 in the workers' check: a worker that found
        # no checkpoint would initialise while one that found the chief's
        # ckpt-0 restores it (different collectives), so they are refused.
        initialized = self._dir()
        chief = self._trainer_at(initialized, tf.distribute.OneDeviceStrategy(
            '/cpu:0'), export=False)
        self.assertEqual(chief.restore_or_initialize(), 'initialized')
        del chief
        gc.collect()  # Releases its lock of the run directory.
        with self.assertRaisesRegex(
                RuntimeError, r'The workers found different checkpoints to '
                r'resume from \(this one: none in '):
            self._restore_beside(self._worker(self._dir()),
                                 self._worker(initialized))


class TrainConfigCheckTest(tf.test.TestCase):
    """`TrainConfig.check_settings` at the edges of the ranges its messages
    state, without a trainer."""

    def _check(self, **settings):
        try:
            _config(self.get_temp_dir(), **settings).check_settings()
        except ValueError as e:
            self.fail(f'{settings} refused: {e}')

    def _refused(self, message, **settings):
        """Asserts one `ValueError` matching `message` (not another error)."""
        try:
            _config(self.get_temp_dir(), **settings).check_settings()
        except ValueError as e:
            self.assertRegex(str(e), message)
        except Exception as e:  # pylint: disable=broad-except
            self.fail(f'{settings} raised {e!r}, not one ValueError')
        else:
            self.fail(f'{settings} accepted')

    def test_every_positive_count_refuses_zero(self):
        for name in ('global_batch_size', 'train_steps', 'init_batch_size',
                     'checkpoint_every', 'eval_every', 'log_every',
                     'keep_checkpoints', 'iw_chunk_size'):
            with self.subTest(name=name):
                self._refused(rf'^{name} must be positive; got 0\.$',
                              **{name: 0})

    def test_ranges_from_zero_refuse_negative_values(self):
        # Adam's betas and the EMA decay are in [0, 1): a negative one
        # would pass the upper bound alone.
        for name in ('adam_beta1', 'adam_beta2', 'ema_decay'):
            with self.subTest(name=name):
                self._refused(rf'^{name} must be in \[0, 1\); got -0\.5\.$',
                              **{name: -0.5})

    def test_float32_extremes_are_the_ends_of_the_range(self):
        # adam_epsilon and max_lr: in [tiny, max] of float32, both ends
        # included; a subnormal below tiny is refused.
        tiny = float(np.finfo(np.float32).tiny)
        biggest = float(np.finfo(np.float32).max)
        for name in ('adam_epsilon', 'max_lr'):
            with self.subTest(name=name):
                self._check(**{name: tiny, 'min_lr': 0.0})
                self._check(**{name: biggest})
                self._refused(rf'^{name} must be positive and representable',
                              **{name: float(np.nextafter(tiny, 0.0)),
                                 'min_lr': 0.0})

    def test_the_decay_may_start_where_the_warm_up_ends(self):
        # hold_until must be >= warmup_steps when lr_decay < 1: equal is
        # allowed, one step less is not.
        decaying = dict(warmup_steps=100, lr_decay=0.9, min_lr=1e-6)
        self._check(hold_until=100, **decaying)
        self._refused(r'^hold_until \(99\) must be >= warmup_steps \(100\)',
                      hold_until=99, **decaying)

    def test_preset_overrides_that_are_not_a_dict_are_one_error(self):
        for overrides in ([('hidden_units', (8, 8))], None, 'dropout=0.1'):
            with self.subTest(overrides=overrides):
                self._refused(r'^preset_overrides must be a dict; got ',
                              preset_overrides=overrides)

    def test_a_bool_is_no_float_setting(self):
        # A bool is a number to Python: clip_norm=True would clip at 1.0.
        for field in dataclasses.fields(training.TrainConfig):
            if field.type in (float, 'float'):
                with self.subTest(name=field.name):
                    self._refused(rf'^{field.name} must be a finite number; '
                                  r'got True\.$', **{field.name: True})

    def test_defaults_for_short_runs_from_python(self):
        # The docstring: train_steps and eval_every default to 1000 (the
        # flags to 100,000 and 5000), and dataset is a name only.
        config = training.TrainConfig(preset='checkerboard_glow_3',
                                      output_dir=self.get_temp_dir())
        self.assertEqual((config.train_steps, config.eval_every,
                          config.dataset), (1000, 1000, ''))

    def test_a_sweep_s_numpy_values_inside_overrides_are_plain(self):
        # `_plain`: numpy numbers and arrays (a sweep's values) are kept as
        # the Python values they stand for, also inside a preset override's
        # tuple, so that results.json can record them.
        for overrides, plain in (
                ({'hidden_units': (np.int64(8), np.int32(6))},
                 {'hidden_units': (8, 6)}),
                ({'hidden_units': np.array([8, 6])},
                 {'hidden_units': [8, 6]})):
            with self.subTest(overrides=overrides):
                self._check(preset_overrides=overrides)
                config = _config(self.get_temp_dir(),
                                 preset_overrides=overrides)
                self.assertEqual(config.preset_overrides, plain)
                self.assertEqual(
                    {type(v) for v in config.preset_overrides['hidden_units']},
                    {int})
                json.dumps(dataclasses.asdict(config))

    def test_the_first_importance_sample_needs_images(self):
        # "iw_images must be positive when iw_samples is set": one sample
        # (the ELBO's bound) is set too.
        self._check(iw_samples=1, iw_images=1)
        self._refused(r'^iw_images must be positive when iw_samples is set; '
                      r'got 0\.$', iw_samples=1, iw_images=0)
        self._check(iw_samples=0, iw_images=0)

    def test_an_override_results_json_cannot_record_names_itself(self):
        # check_settings: "one clear line for a bad setting", naming it,
        # also for a value json refuses with a ValueError (a list holding
        # itself, set after construction) rather than a TypeError.
        # Given to the constructor, the same value (a list or a dict
        # holding itself) reaches check_settings too, instead of the
        # constructor's conversion to plain values recursing without end.
        loop = []
        loop.append(loop)
        knot = {}
        knot['self'] = knot
        config = _config(self.get_temp_dir())
        config.preset_overrides = {'hidden_units': loop}
        message = (r"^preset_overrides\['hidden_units'\] must be a value "
                   'results.json can record')
        with self.assertRaisesRegex(ValueError, message):
            config.check_settings()
        for value in (loop, knot, (1, [loop])):
            with self.subTest(value=type(value).__name__):
                self._refused(message,
                              preset_overrides={'hidden_units': value})

    def test_plain_values_keep_the_kind_of_their_container(self):
        # `_plain` changes numpy numbers (a sweep's values) into Python ones
        # and nothing else: a tuple of them stays a tuple, a list a list.
        # (absltest's assertEqual takes (8, 6) and [8, 6] for equal.)
        for given in ((np.int64(8), np.int32(6)), [np.int64(8), 6]):
            with self.subTest(given=type(given).__name__):
                config = _config(self.get_temp_dir(),
                                 preset_overrides={'hidden_units': given})
                units = config.preset_overrides['hidden_units']
                self.assertIs(type(units), type(given))
                self.assertEqual([type(v) for v in units], [int, int])


class RarerBranchesTest(_TrainerFixture, tf.test.TestCase):
    """Signals, inputs, clocks, sample grids and reruns off the common
    path."""

    def _one_device(self, **kwargs):
        return self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                             export=False, **kwargs)

    def test_a_sighup_stops_training_as_sigterm_does(self):
        # SIGHUP (a foreground run's terminal closing) is one of the signals
        # that stop `train` (`stop_signal`: SIGTERM, SIGINT, SIGHUP): the run
        # stops after a step, saved, and the caller's handler never sees it.
        trainer = self._one_device(train_steps=8, checkpoint_every=100,
                                   log_every=100, eval_every=2)
        real_evaluate = trainer.evaluate

        def evaluate_then_hang_up():
            bpd = real_evaluate()
            if trainer.step == 2:
                os.kill(os.getpid(), signal.SIGHUP)
            return bpd

        trainer.evaluate = evaluate_then_hang_up
        caller_saw = []
        before = signal.signal(signal.SIGHUP,
                               lambda signum, frame: caller_saw.append(signum))
        try:
            results = trainer.train()
        finally:
            signal.signal(signal.SIGHUP, before)
        self.assertEqual(caller_saw, [])
        self._assert_stopped_after_step_4(trainer, results, signal.SIGHUP)

    def test_a_stop_request_names_its_signal_at_once(self):
        # `request_stop` acknowledges a signal at once on stderr, naming the
        # signal that arrived.
        trainer = self._one_device()
        with tempfile.TemporaryFile() as captured:
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                trainer.request_stop(signal.SIGINT)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            written = captured.read().decode()
        self.assertEqual(written, 'SIGINT: stopping after the current step, '
                                  'with a checkpoint.\n')

    def test_continuous_data_may_start_below_zero_bits_per_dim(self):
        # Only a model of discrete data (images) is bounded by 0 bits/dim;
        # a density of continuous points (the checkerboard, here on a
        # thousandth of its scale) can start below it, and must initialise.
        trainer = training.Trainer(
            _config(self._dir(), export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch * 1e-3),
            _fixed_batch_input_fn(self.batch * 1e-3, repeat=False),
            self.init * 1e-3)
        with self.assertLogs('absl', 'INFO') as logs:
            try:
                how = trainer.restore_or_initialize()
            except FloatingPointError as e:
                self.fail(f'a continuous model below 0 bits/dim is refused: '
                          f'{e}')
        self.assertEqual(how, 'initialized')
        bpd = float(re.search(r'initialisation on 64 examples in .* s: '
                              r'(-?[0-9.]+) bits/dim', '\n'.join(
                                  logs.output)).group(1))
        self.assertLess(bpd, 0.0)

    def test_an_evaluation_split_of_unknown_size_is_taken(self):
        # eval_input_fn must be finite, not of known size: one pass over a
        # filtered split (unknown cardinality) is taken with eval_batches=0.
        points = data.sample_checkerboard(16, seed=4)

        def filtered(input_context):
            del input_context
            return tf.data.Dataset.from_tensor_slices(points).filter(
                lambda x: x[0] > -10.0).batch(8)

        self.assertEqual(int(filtered(None).cardinality()),
                         tf.data.UNKNOWN_CARDINALITY)
        try:
            trainer = training.Trainer(
                _config(self._dir(), export=False),
                tf.distribute.OneDeviceStrategy('/cpu:0'),
                _fixed_batch_input_fn(self.batch), filtered, self.init)
        except ValueError as e:
            self.fail(f'a finite split of unknown size is refused: {e}')
        trainer.restore_or_initialize()
        trainer.evaluate()
        self.assertEqual(trainer.evaluated_images, 16)

    def test_non_finite_samples_do_not_end_the_run(self):
        # Samples are a diagnostic: the model's refusal of non-finite
        # samples (an overflowing inverse early in training) leaves no grid
        # and a warning, and training goes on; other errors are raised.
        trainer = self._one_device(num_samples=2, train_steps=3)

        def non_finite(*args, **kwargs):
            raise tf.errors.InvalidArgumentError(
                None, None, 'sample: the flow gave non-finite samples')

        with mock.patch.object(trainer.model, 'sample', non_finite), \
                self.assertLogs('absl', 'WARNING') as logs:
            try:
                results = trainer.train()
            except tf.errors.InvalidArgumentError as e:
                self.fail(f'non-finite samples end the run: {e.message}')
        self.assertTrue(results['completed'])
        self.assertTrue(any('no sample grid written' in line
                            for line in logs.output))

        def other_error(*args, **kwargs):
            raise tf.errors.InvalidArgumentError(None, None, 'bad shape')

        with mock.patch.object(trainer.model, 'sample', other_error):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'bad shape'):
                trainer.write_samples(3)

    def test_a_clock_that_stands_still_does_not_end_the_run(self):
        # A coarse clock can read the same time before and after fast
        # steps: the rate stays a finite figure, training goes on.
        trainer = self._one_device(train_steps=6, log_every=3)
        fake_time = types.SimpleNamespace(time=lambda: 1000.0)
        with mock.patch.object(training.loop, 'time', fake_time):
            try:
                results = trainer.train()
            except ZeroDivisionError as e:
                self.fail(f'a clock standing still ends the run: {e!r}')
        self.assertTrue(results['completed'])
        self.assertTrue(math.isfinite(results['images_per_second']))

    def test_another_global_batch_size_makes_the_bound_again(self):
        # The final bound's batches (and so its noise) follow
        # global_batch_size: a rerun of the finished run with another one
        # computes the bound again.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        calls = []
        for batch in (8, 4):
            inputs = training.training_inputs('checkerboard', batch,
                                              init_batch_size=64, seed=3)
            trainer = training.Trainer(
                _config(out, global_batch_size=batch, train_steps=3,
                        iw_samples=2, iw_images=8, export=False),
                strategy, inputs.train_input_fn, inputs.eval_input_fn,
                inputs.init_batch)
            calls = self._count_bounds(trainer)
            self.assertTrue(trainer.train()['completed'])
        self.assertLen(calls, 1)

    def test_a_rerun_of_a_finished_run_keeps_its_export(self):
        # A rerun of a finished run keeps the SavedModel it already has
        # (the same checkpoint's), not a new export of it.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        first = self._trainer_at(out, strategy, train_steps=3).train()
        graph = os.path.join(first['saved_model'], 'saved_model.pb')
        before = os.stat(graph).st_mtime_ns
        again = self._trainer_at(out, strategy, train_steps=3).train()
        self.assertEqual(again['saved_model'], first['saved_model'])
        self.assertEqual(os.stat(graph).st_mtime_ns, before)

    def test_a_trainer_that_is_gone_leaves_its_run_directory_unlocked(self):
        # The chief's lock on its run directory is held while the trainer
        # lives: once it is gone, another process may train there.
        trainer = self._one_device()
        lock = os.path.join(trainer.config.output_dir, file_io.LOCK_FILE)
        script = ('import fcntl, sys\nf = open(sys.argv[1], "a+")\n'
                  'try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n'
                  'except BlockingIOError:\n    sys.exit(3)\n')

        def other_process_locks():
            return subprocess.run([sys.executable, '-c', script, lock],
                                  check=False).returncode == 0

        self.assertFalse(other_process_locks())
        del trainer
        gc.collect()
        self.assertTrue(other_process_locks())

    def test_no_reconstruction_error_without_an_image_to_check(self):
        # The reconstruction check runs on the first evaluation batch of
        # this worker's first replica; a share with no image (fewer
        # evaluation images than replicas, here an empty first batch) has
        # no error to report: `None`, not the maximum of nothing (-inf).
        points = data.sample_checkerboard(4, seed=4).astype(np.float32)

        def eval_fn(input_context):
            del input_context
            return tf.data.Dataset.from_tensors(points[:0]).concatenate(
                tf.data.Dataset.from_tensor_slices(points).batch(4))

        trainer = training.Trainer(
            _config(self._dir(), preset='checkerboard_vflow_3_4',
                    inverse_check_images=2, export=False),
            tf.distribute.OneDeviceStrategy('/cpu:0'),
            _fixed_batch_input_fn(self.batch), eval_fn, self.init)
        trainer.restore_or_initialize()
        self.assertIsNone(trainer.reconstruction_error())

    def test_evaluations_are_summarised_as_test_bpd_at_their_steps(self):
        # The summaries hold the evaluation's bits/dim (README, Outputs)
        # under test/bpd at each evaluation step, apart from the training
        # bits/dim (train/bpd).
        trainer = self._one_device(train_steps=6, eval_every=3)
        results = trainer.train()
        written = {}
        for path in glob.glob(os.path.join(trainer.config.output_dir,
                                           'summaries', 'events*')):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    written.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
        test_bpd = written.get('test/bpd', [])
        self.assertEqual([step for step, _ in test_bpd], [3, 6])
        self.assertAllClose(test_bpd[-1][1], results['test_bpd'])
        self.assertEqual([step for step, _ in written['train/bpd']], [3, 6])
        self.assertAllClose(written['train/bpd'][-1][1], results['train_bpd'])

    def test_a_resumed_run_keeps_the_checkpoint_and_log_steps(self):
        # Checkpoints and log lines come every checkpoint_every and
        # log_every steps of the run, not counted from where a rerun
        # resumed: resumed at step 4, the next of each is step 6. The log
        # names step 5 as the one that traces.
        out = self._dir()
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        settings = dict(checkpoint_every=3, log_every=3, eval_every=1000,
                        export=False)
        self._trainer_at(out, strategy, train_steps=4, **settings).train()
        with self.assertLogs('absl', 'INFO') as logs:
            self._trainer_at(out, strategy, train_steps=8,
                             keep_checkpoints=10, **settings).train()
        ckpts = os.path.join(out, 'checkpoints')
        self.assertEqual(
            sorted(int(n[len('ckpt-'):-len('.index')])
                   for n in os.listdir(ckpts) if n.endswith('.index')),
            [0, 3, 4, 6, 8])
        self.assertEqual(
            [int(m[1]) for line in logs.output
             for m in [re.search(r'step (\d+)/8 \| train bpd', line)] if m],
            [6, 8])
        self.assertTrue(any('step 5 includes the tracing' in line
                            for line in logs.output), logs.output)

    def test_train_returns_after_a_collective_that_follows_the_export(self):
        # Every worker leaves `train` together: its last step is a
        # collective that the chief joins only once its export is done, so
        # no worker ends while the chief still exports (the chief's
        # coordination service would report it as crashed).
        trainer = self._trainer(tf.distribute.OneDeviceStrategy('/cpu:0'),
                                train_steps=3)
        events = []
        # pylint: disable-next=protected-access
        real_sum = trainer._sum_over_replicas
        real_export = loop.export_lib.export_run

        def collective(values):
            events.append('collective')
            return real_sum(values)

        def export_run(*args, **kwargs):
            events.append('export')
            return real_export(*args, **kwargs)

        with mock.patch.object(trainer, '_sum_over_replicas', collective), \
                mock.patch.object(loop.export_lib, 'export_run', export_run):
            self.assertTrue(trainer.train()['completed'])
        self.assertIn('export', events)
        self.assertEqual(events[-1], 'collective')


if __name__ == '__main__':
    tf.test.main()
