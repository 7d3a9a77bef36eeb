"""Adam with the same update on every device."""

import tf_keras

__all__ = ['adam']


def adam(learning_rate, *, jit_compile=False, **kwargs):
    """A `tf_keras` Adam whose update is XLA-compiled iff `jit_compile`.

    `tf_keras` decides this from the machine: its default
    `jit_compile=True` holds only where a GPU is present, and there it
    compiles each variable's update as an XLA function of its own (one
    trace and compilation per variable: 0.13 s per variable on two CPU
    replicas, so minutes at every start for the CIFAR presets' 1,056 to
    1,524 variables). That path would then run on GPUs only and
    never in the tests, which run on the CPU. Here the caller decides, for
    every device alike.

    Args:
      learning_rate: a float or a schedule.
      jit_compile: compile each variable's update with XLA. Leave it off
        when `apply_gradients` runs inside a `tf.function(jit_compile=True)`,
        which compiles the update with the rest of the step. Default value:
        `False`.
      **kwargs: other arguments of `tf_keras.optimizers.Adam`.

    Returns:
      The optimizer.
    """
    optimizer = tf_keras.optimizers.Adam(learning_rate, **kwargs)
    # Set after construction: the constructor ignores True without a GPU.
    optimizer.jit_compile = bool(jit_compile)
    return optimizer
