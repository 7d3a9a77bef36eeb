"""Builders for the flows of the papers, from small declarative specs.

A flow is assembled from step groups (SPEC §1.9): `steps` repetitions of
`ActNorm (per element) -> Invertible1x1Conv (per half) -> coupling` on one
partition (the 1x1 convolution left out where the ImageNet code leaves it
out, SPEC §6.3), the coupling alternating which half it transforms, and a
`SwapHalves` when `steps` is odd (the official code's leftover TupleFlip).
Image flows are lists of stages separated by `Squeeze` (the paper's
`f_checker x n ; S2D ; f_channel x m, ...`).

All builders return layers in data -> latent (`inverse`) order, ready for
`tfb.Chain(layers)`; names are unique and deterministic, so contexts and
`training` can be routed by `vflow_tfp.bijectors.chain_kwargs`.
"""

import dataclasses
from typing import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import bijectors as vb
from vflow_tfp import nets
from vflow_tfp.bijectors import shape_checks
from vflow_tfp.models import conditional

__all__ = [
    'StepGroup',
    'image_step_group',
    'image_flow',
    'conditional_image_flow',
    'f_affine',
    'glow_flow',
    'vector_flow',
    'conditional_vector_flow',
]

tfb = tfp.bijectors

_PARTITIONS = {
    'column': vb.ColumnSplit,  # the official "checkerboard"
    'channel': vb.ChannelSplit,
    'checkerboard': vb.Checkerboard,  # a true 2-D checkerboard
}


@dataclasses.dataclass(frozen=True)
class StepGroup:
    """`steps` flow steps on one partition, the paper's f_split(B, F, K) x n.

    Attributes:
      split: `'column'` (the official "checkerboard", even/odd columns),
        `'channel'` or `'checkerboard'` (true 2-D).
      steps: number of steps `n`.
      blocks: conditioner blocks `B` (gated conv [+ attention]).
      filters: conditioner width `F`.
      components: logistic mixture components `K`; 0 for an affine coupling
        (`y = x exp(tanh h) + t`, SPEC §1.14).
      attention: attention blocks in the conditioner (f_*) or not (g_*).
    """
    split: str = 'column'
    steps: int = 1
    blocks: int = 10
    filters: int = 96
    components: int = 32
    attention: bool = True

    def __post_init__(self):
        if self.split not in _PARTITIONS:
            raise ValueError(f'split must be one of {sorted(_PARTITIONS)}; '
                             f'got {self.split!r}.')
        # A preset passes its arguments (and so a user's override) through
        # here: the message names the argument, not the group.
        for name, low in (('steps', 1), ('blocks', 0), ('filters', 1),
                          ('components', 0)):
            shape_checks.as_size(getattr(self, name), name, minimum=low)

    @property
    def partition(self):
        return _PARTITIONS[self.split]()


def image_step_group(event_shape, group, name, *, variant='vflow',
                     pointwise=True, pointwise_noise=0.01, context_channels=0,
                     output_nonlinearity=False, weight_norm=False,
                     dropout=0.0, rng=None, dtype=tf.float32):
    """Layers of one step group on images of `event_shape`, data -> latent.

    Args:
      event_shape: `(H, W, C)` of the tensor the group acts on.
      group: a `StepGroup`.
      name: prefix of the layer names.
      variant: `'flowpp'` or `'vflow'` squash of the mixture couplings.
      pointwise: a 1x1 convolution in every step.
      pointwise_noise: init noise of the 1x1 convolutions (SPEC §1.8).
      context_channels: channels of the context every coupling receives.
      output_nonlinearity: `concat_elu` before the conditioners' output
        convs (the ImageNet code path, SPEC §6.3).
      weight_norm: weight-normalised conditioner layers (ditto).
      dropout: dropout rate of the conditioners.
      rng: `tf.random.Generator` for dropout.
      dtype: float dtype.
    """
    partition = group.partition
    halves = partition.half_event_shapes(tuple(event_shape))
    layers = []
    for i in range(group.steps):
        parity = i % 2
        cond, trans = halves if parity == 0 else halves[::-1]
        if group.components:
            width = trans[-1] * vb.MixLogisticCoupling.num_params(
                group.components)
        else:
            width = 2 * trans[-1]
        net = nets.ConvAttnNet(
            cond, width, filters=group.filters, num_blocks=group.blocks,
            attention=group.attention, context_channels=context_channels,
            output_nonlinearity=output_nonlinearity, weight_norm=weight_norm,
            dropout=dropout, rng=rng, dtype=dtype, name=f'{name}_net{i}')
        if group.components:
            coupling = vb.MixLogisticCoupling(
                net, partition, group.components, parity=parity,
                variant=variant, dtype=dtype, name=f'{name}_coupling{i}')
        else:
            coupling = vb.AffineCoupling(net, partition, parity=parity,
                                         dtype=dtype,
                                         name=f'{name}_coupling{i}')
        layers.append(vb.ActNorm(event_shape, per_channel=False,
                                 dtype=dtype, name=f'{name}_norm{i}'))
        if pointwise:
            layers.append(vb.Invertible1x1Conv(
                event_shape, partition=partition,
                noise_scale=pointwise_noise, dtype=dtype,
                name=f'{name}_mix{i}'))
        layers.append(coupling)
    if group.steps % 2:
        layers.append(vb.SwapHalves(partition, name=f'{name}_swap'))
    return layers


