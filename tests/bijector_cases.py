"""Shared test fixtures: every bijector of the package, built small and random.

Each case builds a bijector in a given dtype with non-trivial (random)
parameters and says which data-side inputs are valid for it, including the
extreme inputs its numerics must survive.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from vflow_tfp import bijectors as vb
from vflow_tfp import nets

IMAGE_SHAPE = (4, 4, 2)  # tiny, so full Jacobians are cheap
VECTOR_SHAPE = (4,)
NUM_COMPONENTS = 3
BATCH = 3


class TinyConditioner(tf.Module):
    """A small random network with the coupling conditioner signature.

    Images: 3x3 conv -> tanh -> 1x1; vectors: dense -> tanh -> dense. The
    weights are random (not zero), so the couplings it drives are far from
    the identity and their Jacobians have non-trivial off-diagonal blocks.
    An optional context enters additively after the first layer.
    """

    def __init__(self, in_shape, out_channels, context_channels=0,
                 hidden=8, dtype=tf.float32, scale=0.5):
        super().__init__()
        self.image = len(in_shape) == 3
        c_in = in_shape[-1]
        kernel = [3, 3, c_in, hidden] if self.image else [c_in, hidden]
        self.w1 = tf.Variable(scale * tf.random.normal(kernel, dtype=dtype))
        self.b1 = tf.Variable(0.1 * tf.random.normal([hidden], dtype=dtype))
        self.w2 = tf.Variable(
            scale * tf.random.normal([hidden, out_channels], dtype=dtype))
        self.b2 = tf.Variable(
            0.1 * tf.random.normal([out_channels], dtype=dtype))
        self.context_channels = context_channels
        if context_channels:
            self.wc = tf.Variable(scale * tf.random.normal(
                [context_channels, hidden], dtype=dtype))
        self.calls = 0

    def __call__(self, x, context=None, training=False):
        self.calls += 1
        if self.image:
            h = tf.nn.conv2d(x, self.w1, 1, 'SAME') + self.b1
        else:
            h = tf.matmul(x, self.w1) + self.b1
        if self.context_channels:
            if context is None:
                raise ValueError('TinyConditioner needs a context.')
            h += tf.einsum('...c,ch->...h', context, self.wc)
        return tf.einsum('...h,ho->...o', tf.tanh(h), self.w2) + self.b2


@dataclasses.dataclass
class Case:
    """A bijector recipe: `build(dtype) -> bijector` plus its input domain."""
    name: str
    build: Callable
    event_shape: tuple
    # data-side inputs for `inverse`: (low, high) of a uniform draw
    data_range: tuple = (-2.0, 2.0)
    # extreme data-side inputs (values must be valid for `inverse`)
    extreme_data: tuple = (-1e3, 1e3)
    # extreme latent-side inputs for `forward`
    extreme_latent: tuple = (-1e3, 1e3)
    # round-trip tolerances (float32, float64)
    atol: tuple = (1e-4, 1e-9)
    # latent-side round trip range for `forward` then `inverse`
    latent_range: tuple = (-2.0, 2.0)
    # element-wise bijectors (min event ndims 0) get an image-shaped input
    min_event_ndims: int = 3


def randomise(bijector, dtype, seed):
    """Replaces every trainable variable's value with a random one."""
    rng = np.random.default_rng(seed)
    for v in bijector.trainable_variables:
        name = v.name
        shape = v.shape.as_list()
        if 'weights' in name:  # dense 1x1: well-conditioned random matrix
            value = (np.eye(shape[-1]) + 0.3 * rng.standard_normal(shape))
        elif 'log_scale' in name or 'log_s' in name:
            value = 0.3 * rng.standard_normal(shape)
        else:
            value = 0.3 * rng.standard_normal(shape)
        v.assign(tf.constant(value, dtype=dtype))
    return bijector


def _half(partition, shape=IMAGE_SHAPE):
    return partition.half_event_shapes(shape)


def _coupling(cls, partition, params, parity=0, context_channels=0, **kw):
    def build(dtype):
        half_c, half_t = _half(partition, IMAGE_SHAPE if
                               partition.event_ndims == 3 else VECTOR_SHAPE)
        if parity:
            half_c, half_t = half_t, half_c
        net = TinyConditioner(half_c, half_t[-1] * params,
                              context_channels=context_channels, dtype=dtype)
        return cls(net, partition, parity=parity, dtype=dtype, **kw)
    return build


class WithFixedContext(tf.Module):
    """Calls a conditional network with a fixed random context.

    Lets a conditional coupling run through the generic contract tests,
    which pass no kwargs; the context is broadcast over the batch.
    """

    def __init__(self, net, context):
        super().__init__()
        self.net = net
        self.context = context

    def __call__(self, x, context=None, training=False):
        ctx = tf.broadcast_to(self.context,
                              tf.concat([tf.shape(x)[:1],
                                         tf.shape(self.context)[1:]], 0))
        return self.net(x, context=ctx, training=training)


