"""Static shape checks for layers whose log-det counts positions.

ActNorm and the 1x1 convolutions compute their log-det as a per-position
term times the number of positions of the event shape they were built for.
Given another image size they would still run, by broadcasting, and report
the log-det of the wrong number of positions; these checks turn that into
an error at trace time, at no run-time cost.

The argument checks shared by the layers' constructors live here too (sizes,
partitions, supplied parameters and networks), so that every layer refuses
a bad argument with the same message.
"""

import numbers
import operator
import sys

import numpy as np
import tensorflow as tf

from vflow_tfp.bijectors import partitions


def check_event_shape(x, event_shape, owner):
    """Raises `ValueError` unless `x` (a tensor, or a shape) ends in axes
    compatible with `event_shape`."""
    shape = tf.TensorShape(getattr(x, 'shape', x))
    ndims = len(event_shape)
    if shape.rank is None:
        return
    if (shape.rank < ndims
            or not shape[shape.rank - ndims:].is_compatible_with(event_shape)):
        raise ValueError(f'{owner} was built for events of shape '
                         f'{list(event_shape)}; got a tensor of shape '
                         f'{shape}.')


class BuiltForOneEventShape:
    """Mixin of the bijectors built for one event shape, `_event_shape`.

    `_check(x)` refuses a tensor of another event shape, and so do the
    event-shape functions (`forward_event_shape`, its `_tensor` version and
    their inverses; a shape tensor known only when the graph runs is
    checked then), which pass the built shape through unchanged.
    """

    def _check(self, x):
        check_event_shape(x, self._event_shape, type(self).__name__)

    def _check_shape_tensor(self, shape):
        static = tf.get_static_value(shape)
        if static is not None:
            self._check(tf.TensorShape(static.tolist()))
            return shape
        # The length of a shape tensor is the event's rank, static even when
        # its dimensions are not.
        rank = tf.compat.dimension_value(shape.shape[0])
        if rank is not None:
            self._check(tf.TensorShape([None] * rank))
        ndims = len(self._event_shape)
        built = tf.constant(self._event_shape, shape.dtype)
        check = tf.debugging.assert_equal(
            shape[-ndims:], built,
            message=f'{type(self).__name__} was built for events of shape '
                    f'{list(self._event_shape)}')
        with tf.control_dependencies([check]):
            return tf.identity(shape)

    def _forward_event_shape(self, input_shape):
        self._check(input_shape)
        return input_shape

    def _inverse_event_shape(self, output_shape):
        self._check(output_shape)
        return output_shape

    def _forward_event_shape_tensor(self, input_shape):
        return self._check_shape_tensor(input_shape)

    def _inverse_event_shape_tensor(self, output_shape):
        return self._check_shape_tensor(output_shape)


def check_parameter_shape(value, shape, what, owner):
    """Raises `ValueError` unless the supplied parameter `value` has `shape`.

    `value` may be a variable, a tensor, an array, or nested lists or a
    Python number (converted later, like arrays).
    """
    got = tf.TensorShape(value.shape if hasattr(value, 'shape')
                         else np.shape(value))
    if not got.is_compatible_with(shape):
        raise ValueError(f'{owner}: {what} must have shape {list(shape)}; '
                         f'got {got}.')


def check_parameter_dtype(value, dtype, what, owner):
    """Raises `TypeError` if the supplied variable or tensor `value` is not
    of `dtype` (arrays and Python numbers are converted, so they pass)."""
    dtype = tf.as_dtype(dtype)
    if ((isinstance(value, tf.Variable) or tf.is_tensor(value))
            and value.dtype.base_dtype != dtype):
        raise TypeError(f'{owner}: {what} is {value.dtype.base_dtype.name} '
                        f'but the layer\'s dtype is {dtype.name}; pass '
                        f'dtype=tf.{value.dtype.base_dtype.name} or a '
                        f'{what} of {dtype.name}.')


