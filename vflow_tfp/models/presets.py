"""Named model configurations of the papers, and CPU-sized ones.

`build(name, **overrides)` returns a `VFlow` model; `names()` lists the
presets; `describe(name)` gives a one-line summary (both from `catalog`,
which a command can import without TensorFlow). The `seed` override seeds
the model's noise and dropout generator; initial weights are drawn from
TensorFlow's global random state, so call `tf.random.set_seed` first for
reproducible weights (`training.Trainer` does). Overrides are the keyword
arguments of the preset's factory (e.g. `filters`, `blocks`, `components`,
`dropout`, `seed`, `dtype`); an unknown one is an error that lists the valid
ones.

Notation as in the VFlow paper (SPEC §7): `f_split(B, F, K) x n` is a step
group of n steps with B conditioner blocks of width F with attention and K
logistic components; `g_` drops the attention; `S2D` is `Squeeze`.

Reference parameter counts (asserted by the tests):

* `flowpp_cifar10`: 31,443,440 (Flow++'s documented count).
* `vflow_cifar10`: 39,700,096 (= 37.86 Mi: the paper's "37.8M" in 2^20 units).
"""

import functools
import inspect

import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import nets
from vflow_tfp import random_state
from vflow_tfp.nets import layers as net_layers
from vflow_tfp.bijectors import shape_checks
from vflow_tfp.models import builders
from vflow_tfp.models import catalog
from vflow_tfp.models import conditional
from vflow_tfp.models import vflow as vflow_lib

__all__ = ['build', 'names', 'describe']

tfb = tfp.bijectors
G = builders.StepGroup

TOY_STEPS = catalog.TOY_STEPS
TOY_DIMS = catalog.TOY_DIMS


def _rng(seed):
    if seed is None:
        return random_state.unseeded_generator()
    # Checked here, where every preset's seed arrives: TF would cast 1.5 to
    # 1 silently, and fail on a string with an error naming no setting.
    return tf.random.Generator.from_seed(
        shape_checks.as_size(seed, 'seed', minimum=0))


def _groups(blocks, filters, components, attention=True):
    """A `StepGroup` maker sharing B, F, K: `make(split, steps, b=blocks)`."""
    def make(split, steps, b=blocks):
        return G(split, steps, b, filters, components, attention)
    return make


def image_model(data_shape, p_stages, *, augment_channels=0, q_group=None,
                r_group=None, variant='vflow', pointwise_noise=0.01,
                p_pointwise=True, rq_pointwise=True, context_filters=32,
                context_blocks=3, context_layer_norm=False,
                context_attention=False, weight_norm=False,
                output_nonlinearity=False, f_affine_blocks=0,
                f_affine_filters=32, dropout=0.0, num_bins=256, seed=None,
                dtype=tf.float32, name='vflow'):
    """Assembles a `VFlow` image model from step-group specs.

    Args:
      data_shape: `(H, W, C)`.
      p_stages: stages of `StepGroup`s of p, joined by `Squeeze`.
      augment_channels: `D_Z`; needs `q_group` when > 0.
      q_group: `StepGroup` of the posterior q(z|x~) (conditioned on x~).
      r_group: `StepGroup` of the dequantiser r(u|x), or `None` for uniform
        dequantisation.
      variant: `'flowpp'` or `'vflow'` mixture squash, in all three flows.
      pointwise_noise: 1x1 convolution init noise (0.001 Flow++, 0.01 VFlow).
      p_pointwise, rq_pointwise: 1x1 convolutions in the steps of p, and in
        those of r and q.
      context_filters, context_blocks: the context networks of r and q.
      context_layer_norm, context_attention: a layer norm, and an attention
        block, after each of their blocks (ImageNet, SPEC §6.3).
      weight_norm: weight-normalised conv and dense layers in every
        conditioner and context network (ImageNet, SPEC §6.3).
      output_nonlinearity: `concat_elu` before every coupling network's
        output conv (ImageNet, SPEC §6.3).
      f_affine_blocks: blocks of VFlow's f_affine network; 0 for none.
      f_affine_filters: its width.
      dropout: dropout rate of every network.
      num_bins: pixel levels of the data (256 for 8-bit images, 32 for
        5-bit ones).
      seed: seed of the model's `tf.random.Generator` (noise and dropout);
        `None` for one seeded from TF's global seed (`tf.random.set_seed`).
      dtype: float dtype.
      name: model name.
    """
    rng = _rng(seed)
    data_shape = tuple(data_shape)
    channels = data_shape[-1]
    joint_shape = data_shape[:-1] + (channels + augment_channels,)
    common = dict(variant=variant, pointwise_noise=pointwise_noise,
                  weight_norm=weight_norm,
                  output_nonlinearity=output_nonlinearity, dropout=dropout,
                  rng=rng, dtype=dtype)
    conditional_kwargs = dict(
        pointwise=rq_pointwise, context_filters=context_filters,
        context_blocks=context_blocks, context_layer_norm=context_layer_norm,
        context_attention=context_attention, **common)
    layers = []
    if f_affine_blocks:
        if not augment_channels:
            raise ValueError('f_affine needs augment_channels > 0.')
        layers.append(builders.f_affine(
            joint_shape, channels, f_affine_filters, 'p_affine',
            blocks=f_affine_blocks, dropout=dropout, rng=rng, dtype=dtype))
    try:
        flow_layers, _ = builders.image_flow(joint_shape, p_stages, 'p',
                                             pointwise=p_pointwise, **common)
    except ValueError as e:
        if not augment_channels:
            raise
        raise ValueError(f'{e} (p models the {channels} data channels and '
                         f'augment_channels={augment_channels}.)') from e
    p_bijector = tfb.Chain(layers + flow_layers, name='p_flow')
    if r_group is None:
        dequantizer = conditional.UniformDequantizer(data_shape, dtype=dtype)
    else:
        dequantizer = builders.conditional_image_flow(
            data_shape, data_shape, r_group, 'r', **conditional_kwargs)
    posterior = None
    if augment_channels:
        if q_group is None:
            raise ValueError('augment_channels > 0 needs a q_group.')
        posterior = builders.conditional_image_flow(
            data_shape[:-1] + (augment_channels,), data_shape, q_group, 'q',
            **conditional_kwargs)
    return vflow_lib.VFlow(p_bijector, data_shape, augment_channels,
                           posterior=posterior, dequantizer=dequantizer,
                           num_bins=num_bins, rng=rng, dtype=dtype, name=name)


