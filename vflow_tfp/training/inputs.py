"""Input functions for `Trainer` from a dataset name."""

import dataclasses
from typing import Any, Callable, Tuple

import numpy as np
import tensorflow as tf

from vflow_tfp.data import checkerboard
from vflow_tfp.data import pipelines

__all__ = ['TrainingInputs', 'resume_seed', 'training_inputs']

CHECKERBOARD_TEST_SIZE = 1000
CHECKERBOARD_TEST_SEED = 12345


@dataclasses.dataclass
class TrainingInputs:
    """What `Trainer` needs from a dataset."""
    data_shape: Tuple[int, ...]
    train_input_fn: Callable[[Any, int], tf.data.Dataset]
    eval_input_fn: Callable[[Any], tf.data.Dataset]
    init_batch: Any


def _batches_per_step(input_context):
    """Per-replica batches one input pipeline yields per training step."""
    if input_context is None:
        return 1
    return (input_context.num_replicas_in_sync
            // input_context.num_input_pipelines)


def resume_seed(seed, start_step):
    """The shuffle seed of a pipeline that starts at `start_step`.

    `seed` itself at step 0 (and `None` stays `None`); otherwise a seed
    mixed from both, so a resumed run shuffles anew instead of replaying the
    order it started with.
    """
    if seed is None or not start_step:
        return seed
    return int(np.random.SeedSequence(
        [int(seed) % 2**63, int(start_step)]).generate_state(1)[0])


def _per_replica(batch_size, input_context):
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def training_inputs(dataset, global_batch_size, *, init_batch_size=64,
                    seed=0, data_dir=None, validation_size=0, num_bits=8):
    """Train/eval input functions and an init batch for `dataset`.

    Args:
      dataset: a tfds image dataset name accepted by
        `vflow_tfp.data.image_dataset` (e.g. `cifar10`,
        `photo_patches/16x16`) or `checkerboard` (2-D points; evaluated on a
        fixed set of 1,000).
      global_batch_size: global batch size of training and evaluation.
      init_batch_size: examples for the data-dependent initialisation, drawn
        with `seed` and unsharded, so identical on every worker.
      seed: shuffling and sampling seed.
      data_dir: tfds data directory.
      validation_size: hold this many training images out and evaluate on
        them instead of the test split. Image datasets only: the
        checkerboard trains on fresh points and has nothing to hold out.
      num_bits: bits per pixel value of every image (`image_dataset`'s;
        the model needs `num_bins=2**num_bits`). Image datasets only.

    Returns:
      A `TrainingInputs`. Its `train_input_fn(input_context, start_step=0)`
      starts the training stream at step `start_step` for a resumed run:
      the checkerboard stream (stateless, indexed by batch) continues
      exactly where an uninterrupted run would be; an image stream is
      shuffled with `resume_seed(seed, start_step)`, a fresh order, since
      the position inside a shuffled file stream is not checkpointed.
    """
    if dataset == 'checkerboard':
        if num_bits != 8:
            raise ValueError('num_bits applies to image datasets; the '
                             'checkerboard is continuous.')
        if validation_size:
            raise ValueError(
                'validation_size applies to image datasets; the checkerboard '
                'trains on fresh points and is evaluated on its fixed '
                f'{CHECKERBOARD_TEST_SIZE:,}-point test set.')
        test = checkerboard.sample_checkerboard(CHECKERBOARD_TEST_SIZE,
                                                seed=CHECKERBOARD_TEST_SEED)

        def train_input_fn(input_context, start_step=0):
            return pipelines.checkerboard_dataset(
                global_batch_size, seed=seed, input_context=input_context,
                start_index=int(start_step) * _batches_per_step(input_context))

        def eval_input_fn(input_context):
            ds = tf.data.Dataset.from_tensor_slices(test)
            if input_context is not None:
                ds = ds.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
            # A single pass keeps the last partial batch: every test point
            # counts (also across workers: the distributed iterator agrees
            # on where every worker's shard ends).
            return ds.batch(_per_replica(global_batch_size, input_context))

        init = checkerboard.sample_checkerboard(init_batch_size, seed=seed)
        return TrainingInputs((2,), train_input_fn, eval_input_fn, init)

    data_shape = tuple(pipelines.image_shape(dataset, data_dir=data_dir))
    eval_split = 'validation' if validation_size else 'test'

    def train_input_fn(input_context, start_step=0):
        return pipelines.image_dataset(
            dataset, 'train', global_batch_size, input_context=input_context,
            shuffle=True, repeat=True, seed=resume_seed(seed, start_step),
            data_dir=data_dir, validation_size=validation_size,
            num_bits=num_bits)

    def eval_input_fn(input_context):
        # Built anew for every evaluation, and the importance-weighted pass
        # reads only its first images: a cache would never be reused.
        return pipelines.image_dataset(
            dataset, eval_split, global_batch_size,
            input_context=input_context, shuffle=False, repeat=False,
            data_dir=data_dir, validation_size=validation_size,
            drop_remainder=False, autocache=False, num_bits=num_bits)

    # Repeated, so an init batch larger than the split draws some images
    # twice instead of failing; a smaller one is the same either way.
    init_ds = pipelines.image_dataset(
        dataset, 'train', init_batch_size, shuffle=True, repeat=True,
        seed=seed, data_dir=data_dir, validation_size=validation_size,
        autocache=False, num_bits=num_bits)
    init = next(iter(init_ds)).numpy()
    return TrainingInputs(data_shape, train_input_fn, eval_input_fn, init)
