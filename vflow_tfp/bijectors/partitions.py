"""Partitions: how a coupling splits its event into two halves (SPEC §1.9).

A partition is a small immutable value object, not a bijector: it says how to
`split` an event into halves `(a, b)` and how to `merge` them back, and it is
shared by the layers that act per half (couplings, per-half 1x1 convolutions,
context networks, `SwapHalves`). Two partitions with the same configuration
compare equal, so they can sit in a bijector's `parameters`.

* `ColumnSplit` is what the official Flow++/VFlow code calls "checkerboard":
  even columns form the first half, odd columns the second.
* `ChannelSplit` halves the last axis (channels of an image, features of a
  vector).
* `Checkerboard` is a true 2-D checkerboard: pixels with even `i + j` form the
  first half.

All shape logic uses Python ints for the event dimensions and the dynamic
shape only for batch dimensions, so a `None` batch traces.
"""

import dataclasses

import tensorflow as tf

__all__ = ['Partition', 'ColumnSplit', 'ChannelSplit', 'Checkerboard']


def _static_event_shape(x, event_ndims):
    rank = x.shape.rank
    shape = x.shape[rank - event_ndims:] if rank is not None else None
    if (shape is None or len(shape) != event_ndims
            or any(d is None for d in shape)):
        raise ValueError(
            f'Expected a tensor whose last {event_ndims} dimensions are '
            f'statically known; got shape {x.shape}.')
    return tuple(int(d) for d in shape)


def reshape_event(x, old_event_ndims, new_event_shape):
    """Reshapes the last `old_event_ndims` axes of `x` to `new_event_shape`.

    Batch dimensions may be unknown; the new event dimensions are Python ints,
    so the reshape traces with a `None` batch.
    """
    batch_shape = tf.shape(x, out_type=tf.int32)[:-old_event_ndims]
    new_shape = tf.concat(
        [batch_shape, tf.constant(new_event_shape, dtype=tf.int32)], axis=0)
    out = tf.reshape(x, new_shape)
    if x.shape.rank is not None:
        out = tf.ensure_shape(
            out, x.shape[:-old_event_ndims].concatenate(new_event_shape))
    return out


class Partition:
    """Base class: splits an event into two halves and merges them back."""

    #: Number of event dimensions the partition acts on (3 images, 1 vectors).
    event_ndims = 3

    def split(self, x):
        """Returns the halves `(a, b)` of `x`."""
        raise NotImplementedError

    def merge(self, a, b):
        """Inverse of `split`."""
        raise NotImplementedError

    def half_event_shapes(self, event_shape):
        """Event shapes `(shape_a, shape_b)` of the halves, tuples of ints."""
        raise NotImplementedError

    def as_channel_blocks(self, x):
        """`x` reshaped so that its last axis holds the halves side by side.

        Returns `v` of event shape `[..., c_a + c_b]` with `v[..., :c_a]` the
        half `a` and `v[..., c_a:]` the half `b` of `split(x)`, position by
        position, obtained by a reshape alone, or `None` if the partition
        has no such layout. A per-half channel map then becomes one matrix
        product with a block-diagonal matrix instead of a split, two
        products and a merge.
        """
        del x
        return None

    def from_channel_blocks(self, v, event_shape):
        """Inverse of `as_channel_blocks` for events of shape `event_shape`."""
        raise NotImplementedError(
            f'{type(self).__name__} has no channel-block layout.')

    def check_event_shape(self, event_shape):
        """Raises `ValueError` if `event_shape` cannot be split."""
        self.half_event_shapes(tuple(event_shape))


def _check_image(event_shape, name, even_height=False):
    if len(event_shape) != 3:
        raise ValueError(f'{name} splits images of event shape [H, W, C]; got '
                         f'event shape {list(event_shape)}.')
    height, width, _ = event_shape
    if width % 2:
        raise ValueError(f'{name} needs an even image width; got {width}.')
    if even_height and height % 2:
        raise ValueError(f'{name} needs an even image height; got {height}.')