# -- CIFAR-10 (SPEC §2, §6, §7) -------------------------------------------

def flowpp_cifar10(filters=96, blocks=10, components=32, dequant_blocks=2,
                   dropout=0.2, attention=True, seed=None, dtype=tf.float32,
                   image_shape=(32, 32, 3), num_bins=256,
                   name='flowpp_cifar10'):
    """Flow++ CIFAR-10 (Table 3/4, 3.08 bpd): 31,443,440 parameters.

    p: f_checker(10,96,32)x4 ; S2D ; f_channel(10,96,32)x2, f_checker x3.
    r: f_checker(2,96,32)x4 + sigmoid (the code's attention couplings).
    `attention=False` gives the g_ (no attention) variant of every coupling;
    `dequant_blocks=0` uniform dequantisation.
    """
    g = _groups(blocks, filters, components, attention)
    return image_model(
        image_shape, [[g('column', 4)], [g('channel', 2), g('column', 3)]],
        r_group=g('column', 4, dequant_blocks) if dequant_blocks else None,
        variant='flowpp',
        pointwise_noise=0.001, dropout=dropout, seed=seed, dtype=dtype,
        num_bins=num_bins, name=name)


def vflow_cifar10(filters=96, blocks=10, components=32, dequant_blocks=2,
                  posterior_blocks=3, augment_channels=3, dropout=0.2,
                  seed=None, dtype=tf.float32, image_shape=(32, 32, 3),
                  num_bins=256, name='vflow_cifar10'):
    """VFlow 6-channel CIFAR-10 (Table 1, 2.98 bpd): 39,700,096 parameters.

    p: f_checker(10,96,32)x2, f_channel x2 ; S2D ; f_checker x2, f_channel x3.
    q: f_checker(3,96,32)x4 + sigmoid;  r: f_checker(2,96,32)x4 + sigmoid.
    `dequant_blocks=0` gives uniform dequantisation.
    """
    g = _groups(blocks, filters, components)
    return image_model(
        image_shape,
        [[g('column', 2), g('channel', 2)], [g('column', 2), g('channel', 3)]],
        augment_channels=augment_channels,
        q_group=g('column', 4, posterior_blocks),
        r_group=g('column', 4, dequant_blocks) if dequant_blocks else None,
        variant='vflow',
        pointwise_noise=0.01, dropout=dropout, seed=seed, dtype=dtype,
        num_bins=num_bins, name=name)


