"""Static shape checks for layers whose log-det counts positions.

ActNorm and the 1x1 convolutions compute their log-det as a per-position
term times the number of positions of the event shape they were built for.
Given another image size they would still run, by broadcasting, and report
the log-det of the wrong number of positions; these checks turn that into
an error at trace time, at no run-time cost.
"""

import tensorflow as tf


def check_event_shape(x, event_shape, owner):
    """Raises `ValueError` unless `x` ends in axes compatible with `event_shape`."""
    shape = tf.TensorShape(x.shape)
    ndims = len(event_shape)
    if shape.rank is None:
        return
    if (shape.rank < ndims
            or not shape[shape.rank - ndims:].is_compatible_with(event_shape)):
        raise ValueError(f'{owner} was built for events of shape '
                         f'{list(event_shape)}; got a tensor of shape '
                         f'{shape}.')


def check_parameter_shape(value, shape, what, owner):
    """Raises `ValueError` unless the supplied parameter `value` has `shape`."""
    if not tf.TensorShape(value.shape).is_compatible_with(shape):
        raise ValueError(f'{owner}: {what} must have shape {list(shape)}; '
                         f'got {tf.TensorShape(value.shape)}.')