def as_size(value, name, minimum=1):
    """`value` as a Python int `>= minimum`, with `operator.index` semantics.

    Accepts what `operator.index` accepts (Python and NumPy integers, 0-d
    integer arrays, static `TensorShape` dimensions). `int()` would truncate
    `2.5` to 2 and leave a layer that reports one size and computes with
    another; this refuses it instead, and refuses `bool`s, which are ints to
    Python but never a meant size.

    Raises:
      ValueError: if `value` is a number that is not an integer (`2.5`,
        `4.0`) or is an integer below `minimum`.
      TypeError: if `value` is not a number at all (`None`, a string).
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f'{name} must be an integer >= {minimum}; got the '
                        f'bool {value!r}.')
    try:
        size = operator.index(value)
    except TypeError:
        if isinstance(value, numbers.Number):
            raise ValueError(f'{name} must be an integer >= {minimum}; got '
                             f'{value!r}.') from None
        raise TypeError(f'{name} must be an integer >= {minimum}; got '
                        f'{value!r}.') from None
    if size < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}; got '
                         f'{size}.')
    return size


def as_sizes(values, name, minimum=1):
    """`values` as a (possibly empty) tuple of `as_size` ints `>= minimum`.

    A string is refused as a whole, not read character by character.
    """
    what = f'{name} must be a sequence of integers >= {minimum}; got'
    if isinstance(values, (str, bytes)):
        raise TypeError(f'{what} the string {values!r}.')
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f'{what} {values!r}.') from None
    return tuple(as_size(v, f'{name}[{i}]', minimum=minimum)
                 for i, v in enumerate(items))


def as_event_shape(event_shape, name='event_shape'):
    """`event_shape` as a non-empty tuple of `as_size` ints (all `>= 1`)."""
    dims = as_sizes(event_shape, name)
    if not dims:
        raise ValueError(f'{name} must be a non-empty sequence of integers '
                         f'>= 1; got {list(dims)}.')
    return dims


def check_partition(partition):
    """Raises `TypeError` unless `partition` is a `Partition` instance."""
    if not isinstance(partition, partitions.Partition):
        raise TypeError('partition must be a vflow_tfp.bijectors.Partition '
                        '(ColumnSplit, ChannelSplit, Checkerboard); got '
                        f'{partition!r}.')


def _is_keras3(obj):
    """Whether `obj` is a Keras layer that is not a `tf.Module` (Keras 3)."""
    # Keras is imported if the caller built a Keras layer: no import here.
    layer_class = getattr(sys.modules.get('keras'), 'Layer', None)
    return (isinstance(layer_class, type) and isinstance(obj, layer_class)
            and not isinstance(obj, tf.Module))


def _keras3_layer_in(obj, depth=3):
    """A Keras 3 object in `obj` or (for a `tf.Module`) in its attributes,
    lists and dicts, a few levels deep; else None."""
    if _is_keras3(obj):
        return obj
    if depth == 0:
        return None
    if isinstance(obj, tf.Module):
        children = list(vars(obj).values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        return None
    for child in children:
        if not isinstance(child, (tf.Variable, tf.Tensor, np.ndarray)):
            found = _keras3_layer_in(child, depth - 1)
            if found is not None:
                return found
    return None


def check_network(network, what):
    """Raises `TypeError` unless `network` is callable and holds no Keras 3
    layer.

    With TF 2.16 and later, `tf.keras` is Keras 3, whose layers are not
    `tf.Module`s: a bijector (or a module holding one) would not list their
    variables, so they would never train, silently. `tf_keras` layers are
    tracked.
    """
    if not callable(network):
        raise TypeError(f'{what} must be callable; got {network!r}.')
    found = _keras3_layer_in(network)
    if found is not None:
        raise TypeError(
            f'{what} is or holds a Keras 3 layer ({type(found).__name__}), '
            'whose variables tf.Module does not track, so they would never '
            'train. Build it from tf_keras (`import tf_keras`, '
            '`tf_keras.layers...`) or as a tf.Module.')


def check_image_rank(shape, owner, what='a tensor'):
    """Raises `ValueError` unless `shape` ends in three image axes [H, W, C].

    `shape` is the shape of a tensor or an event shape; axes in front of the
    last three are allowed. An unknown rank passes.
    """
    shape = tf.TensorShape(shape)
    if shape.rank is not None and shape.rank < 3:
        raise ValueError(f'{owner} acts on images of event shape [H, W, C]; '
                         f'got {what} of shape {shape}.')


def check_broadcastable(shape, other, what, what_other, owner):
    """Raises `ValueError` unless static `shape` and `other` broadcast.

    Unknown ranks and dimensions pass: they are left to run time.
    """
    shape, other = tf.TensorShape(shape), tf.TensorShape(other)
    if shape.rank is None or other.rank is None:
        return
    try:
        tf.broadcast_static_shape(shape, other)
    except ValueError:
        raise ValueError(f'{owner}: {what} does not broadcast against '
                         f'{what_other}; got {shape} and {other}.') from None