def _vflow_4m(augment_channels, blocks, q_blocks=3, filters=32, components=4,
              dropout=0.2, seed=None, dtype=tf.float32,
              image_shape=(32, 32, 3), num_bins=256, name='vflow_4m'):
    """VFlow of the 4M budget (Tables 2/5/6): f_affine(3,32), p f_*(B,32,4).

    p: f_affine ; f_checker x2, f_channel x2 ; S2D ; f_checker x2,
    f_channel x3.  q: g_checker(q_blocks,32,4)x4;  r: f_checker(2,32,4)x4.
    The paper's counts (4.01M-4.05M, in 2^20 units) match when one context
    network is not counted (SPEC §7); this builds both.
    """
    f = _groups(blocks, filters, components)
    return image_model(
        image_shape,
        [[f('column', 2), f('channel', 2)], [f('column', 2), f('channel', 3)]],
        augment_channels=augment_channels,
        q_group=G('column', 4, q_blocks, filters, components, attention=False),
        r_group=f('column', 4, 2), f_affine_blocks=3,
        f_affine_filters=filters, variant='vflow', dropout=dropout, seed=seed,
        dtype=dtype, num_bins=num_bins, name=name)


def flowpp_cifar10_4m(filters=32, blocks=13, components=4, dropout=0.2,
                      seed=None, dtype=tf.float32, image_shape=(32, 32, 3),
                      num_bins=256, name='flowpp_cifar10_4m'):
    """3-channel Flow++ of the 4M budget (Tables 2/5, 3.21 bpd)."""
    f = _groups(blocks, filters, components)
    return image_model(
        image_shape, [[f('column', 4)], [f('channel', 2), f('column', 3)]],
        r_group=f('column', 4, 2), variant='flowpp', pointwise_noise=0.001,
        dropout=dropout, seed=seed, dtype=dtype, num_bins=num_bins,
        name=name)


def glow(levels=3, steps=32, filters=512, seed=None, dtype=tf.float32,
         image_shape=(32, 32, 3), num_bins=256, name='glow_cifar10'):
    """Glow (Kingma & Dhariwal 2018) with uniform dequantisation.

    `levels` x [S2D, `steps` x (ActNorm, 1x1 conv (LU), affine coupling with
    a 3-layer `GlowNet` of width `filters`)], without factor-out; the image
    enters through the logit of SPEC §1.10 like the other presets.
    """
    image_shape = tuple(image_shape)
    levels = shape_checks.as_size(levels, 'levels')
    size = 2 ** levels
    if image_shape[0] % size or image_shape[1] % size:
        raise ValueError(
            f'levels={levels} squeezes the image {levels} times, so its '
            f'height and width must be multiples of {size}; got image_shape='
            f'{image_shape}.')
    layers, _ = builders.glow_flow(image_shape, levels, steps, filters, 'p',
                                   dtype=dtype)
    return vflow_lib.VFlow(
        tfb.Chain(layers, name='p_flow'), image_shape, 0,
        dequantizer=conditional.UniformDequantizer(image_shape, dtype=dtype),
        num_bins=num_bins, rng=_rng(seed), dtype=dtype, name=name)


# -- ImageNet (SPEC §6.3: the ImageNet code path of the official code) ----
#
# Weight-normalised conv and dense layers, `concat_elu` before every coupling
# network's output conv, no 1x1 convolutions in r and q (nor in Flow++'s p),
# and deeper context networks. The layouts are those of the official
# launchers (Flow++ `imagenet32_official.py`, VFlow `imagenet32.py` and
# `imagenet64.py`), which the papers do not spell out. VFlow's
# `imagenet64.py` alone has plain weights (`W` with its data-dependent init,
# as on CIFAR), although SPEC §6.3 says the whole path weight-normalises.

_IMAGENET = dict(weight_norm=True, output_nonlinearity=True,
                 rq_pointwise=False, context_layer_norm=True)


def flowpp_imagenet32(filters=128, blocks=20, components=32,
                      dequant_blocks=8, dropout=0.0, seed=None,
                      dtype=tf.float32, image_shape=(32, 32, 3),
                      num_bins=256, name='flowpp_imagenet32'):
    """Flow++ ImageNet 32x32 (3.86 bpd): 168,955,724 parameters.

    p: f_checker(20,128,32)x4, f_checker x3 ; S2D ; f_channel x3,
    f_checker x3, without 1x1 convolutions.
    r: f_checker(8,128,32)x8 + sigmoid; context net of 8 x [gated conv, LN,
    attention, LN].
    """
    g = _groups(blocks, filters, components)
    return image_model(
        image_shape,
        [[g('column', 4), g('column', 3)], [g('channel', 3), g('column', 3)]],
        r_group=g('column', 8, dequant_blocks), context_blocks=8,
        context_attention=True, p_pointwise=False, variant='flowpp',
        dropout=dropout, seed=seed, dtype=dtype, num_bins=num_bins,
        name=name, **_IMAGENET)


