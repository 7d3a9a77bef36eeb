"""Every op of the compiled computations has a GPU kernel for its dtypes.

No GPU is needed: TF's registry of GPU kernels (see gpu_kernels.py) tells
which ops would run on the host instead, each a copy off the GPU and back
at every call. The exported signatures are checked in test_export.py.
"""

import functools
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from vflow_tfp import data
from vflow_tfp import training
from vflow_tfp.models import presets
import gpu_kernels
import model_helpers

# Traced as the export traces its signatures (without autograph).
_function = functools.partial(tf.function, autograph=False)


class ModelGraphsTest(gpu_kernels.Assertions, tf.test.TestCase):
    """Training, importance-weighted scoring and sampling of the models."""

    def test_image_model(self):
        model = presets.build('tiny_vflow', seed=0)
        x = tf.constant(np.random.default_rng(0).integers(
            0, 256, (4, 8, 8, 3)), tf.uint8)
        seed = tf.constant([1, 2])
        self.assertNoHostOps(model_helpers.adam_step(model)
                             .get_concrete_function(x, seed))
        # 8-bit images as the exported scorer and the trainer give them,
        # several draws per pass (the data are repeated on the device).
        score = _function(lambda x, seed: model.log_prob(
            x, 5, chunk_size=2, seed=model.example_seeds(x, seed)))
        self.assertNoHostOps(score.get_concrete_function(x, seed),
                             allowed=[gpu_kernels.FINGERPRINT])
        sample = _function(lambda seed: model.sample(2, seed=seed))
        self.assertNoHostOps(sample.get_concrete_function(seed))

    def test_mixed_and_double_precision_train_steps(self):
        x = tf.zeros([2, 8, 8, 3], tf.uint8)
        seed = tf.constant([1, 2])
        for overrides in ({'compute_dtype': 'bfloat16'},
                          {'compute_dtype': 'float16'},
                          {'dtype': tf.float64}):
            with self.subTest(**{k: str(v) for k, v in overrides.items()}):
                model = presets.build('tiny_flowpp', seed=0, **overrides)
                self.assertNoHostOps(model_helpers.adam_step(model)
                                     .get_concrete_function(x, seed))

    def test_vector_model(self):
        model = presets.build('checkerboard_vflow_3_10', seed=0,
                              linear_top=True)
        x = tf.constant(data.sample_checkerboard(4, seed=0))
        seed = tf.constant([1, 2])
        self.assertNoHostOps(model_helpers.adam_step(model)
                             .get_concrete_function(x, seed))
        score = _function(lambda x, seed: model.log_prob(
            x, 5, chunk_size=2, seed=seed))
        self.assertNoHostOps(score.get_concrete_function(x, seed))


class TrainerGraphsTest(gpu_kernels.Assertions, tf.test.TestCase):
    """The trainer's compiled steps: schedule, clipping, EMA, evaluation."""

    def test_trainer_steps(self):
        output_dir = tempfile.mkdtemp(prefix='vflow_tfp_gpu_placement_')
        self.addCleanup(shutil.rmtree, output_dir, ignore_errors=True)
        # The data pipeline of bin/train.py's checkerboard runs.
        inputs = training.training_inputs('checkerboard', 8)
        config = training.TrainConfig(
            preset='checkerboard_vflow_3_10', output_dir=output_dir,
            global_batch_size=8, train_steps=1, max_lr=1e-3, warmup_steps=1,
            hold_until=1, checkpoint_every=1, eval_every=1, eval_batches=1,
            log_every=1, num_samples=0, init_batch_size=64, seed=0,
            export=False)
        trainer = training.Trainer(
            config, tf.distribute.OneDeviceStrategy('/cpu:0'),
            inputs.train_input_fn, inputs.eval_input_fn, inputs.init_batch)
        trainer.restore_or_initialize()
        trainer.train()   # traces the evaluation step for its data
        iterator = iter(trainer.strategy.distribute_datasets_from_function(
            inputs.train_input_fn))
        self.assertNoHostOps(trainer._train_step.get_concrete_function(
            iterator, tf.constant(0.0)))
        self.assertNoHostOps(trainer._eval_step.get_concrete_function())
        self.assertNoHostOps(trainer._all_finite.get_concrete_function())


class HostOpsTest(tf.test.TestCase):
    """The checker itself finds what a GPU cannot run."""

    def test_finds_ops_without_gpu_kernels(self):
        @tf.function
        def f(x, y):
            # No GPU kernel tiles uint8; float tiling and int32 shape
            # arithmetic are fine.
            return (tf.tile(x, [2, 1]), tf.tile(y, [2, 1]),
                    tf.fingerprint(x), tf.shape(y) * 2)

        found = gpu_kernels.host_ops(f.get_concrete_function(
            tf.zeros([1, 4], tf.uint8), tf.zeros([1, 4])).graph
            .as_graph_def())
        self.assertEqual(dict(found),
                         {('Tile', 'T=uint8,Tmultiples=int32'): 1,
                          gpu_kernels.FINGERPRINT: 1})

    def test_looks_into_loop_bodies(self):
        @tf.function
        def f(x):
            return tf.while_loop(lambda i, x: i < 2,
                                 lambda i, x: (i + 1, tf.tile(x, [1, 1])),
                                 (0, x))[1]

        found = gpu_kernels.host_ops(f.get_concrete_function(
            tf.zeros([1, 4], tf.uint8)).graph.as_graph_def())
        self.assertEqual(dict(found),
                         {('Tile', 'T=uint8,Tmultiples=int32'): 1})


if __name__ == '__main__':
    tf.test.main()