def image_flow(event_shape, stages: Sequence[Sequence[StepGroup]], name,
               **group_kwargs):
    """A multi-scale image flow: stages of step groups joined by `Squeeze`.

    Returns:
      `(layers, latent_shape)`: layers in data -> latent order and the event
      shape after the last stage.
    """
    shape = tuple(int(d) for d in event_shape)
    layers = []
    for s, stage in enumerate(stages):
        if s:
            squeeze = vb.Squeeze(name=f'{name}_squeeze{s}')
            layers.append(squeeze)
            shape = tuple(squeeze.inverse_event_shape(shape).as_list())
        for g, group in enumerate(stage):
            try:
                layers += image_step_group(shape, group, f'{name}_s{s}g{g}',
                                           **group_kwargs)
            except ValueError as e:
                # The layer's message names the tensor it sees, which after
                # a squeeze is not the image the user gave.
                where = (f' (after {s} squeeze(s) of {list(event_shape)})'
                         if s else '')
                raise ValueError(
                    f'{name}: stage {s} group {g} ({group.split} split) '
                    f'cannot act on shape {list(shape)}{where}: {e}') from e
    return layers, shape


def conditional_image_flow(event_shape, condition_shape, group, name, *,
                           context_filters=32, context_blocks=3,
                           context_layer_norm=False, context_attention=False,
                           squash=True, variant='vflow', pointwise=True,
                           pointwise_noise=0.01, output_nonlinearity=False,
                           weight_norm=False, dropout=0.0, rng=None,
                           dtype=tf.float32):
    """r(u|x) or q(z|x~): one step group conditioned through a `ContextNet`.

    The context network processes the condition arranged like the halves of
    `group.partition` (SPEC §1.12), and its output enters every gated
    residual block of every coupling. The flow's closed form runs from noise
    to samples, followed by a sigmoid if `squash` (into (0, 1)).
    `context_layer_norm` and `context_attention` give the deeper context
    networks of the ImageNet code path (SPEC §6.3); the other arguments are
    `image_step_group`'s (`weight_norm` applies to the context network too).

    Returns:
      A `ConditionalFlow` over `event_shape`.
    """
    context_net = nets.ContextNet(
        condition_shape, group.partition, filters=context_filters,
        num_blocks=context_blocks, dropout=dropout,
        layer_norm=context_layer_norm, attention=context_attention, rng=rng,
        weight_norm=weight_norm, dtype=dtype, name=f'{name}_context')
    layers = image_step_group(
        event_shape, group, name, variant=variant, pointwise=pointwise,
        pointwise_noise=pointwise_noise, context_channels=context_filters,
        output_nonlinearity=output_nonlinearity, weight_norm=weight_norm,
        dropout=dropout, rng=rng, dtype=dtype)
    bijector = tfb.Invert(tfb.Chain(layers, name=f'{name}_flow'),
                          name=f'{name}_sampler')
    if squash:
        bijector = tfb.Chain([vb.Sigmoid(name=f'{name}_sigmoid'), bijector],
                             name=f'{name}_squashed')
    return conditional.ConditionalFlow(bijector, event_shape, context_net,
                                       dtype=dtype, name=name)


def f_affine(joint_shape, data_channels, filters, name, blocks=3, dropout=0.0,
             rng=None, dtype=tf.float32):
    """VFlow's f_affine (SPEC §1.13): `x -> x exp(s(z)) + t(z)`, z untouched.

    An affine coupling on the data channels of `[x, z]` whose conditioner sees
    only `z`: conv 3x3, `blocks` x [gated conv, layer norm], conv 3x3 with
    init scale 1, unbounded log-scale. Applied first on the way to the
    latent.
    """
    partition = vb.ChannelSplit(first_channels=data_channels)
    x_shape, z_shape = partition.half_event_shapes(tuple(joint_shape))
    net = nets.ConvAttnNet(z_shape, 2 * x_shape[-1], filters=filters,
                           num_blocks=blocks, attention=False,
                           output_init_scale=1.0, dropout=dropout, rng=rng,
                           dtype=dtype, name=f'{name}_net')
    return vb.AffineCoupling(net, partition, parity=1, scale_fn='exp',
                             dtype=dtype, name=name)


