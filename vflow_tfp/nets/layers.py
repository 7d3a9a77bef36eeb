"""Primitive layers of the conditioner networks (SPEC §1.1, §1.2).

Every layer is a `tf.Module` holding plain `tf.Variable`s (no Keras), so any
network built from them exposes all of its parameters through
`module.trainable_variables`.

Weights start as `W ~ N(0, 0.05^2)` (drawn with `tf.random.normal`, i.e. from
the global seed) and biases as 0. With `weight_norm=True` (the ImageNet code
path of SPEC §6.3; Salimans & Kingma, 2016) a layer holds a direction `V`
(drawn as `W` above) and a gain `g` per output channel (init 1) instead, and
applies `W = g V / ||V||`, the norm over all axes but the output channel's.
`Dense` and `Conv2D` support the data-dependent initialisation (DDI) of SPEC
§1.1: when called inside `vflow_tfp.data_dependent_init()` they first call
their own `initialize(x)`, which rescales the weights (the gain, with weight
normalisation) so that the pre-activation on that batch has zero mean and
standard deviation `init_scale` per output channel, and then compute their
output with the new parameters. `is_active()` is read when the Python
code runs, i.e. at trace time inside a `tf.function`: run the DDI pass
eagerly (see `vflow_tfp.initialization`).

Dropout draws its mask from an explicit `tf.random.Generator` (never from the
stateful `tf.random.uniform` / `tf.nn.dropout` ops, which give identical masks
on every replica under `MirroredStrategy`).

Mixed precision: variables keep their dtype (float32), but a layer given a
bfloat16 or float16 input computes in that dtype with its variables cast to
it (`as_input`); statistics (layer norm, data-dependent init) are computed
in the variables' dtype.
"""

import tensorflow as tf

from vflow_tfp import initialization
from vflow_tfp import random_state

__all__ = ['concat_elu', 'gate', 'dropout', 'Dense', 'Conv2D', 'LayerNorm',
           'as_input', 'LOW_PRECISION']

# Compute dtypes of mixed precision: inputs of these dtypes are kept as they
# are, every other input is converted to the variables' dtype.
LOW_PRECISION = (tf.bfloat16, tf.float16)

# Added to the variance before the square root in the DDI (SPEC §1.1).
_DDI_EPSILON = 1e-8
_DEFAULT_KERNEL_STDDEV = 0.05


def concat_elu(x):
    """Concatenated ELU, which doubles the channel count.

    `concat_elu(x) = elu(concat([x, -x], axis=-1))`, where
    `elu(u) = u` for `u > 0` and `exp(u) - 1` otherwise.

    Args:
      x: float tensor `[..., C]`.

    Returns:
      Tensor `[..., 2C]`.
    """
    return tf.nn.elu(tf.concat([x, -x], axis=-1))


def gate(h):
    """Gated linear unit on the channel axis.

    With `(a, g)` the first and second halves of the channels of `h`,
    `gate(h) = a * sigmoid(g)`.

    Args:
      h: float tensor `[..., 2C]` (static, even channel count).

    Returns:
      Tensor `[..., C]`.

    Raises:
      ValueError: if the channel count is unknown or odd.
    """
    channels = h.shape[-1]
    if channels is None or channels % 2:
        raise ValueError('gate needs a static, even channel count; got shape '
                         f'{h.shape}.')
    a, g = tf.split(h, 2, axis=-1)
    return a * tf.sigmoid(g)


# A dropout mask compares `bits` random bits per element with
# round(keep * 2^bits). Fewer bits mean less random-number work (the
# dominant cost of dropout on CPU), so `dropout` uses the fewest of 8, 16
# or 32 bits that realise the rate to within 1% of itself.
_MASK_BITS = (8, 16, 32)
_RATE_TOLERANCE = 0.01
_BITS_DTYPES = {8: tf.uint8, 16: tf.uint16, 32: tf.uint32}


def _mask_bits(rate):
    for bits in _MASK_BITS:
        keep = round((1.0 - rate) * 2**bits) / 2**bits
        if keep > 0 and abs((1.0 - keep) - rate) <= _RATE_TOLERANCE * rate:
            return bits
    return _MASK_BITS[-1]