class FixedContextNetwork(tf.Module):
    """A `ConditionalAffine` network evaluated on a fixed random context.

    Lets the conditional layer run through the generic contract tests, which
    pass no kwargs: the `[1, C]` context's parameters broadcast over the
    batch.
    """

    def __init__(self, net, context):
        super().__init__()
        self.net = net
        self.context = context

    def __call__(self, context=None, training=False):
        del context  # The contract tests pass none.
        return self.net(self.context, training=training)


def _conditional_affine(scale_fn, context_features=3):
    def build(dtype):
        size = int(np.prod(VECTOR_SHAPE))
        net = TinyConditioner((context_features,), 2 * size, dtype=dtype)
        context = tf.random.stateless_normal([1, context_features], [7, 8],
                                             dtype=dtype)
        return vb.ConditionalAffine(FixedContextNetwork(net, context),
                                    VECTOR_SHAPE, scale_fn=scale_fn,
                                    dtype=dtype)
    return build


def _attention_coupling(dtype):
    """MixLogisticCoupling driven by the real Flow++ conditioner."""
    partition = vb.ColumnSplit()
    cond, trans = partition.half_event_shapes(IMAGE_SHAPE)
    net = nets.ConvAttnNet(
        cond, trans[-1] * vb.MixLogisticCoupling.num_params(NUM_COMPONENTS),
        filters=8, num_blocks=1, num_heads=2, context_channels=3, dtype=dtype)
    randomise(net, dtype, 11)
    context = tf.random.stateless_normal([1] + list(cond[:-1]) + [3], [5, 6],
                                         dtype=dtype)
    return vb.MixLogisticCoupling(WithFixedContext(net, context), partition,
                                  NUM_COMPONENTS, variant='vflow', dtype=dtype)