def vflow_imagenet32(filters=128, blocks=20, components=32, dequant_blocks=8,
                     posterior_blocks=8, augment_channels=3, dropout=0.0,
                     seed=None, dtype=tf.float32, image_shape=(32, 32, 3),
                     num_bins=256, name='vflow_imagenet32'):
    """VFlow ImageNet 32x32 (3.83 bpd in the paper).

    p: Flow++'s ImageNet layout with 1x1 convolutions, over [x~, z]
    (f_checker(20,128,32)x4, f_checker x3 ; S2D ; f_channel x3,
    f_checker x3). q: f_checker(8,128,32)x8 + sigmoid; r: the same; both
    with context nets of 8 x [gated conv, LN, attention, LN].
    """
    g = _groups(blocks, filters, components)
    return image_model(
        image_shape,
        [[g('column', 4), g('column', 3)], [g('channel', 3), g('column', 3)]],
        augment_channels=augment_channels,
        q_group=g('column', 8, posterior_blocks),
        r_group=g('column', 8, dequant_blocks), context_blocks=8,
        context_attention=True, variant='vflow', dropout=dropout, seed=seed,
        dtype=dtype, num_bins=num_bins, name=name, **_IMAGENET)


def vflow_imagenet64(filters=96, blocks=16, components=4, dequant_blocks=5,
                     posterior_blocks=5, augment_channels=3, dropout=0.0,
                     seed=None, dtype=tf.float32, image_shape=(64, 64, 3),
                     num_bins=256, name='vflow_imagenet64'):
    """VFlow ImageNet 64x64 (3.66 bpd in the paper).

    p: S2D ; f_checker(16,96,4)x4 ; S2D ; f_channel x2, f_checker x2 ; S2D ;
    f_channel x2, f_checker x2 (no coupling at 64x64). q: g_checker(5,96,4)x4
    + sigmoid; r: the same; both with context nets of 5 x [gated conv, LN].
    Plain (not weight-normalised) weights, as in its launcher.
    """
    g = _groups(blocks, filters, components)
    rq = _groups(blocks, filters, components, attention=False)
    return image_model(
        image_shape,
        [[], [g('column', 4)], [g('channel', 2), g('column', 2)],
         [g('channel', 2), g('column', 2)]],
        augment_channels=augment_channels,
        q_group=rq('column', 4, posterior_blocks),
        r_group=rq('column', 4, dequant_blocks), context_blocks=5,
        variant='vflow', dropout=dropout, seed=seed, dtype=dtype,
        num_bins=num_bins, name=name,
        **dict(_IMAGENET, weight_norm=False))


# -- CPU-sized models ------------------------------------------------------

def small_vflow(image_shape=(16, 16, 3), augment_channels=3, filters=32,
                blocks=2, components=8, attention=True, dequant_blocks=1,
                posterior_blocks=1, context_filters=16, dropout=0.0,
                num_bins=256, seed=None, dtype=tf.float32,
                name='small_vflow'):
    """A VFlow of the CIFAR layout sized for CPUs (8x8 to 32x32 images).

    `augment_channels=0` gives the corresponding Flow++ (its squash and 1x1
    initialisation); `dequant_blocks=0` uniform dequantisation.
    """
    g = _groups(blocks, filters, components, attention)
    if augment_channels:
        stages = [[g('column', 2), g('channel', 2)],
                  [g('column', 2), g('channel', 2)]]
    else:
        stages = [[g('column', 2)], [g('channel', 2), g('column', 2)]]
    return image_model(
        image_shape, stages, augment_channels=augment_channels,
        q_group=g('column', 2, posterior_blocks) if augment_channels else None,
        r_group=g('column', 2, dequant_blocks) if dequant_blocks else None,
        context_filters=context_filters, context_blocks=1,
        variant='vflow' if augment_channels else 'flowpp',
        pointwise_noise=0.01 if augment_channels else 0.001,
        dropout=dropout, seed=seed, dtype=dtype, num_bins=num_bins, name=name)


tiny_vflow = functools.partial(
    small_vflow, image_shape=(8, 8, 3), augment_channels=3, filters=16,
    blocks=1, components=4, context_filters=8, name='tiny_vflow')
