"""Trains under MirroredStrategy on two CPUs and checks the export at the end.

`python mirrored_export_worker.py OUTPUT_DIR REPORT.json`: trains
`checkerboard_vflow_3_4` for `run_config`'s 6 steps with `Trainer` (which
exports the EMA model to OUTPUT_DIR/saved_model), then writes how far the
loaded SavedModel's ELBO is from the in-memory model's with EMA and with raw
weights. A process of its own: the collectives of a second MirroredStrategy
in one process clash with those of the first (tensorflow/tensorflow#62790),
and test_trainer runs one.
"""

import json
import sys

import numpy as np
import tensorflow as tf

from vflow_tfp import data
from vflow_tfp import training


def run_config(output_dir, **kwargs):
    """The `TrainConfig` of the export tests' runs."""
    settings = dict(
        preset='checkerboard_vflow_3_4', output_dir=output_dir,
        dataset='checkerboard', global_batch_size=8, train_steps=6,
        max_lr=5e-3, warmup_steps=0, checkpoint_every=3, eval_every=6,
        eval_batches=2, log_every=3, num_samples=0, iw_samples=4,
        iw_images=8, ema_decay=0.5, seed=3,
        # Not the default 16, and not a divisor of iw_samples: the export
        # must take the run's own chunk size, remainder pass included.
        iw_chunk_size=3)
    settings.update(kwargs)
    return training.TrainConfig(**settings)


def run_inputs():
    return training.training_inputs('checkerboard', 8, init_batch_size=64,
                                    seed=3)


def main(output_dir, report_path):
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    inputs = run_inputs()
    trainer = training.Trainer(run_config(output_dir), strategy,
                               inputs.train_input_fn, inputs.eval_input_fn,
                               inputs.init_batch)
    results = trainer.train()
    x = data.sample_checkerboard(5, seed=9)
    loaded = tf.saved_model.load(results['saved_model']).signatures['elbo']
    got = loaded(x=tf.constant(x), seed=tf.constant([1, 2]))['elbo'].numpy()
    row_seeds = trainer.model.example_seeds(x, [1, 2])
    raw = trainer.model.elbo(x, seed=row_seeds).numpy()
    with trainer.ema.averaged_weights():
        ema = trainer.model.elbo(x, seed=row_seeds).numpy()
    with open(report_path, 'w') as f:
        json.dump({'replicas': strategy.num_replicas_in_sync,
                   'max_diff_ema': float(np.max(np.abs(got - ema))),
                   'max_diff_raw': float(np.max(np.abs(got - raw)))}, f)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