def all_cases():
    k = NUM_COMPONENTS
    mix_p = vb.MixLogisticCoupling.num_params(k)
    return [
        Case('actnorm_per_channel',
             lambda dt: randomise(vb.ActNorm(IMAGE_SHAPE, per_channel=True,
                                             dtype=dt), dt, 0),
             IMAGE_SHAPE),
        Case('actnorm_per_element',
             lambda dt: randomise(vb.ActNorm(IMAGE_SHAPE, per_channel=False,
                                             dtype=dt), dt, 1),
             IMAGE_SHAPE),
        Case('actnorm_vector',
             lambda dt: randomise(vb.ActNorm(VECTOR_SHAPE, dtype=dt), dt, 2),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('conv1x1_dense',
             lambda dt: randomise(vb.Invertible1x1Conv(IMAGE_SHAPE,
                                                       dtype=dt), dt, 3),
             IMAGE_SHAPE),
        Case('conv1x1_dense_per_half',
             lambda dt: randomise(vb.Invertible1x1Conv(
                 IMAGE_SHAPE, partition=vb.ColumnSplit(), dtype=dt), dt, 4),
             IMAGE_SHAPE),
        Case('conv1x1_dense_vector',
             lambda dt: randomise(vb.Invertible1x1Conv(VECTOR_SHAPE,
                                                       dtype=dt), dt, 5),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('conv1x1_lu',
             lambda dt: randomise(vb.Invertible1x1ConvLU(IMAGE_SHAPE,
                                                         dtype=dt), dt, 6),
             IMAGE_SHAPE),
        Case('conv1x1_lu_per_half',
             lambda dt: randomise(vb.Invertible1x1ConvLU(
                 IMAGE_SHAPE, partition=vb.ChannelSplit(), dtype=dt), dt, 7),
             IMAGE_SHAPE),
        Case('squeeze', lambda dt: vb.Squeeze(), IMAGE_SHAPE),
        Case('squeeze_block_4', lambda dt: vb.Squeeze(block_size=4),
             IMAGE_SHAPE),
        Case('swap_halves_column',
             lambda dt: vb.SwapHalves(vb.ColumnSplit()), IMAGE_SHAPE),
        Case('swap_halves_checkerboard',
             lambda dt: vb.SwapHalves(vb.Checkerboard()), IMAGE_SHAPE),
        Case('swap_halves_vector',
             lambda dt: vb.SwapHalves(vb.ChannelSplit(event_ndims=1)),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('additive_column',
             _coupling(vb.AdditiveCoupling, vb.ColumnSplit(), 1),
             IMAGE_SHAPE),
        Case('additive_vector',
             _coupling(vb.AdditiveCoupling, vb.ChannelSplit(event_ndims=1), 1,
                       parity=1),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('affine_channel_tanh',
             _coupling(vb.AffineCoupling, vb.ChannelSplit(), 2),
             IMAGE_SHAPE),
        Case('affine_checkerboard_sigmoid',
             _coupling(vb.AffineCoupling, vb.Checkerboard(), 2, parity=1,
                       scale_fn='sigmoid'),
             IMAGE_SHAPE),
        Case('affine_exp_uneven_channels',
             _coupling(vb.AffineCoupling,
                       vb.ChannelSplit(event_ndims=1, first_channels=1), 2,
                       parity=1, scale_fn='exp'),
             VECTOR_SHAPE, min_event_ndims=1,
             # an unbounded scale overflows at |x| = 1e3 by design
             extreme_data=(-30.0, 30.0), extreme_latent=(-30.0, 30.0)),
        Case('affine_vector',
             _coupling(vb.AffineCoupling, vb.ChannelSplit(event_ndims=1), 2),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('conditional_affine_tanh', _conditional_affine('tanh'),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('conditional_affine_exp', _conditional_affine('exp'),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('conditional_affine_sigmoid', _conditional_affine('sigmoid'),
             VECTOR_SHAPE, min_event_ndims=1),
        Case('mixlogistic_flowpp_column',
             _coupling(vb.MixLogisticCoupling, vb.ColumnSplit(), mix_p,
                       num_components=k),
             IMAGE_SHAPE, atol=(2e-4, 1e-8), latent_range=(-8.0, 8.0)),
        Case('mixlogistic_vflow_checkerboard',
             _coupling(vb.MixLogisticCoupling, vb.Checkerboard(), mix_p,
                       parity=1, num_components=k, variant='vflow'),
             IMAGE_SHAPE, atol=(2e-4, 1e-8),
             # inside the bounded image t ± ln(19) e^s of each coupling
             latent_range=(-0.5, 0.5)),
        Case('mixlogistic_vflow_attention_context', _attention_coupling,
             IMAGE_SHAPE, atol=(2e-4, 1e-8), latent_range=(-0.5, 0.5)),
        Case('mixlogistic_vflow_vector',
             _coupling(vb.MixLogisticCoupling, vb.ChannelSplit(event_ndims=1),
                       mix_p, num_components=k, variant='vflow'),
             VECTOR_SHAPE, atol=(2e-4, 1e-8), latent_range=(-0.5, 0.5),
             min_event_ndims=1),
        Case('sigmoid', lambda dt: vb.Sigmoid(), IMAGE_SHAPE,
             data_range=(0.01, 0.99), extreme_data=(1e-6, 1 - 1e-6),
             latent_range=(-6.0, 6.0), min_event_ndims=0),
        Case('smooth_sigmoid', lambda dt: vb.SmoothSigmoid(), IMAGE_SHAPE,
             data_range=(0.01, 0.99), extreme_data=(-0.0555, 1.0555),
             latent_range=(-6.0, 6.0), min_event_ndims=0),
        Case('image_logit', lambda dt: vb.ImageLogit(), IMAGE_SHAPE,
             data_range=(0.0, 256.0), extreme_data=(0.0, 255.999),
             latent_range=(-2.9, 2.9), atol=(3e-3, 1e-9), min_event_ndims=0),
    ]


def data_points(case, dtype, low=None, high=None, seed=0):
    low = case.data_range[0] if low is None else low
    high = case.data_range[1] if high is None else high
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(BATCH,) + case.event_shape)
    return tf.constant(x, dtype=dtype)


def latent_points(case, bijector, dtype, seed=1, tails=True):
    """Latent-side points inside the bijector's image (fresh tensors)."""
    shape = bijector.inverse_event_shape(case.event_shape)
    rng = np.random.default_rng(seed)
    z = rng.uniform(*case.latent_range, size=(BATCH,) + tuple(shape))
    if 'vflow' in case.name:
        # The vflow variant's image is the bounded box t ± ln(19) e^s: take
        # images of data points spread far into the mixture's tails, which
        # lie inside it and reach its saturated edges.
        # With `tails`, data points reach ±20: their latent values sit at the
        # saturated edges of the image. tf.identity: a fresh tensor, or
        # `forward` would be a cache lookup.
        del z
        spread = 20.0 if tails else None
        return tf.identity(bijector.inverse(data_points(
            case, dtype, -spread if tails else None, spread, seed)))
    return tf.constant(z, dtype=dtype)


def autodiff_ildj(bijector, x, event_ndims):
    """log|det d inverse / dx| from the full Jacobian of the flattened map."""
    batch = x.shape[0]
    flat = tf.reshape(x, [batch, -1])
    with tf.GradientTape() as tape:
        tape.watch(flat)
        y = bijector.inverse(tf.reshape(flat, x.shape))
        flat_y = tf.reshape(y, [batch, -1])
    jacobian = tape.batch_jacobian(flat_y, flat)
    return tf.linalg.slogdet(jacobian)[1]


CASES = {case.name: case for case in all_cases()}