tiny_flowpp = functools.partial(
    small_vflow, image_shape=(8, 8, 3), augment_channels=0, filters=16,
    blocks=1, components=4, context_filters=8, name='tiny_flowpp')


# -- the 2-D checkerboard (VFlow paper §5) ---------------------------------

def checkerboard_model(num_steps, dims=2, hidden_units=(50, 50),
                       scale_fn='sigmoid', q_conditional_norm=True,
                       linear_top=False, seed=None, dtype=tf.float32,
                       name=None):
    """Glow (dims = 2) or VFlow (dims > 2) on 2-D data.

    VFlow spends one of the `num_steps` steps on q(z|x) (dims - 2 features,
    couplings conditioned on x) and `num_steps - 1` on p over [x, z]; Glow
    spends all on p. Steps: ActNorm, dense linear map, affine coupling with
    an MLP of `hidden_units` (the paper: 2 x 50) and, as the paper's "Glow
    couplings", Glow's scale `exp(s) = sigmoid(h + 2)` (`scale_fn`). With
    `q_conditional_norm`
    (default) q's step normalises with a `ConditionalAffine` on x instead of
    an ActNorm, so all of z depends on x
    (`builders.conditional_vector_flow`); `False` is the plain Glow step.
    `linear_top` ends p with one more dense map (`builders.vector_flow`),
    `dims^2` parameters and no extra step. `name` defaults to the preset's:
    `checkerboard_glow_{num_steps}` or `checkerboard_vflow_{num_steps}_{dims}`.
    """
    augment = shape_checks.as_size(dims, 'dims', minimum=2) - 2
    if augment == 1:
        raise ValueError(f'dims must be 2 (Glow) or >= 4; got {dims}.')
    hidden_units = shape_checks.as_sizes(hidden_units, 'hidden_units')
    p_steps = num_steps - 1 if augment else num_steps
    if p_steps < 1:
        raise ValueError(f'num_steps={num_steps} leaves p no step.')
    p_bijector = tfb.Chain(builders.vector_flow(
        dims, p_steps, 'p', hidden_units=hidden_units, scale_fn=scale_fn,
        linear_top=linear_top, dtype=dtype), name='p_flow')
    posterior = None
    if augment:
        posterior = builders.conditional_vector_flow(
            augment, 2, 1, 'q', hidden_units=hidden_units, scale_fn=scale_fn,
            conditional_norm=q_conditional_norm, dtype=dtype)
    if name is None:
        name = (f'checkerboard_vflow_{num_steps}_{dims}' if augment
                else f'checkerboard_glow_{num_steps}')
    return vflow_lib.VFlow(p_bijector, (2,), augment, posterior=posterior,
                           rng=_rng(seed), dtype=dtype, name=name)


# The factory of each preset of `catalog` (its names and summaries).
_FACTORIES = {
    'flowpp_cifar10': flowpp_cifar10,
    'vflow_cifar10': vflow_cifar10,
    'vflow_cifar10_f64_k16': functools.partial(
        vflow_cifar10, filters=64, components=16,
        name='vflow_cifar10_f64_k16'),
    'vflow_cifar10_f56_k10': functools.partial(
        vflow_cifar10, filters=56, components=10,
        name='vflow_cifar10_f56_k10'),
    'flowpp_cifar10_4m': flowpp_cifar10_4m,
    'vflow4_cifar10_4m': functools.partial(
        _vflow_4m, 1, 11, name='vflow4_cifar10_4m'),
    'vflow6_cifar10_4m': functools.partial(
        _vflow_4m, 3, 10, name='vflow6_cifar10_4m'),
    'vflow6_cifar10_4m_q6': functools.partial(
        _vflow_4m, 3, 9, q_blocks=6, name='vflow6_cifar10_4m_q6'),
    'vflow6_cifar10_4m_q8': functools.partial(
        _vflow_4m, 3, 8, q_blocks=8, name='vflow6_cifar10_4m_q8'),
    'glow_cifar10': glow,
    'flowpp_imagenet32': flowpp_imagenet32,
    'vflow_imagenet32': vflow_imagenet32,
    'vflow_imagenet64': vflow_imagenet64,
    'small_vflow_32': functools.partial(
        small_vflow, image_shape=(32, 32, 3), name='small_vflow_32'),
    'small_vflow_16': functools.partial(small_vflow, name='small_vflow_16'),
    'small_flowpp_16': functools.partial(
        small_vflow, augment_channels=0, name='small_flowpp_16'),
    'tiny_vflow': tiny_vflow,
    'tiny_flowpp': tiny_flowpp,
}
for _steps in TOY_STEPS:
    _FACTORIES[f'checkerboard_glow_{_steps}'] = functools.partial(
        checkerboard_model, _steps, 2)
    for _dims in TOY_DIMS:
        _FACTORIES[f'checkerboard_vflow_{_steps}_{_dims}'] = (
            functools.partial(checkerboard_model, _steps, _dims))