def dropout_keep_probability(rate):
    """The keep probability `k` that `dropout` realises for `rate`.

    `k = round((1 - rate) 2^b) / 2^b` with `b` the fewest random bits per
    element, of 8, 16 and 32, that put the realised rate `1 - k` within 1%
    of `rate` with `k > 0`: e.g. rate 0.2 -> k = 0.80078 (realised rate
    0.19922) and 0.5 exactly with 8 bits, 0.1 -> k = 0.899994 (0.100006)
    and 0.999 -> k = 0.001007 (0.998993) with 16; a rate below 2^-33
    rounds to 0, a no-op.
    """
    rate = float(rate)
    bits = _mask_bits(rate)
    return round((1.0 - rate) * 2**bits) / 2**bits


def _keep_mask(x, rng, rate):
    """Float mask of `x`'s shape: `1/k` with probability `k`, else 0."""
    bits = _mask_bits(rate)
    keep = dropout_keep_probability(rate)
    per_word = 32 // bits
    shape = tf.shape(x, out_type=tf.int32)
    size = tf.reduce_prod(shape)
    words = rng.uniform_full_int([(size + per_word - 1) // per_word],
                                 dtype=tf.int32)
    # The slice is the identity (and free) when `size` fills whole words.
    draws = tf.reshape(tf.bitcast(words, _BITS_DTYPES[bits]), [-1])[:size]
    kept = tf.reshape(draws, shape) < tf.constant(round(keep * 2**bits),
                                                  _BITS_DTYPES[bits])
    # The scaled mask is built once: the forward pass and the gradient are
    # then a single product each.
    return tf.where(kept, tf.constant(1.0 / keep, x.dtype),
                    tf.constant(0.0, x.dtype))


def dropout(x, rate, rng, training):
    """Inverted dropout with a mask drawn from `rng`.

    When active, `y = x * m / k` with `m ~ Bernoulli(k)` i.i.d. per element
    and `k = dropout_keep_probability(rate)` (`1 - rate` to within 1% of
    `rate`: the mask compares 8, 16 or 32 random bits with a threshold), so
    `E[y] = x`; otherwise `y = x`. It is active only when `training` is
    true and `rate > 0`.

    Args:
      x: float tensor.
      rate: Python float in `[0, 1)`, the probability of dropping an element.
      rng: `tf.random.Generator` used for the mask; may be `None` only if the
        dropout can never be active (`rate == 0`).
      training: Python bool or boolean scalar tensor.

    Returns:
      Tensor of the shape and dtype of `x`.

    Raises:
      ValueError: if `rate` is outside `[0, 1)` or `rng` is missing.
    """
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f'dropout rate must be in [0, 1); got {rate}.')
    if rate == 0.0 or dropout_keep_probability(rate) == 1.0:
        return x
    static_training = tf.get_static_value(training)
    if static_training is not None and not static_training:
        return x
    if rng is None:
        raise ValueError('dropout with rate > 0 needs a tf.random.Generator '
                         '`rng`.')

    def dropped():
        return x * _keep_mask(x, rng, rate)

    if static_training is not None:
        return dropped()
    return tf.cond(tf.convert_to_tensor(training, tf.bool), dropped,
                   lambda: tf.identity(x))


def as_input(x, dtype):
    """`x` as a tensor of `dtype`, or of its own dtype if low precision."""
    if isinstance(x, (tf.Tensor, tf.Variable)) and x.dtype in LOW_PRECISION:
        return x
    return tf.convert_to_tensor(x, dtype=dtype)


def check_compute_dtype(dtype, owner):
    """`None` or a `LOW_PRECISION` dtype; raises `ValueError` otherwise."""
    if dtype is None:
        return None
    try:
        name = tf.as_dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    if name not in [d.name for d in LOW_PRECISION]:
        raise ValueError(f'{owner}: compute_dtype must be None, bfloat16 or '
                         f'float16; got {name}.')
    return tf.as_dtype(dtype)


