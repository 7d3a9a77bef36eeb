"""Model helpers shared by the test modules: a seeded, initialised
`tiny_vflow`, a compiled Adam step on the negative ELBO, weights moved
off their start, and the process's two-replica strategy."""

import numpy as np
import tensorflow as tf

from vflow_tfp import data
from vflow_tfp import training
from vflow_tfp.models import presets


_MIRRORED = []


def mirrored_strategy():
    """The process's one two-replica `MirroredStrategy` (on conftest's
    logical CPUs). Separate instances in one process share collective
    instance keys, so steps of two of them (another test module's, of
    another dtype) can collide: "Collective instance 100 expected ...
    data_type 2 but got ... data_type 1"."""
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
    return _MIRRORED[0]


def adam_step(model, learning_rate=1e-3, clip_norm=None):
    """A compiled Adam step on the negative mean ELBO.

    `step(x, seed)` returns the loss and the gradient norm before clipping.
    """
    optimizer = training.adam(learning_rate)

    # Without autograph, as the trainer's step.
    @tf.function(autograph=False)
    def step(x, seed):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.elbo(x, training=True, seed=seed))
        grads = tape.gradient(loss, model.trainable_variables)
        norm = tf.linalg.global_norm(grads)
        if clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm,
                                              use_norm=norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, norm

    return step


def initialized_tiny_vflow(global_seed, init_seed):
    """`tiny_vflow` with seeded weights, initialised on 64 photo patches."""
    tf.random.set_seed(global_seed)
    model = presets.build('tiny_vflow', seed=0)
    model.initialize(data.photo_patches(8, 'train', max_patches=64),
                     seed=init_seed)
    return model


def perturb(variables, scale, rng=0):
    """Adds `scale` times standard normal noise to each of `variables`, in
    order, drawn from `rng` (a numpy Generator or its seed).

    The couplings' output layers start at zero, where they are identity
    maps and their conditions, dropout and gradients do not show; after
    this they do, as after training.
    """
    rng = np.random.default_rng(rng)
    for v in variables:
        v.assign_add((scale * rng.standard_normal(v.shape)).astype(
            v.dtype.as_numpy_dtype))
