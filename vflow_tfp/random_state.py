"""The random generator of a layer or model built without a seed."""

import tensorflow as tf

__all__ = ['unseeded_generator']


def unseeded_generator():
    """A new `tf.random.Generator` whose seed comes from TF's global seed.

    The seed is one draw of `tf.random.uniform`, so a model built without a
    seed follows `tf.random.set_seed` like TF's own initialisers: with a
    global seed the whole build (weights and noise) is reproducible, and it
    works under `tf.config.experimental.enable_op_determinism()`, which
    refuses `Generator.from_non_deterministic_state`. Without a global seed
    the draw differs from program to program, as every unseeded TF op does
    (and under op determinism TF asks for `tf.random.set_seed`).
    """
    seed = tf.random.uniform([], maxval=tf.int64.max, dtype=tf.int64)
    return tf.random.Generator.from_seed(seed)
