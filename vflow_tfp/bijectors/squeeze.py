"""Squeeze: space-to-depth with block size 2 (SPEC §1.10)."""

import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp.bijectors import partitions
from vflow_tfp.bijectors import shape_checks

__all__ = ['Squeeze']

tfb = tfp.bijectors


def _divided(size, k):
    return None if size is None else size // k


def _multiplied(size, k):
    return None if size is None else size * k


class Squeeze(tfb.Bijector):
    """Trades spatial resolution for channels, preserving volume.

    Oriented like every layer of this package (forward = latent -> data), so
    the squeeze itself is the `inverse`, the direction `log_prob` runs:

    ```none
    inverse (data [H, W, C] -> latent [H/2, W/2, 4C]):
        y[i, j, (2 dy + dx) C + c] = x[2i + dy, 2j + dx, c]
    forward: the reverse rearrangement (depth-to-space)
    log_det_jacobian = 0
    ```

    This is exactly `tf.nn.space_to_depth(x, 2)`, the official code's
    `SpaceToDepth`: after it, a `ChannelSplit` puts the top row of each 2x2
    block in the first half.
    """

    def __init__(self, block_size=2, validate_args=False, name=None):
        """Creates the layer.

        Args:
          block_size: int >= 1, side of the square blocks. Default: 2.
          validate_args: Python `bool`, passed to `tfb.Bijector` (this
            layer's shape checks are static and run regardless).
          name: Default value: `'squeeze'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'squeeze') as name:
            self._block_size = shape_checks.as_size(block_size, 'block_size')
            super().__init__(
                forward_min_event_ndims=3,
                is_constant_jacobian=True,
                validate_args=validate_args,
                parameters=parameters,
                name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def block_size(self):
        return self._block_size

    def _squeezed_shape(self, shape):
        height, width, channels = shape
        k = self._block_size
        if any(d is not None and d % k for d in (height, width)):
            raise ValueError(f'Squeeze(block_size={k}) needs height and width '
                             f'divisible by {k}; got event shape '
                             f'{[height, width, channels]}.')
        return (_divided(height, k), _divided(width, k),
                _multiplied(channels, k * k))

    def _unsqueezed_shape(self, shape):
        height, width, channels = shape
        k = self._block_size
        if channels is not None and channels % (k * k):
            raise ValueError(f'Unsqueezing with block_size={k} needs channels '
                             f'divisible by {k * k}; got event shape '
                             f'{[height, width, channels]}.')
        return (_multiplied(height, k), _multiplied(width, k),
                _divided(channels, k * k))

    def _static_event(self, t):
        shape_checks.check_image_rank(t.shape, 'Squeeze')
        event = t.shape[-3:]
        if not event.is_fully_defined():
            raise ValueError(f'{self.name}: Squeeze needs a static event '
                             f'shape (height, width, channels); got a '
                             f'tensor of shape {t.shape}.')
        return tuple(event.as_list())

    def _inverse(self, x):
        event = self._static_event(x)
        height, width, channels = event
        k = self._block_size
        new_event = self._squeezed_shape(event)
        blocks = partitions.reshape_event(
            x, 3, (height // k, k, width // k, k, channels))
        # [..., H/k, dy, W/k, dx, C] -> [..., H/k, W/k, dy, dx, C]
        rank = blocks.shape.rank
        perm = list(range(rank - 5)) + [rank - 5, rank - 3, rank - 4,
                                        rank - 2, rank - 1]
        return partitions.reshape_event(
            tf.transpose(blocks, perm), 5, new_event)

    def _forward(self, y):
        event = self._static_event(y)
        height, width, _ = event
        k = self._block_size
        new_event = self._unsqueezed_shape(event)
        blocks = partitions.reshape_event(
            y, 3, (height, width, k, k, new_event[-1]))
        # [..., H/k, W/k, dy, dx, C] -> [..., H/k, dy, W/k, dx, C]
        rank = blocks.shape.rank
        perm = list(range(rank - 5)) + [rank - 5, rank - 3, rank - 4,
                                        rank - 2, rank - 1]
        return partitions.reshape_event(
            tf.transpose(blocks, perm), 5, new_event)

    def _forward_log_det_jacobian(self, y):
        return tf.zeros([], dtype=y.dtype)

    def _inverse_log_det_jacobian(self, x):
        return tf.zeros([], dtype=x.dtype)

    # The event-shape methods see the whole event, which may have axes in
    # front of the three image axes (a larger `event_ndims`, or the event of
    # a `tfd.Sample` base); those pass through unchanged.

    def _forward_event_shape(self, input_shape):
        return self._map_last_three(input_shape, self._unsqueezed_shape)

    def _inverse_event_shape(self, output_shape):
        return self._map_last_three(output_shape, self._squeezed_shape)

    def _map_last_three(self, shape, fn):
        """`shape` with its last three dims replaced by `fn` of them."""
        shape = tf.TensorShape(shape)
        shape_checks.check_image_rank(shape, 'Squeeze', 'an event')
        if shape.rank is None:
            return shape
        # Each known dimension maps on its own (an unknown width leaves the
        # height and channels known), as the tensors' static shapes do.
        return shape[:-3].concatenate(
            tf.TensorShape(fn(tuple(shape.as_list()[-3:]))))

    def _forward_event_shape_tensor(self, input_shape):
        return self._event_shape_tensor(input_shape, squeeze=False)

    def _inverse_event_shape_tensor(self, output_shape):
        return self._event_shape_tensor(output_shape, squeeze=True)

    def _event_shape_tensor(self, shape, squeeze):
        static = tf.get_static_value(shape)
        if static is not None:
            # Known at trace time: the static methods' checks and errors.
            static = [int(d) for d in static]
            shape_checks.check_image_rank(static, 'Squeeze', 'an event')
            fn = self._squeezed_shape if squeeze else self._unsqueezed_shape
            # In the dtype it came in, as TFP's bijectors keep it.
            return tf.constant(static[:-3] + list(fn(tuple(static[-3:]))),
                               tf.convert_to_tensor(shape).dtype)
        # The length of a shape tensor is the event's rank, static even when
        # its dimensions are not.
        rank = tf.compat.dimension_value(shape.shape[0])
        if rank is not None:
            shape_checks.check_image_rank([None] * rank, 'Squeeze',
                                          'an event')
        k = self._block_size
        height, width, channels = shape[-3], shape[-2], shape[-1]
        if squeeze:
            divisible = tf.logical_and(tf.equal(height % k, 0),
                                       tf.equal(width % k, 0))
            last = [height // k, width // k, channels * k * k]
        else:
            divisible = tf.equal(channels % (k * k), 0)
            last = [height * k, width * k, channels // (k * k)]
        # summarize=-1: Assert shows three entries by default, which would
        # cut off the width and channels of a shape with a batch axis.
        check = tf.debugging.Assert(divisible, [
            f'{self.name}: event shape not divisible by the block size '
            f'{k}:', shape], summarize=-1)
        with tf.control_dependencies([check]):
            return tf.concat([shape[:-3], tf.stack(last)], axis=0)