class MixedPrecisionOption:
    """The `compute_dtype` execution option of a network (a mixin)."""

    @property
    def compute_dtype(self):
        """`None` (the variables' dtype) or the mixed-precision dtype."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype):
        self._compute_dtype = check_compute_dtype(dtype, self.name)


def to_compute(x, compute_dtype):
    """Casts `x` to `compute_dtype` (mixed precision) unless it is `None`."""
    return x if compute_dtype is None else tf.cast(x, compute_dtype)


def image_shape(input_shape, owner):
    """`input_shape` as an `(H, W, C)` tuple of positive ints.

    Raises:
      ValueError: for another rank or a size below 1.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f'{owner}: input_shape must be (H, W, C) of '
                         f'positive ints; got {input_shape}.')
    return input_shape


def check_image_input(x, input_shape, owner):
    """Checks that `x` is `[B] + input_shape`, with static H, W and C.

    Raises:
      ValueError: otherwise, naming `owner`.
    """
    got = tuple(x.shape[1:]) if x.shape.rank == 4 else None
    if got != tuple(input_shape):
        raise ValueError(
            f'{owner} expects inputs of shape [B, '
            f'{", ".join(map(str, input_shape))}] (H, W, C); got {x.shape}.')


def dropout_generator(rate, rng):
    """`rng`, or a new `unseeded_generator()` if dropout needs one."""
    if rng is None and rate > 0:
        return random_state.unseeded_generator()
    return rng


def _check_positive_int(value, what, owner):
    if int(value) != value or value < 1:
        raise ValueError(f'{owner}: {what} must be a positive int; got '
                         f'{value!r}.')
    return int(value)


def _check_last_dim(x, expected, owner):
    got = x.shape[-1] if x.shape.rank else None
    if got is None or int(got) != expected:
        raise ValueError(f'{owner} expects inputs with {expected} channels on '
                         f'the last axis; got shape {x.shape}.')


class _LinearBase(tf.Module):
    """Shared DDI and weight normalisation of `Dense` and `Conv2D`."""

    def __init__(self, kernel_shape, init_scale, kernel_stddev, weight_norm,
                 dtype, name):
        super().__init__(name=name)
        self._init_scale = float(init_scale)
        self._weight_norm = bool(weight_norm)
        self._dtype = tf.as_dtype(dtype)
        if self._init_scale < 0:
            raise ValueError(f'{self.name}: init_scale must be >= 0; got '
                             f'{init_scale}.')
        if kernel_stddev < 0:
            raise ValueError(f'{self.name}: kernel_stddev must be >= 0; got '
                             f'{kernel_stddev}.')
        with self.name_scope:
            self.kernel = tf.Variable(
                tf.random.normal(kernel_shape, stddev=kernel_stddev,
                                 dtype=self._dtype),
                name='direction' if self._weight_norm else 'kernel')
            self.gain = None
            if self._weight_norm:
                self.gain = tf.Variable(
                    tf.ones(kernel_shape[-1:], dtype=self._dtype),
                    name='gain')
            self.bias = tf.Variable(
                tf.zeros(kernel_shape[-1:], dtype=self._dtype), name='bias')

    @property
    def weight_norm(self):
        """Whether the kernel is `gain * direction / ||direction||`."""
        return self._weight_norm

    def weights(self, dtype=None):
        """The kernel `W` the layer applies, cast to `dtype` if given.

        `kernel` itself, or with weight normalisation `g V / ||V||` (`V` =
        `kernel`, `g` = `gain`, the norm per output channel), computed in
        the variables' dtype.
        """
        kernel = tf.convert_to_tensor(self.kernel)
        if self._weight_norm:
            axes = list(range(kernel.shape.rank - 1))
            kernel = kernel * (self.gain * tf.math.rsqrt(
                tf.reduce_sum(tf.square(kernel), axis=axes)))
        return kernel if dtype is None else tf.cast(kernel, dtype)

    @property
    def init_scale(self):
        """Target output standard deviation of the DDI."""
        return self._init_scale

    @property
    def dtype(self):
        return self._dtype

    def _linear(self, x):
        raise NotImplementedError

    def _prepare(self, x):
        raise NotImplementedError

    def initialize(self, x):
        """Data-dependent init from the batch `x` (SPEC §1.1).

        With `y = x * W` the pre-activation without bias and `m`, `v` its mean
        and variance per output channel over all other axes:
        `s = init_scale / sqrt(v + 1e-8)`, `W <- W * s` (with weight
        normalisation `g <- g * s`, which scales `W` the same way),
        `b <- -m * s`, so that `x * W + b = (y - m) * s` has mean 0 and
        standard deviation `init_scale` per channel on this batch.

        Args:
          x: input batch, as for `__call__`.
        """
        x = tf.cast(self._prepare(x), self._dtype)
        y = self._linear(x)
        axes = list(range(y.shape.rank - 1))
        mean, variance = tf.nn.moments(y, axes=axes)
        scale = self._init_scale / tf.sqrt(
            variance + tf.constant(_DDI_EPSILON, self._dtype))
        if self._weight_norm:
            self.gain.assign(self.gain * scale)
        else:
            # The output channel is the kernel's last axis in both layer
            # kinds, so a per-channel factor broadcasts without reshaping.
            self.kernel.assign(self.kernel * scale)
        self.bias.assign(-mean * scale)

    def __call__(self, x):
        x = self._prepare(x)
        if initialization.is_active():
            initialization.record_initialization(self.name)
            self.initialize(x)
        return self._linear(x) + tf.cast(self.bias, x.dtype)