def glow_flow(event_shape, levels, steps, filters, name, dtype=tf.float32):
    """Glow (Kingma & Dhariwal 2018) without factor-out, data -> latent.

    `levels` x [Squeeze, `steps` x [ActNorm (per channel),
    Invertible1x1ConvLU, AffineCoupling]]: each coupling transforms the
    second half of the channels given the first with a `GlowNet` of width
    `filters` and Glow's scale `sigmoid(h + 2)` (as TFP's `tfb.Glow`); the
    learned 1x1 convolutions do the mixing, so the split is fixed.

    Returns:
      `(layers, latent_shape)`.
    """
    shape = tuple(int(d) for d in event_shape)
    partition = vb.ChannelSplit()
    layers = []
    for level in range(levels):
        squeeze = vb.Squeeze(name=f'{name}_squeeze{level}')
        layers.append(squeeze)
        shape = tuple(squeeze.inverse_event_shape(shape).as_list())
        cond, trans = partition.half_event_shapes(shape)
        for i in range(steps):
            prefix = f'{name}_l{level}s{i}'
            net = nets.GlowNet(cond, 2 * trans[-1], filters=filters,
                               dtype=dtype, name=f'{prefix}_net')
            layers += [
                vb.ActNorm(shape, per_channel=True, dtype=dtype,
                           name=f'{prefix}_norm'),
                vb.Invertible1x1ConvLU(shape, dtype=dtype,
                                       name=f'{prefix}_mix'),
                vb.AffineCoupling(net, partition, parity=0,
                                  scale_fn='sigmoid', dtype=dtype,
                                  name=f'{prefix}_coupling'),
            ]
    return layers, shape


def vector_flow(dims, num_steps, name, hidden_units=(50, 50),
                context_features=0, scale_fn='tanh', linear_top=False,
                dtype=tf.float32):
    """Glow on vectors: `num_steps` x [ActNorm, dense linear map, coupling].

    The couplings' MLPs have `hidden_units` (the paper's toy: 2 x 50) and see
    a context of `context_features` if nonzero. With `linear_top`, one more
    dense map `y = h W` (rows; `W = I + 0.01 N(0, 1)` at the start) follows
    the last coupling: over a standard normal base, the last coupling's
    output `h` is then a Gaussian of any covariance, `N(0, (W W^T)^{-1})`,
    where without it the half that the last coupling conditions on reaches
    the base unchanged. Returns data -> latent layers.
    """
    partition = vb.ChannelSplit(event_ndims=1)
    halves = partition.half_event_shapes((int(dims),))
    layers = []
    for i in range(num_steps):
        parity = i % 2
        cond, trans = halves if parity == 0 else halves[::-1]
        net = nets.MLP(cond[-1], 2 * trans[-1], hidden_units=hidden_units,
                       context_features=context_features, dtype=dtype,
                       name=f'{name}_net{i}')
        layers += [
            vb.ActNorm([dims], dtype=dtype, name=f'{name}_norm{i}'),
            vb.Invertible1x1Conv([dims], noise_scale=None, dtype=dtype,
                                 name=f'{name}_mix{i}'),
            vb.AffineCoupling(net, partition, parity=parity,
                              scale_fn=scale_fn, dtype=dtype,
                              name=f'{name}_coupling{i}'),
        ]
    if linear_top:
        layers.append(vb.Invertible1x1Conv([dims], noise_scale=0.01,
                                           dtype=dtype, name=f'{name}_top'))
    return layers


def conditional_vector_flow(dims, condition_features, num_steps, name,
                            hidden_units=(50, 50), scale_fn='tanh',
                            conditional_norm=True, dtype=tf.float32):
    """q(z|x) on vectors: a `vector_flow` whose couplings see `x` as context.

    With `conditional_norm` (the default), the ActNorm of the first step,
    the first layer of the sampling direction, becomes a
    `ConditionalAffine` whose MLP (`hidden_units`, zero output layer) sees
    `x`: the noise is first mapped to `eps' = eps * exp(s(x)) + t(x)`, a
    Gaussian whose mean and scale depend on `x` in every dimension. Without
    it, a one-step q (the toy VFlow's) leaves the half of `z` that
    conditions its single coupling independent of `x`, since the ActNorm
    and the dense map are unconditional.
    """
    layers = vector_flow(dims, num_steps, name, hidden_units=hidden_units,
                         context_features=condition_features,
                         scale_fn=scale_fn, dtype=dtype)
    if conditional_norm:
        net = nets.MLP(condition_features, 2 * int(dims),
                       hidden_units=hidden_units, dtype=dtype,
                       name=f'{name}_norm_net')
        layers[0] = vb.ConditionalAffine(net, [int(dims)], scale_fn=scale_fn,
                                         dtype=dtype, name=f'{name}_norm0')
    bijector = tfb.Invert(tfb.Chain(layers, name=f'{name}_flow'),
                          name=f'{name}_sampler')
    return conditional.ConditionalFlow(bijector, (int(dims),), dtype=dtype,
                                       name=name)