if sorted(_FACTORIES) != catalog.names():
    raise ImportError('vflow_tfp.models.catalog and presets disagree on the '
                      'presets: '
                      f'{sorted(set(_FACTORIES) ^ set(catalog.names()))}.')


names = catalog.names
describe = catalog.describe


def _factory(name):
    catalog.check_name(name)
    return _FACTORIES[name]


def overridable(name):
    """The keyword arguments `build(name, ...)` accepts."""
    params = inspect.signature(_factory(name)).parameters
    return sorted([p for p in params
                   if params[p].default is not inspect.Parameter.empty]
                  + ['attention_query_block', 'compute_dtype'])


def check_overrides(preset, overrides, reserved=()):
    """Raises `ValueError` naming any of `overrides` that `preset` lacks.

    `reserved` settings (set by the caller in another way, e.g. the
    trainer's `seed`) are left out of the valid ones the message lists.
    """
    valid = [name for name in overridable(preset) if name not in reserved]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f'Preset {preset!r} has no setting(s) {unknown}; '
                         f'valid overrides: {valid}.')


def build(preset, /, attention_query_block=None, compute_dtype=None,
          **overrides):
    """Builds `preset` with keyword `overrides` (see `overridable`).

    The model's module name is the preset's; `preset` is positional only,
    so `name=...` overrides it like any other setting.

    Two execution options change no parameter; a preset without the
    networks they act on refuses them:

    * `attention_query_block`: memory-lean attention; the `T x T` weights
      are recomputed in the backward pass in blocks of that many queries
      instead of being kept (same values and gradients).
    * `compute_dtype`: `'bfloat16'` or `'float16'` runs the conditioner and
      context networks in mixed precision (float32 variables, mixture and
      log-det math); see `vflow_tfp.nets.set_compute_dtype`.
    """
    factory = _factory(preset)
    check_overrides(preset, overrides)
    if 'image_shape' in overrides:
        shape = shape_checks.as_event_shape(overrides['image_shape'],
                                            'image_shape')
        if len(shape) != 3:
            raise ValueError(f'image_shape must be (H, W, C); got '
                             f'{overrides["image_shape"]!r}.')
        overrides['image_shape'] = shape
    if 'dtype' in overrides:
        # Every layer needs a `tf.DType` (TFP's dtype checks compare with
        # one); a name such as `--set dtype=float64` gives is converted here.
        try:
            overrides['dtype'] = tf.as_dtype(overrides['dtype'])
        except TypeError as e:
            raise ValueError(f'Preset {preset!r}: dtype must be float32 or '
                             f'float64; got {overrides["dtype"]!r}.') from e
        if overrides['dtype'] not in (tf.float32, tf.float64):
            # 16-bit variables and log-densities overflow (a gradient norm
            # of 1e3 has a square of 1e6 > float16's 65504) and cannot
            # move an average by 0.1%: half precision is the arithmetic of
            # the networks, over float32 variables.
            hint = (' (for 16-bit arithmetic keep float32 variables and set '
                    f"compute_dtype='{overrides['dtype'].name}')"
                    if overrides['dtype'] in net_layers.LOW_PRECISION else '')
            raise ValueError(f'Preset {preset!r}: dtype must be float32 or '
                             f'float64; got {overrides["dtype"].name}{hint}.')
    if compute_dtype is not None:
        compute_dtype = net_layers.check_compute_dtype(
            compute_dtype, f'Preset {preset!r}')
    model = factory(**overrides)
    # An option that finds nothing to change is refused, not ignored: a
    # run would otherwise claim a setting it does not have.
    if attention_query_block is not None and not (
            nets.set_attention_query_block(model, attention_query_block)):
        raise ValueError(f'Preset {preset!r} has no attention, so '
                         'attention_query_block does not apply.')
    if compute_dtype is not None and not nets.set_compute_dtype(
            model, compute_dtype):
        raise ValueError(f'Preset {preset!r} has no network that runs in '
                         'mixed precision (compute_dtype applies to the '
                         'attention-coupling and context networks).')
    return model
