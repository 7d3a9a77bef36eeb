"""SwapHalves: exchanges the two halves of a partition (official TupleFlip)."""

import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp.bijectors import shape_checks

__all__ = ['SwapHalves']

tfb = tfp.bijectors


class SwapHalves(tfb.Bijector):
    """Exchanges the halves of a `Partition`: a fixed permutation.

    ```none
    (a, b) = partition.split(x)
    forward(x) = inverse(x) = partition.merge(b, a)
    log_det_jacobian = 0
    ```

    The official code alternates which half a coupling transforms by a
    `TupleFlip` after every coupling; this package does the same with the
    couplings' `parity` argument, which costs no data movement. What remains is
    the permutation left over when a group has an odd number of steps: the
    halves come back swapped at the end of the group (SPEC §1.9), which a
    faithful port reproduces with one `SwapHalves`.
    """

    def __init__(self, partition, validate_args=False, name=None):
        """Creates the layer.

        Args:
          partition: a `vflow_tfp.bijectors.Partition` whose halves have equal
            shapes.
          validate_args: Python `bool`.
          name: Default value: `'swap_halves'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'swap_halves') as name:
            shape_checks.check_partition(partition)
            self._partition = partition
            super().__init__(
                forward_min_event_ndims=partition.event_ndims,
                is_constant_jacobian=True,
                validate_args=validate_args,
                parameters=parameters,
                name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def partition(self):
        return self._partition

    def _swap(self, x):
        a, b = self._partition.split(x)
        if a.shape[-1] != b.shape[-1]:
            raise ValueError('SwapHalves needs halves of equal shape; got '
                             f'{a.shape} and {b.shape}.')
        return self._partition.merge(b, a)

    def _forward(self, x):
        return self._swap(x)

    def _inverse(self, y):
        return self._swap(y)

    def _forward_log_det_jacobian(self, x):
        return tf.zeros([], dtype=x.dtype)

    def _inverse_log_det_jacobian(self, y):
        return tf.zeros([], dtype=y.dtype)