class Dense(_LinearBase):
    """Affine map on the last axis: `y = x W + b`.

    Works on inputs of any rank >= 1, so it is also the per-pixel "nin"
    (1x1 convolution) layer of SPEC §1.1 when applied to `[B, H, W, C]`.
    `W` has shape `[in_features, out_features]`, starts as
    `N(0, kernel_stddev^2)`, and `b` (shape `[out_features]`) as 0; with
    `weight_norm`, `W = g V / ||V||` (norm over `in_features`).
    Supports DDI (see `initialize`).

    Attributes:
      kernel: `tf.Variable` `W` (`V` with weight normalisation).
      gain: `tf.Variable` `g` `[out_features]`, or `None`.
      bias: `tf.Variable` `b`.
    """

    def __init__(self, in_features, out_features, init_scale=1.0,
                 kernel_stddev=_DEFAULT_KERNEL_STDDEV, weight_norm=False,
                 dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          in_features: Python int, size of the input's last axis.
          out_features: Python int, size of the output's last axis.
          init_scale: target per-channel output std of the DDI.
            Default value: 1.0.
          kernel_stddev: std of the initial kernel. Default value: 0.05.
          weight_norm: weight-normalised kernel (ImageNet code path).
            Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'dense'`.
        """
        owner = name or 'dense'
        self._in = _check_positive_int(in_features, 'in_features', owner)
        self._out = _check_positive_int(out_features, 'out_features', owner)
        super().__init__((self._in, self._out), init_scale, kernel_stddev,
                         weight_norm, dtype, name=name or 'dense')

    @property
    def in_features(self):
        return self._in

    @property
    def out_features(self):
        return self._out

    def _prepare(self, x):
        x = as_input(x, self._dtype)
        _check_last_dim(x, self._in, f'Dense {self.name!r}')
        return x

    def _linear(self, x):
        kernel = self.weights(x.dtype)
        if x.shape.rank == 2:
            return tf.matmul(x, kernel)
        # Flatten to a matrix (as the official "nin" does) so one GEMM serves
        # any rank; the leading shape may be dynamic.
        flat = tf.reshape(x, [-1, self._in])
        y = tf.matmul(flat, kernel)
        y = tf.reshape(y, tf.concat(
            [tf.shape(x, out_type=tf.int32)[:-1],
             tf.constant([self._out], tf.int32)], axis=0))
        return tf.ensure_shape(y, x.shape[:-1].concatenate([self._out]))


class Conv2D(_LinearBase):
    """2-D convolution, NHWC, stride 1, SAME padding: `y = conv(x, W) + b`.

    `W` has shape `[k, k, in_channels, out_channels]`, starts as
    `N(0, kernel_stddev^2)`, and `b` (shape `[out_channels]`) as 0 (with
    `weight_norm`, `W = g V / ||V||`, the norm over `k, k, in_channels`):
    `y[n, i, j, o] = b[o] + sum_{p, q, c} x[n, i + p - r, j + q - r, c]
    W[p, q, c, o]` with `r = (k - 1) / 2` and zeros outside the image.
    Supports DDI (see `initialize`; moments over batch, H and W).

    Attributes:
      kernel: `tf.Variable` `W` (`V` with weight normalisation).
      gain: `tf.Variable` `g` `[out_channels]`, or `None`.
      bias: `tf.Variable` `b`.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3,
                 init_scale=1.0, kernel_stddev=_DEFAULT_KERNEL_STDDEV,
                 weight_norm=False, dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          in_channels: Python int, input channels.
          out_channels: Python int, output channels.
          kernel_size: odd Python int `k`. Default value: 3.
          init_scale: target per-channel output std of the DDI.
            Default value: 1.0.
          kernel_stddev: std of the initial kernel. Default value: 0.05.
          weight_norm: weight-normalised kernel (ImageNet code path).
            Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'conv2d'`.
        """
        owner = name or 'conv2d'
        self._in = _check_positive_int(in_channels, 'in_channels', owner)
        self._out = _check_positive_int(out_channels, 'out_channels', owner)
        k = _check_positive_int(kernel_size, 'kernel_size', owner)
        if k % 2 == 0:
            # SAME padding of an even kernel is asymmetric: not a layer of
            # this model.
            raise ValueError(f'{owner}: kernel_size must be odd; got {k}.')
        self._kernel_size = k
        super().__init__((k, k, self._in, self._out), init_scale,
                         kernel_stddev, weight_norm, dtype,
                         name=name or 'conv2d')

    @property
    def in_channels(self):
        return self._in

    @property
    def out_channels(self):
        return self._out

    @property
    def kernel_size(self):
        return self._kernel_size

    def _prepare(self, x):
        x = as_input(x, self._dtype)
        if x.shape.rank != 4:
            raise ValueError(f'Conv2D {self.name!r} expects [B, H, W, C] '
                             f'inputs; got shape {x.shape}.')
        _check_last_dim(x, self._in, f'Conv2D {self.name!r}')
        return x

    def _linear(self, x):
        # An empty batch comes back from oneDNN's CPU kernel (TF 2.21, on
        # some CPUs) with the input's channels instead of the output's
        # (`sample(0)` failed). Only a batch known to be empty is answered
        # here: reshaping every output to fix an unknown one made ten 3x3
        # convolutions about 20% slower on CPU, for a case that needs an
        # empty replica batch under an unknown batch size on such a CPU.
        if x.shape[0] == 0:
            return tf.zeros(x.shape[:-1].concatenate([self._out]), x.dtype)
        return tf.nn.conv2d(x, self.weights(x.dtype), strides=1,
                            padding='SAME')


class LayerNorm(tf.Module):
    """Layer normalisation over the channel axis, per position (SPEC §1.2).

    `y = (x - mu) / sqrt(var + epsilon) * gamma + beta`, with `mu`, `var` the
    mean and (biased) variance of `x` over its last axis only; `gamma`
    (init 1) and `beta` (init 0) have shape `[C]`. No DDI.

    Attributes:
      gamma: `tf.Variable` of shape `[C]`.
      beta: `tf.Variable` of shape `[C]`.
    """

    def __init__(self, channels, epsilon=1e-5, dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          channels: Python int `C`.
          epsilon: variance floor. Default value: 1e-5.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'layer_norm'`.
        """
        super().__init__(name=name or 'layer_norm')
        self._channels = _check_positive_int(channels, 'channels', self.name)
        self._epsilon = float(epsilon)
        self._dtype = tf.as_dtype(dtype)
        with self.name_scope:
            self.gamma = tf.Variable(tf.ones([self._channels], self._dtype),
                                     name='gamma')
            self.beta = tf.Variable(tf.zeros([self._channels], self._dtype),
                                    name='beta')

    @property
    def channels(self):
        return self._channels

    def __call__(self, x):
        x = as_input(x, self._dtype)
        _check_last_dim(x, self._channels, f'LayerNorm {self.name!r}')
        compute_dtype = x.dtype
        # Moments in the variables' dtype: low precision loses the variance.
        x = tf.cast(x, self._dtype)
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        normalised = (x - mean) * tf.math.rsqrt(
            variance + tf.constant(self._epsilon, self._dtype))
        return tf.cast(normalised * self.gamma + self.beta, compute_dtype)