@dataclasses.dataclass(frozen=True)
class ColumnSplit(Partition):
    """Even columns / odd columns: the official code's "CheckerboardSplit".

    For `x` of event shape `[H, W, C]` (W even): `a = x[..., :, 0::2, :]`,
    `b = x[..., :, 1::2, :]`, each `[H, W/2, C]`. `merge(a, b)` puts `a` back
    in the even columns and `b` in the odd ones. Every row uses the same
    pattern: these are vertical stripes, not a 2-D checkerboard (SPEC §9.1).
    """

    event_ndims = 3

    def split(self, x):
        height, width, channels = _static_event_shape(x, 3)
        _check_image((height, width, channels), 'ColumnSplit')
        # Reshape + unstack rather than strided slices: the gradient of a
        # strided slice (StridedSliceGrad) is several times slower on CPU.
        pairs = reshape_event(x, 3, (height, width // 2, 2, channels))
        a, b = tf.unstack(pairs, axis=-2)
        return a, b

    def merge(self, a, b):
        height, half_width, channels = _static_event_shape(a, 3)
        stacked = tf.stack([a, b], axis=-2)  # [..., H, W/2, 2, C]
        return reshape_event(stacked, 4, (height, 2 * half_width, channels))

    def as_channel_blocks(self, x):
        # [H, W, C] -> [H, W/2, 2C]: columns 2k and 2k+1 become the two
        # channel blocks of position k, i.e. (a, b).
        height, width, channels = _static_event_shape(x, 3)
        _check_image((height, width, channels), 'ColumnSplit')
        return reshape_event(x, 3, (height, width // 2, 2 * channels))

    def from_channel_blocks(self, v, event_shape):
        return reshape_event(v, 3, tuple(event_shape))

    def half_event_shapes(self, event_shape):
        _check_image(event_shape, 'ColumnSplit')
        height, width, channels = event_shape
        half = (height, width // 2, channels)
        return half, half


@dataclasses.dataclass(frozen=True)
class Checkerboard(Partition):
    """True 2-D checkerboard: pixel (i, j) is in half `a` iff `i + j` is even.

    Each half is laid out as `[H, W/2, C]`: row `i` of half `a` holds the
    pixels `(i, 2k + i mod 2)` and row `i` of half `b` the pixels
    `(i, 2k + 1 - i mod 2)`, k = 0..W/2-1, so spatial neighbours stay
    neighbours for the conditioner's convolutions. H and W must be even.
    """

    event_ndims = 3

    def split(self, x):
        height, width, channels = _static_event_shape(x, 3)
        _check_image((height, width, channels), 'Checkerboard',
                     even_height=True)
        # [..., H/2, 2 (row parity), W/2, 2 (column parity), C]
        blocks = reshape_event(
            x, 3, (height // 2, 2, width // 2, 2, channels))
        a = tf.stack([blocks[..., 0, :, 0, :], blocks[..., 1, :, 1, :]],
                     axis=-3)
        b = tf.stack([blocks[..., 0, :, 1, :], blocks[..., 1, :, 0, :]],
                     axis=-3)
        half = (height, width // 2, channels)
        return reshape_event(a, 4, half), reshape_event(b, 4, half)

    def merge(self, a, b):
        height, half_width, channels = _static_event_shape(a, 3)
        rows = (height // 2, 2, half_width, channels)
        a = reshape_event(a, 3, rows)
        b = reshape_event(b, 3, rows)
        even_rows = tf.stack([a[..., 0, :, :], b[..., 0, :, :]], axis=-2)
        odd_rows = tf.stack([b[..., 1, :, :], a[..., 1, :, :]], axis=-2)
        blocks = tf.stack([even_rows, odd_rows], axis=-4)
        return reshape_event(blocks, 5, (height, 2 * half_width, channels))

    def half_event_shapes(self, event_shape):
        _check_image(event_shape, 'Checkerboard', even_height=True)
        height, width, channels = event_shape
        half = (height, width // 2, channels)
        return half, half


@dataclasses.dataclass(frozen=True)
class ChannelSplit(Partition):
    """First channels / last channels (features, for vectors).

    For `C` channels and `k = first_channels` (default `C // 2`),
    `a = x[..., :k]` and `b = x[..., k:]`; `merge` concatenates. `event_ndims`
    is 3 for images `[H, W, C]` and 1 for vectors `[D]`. With the default, an
    odd `C` gives `b` the extra channel. A fixed `first_channels` splits an
    augmented `[x, z]` at the data channels (VFlow's f_affine).
    """

    event_ndims: int = 3
    first_channels: int = None

    def __post_init__(self):
        if self.event_ndims not in (1, 3):
            raise ValueError('ChannelSplit.event_ndims must be 1 (vectors) or '
                             f'3 (images); got {self.event_ndims}.')
        if self.first_channels is not None and self.first_channels < 1:
            raise ValueError('ChannelSplit.first_channels must be >= 1; got '
                             f'{self.first_channels}.')

    def _first(self, channels):
        if channels < 2:
            raise ValueError('ChannelSplit needs at least 2 channels; got '
                             f'{channels}.')
        first = channels // 2 if self.first_channels is None else (
            self.first_channels)
        if first >= channels:
            raise ValueError(f'ChannelSplit(first_channels={first}) needs '
                             f'more than {first} channels; got {channels}.')
        return first

    def split(self, x):
        channels = _static_event_shape(x, self.event_ndims)[-1]
        first = self._first(channels)
        a, b = tf.split(x, [first, channels - first], axis=-1)
        return a, b

    def merge(self, a, b):
        return tf.concat([a, b], axis=-1)

    def as_channel_blocks(self, x):
        self._first(_static_event_shape(x, self.event_ndims)[-1])
        return x

    def from_channel_blocks(self, v, event_shape):
        del event_shape
        return v

    def half_event_shapes(self, event_shape):
        event_shape = tuple(event_shape)
        if len(event_shape) != self.event_ndims:
            raise ValueError(
                f'ChannelSplit(event_ndims={self.event_ndims}) got event '
                f'shape {list(event_shape)}.')
        channels = event_shape[-1]
        first = self._first(channels)
        return (event_shape[:-1] + (first,),
                event_shape[:-1] + (channels - first,))
