"""Adam with the same update on every device, one fused kernel a variable."""

import tensorflow as tf
import tf_keras

__all__ = ['adam']


class _FusedAdam(tf_keras.optimizers.Adam):
    """`tf_keras`'s Adam whose dense update is TF's `ResourceApplyAdam`.

    With step t = iterations + 1, rate η, gradient g:

        m ← m + (g − m)(1 − β₁),    v ← v + (g² − v)(1 − β₂),
        w ← w − η √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε),

    which is `tf_keras.optimizers.Adam.update_step`'s formula. `tf_keras`
    builds it from about a dozen element-wise ops a variable, each a kernel
    and a pass over the variable's memory; `ResourceApplyAdam` (TF's kernel
    for CPU and GPU, also lowered by XLA) is one. The slots are `tf_keras`'s
    own, so checkpoints are the same either way. Sparse gradients, AMSGrad
    and `adaptive_epsilon` take `tf_keras`'s update.
    """

    def update_step(self, gradient, variable):
        if (isinstance(gradient, tf.IndexedSlices) or self.amsgrad
                or self.adaptive_epsilon):
            return super().update_step(gradient, variable)
        index = self._index_dict[self._var_key(variable)]
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = _in_dtype(self.beta_1, dtype)
        beta_2 = _in_dtype(self.beta_2, dtype)
        # Under a distribution strategy the slots are distributed variables,
        # and within its `update` their handles are the replica's copies.
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(self.learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=_in_dtype(self.epsilon, dtype), grad=gradient)


def _in_dtype(value, dtype):
    """A hyperparameter as a `dtype` scalar; a Python float directly, not
    through float32 (as `tf.cast` would take it), so that float64 weights
    get β = 0.9, not 0.9's float32 neighbour."""
    return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(
        value, dtype)


def adam(learning_rate, *, jit_compile=False, **kwargs):
    """A `tf_keras` Adam: one fused kernel a variable, XLA iff `jit_compile`.

    The update of each variable is TF's fused Adam kernel (`_FusedAdam`):
    the same formula and slots as `tf_keras.optimizers.Adam`, in one kernel
    instead of about a dozen (for `vflow_cifar10`'s 1,524 variables on the
    CPU, half the time of an update and 40% of the ops to trace).

    `tf_keras` decides XLA from the machine: its default
    `jit_compile=True` holds only where a GPU is present, and there it
    compiles each variable's update as an XLA function of its own (one
    trace and compilation per variable: 0.13 s per variable on two CPU
    replicas, so minutes at every start for the CIFAR presets' 1,056 to
    1,634 variables). That path would then run on GPUs only and
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
    optimizer = _FusedAdam(learning_rate, **kwargs)
    # Set after construction: the constructor ignores True without a GPU.
    optimizer.jit_compile = bool(jit_compile)
    return optimizer
