"""Tests of the model layer: presets, the VFlow bound and its importance-
weighted version, Theorem 1 of the VFlow paper, the change of variables end to
end, sampling, TFP flows as p and q, a short training run, and the photo
patches used as real data.

Sizes are kept small enough for the whole module to run in about two minutes
on two CPU cores.
"""

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from absl.testing import parameterized

from vflow_tfp import bijectors as vb
from vflow_tfp import data
from vflow_tfp import nets
from vflow_tfp.data import photos
from vflow_tfp.models import ConditionalFlow
from vflow_tfp.models import UniformDequantizer
from vflow_tfp.models import VFlow
from vflow_tfp.models import builders
from vflow_tfp.models import conditional
from vflow_tfp.models import presets
from vflow_tfp.nets import MLP
import model_helpers

tfb = tfp.bijectors
tfd = tfp.distributions
G = builders.StepGroup

MI = 2 ** 20


def _standard_normal_log_prob(eps):
    """Sum over all but the first axis of log N(eps; 0, 1), float64."""
    eps = tf.reshape(tf.cast(eps, tf.float64), [tf.shape(eps)[0], -1])
    return tf.reduce_sum(-0.5 * tf.square(eps) - 0.5 * math.log(2 * math.pi),
                         axis=-1)


def _jacobian_log_det(fn, inputs):
    """`(fn(inputs), log|det d fn / d inputs|)` per example by autodiff.

    The event of `inputs` (all but the first axis) is flattened, so this is
    the determinant of the full `D x D` Jacobian, not of a per-layer formula.
    """
    inputs = tf.convert_to_tensor(inputs)
    shape = inputs.shape
    flat = tf.reshape(inputs, [shape[0], -1])
    with tf.GradientTape() as tape:
        tape.watch(flat)
        outputs = fn(tf.reshape(flat, shape))
        out_flat = tf.reshape(outputs, [shape[0], -1])
    jacobian = tape.batch_jacobian(out_flat, flat)
    _, log_det = tf.linalg.slogdet(jacobian)
    return outputs, log_det


def _assert_p_round_trip(test, model, eps, atol):
    """eps -> xz = forward(eps): log p(xz) = log N(eps) - fldj(eps) and
    inverse(xz) = eps."""
    # tf.identity everywhere: TFP's bijector cache would otherwise answer
    # inverse(forward(eps)) with eps itself.
    xz = model.p_bijector.forward(tf.identity(eps))
    log_p = model.p.log_prob(tf.identity(xz))
    event_ndims = len(eps.shape) - 1
    expected = (model.p.distribution.log_prob(eps)
                - model.p_bijector.forward_log_det_jacobian(
                    tf.identity(eps), event_ndims=event_ndims))
    test.assertTrue(np.all(np.isfinite(log_p)))
    test.assertAllClose(log_p, expected, atol=atol, rtol=0)
    test.assertAllClose(model.p_bijector.inverse(tf.identity(xz)), eps,
                        atol=atol, rtol=0)


def _small_image_preset(name):
    """Overrides that shrink image preset `name` to a model built in a blink
    (sizes only: no seed, levels, dtype or rate)."""
    if name == 'glow_cifar10':
        return dict(levels=1, steps=1, filters=8, image_shape=(4, 4, 3))
    valid = presets.overridable(name)
    overrides = dict(filters=8, components=2,
                     image_shape=(16 if 'imagenet64' in name else 8,) * 2
                     + (3,))
    overrides.update({k: 1 for k in ('blocks', 'dequant_blocks',
                                     'posterior_blocks', 'q_blocks')
                      if k in valid})
    return overrides


def _layout(chain):
    """`'column0 column1 S2D channel0 swap ...'`: a chain's splits in order."""
    names = []
    for b in chain.bijectors:
        if isinstance(b, vb.Squeeze):
            names.append('S2D')
        elif isinstance(b, vb.SwapHalves):
            names.append('swap')
        elif isinstance(b, vb.Coupling):
            split = type(b.partition).__name__[:-len('Split')]
            names.append(f'{split.lower()}{b.parity}')
    return ' '.join(names)


def _logmeanexp(values, axis):
    values = np.asarray(values, np.float64)
    top = values.max(axis=axis, keepdims=True)
    return (np.log(np.mean(np.exp(values - top), axis=axis))
            + np.squeeze(top, axis))


# ----------------------------------------------------------------------------
# Photo patches (vflow_tfp.data.photos).
# ----------------------------------------------------------------------------

class PhotoPatchesTest(tf.test.TestCase):

    def test_shapes_dtype_and_counts(self):
        train = data.photo_patches(8, 'train')
        test = data.photo_patches(8, 'test')
        self.assertEqual(train.dtype, np.uint8)
        self.assertEqual(train.shape, (15606, 8, 8, 3))
        self.assertEqual(test.shape, (1429, 8, 8, 3))
        few = data.photo_patches(16, 'test', max_patches=10, stride=4)
        self.assertEqual(few.shape, (10, 16, 16, 3))
        # Overlapping patches: every position on the stride grid.
        chelsea = photos._photo('chelsea', 2)    # 150 x 225 after averaging
        coffee = photos._photo('coffee', 2)      # 200 x 300
        expected = sum(((h - 16) // 4 + 1) * ((w - 16) // 4 + 1)
                       for h, w, _ in (chelsea.shape, coffee.shape))
        self.assertLen(data.photo_patches(16, 'test', stride=4), expected)
        # Real photographs, not constant or saturated data.
        self.assertBetween(train.mean(), 40.0, 200.0)
        self.assertGreater(train.reshape(len(train), -1).std(axis=1).mean(),
                           10.0)

    def test_deterministic_and_seeded(self):
        a = data.photo_patches(8, 'train', max_patches=64, seed=3)
        b = data.photo_patches(8, 'train', max_patches=64, seed=3)
        c = data.photo_patches(8, 'train', max_patches=64, seed=4)
        self.assertAllEqual(a, b)
        self.assertNotAllEqual(a, c)
        # max_patches takes a prefix of the same shuffle.
        self.assertAllEqual(
            data.photo_patches(8, 'train', max_patches=16, seed=3), a[:16])
        # The shuffle mixes the photographs.
        _, sources = data.photo_patches(8, 'train', max_patches=200, seed=3,
                                        return_sources=True)
        self.assertGreater(len(set(sources)), 3)

    def test_train_and_test_come_from_disjoint_photographs(self):
        train, train_src = data.photo_patches(8, 'train',
                                              return_sources=True)
        test, test_src = data.photo_patches(8, 'test', return_sources=True)
        self.assertEqual(set(train_src), set(data.TRAIN_PHOTOS))
        self.assertEqual(set(test_src), set(data.TEST_PHOTOS))
        self.assertEmpty(set(train_src) & set(test_src))
        # No test patch occurs among the training patches.
        train_hashes = {hashlib.sha1(p.tobytes()).digest() for p in train}
        shared = sum(hashlib.sha1(p.tobytes()).digest() in train_hashes
                     for p in test)
        self.assertEqual(shared, 0)

    def test_patches_are_tiles_of_the_photographs(self):
        # pylint: disable-next=import-outside-toplevel
        from skimage import data as skdata
        patches, sources = data.photo_patches(50, 'test', downscale=1,
                                              return_sources=True)
        image = skdata.chelsea()                           # 300 x 451
        tiles = {image[i:i + 50, j:j + 50].tobytes()
                 for i in range(0, 251, 50) for j in range(0, 401, 50)}
        mine = {p.tobytes() for p in patches[sources == 'chelsea']}
        self.assertEqual(mine, tiles)
        # The patches come in the seeded permutation of the photographs'
        # tiles taken photograph by photograph, row by row: the order (and
        # so every max_patches prefix, and the photo_patches TFDS data set
        # built from it) is pinned by that construction.
        ordered = [photo[i:i + 50, j:j + 50]
                   for photo in (image, skdata.coffee())
                   for i in range(0, photo.shape[0] - 49, 50)
                   for j in range(0, photo.shape[1] - 49, 50)]
        for seed in (0, 5):
            order = np.random.default_rng(seed).permutation(len(ordered))
            self.assertAllEqual(
                data.photo_patches(50, 'test', downscale=1, seed=seed),
                np.stack(ordered)[order])
        # The motorcycle is the left view of the stereo pair.
        patches, sources = data.photo_patches(100, 'train', downscale=1,
                                              return_sources=True)
        left = skdata.stereo_motorcycle()[0]                # 500 x 741
        tiles = {left[i:i + 100, j:j + 100].tobytes()
                 for i in range(0, 401, 100) for j in range(0, 601, 100)}
        mine = {p.tobytes() for p in patches[sources == 'motorcycle']}
        self.assertEqual(mine, tiles)
        # Block averaging: each pixel of a k-times downscaled photograph is
        # the rounded mean of its k x k block; the edges that do not fill a
        # block (451 = 2 * 225 + 1 = 3 * 150 + 1 columns) are cropped.
        for k in (2, 3):
            height, width = image.shape[0] // k, image.shape[1] // k
            sums = sum(image[i:height * k:k, j:width * k:k].astype(np.int64)
                       for i in range(k) for j in range(k))
            means = sums / k**2
            # Means that truncation would get wrong are there to be caught.
            self.assertGreater(np.mean(means - np.floor(means) > 0.5), 0.1)
            self.assertAllEqual(photos._photo('chelsea', k),
                                np.round(means).astype(np.uint8))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, 'split'):
            data.photo_patches(8, 'validation')
        with self.assertRaisesRegex(ValueError, '>= 1'):
            data.photo_patches(0)
        with self.assertRaisesRegex(ValueError, 'larger than every'):
            data.photo_patches(2000, 'test')
        photos._photo.cache_clear()
        try:
            with mock.patch.dict(sys.modules, {'skimage': None,
                                               'skimage.data': None}):
                with self.assertRaisesRegex(ImportError,
                                            r'pip install -e "\.\[images\]"'):
                    data.photo_patches(8, 'test')
        finally:
            photos._photo.cache_clear()

    def test_negative_max_patches_and_bad_strides_are_refused(self):
        # A negative max_patches would silently drop patches from the end
        # of the shuffle (index[:-1]); a stride of 0 or less is refused
        # with the sizes, like a bad patch_size.
        with self.assertRaisesRegex(ValueError,
                                    re.escape('max_patches must be >= 0; '
                                              'got -1.')):
            data.photo_patches(8, 'test', max_patches=-1)
        for stride in (0, -4):
            with self.assertRaisesRegex(ValueError, re.escape(
                    'patch_size, stride and downscale must be >= 1; got 8, '
                    f'{stride}, 2.')):
                data.photo_patches(8, 'test', stride=stride)

    def test_max_patches_zero_and_a_bad_downscale(self):
        # max_patches keeps at most that many: 0 keeps none (not all).
        patches, sources = data.photo_patches(8, 'test', max_patches=0,
                                              return_sources=True)
        self.assertEqual(patches.shape, (0, 8, 8, 3))
        self.assertEqual(patches.dtype, np.uint8)
        self.assertEqual(sources.shape, (0,))
        # A downscale below 1 is refused with the sizes, like a bad
        # patch_size or stride (not a failure inside the averaging).
        for downscale in (0, -1):
            with self.assertRaises(Exception) as raised:
                data.photo_patches(8, 'test', downscale=downscale)
            self.assertIsInstance(raised.exception, ValueError)
            self.assertIn('patch_size, stride and downscale must be >= 1; '
                          f'got 8, 8, {downscale}.', str(raised.exception))


# ----------------------------------------------------------------------------
# Presets.
# ----------------------------------------------------------------------------

class PresetTest(tf.test.TestCase):

    def test_defaults_that_parameter_counts_cannot_see(self):
        # SPEC: dropout 0.2 in every gated network of the CIFAR-10 models;
        # Glow (and the toy models, "Glow couplings") scale by
        # sigmoid(h + 2), and Glow's ActNorm is per channel.
        small = dict(filters=8, blocks=1, components=2, dequant_blocks=1,
                     seed=0)
        for name in ('vflow_cifar10', 'flowpp_cifar10'):
            model = presets.build(name, **small)
            self.assertEqual(
                {b.dropout_rate for b in model.submodules if isinstance(
                    b, (nets.GatedResidualBlock, nets.GatedAttention))},
                {0.2}, name)
        for name, settings in [('glow_cifar10', dict(filters=8, steps=1)),
                               ('checkerboard_vflow_3_4', {})]:
            model = presets.build(name, seed=0, **settings)
            # q's conditional normalisation of the toy VFlow scales alike.
            couplings = [b for b in model.submodules if isinstance(
                b, (vb.AffineCoupling, vb.ConditionalAffine))]
            self.assertLen({type(b) for b in couplings},
                           1 if name.startswith('glow') else 2)
            self.assertEqual({b.scale_fn for b in couplings}, {'sigmoid'},
                             name)
        norms = [b for b in presets.build('glow_cifar10', filters=8, steps=1,
                                          seed=0).submodules
                 if isinstance(b, vb.ActNorm)]
        self.assertNotEmpty(norms)
        self.assertTrue(all(b.per_channel for b in norms))

    def test_layouts_variants_dropout_and_squash_follow_the_spec(self):
        # Parameter counts cannot see the order of the splits, which half a
        # coupling transforms, the variant of the mixture couplings, the
        # dropout each network gets, or the sigmoid that puts r's and q's
        # draws in (0, 1); small builds of the CIFAR-10 presets can.
        small = dict(filters=8, blocks=1, components=2, dequant_blocks=1,
                     seed=0)

        layout = _layout

        def of_type(model, kind):
            return [m for m in model.submodules if isinstance(m, kind)]

        # SPEC: VFlow's p is 2 column + 2 channel steps at 32x32, then
        # 2 + 3 after the squeeze; Flow++'s 4 column steps, then 2 channel
        # + 3 column. The parities alternate within each group.
        vflow = presets.build('vflow_cifar10', posterior_blocks=1,
                              dropout=0.1, **small)
        self.assertEqual(layout(vflow.p_bijector),
                         'column0 column1 channel0 channel1 S2D column0 '
                         'column1 channel0 channel1 channel0 swap')
        flowpp = presets.build('flowpp_cifar10', **small)
        self.assertEqual(layout(flowpp.p_bijector),
                         'column0 column1 column0 column1 S2D channel0 '
                         'channel1 column0 column1 column0 swap')
        self.assertEqual({b.variant for b in of_type(
            vflow, vb.MixLogisticCoupling)}, {'vflow'})
        self.assertEqual({b.variant for b in of_type(
            flowpp, vb.MixLogisticCoupling)}, {'flowpp'})
        # The dropout override reaches every gated network: p's, r's, q's
        # and the context nets'.
        self.assertEqual({b.dropout_rate for b in of_type(
            vflow, (nets.GatedResidualBlock, nets.GatedAttention))}, {0.1})
        x = tf.random.uniform([2, 32, 32, 3], 0, 256, tf.int32, seed=1)
        for flow, condition in [
                (vflow.dequantizer, tf.cast(x, tf.float32) / 256 - 0.5),
                (vflow.posterior, tf.zeros([2, 32, 32, 3]))]:
            draws, _ = flow.sample_and_log_prob(condition, seed=[1, 2])
            self.assertGreater(float(tf.reduce_min(draws)), 0.0)
            self.assertLess(float(tf.reduce_max(draws)), 1.0)

    def test_small_presets_follow_their_family(self):
        # Without augmentation the CPU-sized presets are Flow++ models (its
        # squash and its 1x1 init noise), with it VFlow models; their context
        # nets have one block of `context_filters` (8 for the tiny ones).
        for name, variant, noise, width in [
                ('tiny_vflow', 'vflow', 0.01, 8),
                ('tiny_flowpp', 'flowpp', 0.001, 8),
                ('small_vflow_16', 'vflow', 0.01, 16),
                ('small_flowpp_16', 'flowpp', 0.001, 16)]:
            with self.subTest(preset=name):
                model = presets.build(name, seed=0)
                self.assertEqual({b.variant for b in model.submodules
                                  if isinstance(b, vb.MixLogisticCoupling)},
                                 {variant})
                self.assertEqual(
                    {b.parameters['noise_scale'] for b in model.submodules
                     if isinstance(b, vb.Invertible1x1Conv)}, {noise})
                contexts = [m for m in model.submodules
                            if isinstance(m, nets.ContextNet)]
                self.assertLen(contexts, 2 if variant == 'vflow' else 1)
                for context in contexts:
                    self.assertLen(context.residual_blocks, 1)
                    self.assertEqual(context.output_shape[-1], width)

    def test_every_image_preset_has_the_structure_its_docstring_gives(self):
        # What parameter counts cannot see, per preset: p's layout, the
        # residual blocks of r's and q's coupling networks (their defaults:
        # distinct overrides could be swapped unseen), the default dropout,
        # the 1x1 init noise, the mixture variant, 4 attention heads, one
        # generator for all dropout, and f_affine's width (the `filters`
        # override). Only the sizes are overridden.
        cifar_vflow = ('column0 column1 channel0 channel1 S2D column0 '
                       'column1 channel0 channel1 channel0 swap')
        cifar_flowpp = ('column0 column1 column0 column1 S2D channel0 '
                        'channel1 column0 column1 column0 swap')
        imagenet32 = ('column0 column1 column0 column1 column0 column1 '
                      'column0 swap S2D channel0 channel1 channel0 swap '
                      'column0 column1 column0 swap')
        imagenet64 = ('S2D column0 column1 column0 column1 S2D channel0 '
                      'channel1 column0 column1 S2D channel0 channel1 '
                      'column0 column1')
        small_vflow = ('column0 column1 channel0 channel1 S2D column0 '
                       'column1 channel0 channel1')
        small_flowpp = 'column0 column1 S2D channel0 channel1 column0 column1'
        sizes = dict(filters=8, components=2, seed=0)
        blocks = dict(sizes, blocks=1)
        # name: (overrides, p's layout, r's blocks, q's blocks, dropout,
        #        1x1 noise, variant)
        table = {
            'flowpp_cifar10': (blocks, cifar_flowpp, 2, None, 0.2, 0.001,
                               'flowpp'),
            'vflow_cifar10': (blocks, cifar_vflow, 2, 3, 0.2, 0.01, 'vflow'),
            'vflow_cifar10_f56_k10': (blocks, cifar_vflow, 2, 3, 0.2, 0.01,
                                      'vflow'),
            'flowpp_cifar10_4m': (blocks, cifar_flowpp, 2, None, 0.2, 0.001,
                                  'flowpp'),
            'vflow4_cifar10_4m': (sizes, 'channel1 ' + cifar_vflow, 2, 3,
                                  0.2, 0.01, 'vflow'),
            'vflow6_cifar10_4m_q6': (sizes, 'channel1 ' + cifar_vflow, 2, 6,
                                     0.2, 0.01, 'vflow'),
            'flowpp_imagenet32': (blocks, imagenet32, 8, None, 0.0, None,
                                  'flowpp'),
            'vflow_imagenet32': (blocks, imagenet32, 8, 8, 0.0, 0.01,
                                 'vflow'),
            'vflow_imagenet64': (dict(blocks, image_shape=(16, 16, 3)),
                                 imagenet64, 5, 5, 0.0, 0.01, 'vflow'),
            'small_vflow_16': ({}, small_vflow, 1, 1, 0.0, 0.01, 'vflow'),
            'tiny_flowpp': ({}, small_flowpp, 1, None, 0.0, 0.001,
                            'flowpp'),
        }

        def blocks_of(flow):
            return {len(net.residual_blocks) for net in flow.submodules
                    if isinstance(net, nets.ConvAttnNet)}

        for name, (overrides, layout, r_blocks, q_blocks, dropout, noise,
                   variant) in table.items():
            with self.subTest(preset=name):
                overrides = dict({'image_shape': (8, 8, 3), 'seed': 0},
                                 **overrides)
                model = presets.build(name, **overrides)
                self.assertEqual(_layout(model.p_bijector), layout)
                self.assertEqual(blocks_of(model.dequantizer), {r_blocks})
                if q_blocks is None:
                    self.assertIsNone(model.posterior)
                else:
                    self.assertEqual(blocks_of(model.posterior), {q_blocks})
                gated = [m for m in model.submodules if isinstance(
                    m, (nets.GatedResidualBlock, nets.GatedAttention))]
                self.assertEqual({m.dropout_rate for m in gated}, {dropout})
                self.assertTrue(all(m.rng is model.rng for m in gated))
                self.assertEqual(
                    {b.parameters['noise_scale'] for b in model.submodules
                     if isinstance(b, vb.Invertible1x1Conv)},
                    set() if noise is None else {noise})
                self.assertEqual({b.variant for b in model.submodules
                                  if isinstance(b, vb.MixLogisticCoupling)},
                                 {variant})
                self.assertEqual({m.num_heads for m in model.submodules
                                  if isinstance(m, nets.GatedAttention)},
                                 {4})
                if layout.startswith('channel1'):  # f_affine
                    net = model.p_bijector.bijectors[0].conditioner
                    self.assertEqual(net.proj_in.out_channels,
                                     overrides['filters'])

    def test_glow_couplings_transform_the_second_half_after_lu_mixing(self):
        # Glow: ActNorm, the LU-parameterised 1x1 convolution, and a
        # coupling that leaves the first half of the channels as they are.
        model = presets.build('glow_cifar10', levels=1, steps=2, filters=8,
                              image_shape=(4, 4, 3), seed=0)
        layers = model.p_bijector.bijectors
        self.assertEqual([type(b).__name__ for b in layers[1:4]],
                         ['ActNorm', 'Invertible1x1ConvLU', 'AffineCoupling'])
        couplings = [b for b in layers if isinstance(b, vb.AffineCoupling)]
        self.assertLen(couplings, 2)
        for coupling in couplings:
            for v in coupling.conditioner.trainable_variables:
                v.assign(tf.random.stateless_normal(v.shape, [1, 2]))
            xz = tf.random.stateless_normal([2, 2, 2, 12], [3, 4])
            y = coupling.inverse(xz)
            self.assertAllEqual(y[..., :6], xz[..., :6])
            self.assertGreater(
                float(tf.reduce_min(tf.abs(y[..., 6:] - xz[..., 6:]))), 0.0)

    def test_pointwise_init_noise_of_each_family(self):
        # SPEC §1.8: the 1x1 convolutions start at I + s N(0, 1), s = 0.001
        # in Flow++ and 0.01 in VFlow, in p and in r and q.
        small = dict(filters=8, components=2, image_shape=(8, 8, 3), seed=0)
        for name, noise, depth in [('flowpp_cifar10', 0.001, 'blocks'),
                                   ('flowpp_cifar10_4m', 0.001, 'blocks'),
                                   ('vflow_cifar10', 0.01, 'blocks'),
                                   ('vflow6_cifar10_4m', 0.01, 'q_blocks')]:
            with self.subTest(preset=name):
                tf.random.set_seed(0)
                model = presets.build(name, **{depth: 1}, **small)
                mixes = [b for b in model.submodules
                         if isinstance(b, vb.Invertible1x1Conv)]
                self.assertLen({b.name.split('_')[0] for b in mixes}, 2
                               if name.startswith('flowpp') else 3)
                self.assertEqual({b.parameters['noise_scale'] for b in mixes},
                                 {noise})
                # The largest of the few hundred N(0, 1) draws is near 3.
                largest = max(float(tf.reduce_max(tf.abs(
                    b.weights - tf.eye(b.weights.shape[-1]))))
                    for b in mixes)
                self.assertBetween(largest, 2 * noise, 6 * noise)

    def test_f_affine_transforms_x_given_z_first(self):
        # SPEC §1.13: f_affine is the first layer on the way to the latent,
        # x -> x exp(s(z)) + t(z) with z untouched, an unbounded scale, an
        # output conv of init scale 1, and the model's dropout.
        for name, augment in (('vflow4_cifar10_4m', 1),
                              ('vflow6_cifar10_4m', 3)):
            with self.subTest(preset=name):
                tf.random.set_seed(0)
                model = presets.build(name, image_shape=(8, 8, 3), filters=8,
                                      components=2, q_blocks=1, seed=0)
                affine = model.p_bijector.bijectors[0]
                self.assertIsInstance(affine, vb.AffineCoupling)
                self.assertEqual(affine.name, 'p_affine')
                self.assertEqual(affine.scale_fn, 'exp')
                net = affine.conditioner
                self.assertEqual(net.proj_out.init_scale, 1.0)
                self.assertEqual({b.dropout_rate for b in net.submodules
                                  if isinstance(b, nets.GatedResidualBlock)},
                                 {0.2})
                images = tf.constant(np.random.RandomState(0).randint(
                    0, 256, (8, 8, 8, 3)), tf.int32)
                elbo = model.initialize(images, seed=[1, 2])
                self.assertAllInSet(tf.math.is_finite(elbo), [True])
                xz = tf.random.stateless_normal([4, 8, 8, 3 + augment],
                                                [5, 6])
                y = affine.inverse(xz)
                self.assertAllEqual(y[..., 3:], xz[..., 3:])
                self.assertGreater(
                    float(tf.reduce_min(tf.abs(y[..., :3] - xz[..., :3]))),
                    0.0)

    def test_flowpp_without_attention(self):
        small = dict(filters=8, blocks=1, components=2, dequant_blocks=1,
                     image_shape=(8, 8, 3), seed=0)
        plain = presets.build('flowpp_cifar10', attention=False, **small)
        self.assertEmpty([m for m in plain.submodules
                          if isinstance(m, nets.GatedAttention)])
        full = presets.build('flowpp_cifar10', **small)
        self.assertNotEmpty([m for m in full.submodules
                             if isinstance(m, nets.GatedAttention)])
        self.assertLess(plain.count_params(), full.count_params())

    def test_training_reaches_every_network(self):
        # Dropout needs `training=True` in the context nets of r and q and
        # in their attention blocks (ImageNet 32), and the rate in each.
        model = presets.build('vflow_imagenet32', image_shape=(8, 8, 3),
                              filters=8, blocks=1, components=2,
                              dequant_blocks=1, posterior_blocks=1,
                              dropout=0.1, seed=0)
        self.assertEqual(
            {b.dropout_rate for b in model.submodules if isinstance(
                b, (nets.GatedResidualBlock, nets.GatedAttention))}, {0.1})
        contexts = [model.dequantizer.context_net,
                    model.posterior.context_net]
        watched = contexts + [b for c in contexts
                              for b in c.attention_blocks]
        self.assertLen(watched, 2 + 2 * 8)  # 8 blocks each
        seen = {}

        def spy(cls):
            original = cls.__call__

            def call(module, *args, **kwargs):
                seen.setdefault(id(module), set()).add(
                    kwargs.get('training', False))
                return original(module, *args, **kwargs)
            return mock.patch.object(cls, '__call__', call)

        x = tf.constant(np.random.RandomState(0).randint(
            0, 256, (2, 8, 8, 3)), tf.int32)
        for training in (True, False):
            seen.clear()
            with spy(nets.ContextNet), spy(nets.GatedAttention):
                model.elbo(x, training=training, seed=[1, 2])
            self.assertEqual([seen.get(id(m)) for m in watched],
                             [{training}] * len(watched))

    def test_seedless_generators_follow_the_global_seed(self):
        # A preset built without `seed` draws its generator's seed from
        # TF's global seed: the same global seed, the same noise; another
        # global seed, other noise (over 64-bit seeds, never a collision in
        # ten).
        def first_draw(global_seed):
            tf.random.set_seed(global_seed)
            model = presets.build('checkerboard_glow_2')
            return tuple(model.rng.uniform_full_int([2], tf.int64).numpy())

        draws = [first_draw(s) for s in range(10)]
        self.assertLen(set(draws), 10)
        self.assertEqual(first_draw(3), draws[3])

    def test_checkerboard_couplings_alternate_and_top_starts_near_identity(
            self):
        for name in ('checkerboard_glow_5', 'checkerboard_vflow_5_10'):
            model = presets.build(name, linear_top=True, seed=0)
            couplings = [b for b in model.p_bijector.bijectors
                         if isinstance(b, vb.AffineCoupling)]
            self.assertEqual([b.parity for b in couplings],
                             [i % 2 for i in range(len(couplings))])
            # `W = I + 0.01 N(0, 1)` at the start, not a random rotation.
            top = model.p_bijector.bijectors[-1].weights[0]
            self.assertLess(float(tf.reduce_max(tf.abs(
                top - tf.eye(top.shape[0])))), 0.06)
            # The steps' dense maps are random rotations (SPEC: random
            # orthogonal init), which mix x into every half from the start.
            for mix in model.p_bijector.bijectors[1:-1:3]:
                self.assertIsInstance(mix, vb.Invertible1x1Conv)
                w = mix.weights[0]
                eye = tf.eye(w.shape[0])
                self.assertAllClose(tf.matmul(w, w, transpose_b=True), eye,
                                    atol=1e-5)
                self.assertGreater(float(tf.reduce_max(tf.abs(w - eye))),
                                   0.3)

    def test_checkerboard_hidden_units_reach_p_and_q(self):
        model = presets.build('checkerboard_vflow_3_4', hidden_units=(8, 6),
                              seed=0)
        mlps = [m for m in model.submodules if isinstance(m, MLP)]
        # p's two couplings; q's coupling and its conditional normalisation.
        self.assertLen(mlps, 4)
        self.assertEqual({m.hidden_units for m in mlps}, {(8, 6)})

    def _count_without(self, model, module):
        return model.count_params() - sum(
            v.shape.num_elements() for v in module.trainable_variables)

    def test_reference_parameter_counts(self):
        self.assertEqual(presets.build('flowpp_cifar10').count_params(),
                         31_443_440)
        self.assertEqual(presets.build('vflow_cifar10').count_params(),
                         39_700_096)
        # The docstring of the official Flow++ ImageNet 32x32 launcher.
        self.assertEqual(presets.build('flowpp_imagenet32').count_params(),
                         168_955_724)

    def test_paper_table_parameter_counts(self):
        # SPEC §7: counts in 2^20 units (print_params), the 4M VFlows without
        # q's context net.
        self.assertAlmostEqual(
            presets.build('vflow_cifar10_f64_k16').count_params() / MI,
            16.27, delta=0.005)
        self.assertAlmostEqual(
            presets.build('vflow_cifar10_f56_k10').count_params() / MI,
            11.94, delta=0.005)
        self.assertAlmostEqual(
            presets.build('flowpp_cifar10_4m').count_params() / MI,
            4.045, delta=0.001)
        for name, total, q_only in [('vflow4_cifar10_4m', 4.025, None),
                                    ('vflow6_cifar10_4m', 4.011, 0.357),
                                    ('vflow6_cifar10_4m_q6', 4.054, 0.640),
                                    ('vflow6_cifar10_4m_q8', 4.002, 0.829)]:
            model = presets.build(name)
            context = model.posterior.context_net
            self.assertAlmostEqual(
                self._count_without(model, context) / MI, total, delta=0.001,
                msg=name)
            if q_only is not None:
                q = sum(v.shape.num_elements()
                        for v in model.posterior.trainable_variables)
                q -= sum(v.shape.num_elements()
                         for v in context.trainable_variables)
                self.assertAlmostEqual(q / MI, q_only, delta=0.001, msg=name)

    def test_names_cover_the_documented_families(self):
        names = set(presets.names())
        self.assertEqual(presets.names(), sorted(names))
        expected = {
            'flowpp_cifar10', 'vflow_cifar10',
            'vflow_cifar10_f64_k16', 'vflow_cifar10_f56_k10',
            'flowpp_cifar10_4m', 'vflow4_cifar10_4m', 'vflow6_cifar10_4m',
            'vflow6_cifar10_4m_q6', 'vflow6_cifar10_4m_q8',
            'flowpp_imagenet32', 'vflow_imagenet32', 'vflow_imagenet64',
            'small_vflow_16', 'small_vflow_32', 'small_flowpp_16',
            'tiny_vflow', 'tiny_flowpp'}
        expected |= {f'checkerboard_glow_{s}' for s in (2, 3, 5, 10, 20)}
        expected |= {f'checkerboard_vflow_{s}_{d}' for s in (2, 3, 5, 10, 20)
                     for d in (4, 6, 8, 10)}
        self.assertEmpty(expected - names)
        for name in expected:
            self.assertNotEmpty(presets.describe(name), msg=name)

    def test_imagenet_presets_take_the_imagenet_code_path(self):
        # SPEC §6.3 and the official launchers: weight-normalised networks,
        # concat_elu before every coupling net's output conv, no 1x1
        # convolutions in r and q (nor in Flow++'s p), deeper context nets;
        # r and q of 8 steps on ImageNet 32 and of 4 on ImageNet 64.
        def layers_of(bijector):
            found, stack = [], [bijector]
            while stack:
                b = stack.pop()
                found.append(b)
                stack.extend(getattr(b, 'bijectors', []))
                if isinstance(getattr(b, 'bijector', None), tfb.Bijector):
                    stack.append(b.bijector)
            return found

        def count(bijector, cls):
            return sum(isinstance(b, cls) for b in layers_of(bijector))

        small = dict(seed=0, filters=8, blocks=1, components=2,
                     dequant_blocks=1)
        # The context nets: 8 blocks on ImageNet 32, 5 on ImageNet 64,
        # whose p squeezes first (three squeezes in all).
        for name, size, steps, p_1x1, attention, depth, latent in [
                ('flowpp_imagenet32', 8, 8, 0, True, 8, (4, 4, 12)),
                ('vflow_imagenet32', 8, 8, 13, True, 8, (4, 4, 24)),
                ('vflow_imagenet64', 16, 4, 12, False, 5, (2, 2, 384))]:
            with self.subTest(preset=name):
                overrides = dict(small, image_shape=(size, size, 3))
                if name.startswith('vflow'):
                    overrides['posterior_blocks'] = 1
                model = presets.build(name, **overrides)
                self.assertEqual(count(model.p_bijector,
                                       vb.Invertible1x1Conv), p_1x1)
                flows = [model.dequantizer]
                if model.posterior is not None:
                    flows.append(model.posterior)
                for flow in flows:
                    self.assertEqual(count(flow.bijector, vb.Coupling),
                                     steps)
                    self.assertEqual(count(flow.bijector,
                                           vb.Invertible1x1Conv), 0)
                    context = flow.context_net
                    self.assertNotEmpty(context.norms)
                    self.assertEqual(bool(context.attention_blocks),
                                     attention)
                    self.assertLen(context.residual_blocks, depth)
                self.assertEqual(model.latent_shape, latent)
                self.assertEqual(
                    isinstance(model.p_bijector.bijectors[0], vb.Squeeze),
                    name == 'vflow_imagenet64')
                linear = [m for m in model.submodules
                          if isinstance(m, (nets.Dense, nets.Conv2D))]
                self.assertNotEmpty(linear)
                # VFlow's ImageNet 64 launcher alone has plain weights.
                self.assertEqual({m.weight_norm for m in linear},
                                 {name != 'vflow_imagenet64'})
                conditioners = [m for m in model.submodules
                                if isinstance(m, nets.ConvAttnNet)]
                self.assertTrue(all(
                    m.proj_out.in_channels == 2 * 8 for m in conditioners))
                images = tf.constant(np.random.RandomState(0).randint(
                    0, 256, (4, size, size, 3)), tf.int32)
                elbo = model.initialize(images, seed=[1, 2])
                self.assertAllInSet(tf.math.is_finite(elbo), [True])
                xz = model.p.sample(2, seed=[3, 4])
                back = model.p_bijector.forward(
                    model.p_bijector.inverse(xz))
                self.assertAllClose(back, xz, atol=2e-3)

    def test_every_cpu_sized_preset_builds(self):
        small = {'small_vflow_16': ((16, 16, 3), 3),
                 'small_vflow_32': ((32, 32, 3), 3),
                 'small_flowpp_16': ((16, 16, 3), 0),
                 'tiny_vflow': ((8, 8, 3), 3),
                 'tiny_flowpp': ((8, 8, 3), 0)}
        for name, (shape, augment) in small.items():
            model = presets.build(name, seed=0)
            self.assertEqual(model.data_shape, shape, msg=name)
            self.assertEqual(model.augment_channels, augment, msg=name)
            self.assertEqual((model.q is None), augment == 0, msg=name)
            self.assertIsNotNone(model.r, msg=name)
            self.assertGreater(model.count_params(), 100_000, msg=name)
        for steps in (2, 3, 5, 10, 20):
            glow = presets.build(f'checkerboard_glow_{steps}', seed=0)
            # Per step: ActNorm (2 + 2), 2x2 linear map (4), and the
            # paper's MLP 1 -> 50 -> 50 -> 2 (100 + 2550 + 102).
            self.assertEqual(glow.count_params(), 2760 * steps)
            self.assertIsNone(glow.q)
            self.assertIsNone(glow.r)
            for dims in (4, 6, 8, 10):
                model = presets.build(f'checkerboard_vflow_{steps}_{dims}',
                                      seed=0)
                self.assertEqual(model.data_shape, (2,))
                self.assertEqual(model.augment_channels, dims - 2)
                self.assertEqual(model.latent_shape, (dims,))
                self.assertIsNotNone(model.q)
                # q's conditional normalisation replaces an ActNorm
                # (2 D_Z) by the MLP 2 -> 50 -> 50 -> 2 D_Z (150 + 2550 +
                # 102 D_Z).
                plain = presets.build(f'checkerboard_vflow_{steps}_{dims}',
                                      q_conditional_norm=False, seed=0)
                self.assertEqual(model.count_params() - plain.count_params(),
                                 2700 + 100 * (dims - 2))
        self.assertEqual(
            presets.build('checkerboard_vflow_3_10', seed=0).count_params(),
            13_848)

    def test_checkerboard_q_depends_on_x_in_every_dimension(self):
        # The one-step q(z|x) of the toy VFlow: with the conditional
        # normalisation, dz/dx (8 x 2 per point) has full rank 2 and no zero
        # row; with a plain ActNorm, the half of z that conditions the single
        # coupling ignores x (4 zero rows).
        x = tf.constant(data.sample_checkerboard(16, seed=1))
        for conditional_norm, zero_rows in ((True, 0), (False, 4)):
            tf.random.set_seed(0)
            model = presets.build('checkerboard_vflow_3_10', seed=0,
                                  q_conditional_norm=conditional_norm)
            model.initialize(data.sample_checkerboard(256, seed=0),
                             seed=tf.constant([1, 2]))
            # Output layers start at zero (identity maps): perturb q.
            model_helpers.perturb(model.posterior.trainable_variables, 0.1)
            with tf.GradientTape() as tape:
                tape.watch(x)
                z, _ = model.posterior.sample_and_log_prob(
                    x, tf.constant([3, 4]))
            jacobian = tape.batch_jacobian(z, x).numpy()  # [16, 8, 2]
            row_norms = np.linalg.norm(jacobian, axis=-1).max(axis=0)
            self.assertEqual(int(np.sum(row_norms < 1e-6)), zero_rows,
                             msg=f'conditional_norm={conditional_norm}')
            if conditional_norm:
                self.assertTrue(np.all(np.linalg.matrix_rank(jacobian) == 2))

    def test_conditional_vector_flow_normalises_on_x_by_default(self):
        # builders.conditional_vector_flow documents conditional_norm as
        # the default: called without it, a one-step q(z|x) must still
        # depend on x in every dimension of z (a plain ActNorm would leave
        # the half that conditions the single coupling independent of x).
        tf.random.set_seed(0)
        q = builders.conditional_vector_flow(2, 2, 1, 'q', hidden_units=(8,))
        x = tf.random.stateless_uniform([16, 2], [1, 2], -3, 3)
        q.sample_and_log_prob(x, tf.constant([3, 4]))  # Builds it.
        # Output layers start at zero (identity maps): perturb q.
        model_helpers.perturb(q.trainable_variables, 0.1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            z, _ = q.sample_and_log_prob(x, tf.constant([3, 4]))
        jacobian = tape.batch_jacobian(z, x).numpy()  # [16, 2, 2]
        row_norms = np.linalg.norm(jacobian, axis=-1).max(axis=0)
        self.assertTrue(np.all(row_norms > 1e-3), msg=str(row_norms))

    def test_checkerboard_linear_top_is_a_full_covariance_gaussian(self):
        # `linear_top` adds one dense map after p's last coupling (D^2
        # parameters, no step): over N(0, I), the flow's output h before it
        # is N(0, (A A^T)^-1) for the top's matrix A (rows: y = h A).
        for preset, dims, plain in (('checkerboard_glow_3', 2, 3 * 2760),
                                    ('checkerboard_vflow_3_10', 10, 13_848)):
            model = presets.build(preset, linear_top=True, seed=0)
            self.assertEqual(model.count_params(), plain + dims * dims)
            top = model.p_bijector.bijectors[-1]
            self.assertIsInstance(top, vb.Invertible1x1Conv)
            self.assertEqual(top.name, 'p_top')
        # The density check on the 10-dim VFlow (the last one built).
        rng = np.random.default_rng(0)
        matrix = (np.eye(10) + 0.3 * rng.standard_normal([10, 10]))
        top.weights.assign(matrix[None].astype(np.float32))
        model_helpers.perturb([v for v in model.p_bijector.trainable_variables
                               if 'coupling' in v.name], 0.05, rng)
        xz = tf.constant(rng.standard_normal([32, 10]), tf.float32)
        below = tfb.Chain(model.p_bijector.bijectors[:-1])
        h = below.inverse(tf.identity(xz))
        gaussian = tfd.MultivariateNormalTriL(
            scale_tril=np.linalg.cholesky(
                np.linalg.inv(matrix @ matrix.T)).astype(np.float32))
        expected = gaussian.log_prob(h) + below.inverse_log_det_jacobian(
            tf.identity(xz), event_ndims=1)
        self.assertAllClose(model.p.log_prob(xz), expected, atol=2e-4,
                            rtol=0)
        eps = tf.random.stateless_normal([8, 10], [4, 4])
        _assert_p_round_trip(self, model, eps, atol=1e-4)

    def test_unknown_preset_and_override(self):
        with self.assertRaisesRegex(ValueError,
                                    r"Unknown preset 'vflow_cifar100'.*"
                                    r'vflow_cifar10'):
            presets.build('vflow_cifar100')
        with self.assertRaisesRegex(ValueError, r'Unknown preset.*tiny_vflow'):
            presets.build('no_such_model')
        with self.assertRaisesRegex(
                ValueError, r"'tiny_vflow' has no setting\(s\) \['filterz'\]"
                r'.*filters'):
            presets.build('tiny_vflow', filterz=8)
        with self.assertRaisesRegex(ValueError, 'hidden_units'):
            presets.build('checkerboard_glow_2', filters=8)
        self.assertIn('filters', presets.overridable('tiny_vflow'))
        # The trainer sets the seed itself: its message does not offer it.
        with self.assertRaisesRegex(ValueError, 'filterz') as caught:
            presets.check_overrides('tiny_vflow', {'filterz': 8},
                                    reserved=('seed',))
        self.assertIn("'filters'", str(caught.exception))
        self.assertNotIn("'seed'", str(caught.exception))

    def test_override_values_of_the_wrong_kind_name_their_setting(self):
        # Each once failed deep inside with a message naming no setting,
        # or (seed=1.5, glow levels=0) built a model silently.
        for preset, overrides, error, message in [
                ('tiny_vflow', dict(image_shape='16x16'), TypeError,
                 r"image_shape must be a sequence of integers >= 1; got the "
                 r"string '16x16'"),
                ('tiny_vflow', dict(image_shape=(16, 16)), ValueError,
                 r'image_shape must be \(H, W, C\); got \(16, 16\)'),
                ('checkerboard_vflow_3_4', dict(hidden_units=50), TypeError,
                 r'hidden_units must be a sequence of integers >= 1; got 50'),
                ('checkerboard_glow_2', dict(hidden_units=[8, 0]),
                 ValueError, r'hidden_units\[1\] must be an integer >= 1'),
                ('tiny_vflow', dict(seed='a'), TypeError,
                 r"seed must be an integer >= 0; got 'a'"),
                ('tiny_vflow', dict(seed=1.5), ValueError,
                 r'seed must be an integer >= 0; got 1\.5'),
                ('glow_cifar10', dict(levels=0), ValueError,
                 r'levels must be an integer >= 1; got 0'),
                ('glow_cifar10', dict(levels=6), ValueError,
                 r'levels=6 squeezes the image 6 times, so its height and '
                 r'width must be multiples of 64; got image_shape=\(32, 32, '
                 r'3\)'),
                # q(z|x~) would ignore x~: the context enters only through
                # the coupling networks' blocks.
                ('tiny_vflow', dict(posterior_blocks=0), ValueError,
                 r'q_net0: a context \(context_channels=8\) needs '
                 r'num_blocks >= 1')]:
            with self.subTest(preset=preset, **overrides):
                with self.assertRaisesRegex(error, message):
                    presets.build(preset, **overrides)

    def test_dequant_blocks_0_is_uniform_dequantization_in_every_preset(self):
        for preset in ('tiny_vflow', 'flowpp_cifar10', 'vflow_cifar10'):
            with self.subTest(preset=preset):
                model = presets.build(preset, dequant_blocks=0, filters=8,
                                      blocks=1, components=2, seed=0)
                self.assertIsInstance(model.dequantizer,
                                      UniformDequantizer)

    def test_shapes_the_flow_cannot_split_name_the_users_shape(self):
        # The layers see the tensor after the squeezes and with z's
        # channels; the message says how that came from the user's image.
        for overrides, message in [
                (dict(image_shape=(6, 6, 3)),
                 r'stage 1 group 0 \(column split\) cannot act on shape '
                 r'\[3, 3, 24\] \(after 1 squeeze\(s\) of \[6, 6, 6\]\): '
                 r'ColumnSplit needs an even image width'),
                (dict(augment_channels=2),
                 r'cannot act on shape \[8, 8, 5\].*\(p models the 3 data '
                 r'channels and augment_channels=2.\)')]:
            with self.assertRaisesRegex(ValueError, message):
                presets.build('tiny_vflow', **overrides)

    def test_every_image_preset_takes_its_pixel_levels(self):
        image_presets = [name for name in presets.names()
                         if not name.startswith('checkerboard')]
        for preset in image_presets:
            self.assertIn('num_bins', presets.overridable(preset), preset)
        small = dict(filters=8, blocks=1, components=2, seed=0)
        for preset, overrides in (('tiny_vflow', {}), ('tiny_flowpp', {}),
                                  ('glow_cifar10', dict(
                                      levels=1, steps=1, filters=8, seed=0)),
                                  ('flowpp_cifar10', small)):
            with self.subTest(preset=preset):
                model = presets.build(preset, num_bins=32, **overrides)
                images = np.full([1] + list(model.data_shape), 31, np.int32)
                self.assertTrue(np.all(np.isfinite(
                    model.elbo(images, seed=[1, 2]))))
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            'must be below 32'):
                    model.elbo(images + 1, seed=[1, 2])
                # Samples come back in the 32 levels.
                self.assertLessEqual(
                    int(tf.reduce_max(model.sample(2, seed=[3, 4]))), 31)
        with self.assertRaisesRegex(ValueError, 'num_bins must be an '
                                    'integer >= 2; got 1'):
            presets.build('tiny_vflow', num_bins=1)
        # 8-bit pixels are refused by a 5-bit model, as integers of any type.
        model = presets.build('tiny_vflow', num_bins=32, seed=0)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'must be below 32'):
            model.elbo(np.full([1, 8, 8, 3], 200, np.uint8), seed=[1, 2])
        # r is conditioned on x / num_bins - 0.5, like the 8-bit models on
        # x / 256 - 0.5.
        conditions = []
        original = model.dequantizer.sample_and_log_prob

        def recording(condition, *args, **kwargs):
            conditions.append(condition)
            return original(condition, *args, **kwargs)

        with mock.patch.object(model.dequantizer, 'sample_and_log_prob',
                               recording):
            model.elbo(np.full([1, 8, 8, 3], 31, np.int32), seed=[1, 2])
        self.assertAllClose(conditions[0],
                            tf.fill([1, 8, 8, 3], 31 / 32 - 0.5))

    def test_pixel_levels_in_closed_form(self):
        # p the identity and uniform dequantisation: the ELBO is
        # log N(x~) + log|dx~/d(x + u)| with x~ = logit(v),
        # v = 0.05 + 0.9 (x + u) / num_bins (SPEC §1.11).
        bins = 32
        model = VFlow(tfb.Identity(), data_shape=[1, 2, 1], num_bins=bins,
                      dtype=tf.float64)
        x = np.array([[[[3], [31]]]], np.int32)
        seed = tf.constant([5, 6])
        u, _ = model.dequantizer.sample_and_log_prob(
            tf.zeros([1, 1, 2, 1], tf.float64),
            tfp.random.split_seed(seed, n=2)[0])
        v = 0.05 + 0.9 * (x + u.numpy()) / bins
        x_tilde = np.log(v) - np.log1p(-v)
        expected = np.sum(-0.5 * x_tilde ** 2 - 0.5 * math.log(2 * math.pi)
                          - np.log(v) - np.log1p(-v) + math.log(0.9 / bins))
        self.assertAllClose(model.elbo(x, seed=seed), [expected], rtol=1e-10,
                            atol=0)
        # Samples: floor(num_bins (sigmoid(y) - 0.05) / 0.9), clipped to
        # num_bins - 1, in uint8 up to 256 levels and int32 above.

        def logit_of(pixel, bins):
            v = 0.05 + 0.9 * pixel / bins
            return math.log(v / (1.0 - v))

        for bins, dtype, pixel in ((32, tf.uint8, 10), (512, tf.int32, 300)):
            shift = np.array([[[logit_of(pixel + 0.5, bins)], [20.0]]],
                             np.float32)
            model = VFlow(tfb.Shift(shift), data_shape=[1, 2, 1],
                          num_bins=bins)
            pixels = model.sample(2, temperature=0.0, seed=[1, 2])
            self.assertEqual(pixels.dtype, dtype)
            self.assertAllEqual(pixels, [[[[pixel], [bins - 1]]]] * 2)

    def test_name_is_an_override_like_any_other(self):
        self.assertIn('name', presets.overridable('tiny_vflow'))
        model = presets.build('tiny_vflow', seed=0, name='mine')
        self.assertEqual(model.name, 'mine')

    def test_every_preset_s_model_is_named_after_it(self):
        # build: "The model's module name is the preset's", so a variant
        # (F=64/K=16) is not named as its reference, and every preset can
        # be renamed with `name=...`. Image presets at toy sizes.
        for name in presets.names():
            with self.subTest(preset=name):
                self.assertIn('name', presets.overridable(name))
                overrides = ({} if name.startswith('checkerboard')
                             else _small_image_preset(name))
                self.assertEqual(
                    presets.build(name, seed=0, **overrides).name, name)

    def test_seedless_builds_follow_the_global_seed(self):
        # Op determinism refuses non-deterministic generators, so a model
        # built without a seed takes its generator's seed from the global
        # one. Determinism cannot be turned off again: a subprocess each.
        script = (
            'import json\n'
            'import sys\n'
            'import numpy as np\n'
            'import tensorflow as tf\n'
            'tf.config.experimental.enable_op_determinism()\n'
            'tf.random.set_seed(int(sys.argv[1]))\n'
            'from vflow_tfp.models import presets\n'
            "model = presets.build('tiny_vflow', dropout=0.1)\n"
            'x = np.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3) % 256\n'
            'elbo = model.elbo(tf.constant(x, tf.uint8), training=True)\n'
            'print(json.dumps(elbo.numpy().tolist()))\n')

        def elbo(global_seed):
            proc = subprocess.run(
                [sys.executable, '-c', script, str(global_seed)],
                capture_output=True, text=True, timeout=300,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            return np.array(json.loads(proc.stdout.strip().splitlines()[-1]))

        first, again, other = elbo(7), elbo(7), elbo(8)
        self.assertTrue(np.all(np.isfinite(first)))
        self.assertAllEqual(first, again)
        self.assertNotAllClose(first, other)

    def test_overrides_change_the_model(self):
        base = presets.build('tiny_vflow', seed=0)
        narrow = presets.build('tiny_vflow', filters=8, seed=0)
        self.assertLess(narrow.count_params(), base.count_params())
        variable = next(v for v in narrow.trainable_variables
                        if 'p_s0g0_net0' in v.name and 'kernel' in v.name)
        self.assertIn(8, variable.shape.as_list())
        flowpp = presets.build('tiny_vflow', augment_channels=0)
        self.assertIsNone(flowpp.q)
        self.assertEqual(flowpp.latent_shape, (4, 4, 12))
        self.assertEqual(base.latent_shape, (4, 4, 24))
        wide = presets.build('checkerboard_glow_2', hidden_units=(8,))
        # Per step 4 + 4 + (1 -> 8: 16) + (8 -> 2: 18).
        self.assertEqual(wide.count_params(), 2 * (4 + 4 + 16 + 18))
        double = presets.build('tiny_flowpp', dtype=tf.float64)
        self.assertTrue(all(v.dtype == tf.float64
                            for v in double.trainable_variables))

    def test_dtype_by_name(self):
        # `--set dtype=float64` hands the preset a string.
        x = data.sample_checkerboard(4, seed=0)
        model = presets.build('checkerboard_vflow_3_4', seed=0,
                              dtype='float64')
        self.assertEqual(model.elbo(x, seed=[1, 2]).dtype, tf.float64)
        for bad, shown in (('int32', 'int32'), ('floot64', "'floot64'")):
            with self.assertRaisesRegex(
                    ValueError, "^Preset 'checkerboard_vflow_3_4': dtype must "
                    f'be float32 or float64; got {shown}.$'):
                presets.build('checkerboard_vflow_3_4', dtype=bad)
        # 16-bit variables: the gradient norm's square overflows float16,
        # an average cannot move by 0.1% in bfloat16, and the export's
        # float32 math refuses them; mixed precision is compute_dtype.
        for bad in ('float16', tf.bfloat16):
            name = tf.as_dtype(bad).name
            with self.assertRaisesRegex(
                    ValueError, "^Preset 'tiny_vflow': dtype must be float32 "
                    f'or float64; got {name} \\(for 16-bit arithmetic keep '
                    'float32 variables and set '
                    f"compute_dtype='{name}'\\).$"):
                presets.build('tiny_vflow', dtype=bad)
        # A bad compute_dtype is named with the preset, before any build.
        for bad, shown in (('float32', 'float32'), ('half-ish', "'half-ish'")):
            with self.assertRaisesRegex(
                    ValueError, "^Preset 'tiny_vflow': compute_dtype must be "
                    f'None, bfloat16 or float16; got {shown}.$'):
                presets.build('tiny_vflow', compute_dtype=bad)

    def test_bits_per_dim_of_integer_log_likelihoods(self):
        model = presets.build('checkerboard_glow_2', seed=0)
        expected = np.array([3.0, 4.0]) / (2 * math.log(2.0))
        for ll in ([-3, -4], np.array([-3, -4]), tf.constant([-3, -4])):
            self.assertAllClose(model.bits_per_dim(ll), expected)

    def test_bits_per_dim_count_the_data_dimensions_only(self):
        # SPEC §2.3: the divisor is D_x, not D_x + D_z.
        for name, dims in (('tiny_vflow', 8 * 8 * 3),
                           ('checkerboard_vflow_3_10', 2)):
            model = presets.build(name, seed=0)
            self.assertGreater(model.augment_channels, 0)
            self.assertEqual(model.num_data_dims, dims)
            self.assertAllClose(model.bits_per_dim([-dims * math.log(2.0)]),
                                [1.0])

    def test_glow_refuses_a_width_its_squeezes_cannot_halve(self):
        # glow: "its height and width must be multiples of 2^levels", the
        # width as well as the height, named in the preset's own words.
        for shape in ((8, 6, 3), (6, 8, 3)):
            with self.subTest(image_shape=shape):
                with self.assertRaisesRegex(
                        ValueError, r'^levels=2 squeezes the image 2 times, '
                        r'so its height and width must be multiples of 4; '
                        rf'got image_shape=\({shape[0]}, {shape[1]}, 3\)\.$'):
                    presets.build('glow_cifar10', levels=2, steps=1,
                                  filters=8, image_shape=shape, seed=0)

    def test_dtype_reaches_glow_and_f_affine(self):
        # The `dtype` override is the dtype of every variable, also of
        # Glow's flow and of VFlow's f_affine (the 4M presets).
        for name, overrides in [
                ('glow_cifar10', dict(levels=1, steps=1, filters=8)),
                ('vflow4_cifar10_4m', dict(filters=8, components=2,
                                           q_blocks=1))]:
            with self.subTest(preset=name):
                try:  # A float32 layer among float64 ones fails the build.
                    model = presets.build(name, image_shape=(4, 4, 3),
                                          seed=0, dtype='float64',
                                          **overrides)
                except TypeError as e:
                    self.fail(f'a float64 {name} mixes dtypes: {e}')
                self.assertNotEmpty(model.trainable_variables)
                self.assertEqual({v.dtype for v in model.trainable_variables},
                                 {tf.float64})

    def test_glow_seed_seeds_its_generator(self):
        # "The `seed` override seeds the model's noise and dropout
        # generator", whatever TF's global random state is.
        def first_draw(seed, global_seed):
            tf.random.set_seed(global_seed)
            model = presets.build('glow_cifar10', levels=1, steps=1,
                                  filters=8, image_shape=(4, 4, 3), seed=seed)
            return model.rng.uniform_full_int([2], tf.int64).numpy()

        self.assertAllEqual(first_draw(5, 1), first_draw(5, 2))
        self.assertNotAllEqual(first_draw(5, 1), first_draw(6, 1))

    def test_shape_errors_name_only_what_is_involved(self):
        # The message adds "after n squeeze(s)" only after a squeeze, and
        # the augmentation only when there is one (a Flow++ has none).
        with self.assertRaisesRegex(ValueError, r'cannot act on shape '
                                    r'\[8, 8, 5\]: ') as caught:
            presets.build('tiny_vflow', augment_channels=2)
        self.assertNotIn('squeeze', str(caught.exception))
        with self.assertRaisesRegex(ValueError, r'cannot act on shape '
                                    r'\[3, 3, 12\] \(after 1 squeeze\(s\) of '
                                    r'\[6, 6, 3\]\)') as caught:
            presets.build('tiny_flowpp', image_shape=(6, 6, 3))
        self.assertNotIn('augment_channels', str(caught.exception))

    def test_checkerboard_dims_and_steps_are_checked(self):
        # checkerboard_model: Glow (dims 2) or VFlow (dims >= 4; one
        # augmented dimension is refused); a VFlow spends a step on q, so
        # it needs two; odd D_Z such as 3 are fine.
        with self.assertRaisesRegex(
                ValueError, r'^dims must be 2 \(Glow\) or >= 4; got 3\.$'):
            presets.checkerboard_model(3, dims=3)
        with self.assertRaisesRegex(
                ValueError, r'^num_steps=1 leaves p no step\.$'):
            presets.checkerboard_model(1, dims=4)
        try:
            model = presets.checkerboard_model(2, dims=5, seed=0)
        except ValueError as e:
            self.fail(f'dims=5 refused: {e}')
        self.assertEqual(model.augment_channels, 3)
        self.assertEqual(model.latent_shape, (5,))

    def test_compute_dtype_is_a_valid_override(self):
        # overridable lists the keyword arguments build accepts, the two
        # execution options included: a settings check of them passes.
        for option in ('attention_query_block', 'compute_dtype'):
            self.assertIn(option, presets.overridable('tiny_vflow'))
        presets.check_overrides('tiny_vflow', {'compute_dtype': 'bfloat16'},
                                reserved=('seed',))

    def test_step_groups_with_affine_couplings(self):
        # StepGroup: "components ... 0 for an affine coupling"; a group
        # has steps >= 1. On 3 channels the channel halves differ in size
        # (so no per-half 1x1 convolutions).
        with self.assertRaisesRegex(ValueError,
                                    'steps must be an integer >= 1; got 0'):
            G('column', 0)
        for split in ('column', 'channel'):
            with self.subTest(split=split):
                try:
                    group = G(split, 2, 1, 8, 0)
                except ValueError as e:
                    self.fail(f'components=0 refused: {e}')
                layers = builders.image_step_group((4, 4, 3), group, 'g',
                                                   pointwise=False)
                couplings = [b for b in layers if isinstance(b, vb.Coupling)]
                self.assertLen(couplings, 2)
                halves = group.partition.half_event_shapes((4, 4, 3))
                for i, coupling in enumerate(couplings):
                    self.assertIsInstance(coupling, vb.AffineCoupling)
                    # A shift and a log-scale per transformed element.
                    transformed = halves[1 - i % 2]  # parity i % 2
                    self.assertEqual(coupling.conditioner.output_shape[-1],
                                     2 * transformed[-1])

    def test_a_zero_width_group_names_the_filters_setting(self):
        # StepGroup checks the arguments a preset passes through it, so the
        # message names the user's override (`filters`, the conditioner
        # width F), not a layer deep inside nor a shape the flow cannot
        # act on.
        message = r'^filters must be an integer >= 1; got 0\.$'
        with self.assertRaisesRegex(ValueError, message):
            G('column', 1, 1, 0, 2)
        with self.assertRaisesRegex(ValueError, message):
            presets.build('tiny_flowpp', filters=0, seed=0)

    def test_seed_0_seeds_the_generator_like_any_other_seed(self):
        # "The `seed` override seeds the model's noise and dropout
        # generator" for every seed >= 0, 0 included: only `None` leaves
        # it to TF's global random state.
        def first_draw(seed, global_seed):
            tf.random.set_seed(global_seed)
            model = presets.build('checkerboard_glow_2', seed=seed)
            return model.rng.uniform_full_int([2], tf.int64).numpy()

        self.assertAllEqual(first_draw(0, 1), first_draw(0, 2))
        self.assertNotAllEqual(first_draw(0, 1), first_draw(1, 1))

    def test_each_preset_s_model_is_named_after_the_preset(self):
        # The factories name the model as the preset (`name=...` overrides
        # it), so a toy run's record (`preset`, `model`) names one model:
        # checkerboard_glow_L and checkerboard_vflow_L_D, L counting all
        # L steps, the one of q(z|x) included.
        for name in ('checkerboard_glow_3', 'checkerboard_vflow_3_10',
                     'checkerboard_vflow_2_6', 'checkerboard_vflow_5_4',
                     'tiny_flowpp'):
            self.assertEqual(presets.build(name, seed=0).name, name)

    def test_imagenet_vflows_give_r_and_q_their_own_depths(self):
        # vflow_imagenet32/64: q has `posterior_blocks` blocks per coupling
        # network and r `dequant_blocks` (equal by default, so only
        # distinct overrides tell them apart).
        def blocks_of(flow):
            return {len(net.residual_blocks) for net in flow.submodules
                    if isinstance(net, nets.ConvAttnNet)}

        for name, size in (('vflow_imagenet32', 8), ('vflow_imagenet64', 16)):
            with self.subTest(preset=name):
                model = presets.build(
                    name, image_shape=(size, size, 3), filters=8, blocks=1,
                    components=2, dequant_blocks=1, posterior_blocks=2,
                    seed=0)
                self.assertEqual(blocks_of(model.dequantizer), {1})
                self.assertEqual(blocks_of(model.posterior), {2})

    def test_an_image_shape_of_another_rank_is_refused(self):
        # build: "image_shape must be (H, W, C)", more dimensions as well as
        # fewer.
        with self.assertRaisesRegex(
                ValueError, r'^image_shape must be \(H, W, C\); got '
                r'\(8, 8, 3, 1\)\.$'):
            presets.build('tiny_vflow', image_shape=(8, 8, 3, 1), seed=0)

    def test_dtype_reaches_the_uniform_dequantizer(self):
        # The `dtype` override is the dtype of the whole model, also of the
        # uniform dequantisation noise (`dequant_blocks=0`, and Glow's).
        for name, overrides in [
                ('tiny_vflow', dict(dequant_blocks=0)),
                ('glow_cifar10', dict(levels=1, steps=1, filters=8))]:
            with self.subTest(preset=name):
                model = presets.build(name, image_shape=(4, 4, 3), seed=0,
                                      dtype='float64', **overrides)
                self.assertIsInstance(model.dequantizer, UniformDequantizer)
                u, log_r = model.dequantizer.sample_and_log_prob(
                    tf.zeros([2, 4, 4, 3], tf.float64), seed=[1, 2])
                self.assertEqual((u.dtype, log_r.dtype),
                                 (tf.float64, tf.float64))
                images = np.random.RandomState(0).randint(0, 256, [2, 4, 4, 3])
                try:
                    elbo = model.elbo(images, seed=[1, 2])
                except tf.errors.InvalidArgumentError as e:
                    self.fail(f'a float64 {name} mixes dtypes: {e}')
                self.assertEqual(elbo.dtype, tf.float64)

    def test_dropout_override_reaches_f_affine(self):
        # image_model: "dropout: dropout rate of every network", f_affine's
        # too (the 4M VFlows).
        model = presets.build('vflow4_cifar10_4m', image_shape=(8, 8, 3),
                              filters=8, components=2, q_blocks=1,
                              dropout=0.1, seed=0)
        affine = model.p_bijector.bijectors[0].conditioner
        self.assertEqual({b.dropout_rate for b in affine.submodules
                          if isinstance(b, nets.GatedResidualBlock)}, {0.1})

    def test_small_presets_take_the_attention_override(self):
        # small_vflow's `attention=False` is the g_ (no attention) variant
        # of every coupling, as in flowpp_cifar10: an accepted override is
        # not ignored.
        for name in ('tiny_vflow', 'tiny_flowpp'):
            with self.subTest(preset=name):
                full = presets.build(name, seed=0)
                plain = presets.build(name, attention=False, seed=0)
                self.assertNotEmpty([m for m in full.submodules
                                     if isinstance(m, nets.GatedAttention)])
                self.assertEmpty([m for m in plain.submodules
                                  if isinstance(m, nets.GatedAttention)])
                self.assertLess(plain.count_params(), full.count_params())

    def test_f_affine_without_augmentation_is_refused_by_name(self):
        # f_affine transforms x given z (SPEC §1.13): without augmented
        # channels there is no z, and image_model says so in terms of its
        # settings, not of a split deep inside.
        with self.assertRaisesRegex(
                ValueError, r'^f_affine needs augment_channels > 0\.$'):
            presets.image_model((8, 8, 3), [[G('column', 1, 1, 8, 2)]],
                                f_affine_blocks=1, f_affine_filters=8,
                                seed=0)

    def test_an_image_shape_of_numpy_integers_is_named_as_given(self):
        # build takes `image_shape` as any sequence of integers (say a
        # NumPy array); a shape the flow cannot act on is named in the
        # user's terms, as plain integers.
        with self.assertRaisesRegex(ValueError, r'of \[6, 6, 3\]\)'):
            presets.build('tiny_flowpp', image_shape=np.array([6, 6, 3]),
                          seed=0)
        with self.assertRaisesRegex(ValueError,
                                    r'got image_shape=\(8, 6, 3\)\.$'):
            presets.build('glow_cifar10', levels=2, steps=1, filters=8,
                          image_shape=np.array([8, 6, 3]), seed=0)

    def test_a_reserved_setting_is_refused_as_an_override(self):
        # check_overrides leaves `reserved` settings (the trainer's seed)
        # out of the valid ones: an override naming one is refused too.
        with self.assertRaisesRegex(
                ValueError, r"'tiny_vflow' has no setting\(s\) \['seed'\]"):
            presets.check_overrides('tiny_vflow', {'seed': 1},
                                    reserved=('seed',))

    def test_names_lists_the_43_presets_of_the_paper_s_toy_grid(self):
        # README: "presets.names() lists all 43"; the toy presets span the
        # VFlow paper's grid of steps L (2, 3, 5, 10, 20), each L >= 2 so
        # that a VFlow keeps a step for p.
        names = presets.names()
        self.assertLen(names, 43)
        steps = {int(n.split('_')[2]) for n in names
                 if n.startswith('checkerboard')}
        self.assertEqual(steps, {2, 3, 5, 10, 20})

    def test_checkerboard_refuses_fewer_than_two_dims(self):
        # checkerboard_model: Glow (dims = 2) or VFlow (dims > 2) on 2-D
        # data, so dims counts at least the 2 data dimensions; fewer are
        # refused by name, not by a split deep inside.
        for dims in (1, 0):
            with self.assertRaisesRegex(
                    ValueError,
                    rf'^dims must be an integer >= 2; got {dims}\.$'):
                presets.checkerboard_model(3, dims=dims)

    def test_a_false_compute_dtype_is_named_with_the_preset(self):
        # compute_dtype is None, bfloat16 or float16: any other value, also
        # one that is false ('' from an empty flag, 0, False), is refused
        # with the preset's name before any build, not by a network of it.
        for bad, shown in (('', "''"), (0, '0'), (False, 'False')):
            with self.assertRaisesRegex(
                    ValueError, "^Preset 'tiny_vflow': compute_dtype must be "
                    f'None, bfloat16 or float16; got {shown}.$'):
                presets.build('tiny_vflow', compute_dtype=bad)

    def test_every_image_factory_passes_the_common_overrides_on(self):
        # The module docstring: overrides are the keyword arguments of the
        # preset's factory, `seed` seeds the model's generator; image_model:
        # `num_bins` are the data's pixel levels, `dtype` the float dtype
        # and `dropout` the rate of every network. Each image factory takes
        # them (small sizes here), and none accepts one and ignores it. One
        # preset per factory: the other image presets fix some of its other
        # settings (filters, components, blocks, name).
        expected_draw = tf.random.Generator.from_seed(3).uniform_full_int(
            [2], tf.int64)
        for name in ('flowpp_cifar10', 'vflow_cifar10', 'flowpp_cifar10_4m',
                     'vflow6_cifar10_4m', 'glow_cifar10', 'flowpp_imagenet32',
                     'vflow_imagenet32', 'vflow_imagenet64', 'small_vflow_16'):
            overrides = dict(_small_image_preset(name), seed=3, num_bins=32,
                             dtype='float64')
            if name != 'glow_cifar10':
                overrides.update(dropout=0.1)
            with self.subTest(preset=name):
                model = presets.build(name, **overrides)
                self.assertEqual(model.num_bins, 32)
                self.assertAllEqual(
                    model.rng.uniform_full_int([2], tf.int64), expected_draw)
                self.assertEqual({v.dtype for v in model.trainable_variables},
                                 {tf.float64})
                if 'dropout' in overrides:
                    self.assertEqual(
                        {b.dropout_rate for b in model.submodules
                         if isinstance(b, (nets.GatedResidualBlock,
                                           nets.GatedAttention))}, {0.1})

    def test_every_unknown_override_is_named(self):
        # check_overrides "raises ValueError naming any of `overrides` that
        # `preset` lacks": all of them, not the first one only.
        with self.assertRaisesRegex(
                ValueError, r"^Preset 'tiny_vflow' has no setting\(s\) "
                r"\['blockz', 'filterz'\]; valid overrides: "):
            presets.build('tiny_vflow', filterz=8, blockz=1, seed=0)


# ----------------------------------------------------------------------------
# The importance-weighted bound of a tiny image VFlow.
# ----------------------------------------------------------------------------

class ImportanceWeightingTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = model_helpers.initialized_tiny_vflow(11, [1, 2])
        cls.x = data.photo_patches(8, 'test', max_patches=16, seed=5)

    def test_single_sample_iw_is_the_elbo_in_distribution(self):
        reps = 8
        x = np.repeat(self.x, reps, axis=0)                 # 128 examples
        iw = self.model.log_prob(x, num_samples=1, seed=[3, 4]).numpy()
        elbo = self.model.elbo(x, seed=[5, 6]).numpy().astype(np.float64)
        self.assertEqual(iw.dtype, np.float64)
        self.assertTrue(np.all(np.isfinite(iw)) and np.all(np.isfinite(elbo)))
        # Both are unbiased estimates of E[ELBO(x)] for the same images: the
        # per-image means agree up to the sampling noise.
        diff = (iw - elbo).reshape(len(self.x), reps).mean(axis=1)
        stderr = (iw - elbo).std() / math.sqrt(len(x))
        print(f'IW(S=1) - ELBO: {diff.mean():.3f} nats, stderr {stderr:.3f}')
        self.assertLess(abs(diff.mean()), 4.0 * stderr + 1e-3,
                        msg=f'IW(S=1) - ELBO = {diff.mean():.3f} nats, '
                            f'stderr {stderr:.3f}')
        # With S = 1 and chunk_size = 1, log_prob is literally one ELBO draw.
        seed = tf.constant([7, 8])
        one = self.model.log_prob(self.x, 1, chunk_size=1, seed=seed)
        draw = self.model.elbo(
            self.x, seed=tf.random.experimental.stateless_fold_in(seed, 0))
        self.assertAllClose(one, tf.cast(draw, tf.float64), atol=1e-4,
                            rtol=0)

    def test_the_draws_of_an_example_share_its_context(self):
        # k draws per example are those of the batch repeated k times, but
        # r's context network (of x alone) runs once per example: in elbo,
        # and in every pass of log_prob.
        x = self.x[:4]
        context_net, rows = self.model.dequantizer.context_net, []

        def counting(condition, training=False):
            rows.append(int(condition.shape[0]))
            return context_net(condition, training=training)

        repeated = np.repeat(x, 3, axis=0)
        for seed in (tf.constant([3, 4]),
                     self.model.example_seeds(x, tf.constant([3, 4]))):
            with mock.patch.object(self.model.dequantizer, 'context_net',
                                   counting):
                drawn = self.model.elbo(x, seed=seed, draws_per_row=3)
                self.assertEqual(rows, [4])
                self.assertAllClose(drawn, self.model.elbo(repeated,
                                                           seed=seed),
                                    atol=1e-4, rtol=0)
                rows.clear()
                self.model.log_prob(x, 5, chunk_size=2, seed=seed)
                self.assertEqual(rows, [4, 4, 4])
                rows.clear()
        for bad in (0, 2.5):
            with self.assertRaisesRegex(ValueError, 'draws_per_row must be '
                                        'an integer >= 1'):
                self.model.elbo(x, draws_per_row=bad)

    def test_a_chunk_larger_than_the_sample_count_changes_nothing(self):
        # The chunk shrinks to S: no draws computed only to be masked out,
        # and the same estimate as with chunk_size = S.
        seed = tf.constant([7, 8])
        for num_samples in (1, 3):
            self.assertAllEqual(
                self.model.log_prob(self.x, num_samples, seed=seed),
                self.model.log_prob(self.x, num_samples,
                                    chunk_size=num_samples, seed=seed))

    def test_bound_tightens_with_more_samples(self):
        seed = [9, 9]
        elbo = self.model.elbo(np.repeat(self.x, 16, axis=0),
                               seed=[1, 1]).numpy()
        elbo = elbo.reshape(len(self.x), 16).astype(np.float64)
        # chunk_size 16 throughout: the first 16 draws are shared, so the
        # estimates for S <= 16 are nested and their differences less noisy.
        iw = {s: self.model.log_prob(self.x, s, chunk_size=16,
                                     seed=seed).numpy()
              for s in (1, 4, 16, 64)}
        means = {s: float(v.mean()) for s, v in iw.items()}
        print('ELBO mean', elbo.mean(), 'IW means', means,
              'per-image ELBO std', elbo.std(axis=1).mean())
        for s, values in iw.items():
            self.assertTrue(np.all(np.isfinite(values)), msg=f'S={s}')
        # log (1/S) sum exp(ELBO_s) >= the ELBO on average (Jensen); a
        # per-image ELBO spread of ~10 nats makes the gap several nats.
        self.assertGreater(means[64], elbo.mean() + 1.0)
        # E log p_S is non-decreasing in S (Burda et al. 2016); per image an
        # estimate can drop by at most log(S'/S), so allow a fraction of it.
        for small, large in [(1, 4), (4, 16), (16, 64)]:
            self.assertGreater(means[large], means[small] - 0.25,
                               msg=f'S={small} -> S={large}: {means}')
        # The IW estimate of S = 64 is still a lower bound of log p(x) up to
        # noise, and its bpd is positive.
        self.assertTrue(np.all(self.model.bits_per_dim(iw[64]) > 0))

    def test_chunks_not_dividing_num_samples(self):
        seed = tf.constant([21, 22])
        num_samples, chunk = 5, 2
        got = self.model.log_prob(self.x, num_samples, chunk_size=chunk,
                                  seed=seed).numpy()
        repeated = np.repeat(self.x, chunk, axis=0)
        draws = np.concatenate([
            self.model.elbo(
                repeated,
                seed=tf.random.experimental.stateless_fold_in(seed, i)
            ).numpy().reshape(len(self.x), chunk)
            for i in range(3)], axis=1).astype(np.float64)     # 6 draws
        expected = _logmeanexp(draws[:, :num_samples], axis=1)
        self.assertAllClose(got, expected, atol=1e-4, rtol=0)
        # The sixth draw of the last chunk is masked out, not averaged in.
        self.assertGreater(np.abs(got - _logmeanexp(draws, axis=1)).max(),
                           1e-3)
        # Same seed, same answer; tf.function gives the same result.
        again = tf.function(lambda x: self.model.log_prob(
            x, tf.constant(num_samples), chunk_size=chunk, seed=seed))(
                tf.constant(self.x))
        self.assertAllClose(got, again, atol=1e-3, rtol=0)

    def test_the_mean_is_taken_in_float64(self):
        # The estimate is the float64 log-mean-exp of the draws (pass i
        # draws from the seed folded with i), far below float32's rounding
        # also for a float32 model, whose draws are float32.
        for dtype in (tf.float64, tf.float32):
            model = presets.build('checkerboard_vflow_3_4', seed=0,
                                  dtype=dtype)
            x = tf.constant(data.sample_checkerboard(6, seed=1), dtype)
            model.initialize(x, seed=[1, 1])
            seed = tf.constant([21, 22])
            got = model.log_prob(x, 5, chunk_size=2, seed=seed)
            repeated = np.repeat(x.numpy(), 2, axis=0)
            draws = np.concatenate([model.elbo(
                repeated,
                seed=tf.random.experimental.stateless_fold_in(seed, i)
            ).numpy().reshape(6, 2) for i in range(3)], axis=1)[:, :5]
            draws = draws.astype(np.float64)
            top = draws.max(axis=1)
            self.assertAllClose(got, np.log(np.mean(np.exp(
                draws - top[:, None]), axis=1)) + top, rtol=0, atol=1e-11,
                                msg=dtype.name)

    def test_argument_checks(self):
        with self.assertRaisesRegex(ValueError, 'chunk_size'):
            self.model.log_prob(self.x, 4, chunk_size=0)
        with self.assertRaises(tf.errors.InvalidArgumentError):
            self.model.log_prob(self.x, tf.constant(0))
        with self.assertRaisesRegex(ValueError, 'chunk_size'):
            self.model.log_prob(self.x, 4, chunk_size=2.5)
        # A Python count is checked before any graph: no truncation of 2.5,
        # no cast error naming only a tensor for 2.0.
        for bad, error in ((0, ValueError), (2.0, ValueError),
                           (True, TypeError), ('4', TypeError)):
            with self.assertRaisesRegex(error, 'num_samples must be an '
                                        'integer >= 1'):
                self.model.log_prob(self.x, bad)
        # Any integer tensor counts, like `sample`'s `num`; others do not.
        seed = tf.constant([3, 4])
        self.assertAllEqual(
            self.model.log_prob(self.x, tf.constant(3, tf.int64), seed=seed),
            self.model.log_prob(self.x, tf.constant(3), seed=seed))
        for bad in (tf.constant(3.0), tf.constant([3])):
            with self.assertRaisesRegex(TypeError, 'num_samples must be an '
                                        'integer scalar'):
                self.model.log_prob(self.x, bad)
        # Counts int32 cannot hold are refused, not wrapped (2^32 + 1 would
        # run as S = 1, -2^32 + 3 as S = 3).
        for bad in (2**31, 2**32 + 1):
            with self.assertRaisesRegex(ValueError, r'num_samples must be in '
                                        r'\[1, 2\^31\); got'):
                self.model.log_prob(self.x, bad, seed=seed)
        for bad, message in ((2**32 + 1, r'below 2\^31'),
                             (-2**32 + 3, '>= 1')):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        f'num_samples must be {message}'):
                self.model.log_prob(self.x, tf.constant(bad, tf.int64),
                                    seed=seed)
        # A seed of the wrong length is named before any kernel sees it.
        for call in (lambda: self.model.elbo(self.x, seed=[1, 2, 3]),
                     lambda: self.model.log_prob(self.x, 2, seed=[1, 2, 3]),
                     lambda: self.model.sample(2, seed=[1, 2, 3])):
            with self.assertRaisesRegex(ValueError, r'a seed must be int32 '
                                        r'\[2\] or per-example \[N, 2\]; '
                                        r'got shape \(3,\)'):
                call()
        with self.assertRaisesRegex(ValueError, 'sample takes one seed'):
            self.model.sample(2, seed=[[1, 2], [3, 4]])

    def test_a_chunk_one_larger_than_the_sample_count_shrinks_too(self):
        # `log_prob` docstring: chunk_size is at most S when S is a Python
        # int, so any larger chunk gives the estimate of chunk_size = S.
        seed = tf.constant([7, 8])
        x = self.x[:2]
        self.assertAllEqual(
            self.model.log_prob(x, 3, chunk_size=4, seed=seed),
            self.model.log_prob(x, 3, chunk_size=3, seed=seed))


# ----------------------------------------------------------------------------
# Theorem 1 (VFlow paper, Appendix A): a VFlow whose p ignores z and whose q
# is the prior is exactly the plain flow.
# ----------------------------------------------------------------------------

D_X, D_Z = 3, 2


def _plain_vector_flow(dims, seed):
    """A random float64 flow on vectors: ActNorm, 1x1 mixing, MAF."""
    tf_keras.utils.set_random_seed(seed)
    made = tfb.AutoregressiveNetwork(
        params=2, event_shape=[dims], hidden_units=[16, 16],
        activation='tanh', dtype=tf.float64, name='made')
    norm = vb.ActNorm([dims], dtype=tf.float64, name='norm')
    norm.log_scale.assign(tf.random.normal([dims], stddev=0.5,
                                           dtype=tf.float64))
    norm.shift.assign(tf.random.normal([dims], dtype=tf.float64))
    return tfb.Chain([tfb.MaskedAutoregressiveFlow(made, name='maf'),
                      vb.Invertible1x1Conv([dims], noise_scale=None,
                                           dtype=tf.float64, name='mix'),
                      norm], name='plain_flow')


class Theorem1Test(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf.random.set_seed(3)
        cls.flow = _plain_vector_flow(D_X, seed=3)
        cls.plain = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0), [D_X]),
            cls.flow)
        cls.x = tf.constant(np.random.default_rng(0).normal(
            1.0, 2.0, size=[32, D_X]))
        cls.log_p_flow = cls.plain.log_prob(tf.identity(cls.x))

    def _vflow(self, q_bijector):
        p = tfb.Blockwise([self.flow, tfb.Identity()],
                          block_sizes=[D_X, D_Z])
        q = ConditionalFlow(q_bijector, (D_Z,), dtype=tf.float64)
        return VFlow(p, (D_X,), augment_channels=D_Z, posterior=q,
                     rng=tf.random.Generator.from_seed(0), dtype=tf.float64)

    def test_elbo_is_the_flow_log_likelihood(self):
        model = self._vflow(tfb.Identity())
        self.assertTrue(np.all(np.isfinite(self.log_p_flow)))
        for seed in ([1, 2], [3, 4], [5, 6]):
            elbo = model.elbo(tf.identity(self.x), seed=seed)
            self.assertEqual(elbo.dtype, tf.float64)
            self.assertAllClose(elbo, self.log_p_flow, atol=1e-10, rtol=0)
            print('Theorem 1: max |ELBO - log p_flow| =',
                  float(tf.reduce_max(tf.abs(elbo - self.log_p_flow))))
        iw = model.log_prob(tf.identity(self.x), num_samples=7, chunk_size=3,
                            seed=[7, 8])
        self.assertAllClose(iw, self.log_p_flow, atol=1e-10, rtol=0)

    def test_posterior_off_the_prior_costs_its_kl(self):
        # q = N(mu, I): ELBO - log p_flow = log N(z) - log q(z), whose mean is
        # -KL(q || N(0, I)) = -|mu|^2 / 2, and IW closes most of the gap.
        mu = tf.constant([0.8, -0.6], tf.float64)
        model = self._vflow(tfb.Shift(mu))
        reps = 256
        x = tf.repeat(self.x, reps, axis=0)
        gap = (model.elbo(x, seed=[1, 1]) - tf.repeat(self.log_p_flow, reps)
               ).numpy()
        kl = 0.5 * float(tf.reduce_sum(mu ** 2))
        stderr = gap.std() / math.sqrt(len(gap))
        print(f'mean ELBO gap {gap.mean():.4f} vs -KL {-kl:.4f} '
              f'(stderr {stderr:.4f})')
        self.assertAllClose(gap.mean(), -kl, atol=4 * stderr)
        iw_gap = (model.log_prob(self.x, 256, chunk_size=64, seed=[2, 2])
                  - self.log_p_flow).numpy()
        # E[IW gap] ~ -(e^{|mu|^2} - 1) / (2 S) = -0.003;
        # noise ~0.08 / sqrt(32).
        print(f'IW (S=256) gap {iw_gap.mean():.4f}')
        self.assertLess(abs(iw_gap.mean()), 0.1 * kl)


class GradientEstimatorTest(tf.test.TestCase):
    """`VFlow.elbo(..., gradient_estimator='sticking_the_landing')`.

    On Theorem 1's model with a trainable Gaussian q(z|x) = N(mu, sigma^2 I):
    the posterior of z is the prior N(0, I), so q is exact at mu = 0,
    sigma = 1.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf.random.set_seed(4)
        cls.flow = _plain_vector_flow(D_X, seed=4)
        cls.x = tf.constant(np.random.default_rng(1).normal(
            1.0, 2.0, size=[64, D_X]))

    def _model(self, mu, log_sigma):
        shift = tf.Variable(tf.constant(mu, tf.float64), name='mu')
        log_scale = tf.Variable(tf.constant(log_sigma, tf.float64),
                                name='log_sigma')
        q_bijector = tfb.Chain([tfb.Shift(shift),
                                tfb.ScaleMatvecDiag(
                                    tfp.util.DeferredTensor(log_scale,
                                                            tf.exp))])
        q = ConditionalFlow(q_bijector, (D_Z,), dtype=tf.float64)
        p = tfb.Blockwise([self.flow, tfb.Identity()], block_sizes=[D_X, D_Z])
        model = VFlow(p, (D_X,), augment_channels=D_Z, posterior=q,
                      rng=tf.random.Generator.from_seed(0), dtype=tf.float64)
        return model, [shift, log_scale]

    def _elbo_and_grads(self, model, q_vars, estimator, seed, x=None):
        x = self.x if x is None else x
        with tf.GradientTape() as tape:
            elbo = model.elbo(x, seed=seed, gradient_estimator=estimator)
            mean = tf.reduce_mean(elbo)
        grads = tape.gradient(
            mean, q_vars + list(self.flow.trainable_variables))
        return elbo, grads[:len(q_vars)], grads[len(q_vars):]

    def test_exact_posterior_gives_zero_gradient_for_every_sample(self):
        model, q_vars = self._model([0.0, 0.0], [0.0, 0.0])
        elbo_r, q_r, p_r = self._elbo_and_grads(
            model, q_vars, 'reparameterization', [1, 2])
        elbo_s, q_s, p_s = self._elbo_and_grads(
            model, q_vars, 'sticking_the_landing', [1, 2])
        self.assertAllClose(elbo_s, elbo_r, atol=0, rtol=0)
        for g in q_s:
            self.assertAllClose(g, tf.zeros_like(g), atol=1e-12, rtol=0)
        # The plain reparameterisation gradient is zero only on average: its
        # d/d log sigma is the batch mean of 1 - eps^2, far from 0 for 64
        # draws.
        self.assertGreater(float(tf.reduce_max(tf.abs(q_r[1]))), 1e-3)
        for a, b in zip(p_r, p_s):
            self.assertAllClose(a, b, atol=1e-12, rtol=0)

    def test_unbiased_away_from_the_posterior(self):
        # E[ELBO] = log p_flow(x) - KL(N(mu, sigma^2) || N(0, 1)) per
        # dimension: d/dmu = -mu, d/dlog sigma = 1 - sigma^2.
        mu = np.array([0.8, -0.6])
        log_sigma = np.array([0.3, -0.4])
        model, q_vars = self._model(mu, log_sigma)
        x = tf.repeat(self.x, 64, axis=0)
        expected = [-mu, 1.0 - np.exp(2 * log_sigma)]
        for estimator in ('reparameterization', 'sticking_the_landing'):
            draws = [
                self._elbo_and_grads(model, q_vars, estimator, [5, i], x)[1]
                for i in range(8)]
            for k in range(2):
                values = np.stack([d[k].numpy() for d in draws])
                stderr = values.std(axis=0, ddof=1) / math.sqrt(len(values))
                print(f'{estimator} grad {k}: {values.mean(0)} vs '
                      f'{expected[k]} (stderr {stderr})')
                self.assertAllClose(values.mean(0), expected[k],
                                    atol=float(5 * stderr.max()) + 1e-9)

    def _toy_vflow_with_a_random_q(self, seed):
        """The initialised toy VFlow with q's weights moved off its
        identity start (so q's gradients differ between estimators)."""
        tf.random.set_seed(0)
        model = presets.build('checkerboard_vflow_3_10', seed=0)
        model.initialize(data.sample_checkerboard(256, seed=0),
                         seed=tf.constant([1, 2]))
        model_helpers.perturb(model.posterior.trainable_variables, 0.1, seed)
        return model

    def test_checkerboard_preset_in_a_function(self):
        # The toy VFlow (ConditionalAffine, dense map, affine coupling in q):
        # same ELBO, same p gradient, and a different but finite q gradient
        # under XLA.
        model = self._toy_vflow_with_a_random_q(0)
        x = tf.constant(data.sample_checkerboard(64, seed=3))
        p_vars = list(model.p_bijector.trainable_variables)
        q_vars = list(model.posterior.trainable_variables)

        def grads(estimator):
            @tf.function(jit_compile=True, autograph=False)
            def fn(x):
                with tf.GradientTape() as tape:
                    elbo = model.elbo(x, training=True, seed=[7, 8],
                                      gradient_estimator=estimator)
                    loss = -tf.reduce_mean(elbo)
                return elbo, tape.gradient(loss, p_vars + q_vars)
            return fn(x)

        elbo_r, g_r = grads('reparameterization')
        elbo_s, g_s = grads('sticking_the_landing')
        self.assertAllClose(elbo_s, elbo_r, atol=1e-5, rtol=0)
        for a, b in zip(g_r[:len(p_vars)], g_s[:len(p_vars)]):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-4)
        q_diff = max(float(tf.reduce_max(tf.abs(a - b)))
                     for a, b in zip(g_r[len(p_vars):], g_s[len(p_vars):]))
        self.assertGreater(q_diff, 1e-4)
        self.assertTrue(all(np.all(np.isfinite(g)) for g in g_s))
        with self.assertRaisesRegex(ValueError, 'gradient_estimator'):
            model.elbo(x, gradient_estimator='score')

    def test_q_s_context_only_network_runs_once_per_bound(self):
        # The toy q's ConditionalAffine sees only x: its parameters are
        # computed once and serve both the sampling pass and the density
        # pass that sticking the landing adds, with the same bound and
        # gradients as recomputing them in each pass.
        model = self._toy_vflow_with_a_random_q(1)
        affine, = [m for m in model.posterior.submodules
                   if isinstance(m, vb.ConditionalAffine)]
        network = affine.network
        calls = []

        def counted(context, training=False):
            calls.append(1)
            return network(context, training=training)

        x = tf.constant(data.sample_checkerboard(32, seed=3))
        variables = model.trainable_variables

        def bound_and_grads():
            with tf.GradientTape() as tape:
                elbo = model.elbo(x, training=True, seed=[7, 8],
                                  gradient_estimator='sticking_the_landing')
                mean = tf.reduce_mean(elbo)
            return elbo, tape.gradient(mean, variables)

        with mock.patch.object(affine, '_network', counted):
            elbo, grads = bound_and_grads()
            self.assertLen(calls, 1)
            with mock.patch.object(vb, 'precompute_conditioning',
                                   lambda bijector, kwargs: kwargs):
                elbo_twice, grads_twice = bound_and_grads()
            self.assertLen(calls, 3)
        self.assertAllClose(elbo, elbo_twice, atol=0, rtol=0)
        for v, a, b in zip(variables, grads, grads_twice):
            self.assertEqual(a is None, b is None, v.name)
            if a is not None:
                self.assertAllClose(a, b, atol=1e-6, rtol=1e-5, msg=v.name)
        net_grads = [g for v, g in zip(variables, grads)
                     if any(v is w for w in network.trainable_variables)]
        self.assertLen(net_grads, len(network.trainable_variables))
        self.assertGreater(max(float(tf.reduce_max(tf.abs(g)))
                               for g in net_grads), 0.0)

    def test_a_saturated_sigmoid_keeps_the_gradient_finite(self):
        # y = sigmoid(eps + mu) with mu = 30 rounds to exactly 1.0 in
        # float32, where the density pass of y is infinite. The score is
        # removed at the sigmoid's input instead: the path derivative of
        # log q = log N(eps) - log sigmoid'(eps + mu) is, per draw,
        # d/dmu = 2 sigmoid(s) - 1 - eps (the total derivative minus the
        # score eps), with s = eps + mu.
        for mu, dtype in ((30.0, tf.float32), (0.7, tf.float32),
                          (0.7, tf.float64)):
            shift = tf.Variable(tf.constant([mu, -mu], dtype))
            q = ConditionalFlow(
                tfb.Chain([vb.Sigmoid(), tfb.Shift(shift)]), (2,),
                dtype=dtype)
            condition = tf.zeros([16, 1], dtype)
            with tf.GradientTape() as tape:
                y, log_q = q.sample_and_log_prob(condition, [3, 4],
                                                 stop_score=True)
                total = tf.reduce_sum(log_q)
            grad = tape.gradient(total, shift)
            eps = q.distribution.distribution.sample(16, seed=[3, 4])
            s = tf.cast(eps, tf.float64) + tf.cast(tf.stack([mu, -mu]),
                                                   tf.float64)
            expected_log_q = tfd.Normal(
                tf.constant(0.0, tf.float64), 1.0).log_prob(
                    tf.cast(eps, tf.float64)) + tf.math.softplus(
                        -s) + tf.math.softplus(s)
            expected = tf.reduce_sum(2.0 * tf.sigmoid(s) - 1.0
                                     - tf.cast(eps, tf.float64), axis=0)
            self.assertAllClose(tf.cast(y, tf.float64), tf.sigmoid(s),
                                atol=1e-6, rtol=0)
            self.assertAllClose(tf.cast(log_q, tf.float64),
                                tf.reduce_sum(expected_log_q, axis=-1),
                                atol=1e-4, rtol=1e-6)
            self.assertAllClose(tf.cast(grad, tf.float64), expected,
                                atol=1e-4, rtol=1e-5)
            if mu > 10:
                self.assertAllEqual(y[:, 0], tf.ones([16], dtype))
            # Same value and gradient as the density pass of y, wherever
            # that pass is finite.
            if mu < 10:
                with tf.GradientTape() as tape:
                    y2, log_q2 = q.sample_and_log_prob(condition, [3, 4])
                    held = q.distribution.log_prob(tf.stop_gradient(y2))
                    plain = tf.reduce_sum(log_q2 - (
                        held - tf.stop_gradient(held)))
                self.assertAllClose(tape.gradient(plain, shift), grad,
                                    atol=1e-5, rtol=1e-5)

    def test_several_outer_layers_without_parameters_keep_their_order(self):
        # y = 1 + 2 sigmoid(s): the score is removed at s, and the layers
        # outside it (which do not commute) then run innermost first, so
        # the draws and their log-density are those of the plain pass.
        shift = tf.Variable(tf.constant([0.3, -0.8], tf.float64))
        q = ConditionalFlow(
            tfb.Chain([tfb.Shift(tf.constant(1.0, tf.float64)),
                       tfb.Scale(tf.constant(2.0, tf.float64)),
                       vb.Sigmoid(), tfb.Shift(shift)]), (2,),
            dtype=tf.float64)
        condition = tf.zeros([16, 1], tf.float64)
        y, log_q = q.sample_and_log_prob(condition, [3, 4])
        y_held, log_q_held = q.sample_and_log_prob(condition, [3, 4],
                                                   stop_score=True)
        self.assertAllInRange(y, 1.0, 3.0)
        self.assertAllClose(y_held, y, atol=1e-12, rtol=0)
        self.assertAllClose(log_q_held, log_q, atol=1e-12, rtol=0)
        self.assertAllClose(log_q, q.distribution.log_prob(y), atol=1e-10,
                            rtol=0)

    def test_an_outer_layer_that_a_kwargs_fn_conditions_keeps_its_kwargs(
            self):
        # Only outer layers that hold no variables *and take no kwargs* are
        # set apart from the flow with `stop_score`: a parameter-free layer
        # that a `kwargs_fn` conditions (y = s + c) still gets its kwargs,
        # so the draws and their log-density are those of the plain pass.
        shift = tf.Variable(tf.constant([0.3, -0.8], tf.float64))
        q = ConditionalFlow(
            tfb.Chain([_ContextShift(name='context_shift'),
                       tfb.Shift(shift)]), (2,),
            kwargs_fn=lambda c, t: {'context_shift': {'shift': c}},
            dtype=tf.float64)
        condition = tf.reshape(tf.range(32, dtype=tf.float64), [16, 2])
        y, log_q = q.sample_and_log_prob(condition, [3, 4])
        y_held, log_q_held = q.sample_and_log_prob(condition, [3, 4],
                                                   stop_score=True)
        self.assertAllClose(y_held, y, atol=1e-12, rtol=0)
        self.assertAllClose(log_q_held, log_q, atol=1e-12, rtol=0)
        # The condition moves the draws: y - c - shift is the base noise.
        noise = y - condition - shift
        self.assertAllLess(tf.abs(noise), 6.0)


class _ContextShift(tfb.Bijector):
    """y = x + shift, the shift a bijector kwarg: a layer without variables
    that only a custom `kwargs_fn` conditions (it lists no
    `conditioning_kwargs`)."""

    def __init__(self, name=None):
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True,
                         name=name or 'context_shift')

    def _forward(self, x, shift=0.0):
        return x + shift

    def _inverse(self, y, shift=0.0):
        return y - shift

    def _forward_log_det_jacobian(self, x, shift=0.0):
        return tf.zeros(tf.shape(x)[:-1], x.dtype)


# ----------------------------------------------------------------------------
# The change of variables end to end on a float64 image VFlow.
# ----------------------------------------------------------------------------

def _small_float64_image_vflow(augment_channels=2):
    """4x4x2 images, D_Z = 2, f_affine, mixture couplings, learnt r and q,
    initialised on data and then perturbed so nothing is an identity.

    With `augment_channels=0`, the same without q and f_affine (Flow++)."""
    tf.random.set_seed(5)
    group = G('column', 1, 1, 8, 2)
    model = presets.image_model(
        (4, 4, 2), [[group], [G('channel', 2, 1, 8, 2)]],
        augment_channels=augment_channels,
        q_group=G('column', 2, 1, 8, 2) if augment_channels else None,
        r_group=group, f_affine_blocks=1 if augment_channels else 0,
        f_affine_filters=8, context_filters=4, context_blocks=1, seed=0,
        dtype=tf.float64, name='small64')
    x = data.photo_patches(4, 'train', max_patches=32, seed=0)[..., :2]
    model.initialize(x, seed=[1, 1])
    model_helpers.perturb(model.trainable_variables, 0.05)
    return model, x


class ChangeOfVariablesTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model, x = _small_float64_image_vflow()
        cls.x = x[:3]

    def test_p_log_prob_is_base_density_plus_jacobian(self):
        model = self.model
        xz = tf.random.stateless_normal([3, 4, 4, 4], [1, 2],
                                        dtype=tf.float64)
        eps, log_det = _jacobian_log_det(
            lambda v: model.p_bijector.inverse(tf.identity(v)), xz)
        expected = _standard_normal_log_prob(eps) + log_det
        self.assertAllClose(model.p.log_prob(tf.identity(xz)), expected,
                            atol=1e-6, rtol=0)
        self.assertAllClose(model.p_log_prob(tf.identity(xz)), expected,
                            atol=1e-6, rtol=0)
        # The Jacobian is not the identity.
        self.assertGreater(float(tf.reduce_max(tf.abs(log_det))), 1.0)

    def test_elbo_is_the_sum_of_autodiff_log_dets(self):
        # ELBO = log N(eps_p) + log|d eps_p/d xz| + log|d x~/d(x+u)|
        #        - [log N(eps_q) - log|d z/d eps_q|]
        #        + [log|d u/d eps_r| - log N(eps_r)],
        # with every log-det from the full autodiff Jacobian, the noise
        # reproduced from the seeds the model uses.
        model, x = self.model, self.x
        seed = tf.constant([4, 5])
        elbo = model.elbo(x, seed=seed)
        seed_r, seed_q = tfp.random.split_seed(seed, n=2)
        n = len(x)
        pixels = tf.cast(x, tf.float64)
        condition = pixels / 256.0 - 0.5

        kwargs_r = model.dequantizer.conditioning_kwargs(condition)
        eps_r = model.r.distribution.sample(n, seed=seed_r)
        u, log_det_r = _jacobian_log_det(
            lambda e: model.r.bijector.forward(e, **kwargs_r), eps_r)
        u_model, log_r_model = model.dequantizer.sample_and_log_prob(
            condition, seed_r)
        self.assertAllClose(u, u_model, atol=1e-12, rtol=0)
        self.assertTrue(np.all((u > 0) & (u < 1)))
        log_r = _standard_normal_log_prob(eps_r) - log_det_r
        self.assertAllClose(log_r, log_r_model, atol=1e-6, rtol=0)
        # The condition reaches r's couplings.
        self.assertNotAllClose(u, model.r.bijector.forward(
            eps_r, **model.dequantizer.conditioning_kwargs(-condition)))

        x_tilde, log_det_logit = _jacobian_log_det(model.image_logit.inverse,
                                                   pixels + u)
        kwargs_q = model.posterior.conditioning_kwargs(x_tilde)
        eps_q = model.q.distribution.sample(n, seed=seed_q)
        z, log_det_q = _jacobian_log_det(
            lambda e: model.q.bijector.forward(e, **kwargs_q), eps_q)
        log_q = _standard_normal_log_prob(eps_q) - log_det_q
        self.assertNotAllClose(z, model.q.bijector.forward(
            eps_q, **model.posterior.conditioning_kwargs(x_tilde + 1.0)))

        xz = tf.concat([x_tilde, z], axis=-1)
        eps_p, log_det_p = _jacobian_log_det(
            lambda v: model.p_bijector.inverse(tf.identity(v)), xz)
        log_p = _standard_normal_log_prob(eps_p) + log_det_p

        expected = log_p + log_det_logit - log_q - log_r
        print('ELBO vs autodiff sum: max abs err',
              float(tf.reduce_max(tf.abs(elbo - expected))))
        self.assertAllClose(elbo, expected, atol=1e-6, rtol=0)
        self.assertTrue(np.all(np.isfinite(elbo)))


class StickingTheLandingImageTest(tf.test.TestCase):
    """The sticking-the-landing estimator on a float64 image VFlow whose r
    and q have mixture-of-logistics couplings: their density direction is a
    root finder, and the removed score term is differentiated through it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model, x = _small_float64_image_vflow()
        cls.x = x[:3]

    def _grads(self, estimator):
        model = self.model
        variables = (list(model.p_bijector.trainable_variables)
                     + list(model.dequantizer.trainable_variables)
                     + list(model.posterior.trainable_variables))
        with tf.GradientTape() as tape:
            elbo = model.elbo(self.x, seed=[6, 7],
                              gradient_estimator=estimator)
            loss = -tf.reduce_mean(elbo)
        num_p = len(model.p_bijector.trainable_variables)
        grads = tape.gradient(loss, variables)
        return elbo, grads[:num_p], grads[num_p:]

    def test_same_bound_and_p_gradient(self):
        elbo_r, p_r, rq_r = self._grads('reparameterization')
        elbo_s, p_s, rq_s = self._grads('sticking_the_landing')
        self.assertAllClose(elbo_s, elbo_r, atol=1e-10, rtol=0)
        for a, b in zip(p_r, p_s):
            self.assertAllClose(a, b, atol=1e-10, rtol=1e-8)
        self.assertTrue(all(np.all(np.isfinite(g)) for g in rq_s))
        difference = max(float(tf.reduce_max(tf.abs(a - b)))
                         for a, b in zip(rq_r, rq_s))
        self.assertGreater(difference, 1e-4)

    def test_refused_with_dropout_in_training(self):
        # The density pass would draw other dropout masks than the sampling
        # pass, so the removed term would no longer have mean zero.
        model = presets.build('tiny_vflow', dropout=0.3, seed=0)
        x = tf.constant(np.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3) % 256,
                        tf.uint8)
        for training in (True, tf.constant(True)):
            with self.assertRaisesRegex(ValueError, 'sticking_the_landing.*'
                                        'dropout in training breaks'):
                model.elbo(x, training=training,
                           gradient_estimator='sticking_the_landing')

        # A flag whose value the trace cannot see may be on.
        @tf.function(input_signature=[tf.TensorSpec([], tf.bool)])
        def elbo_with(training):
            return model.elbo(x, training=training,
                              gradient_estimator='sticking_the_landing')

        with self.assertRaisesRegex(ValueError, 'dropout in training breaks.*'
                                    'unknown when traced counts as on'):
            elbo_with(tf.constant(False))
        # Dropout in r alone breaks it as well (a Flow++ model has no q).
        flowpp = presets.build('tiny_flowpp', dropout=0.3, seed=0)
        with self.assertRaisesRegex(ValueError, 'dropout in training breaks'):
            flowpp.elbo(x, training=True,
                        gradient_estimator='sticking_the_landing')
        # Evaluation runs the networks without dropout: both passes agree,
        # also with the flag off as a tensor.
        elbo = model.elbo(x, seed=[1, 2],
                          gradient_estimator='sticking_the_landing')
        self.assertAllClose(elbo, model.elbo(x, seed=[1, 2]), atol=1e-3,
                            rtol=0)
        self.assertAllEqual(
            model.elbo(x, training=tf.constant(False), seed=[1, 2],
                       gradient_estimator='sticking_the_landing'), elbo)

    def _mean_score_statistic(self, flow, condition, temperature):
        """Mean over parameters of the squared t-statistic of the score.

        The score `d log p(y | c) / d(theta, c)` at draws `y = f(T eps; c)`
        held fixed (`T = temperature`; `T = 1` draws from `p(. | c)`), from
        10 independent batches. Where its mean is zero (what the estimator
        relies on) each `t^2` follows F(1, 9), of mean 9/7; a nonzero mean
        makes it grow with the batch.
        """
        kwargs = flow.conditioning_kwargs(condition)
        num = int(condition.shape[0])
        condition = tf.Variable(condition)
        variables = list(flow.trainable_variables) + [condition]
        batch_means = []
        for i in range(10):
            eps = flow.distribution.distribution.sample(num, seed=[9, i])
            y = flow.bijector.forward(temperature * eps, **kwargs)
            with tf.GradientTape() as tape:
                log_p = flow.distribution.log_prob(
                    tf.stop_gradient(y),
                    bijector_kwargs=flow.conditioning_kwargs(condition))
                mean = tf.reduce_mean(log_p)
            grads = tape.gradient(mean, variables)
            self.assertTrue(all(g is not None for g in grads))
            batch_means.append(np.concatenate(
                [np.ravel(g.numpy()) for g in grads]))
        batch_means = np.stack(batch_means)
        variance = batch_means.var(axis=0, ddof=1)
        used = variance > 1e-20  # Parameters the draws do not reach.
        t_squared = (batch_means.mean(axis=0)[used] ** 2
                     / (variance[used] / len(batch_means)))
        return float(t_squared.mean())

    def test_removed_score_has_mean_zero(self):
        model = self.model
        pixels = tf.repeat(tf.cast(self.x, tf.float64), 64, axis=0)
        condition_r = pixels / 256.0 - 0.5
        x_tilde, _ = model._preprocess(pixels, tf.constant([3, 3]), False)
        for name, flow, condition in (
                ('r', model.dequantizer, condition_r),
                ('q', model.posterior, x_tilde)):
            right = self._mean_score_statistic(flow, condition, 1.0)
            # Draws from another distribution (noise 1.5 times too wide): the
            # same statistic must see the nonzero mean, or the check above
            # could not fail.
            wrong = self._mean_score_statistic(flow, condition, 1.5)
            print(f'{name}: mean-score statistic {right:.2f} for draws from '
                  f'the flow, {wrong:.1f} for draws 1.5 times too wide')
            self.assertLess(right, 1.8)
            self.assertGreater(wrong, 3.0)


# ----------------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------------

class SamplingTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = model_helpers.initialized_tiny_vflow(13, [3, 3])

    def test_image_samples(self):
        model = self.model
        a = model.sample(4, seed=[1, 2])
        self.assertEqual(a.dtype, tf.uint8)
        self.assertEqual(a.shape, [4, 8, 8, 3])
        values = a.numpy().astype(np.int64)
        self.assertTrue(np.all((values >= 0) & (values <= 255)))
        self.assertGreater(np.unique(values).size, 10)
        self.assertAllEqual(a, model.sample(4, seed=[1, 2]))
        self.assertNotAllEqual(a, model.sample(4, seed=[1, 3]))
        cold = model.sample(3, temperature=0.0, seed=[1, 2]).numpy()
        self.assertAllEqual(cold[0], cold[1])
        self.assertAllEqual(cold[0], cold[2])
        self.assertAllEqual(
            cold, model.sample(3, temperature=0.0, seed=[5, 6]).numpy())
        self.assertNotAllEqual(a[:3], cold)
        # A tensor count works too (tf.function with an unknown batch).
        sampler = tf.function(lambda n: model.sample(n, seed=[1, 2]))
        self.assertEqual(sampler(tf.constant(2)).shape, [2, 8, 8, 3])

    def test_reconstruction_error_is_the_round_trip_of_p(self):
        # Flow++'s val_inverr: max |xz - forward(inverse(xz))| per example
        # over the [x~, z] that elbo draws, near float32 rounding here.
        model = self.model
        x = data.photo_patches(8, 'test', max_patches=6)
        errors = model.reconstruction_error(x, seed=[4, 5])
        self.assertEqual(errors.shape, [6])
        xz = _augmented(model, x, [4, 5])
        back = model.p_bijector.forward(
            tf.identity(model.p_bijector.inverse(tf.identity(xz))))
        self.assertAllClose(errors, tf.reduce_max(tf.abs(back - xz),
                                                  axis=[1, 2, 3]))
        self.assertLess(float(tf.reduce_max(errors)), 1e-4)
        self.assertGreater(float(tf.reduce_min(errors)), 0.0)
        # It sees a root finder cut short (TFP's bijector cache does not
        # hand xz back unchanged).
        couplings = [m for m in model.p_bijector.submodules
                     if hasattr(m, '_max_iterations')]
        self.assertNotEmpty(couplings)
        for coupling in couplings:
            self.enter_context(mock.patch.object(coupling, '_max_iterations',
                                                 1))
        cut = model.reconstruction_error(x, seed=[4, 5])
        self.assertGreater(float(tf.reduce_max(cut)),
                           10 * float(tf.reduce_max(errors)))

    def test_reconstruction_error_is_a_distance_whichever_way_p_errs(self):
        # The docstring's max_d |xz_d - forward(inverse(xz))_d|: a p whose
        # forward falls short of its inverse by 0.5 everywhere is off by
        # 0.5, not by -0.5 (a signed maximum would report a map that
        # undershoots as better than exact).
        short = tfb.Inline(
            forward_fn=lambda y: y - 0.5, inverse_fn=lambda x: x,
            forward_log_det_jacobian_fn=lambda y: tf.zeros([]),
            forward_min_event_ndims=0, is_constant_jacobian=True)
        model = VFlow(short, [3])
        errors = model.reconstruction_error(tf.zeros([2, 3]), seed=[1, 2])
        self.assertAllClose(errors, [0.5, 0.5])

    def test_pixels_outside_the_levels_are_refused(self):
        model = self.model
        images = np.full([1, 8, 8, 3], 7, np.int32)
        for value, message in [(256, 'must be below 256'),
                               (-1, 'must be >= 0')]:
            bad = images.copy()
            bad[0, 3, 4, 1] = value
            for score in (lambda x: model.elbo(x, seed=[1, 2]),
                          tf.function(lambda x: model.log_prob(
                              x, 2, seed=[1, 2]))):
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            message):
                    score(tf.constant(bad))
        self.assertTrue(np.all(np.isfinite(
            model.elbo(tf.constant(images), seed=[1, 2]))))

    def test_data_of_another_shape_or_kind_is_refused(self):
        # Every one of these used to be scored (broadcast against the data
        # shape, or cast) or failed deep inside with another shape.
        model = self.model
        images = np.full([2, 8, 8, 3], 7, np.uint8)
        for bad in (images[..., :1], images[:, :1, :1], images[0],
                    np.tile(images, [1, 2, 2, 1]), images[:, None]):
            for score in (lambda x: model.elbo(x, seed=[1, 2]),
                          lambda x: model.log_prob(x, 2, seed=[1, 2]),
                          lambda x: model.example_seeds(x, [1, 2])):
                with self.assertRaisesRegex(
                        ValueError, r'shape \[N, 8, 8, 3\]; got shape'):
                    score(bad)
        with self.assertRaisesRegex(TypeError, 'got dtype bool'):
            model.elbo(images > 3, seed=[1, 2])
        for scaled in (images / 255.0, images + 0.5):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'must be whole numbers'):
                model.elbo(tf.constant(scaled, tf.float32), seed=[1, 2])
        # Whole float values score as the integers do.
        self.assertAllEqual(model.elbo(images.astype(np.float32), seed=[1, 2]),
                            model.elbo(images, seed=[1, 2]))
        # A tensor of unknown rank is checked when the graph runs.
        elbo = tf.function(lambda x: model.elbo(x, seed=[1, 2]),
                           input_signature=[tf.TensorSpec(None, tf.uint8)])
        self.assertEqual(elbo(images).shape, [2])
        with self.assertRaises(tf.errors.InvalidArgumentError):
            elbo(images[0])
        vectors = presets.build('checkerboard_vflow_3_4', seed=0)
        with self.assertRaisesRegex(ValueError, r'\[N, 2\]; got shape \[2\]'):
            vectors.elbo(np.float32([0.5, -0.5]))
        for shape, error in (([0, 4, 3], ValueError),
                             ([4, 2.5, 3], ValueError),
                             ([4, None, 3], TypeError), ([4, 4], ValueError)):
            with self.assertRaisesRegex(error, 'data_shape'):
                VFlow(tfb.Identity(), data_shape=shape)
        # r and q must draw events of x's and z's shapes.
        with self.assertRaisesRegex(ValueError, r'posterior.event_shape must '
                                    r'be \[2, 2, 1\]; got \[2, 2, 2\]'):
            VFlow(tfb.Identity(), data_shape=[2, 2, 1], augment_channels=1,
                  posterior=ConditionalFlow(tfb.Identity(), [2, 2, 2]))
        with self.assertRaisesRegex(ValueError, r'dequantizer.event_shape '
                                    r'must be \[2, 2, 1\]; got \[2, 2, 3\]'):
            VFlow(tfb.Identity(), data_shape=[2, 2, 1],
                  dequantizer=UniformDequantizer([2, 2, 3]))

    def test_sample_arguments_are_checked(self):
        model = self.model
        for temperature in (math.nan, math.inf, -1.0):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'temperature must be finite'):
                model.sample(2, temperature=temperature, seed=[1, 2])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'num must be >= 0'):
            model.sample(tf.constant(-1), seed=[1, 2])
        # Counts that int32 would wrap (2^32 + 2 gave 2 samples, and
        # -2^32 + 1 one) are refused.
        for num in (-1, 2**31, 2**32 + 2, np.int64(-(2**32) + 1)):
            with self.assertRaisesRegex(ValueError,
                                        r'num must be in \[0, 2\^31\)'):
                model.sample(num, seed=[1, 2])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'num must be below 2'):
            model.sample(tf.constant(2**32 + 2, tf.int64), seed=[1, 2])
        for num in (2.7, [2, 3], True):
            with self.assertRaisesRegex(TypeError, 'integer scalar'):
                model.sample(num, seed=[1, 2])
        # One temperature per sample would scale the latent's channels.
        with self.assertRaisesRegex(TypeError, 'temperature must be a '
                                    r'scalar; got shape \(2,\)'):
            model.sample(2, temperature=[1.0, 0.0], seed=[1, 2])
        self.assertEqual(model.sample(np.int64(0), seed=[1, 2]).shape,
                         [0, 8, 8, 3])
        # A Python float beyond float32's range is a finite temperature of
        # a float64 model (TF's default float32 conversion refused it with
        # a message about double precision) and a non-finite one of a
        # float32 model.
        wide = presets.build('checkerboard_vflow_3_4', seed=0,
                             dtype=tf.float64)
        self.assertTrue(np.all(np.isfinite(
            wide.sample(2, temperature=1e39, seed=[1, 2]))))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'temperature must be finite'):
            presets.build('checkerboard_vflow_3_4', seed=0).sample(
                2, temperature=1e39, seed=[1, 2])

    def test_samples_are_the_floored_and_clipped_x_channels(self):
        # p shifts the latent to fixed logit-space values, so at temperature
        # 0 every pixel is known: pixel = 256 (sigmoid(y) - 0.05) / 0.9,
        # floored (it undoes the dequantisation x + u, u in [0, 1)) and
        # clipped to [0, 255], taken from x's channel only, not z's.
        def logit_of(pixel):
            return math.log((0.05 + 0.9 * pixel / 256) /
                            (0.95 - 0.9 * pixel / 256))
        x_logits = [[logit_of(100.7), logit_of(3.2)], [20.0, -20.0]]
        z_logits = [[logit_of(50.5)] * 2] * 2
        shift = np.stack([x_logits, z_logits], axis=-1).astype(np.float32)
        model = VFlow(tfb.Shift(shift), data_shape=[2, 2, 1],
                      augment_channels=1,
                      posterior=ConditionalFlow(tfb.Identity(), [2, 2, 1]))
        self.assertAllClose(model.image_logit.forward(shift[..., :1]),
                            [[[100.7], [3.2]], [[270.2], [-14.2]]], atol=0.1)
        pixels = model.sample(2, temperature=0.0, seed=[1, 2])
        self.assertEqual(pixels.dtype, tf.uint8)
        self.assertAllEqual(pixels, [[[[100], [3]], [[255], [0]]]] * 2)

    def test_non_finite_samples_are_an_error(self):
        # Half of the latents have no logarithm: their pixels would be cast
        # from NaN to 0, black, without a word.
        model = VFlow(tfb.Log(), data_shape=[2, 2, 1])
        for sample in (model.sample, tf.function(model.sample)):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'non-finite values'):
                sample(8, seed=[1, 2])

    def test_temperature_scales_the_latent_noise(self):
        # The latent, not the data: the shift that p adds stays as it is.
        model = VFlow(tfb.Shift([3.0, -1.0]), data_shape=[2])
        for temperature in (0.5, 2.0):
            x = model.sample(20000, temperature=temperature, seed=[3, 4])
            # The standard error of a standard deviation from 20,000 draws
            # is 0.5% of it.
            self.assertAllClose(np.std(x, axis=0), [temperature] * 2,
                                rtol=0.02)
            self.assertAllClose(np.mean(x, axis=0), [3.0, -1.0],
                                atol=0.03 * temperature)

    def test_vector_samples(self):
        model = presets.build('checkerboard_vflow_3_4', seed=0)
        a = model.sample(16, seed=[1, 2])
        self.assertEqual(a.dtype, tf.float32)
        self.assertEqual(a.shape, [16, 2])
        self.assertAllEqual(a, model.sample(16, seed=[1, 2]))
        self.assertNotAllEqual(a, model.sample(16, seed=[2, 2]))
        eps = tf.random.stateless_normal([8, 4], [4, 4])
        _assert_p_round_trip(self, model, eps, atol=1e-4)

    def test_vector_data_of_another_float_dtype(self):
        model = presets.build('checkerboard_vflow_3_4', seed=0)
        x = data.sample_checkerboard(8, seed=0)
        seed = tf.constant([1, 2])
        for other in (tf.constant(x, tf.float64), x.astype(np.float64)):
            self.assertAllClose(model.elbo(other, seed=seed),
                                model.elbo(x, seed=seed))
            self.assertAllClose(model.log_prob(other, 4, seed=seed),
                                model.log_prob(x, 4, seed=seed))

    def test_image_latent_round_trip(self):
        # The VFlow squash logit(0.05 + 0.9 F) makes every mixture coupling's
        # image a bounded interval (SPEC §1.6): p_bijector is not onto the
        # latent space, and forward clips latents outside its image. Round
        # trips therefore start from latents inside the image: those of
        # augmented data points [x~, z].
        for model, x, atol in [
                (self.model, data.photo_patches(8, 'test', max_patches=2),
                 1e-3),
                (*_small_float64_image_vflow(), 1e-8)]:
            xz = _augmented(model, x[:2], seed=[8, 8])
            eps = tf.identity(model.p_bijector.inverse(xz))
            _assert_p_round_trip(self, model, eps, atol=atol)
        # Far outside the image the round trip must fail (the clipping).
        far = 40.0 * tf.ones_like(eps)
        back = model.p_bijector.inverse(
            tf.identity(model.p_bijector.forward(far)))
        self.assertGreater(float(tf.reduce_max(tf.abs(back - far))), 1.0)


def _augmented(model, x, seed):
    """[x~, z] of images `x`: dequantised, logit-transformed, augmented."""
    seed_r, seed_q = tfp.random.split_seed(tf.constant(seed), n=2)
    pixels = tf.cast(x, model.p.dtype)
    u, _ = model.dequantizer.sample_and_log_prob(pixels / 256.0 - 0.5,
                                                 seed_r)
    x_tilde = model.image_logit.inverse(pixels + u)
    z, _ = model.posterior.sample_and_log_prob(x_tilde, seed_q)
    return tf.concat([x_tilde, z], axis=-1)


# ----------------------------------------------------------------------------
# TFP flows as p and q (the paper: VFlow "can be easily combined with
# existing flows"): MAF, RealNVP and FFJORD as p, a conditional MAF
# posterior.
# ----------------------------------------------------------------------------

class _BoundedMade(tf.Module):
    """A MADE as MAF's shift_and_log_scale_fn, log-scale bounded to (-2, 2).

    (MAF's default unbounded log-scale overflows at random initialisation
    after a few layers.) Extra kwargs, e.g. `conditional_input`, go to the
    MADE.
    """

    def __init__(self, made, name=None):
        super().__init__(name=name)
        self.made = made

    def __call__(self, y, **kwargs):
        shift, log_scale = tf.unstack(self.made(y, **kwargs), axis=-1)
        return shift, 2.0 * tf.tanh(log_scale / 2.0)


class _ShiftAndLogScale(tf.Module):
    """RealNVP's shift_and_log_scale_fn: an MLP with a tanh-bounded scale."""

    def __init__(self, in_dims, out_dims, hidden=32, name=None):
        super().__init__(name=name)
        self.net = tf_keras.Sequential([
            tf_keras.layers.Dense(hidden, activation='relu',
                                  input_shape=[in_dims]),
            tf_keras.layers.Dense(hidden, activation='relu'),
            tf_keras.layers.Dense(
                2 * out_dims,
                kernel_initializer=tf_keras.initializers.RandomNormal(
                    stddev=0.01))])

    def __call__(self, x, output_units, **kwargs):
        del output_units, kwargs
        shift, log_scale = tf.split(self.net(x), 2, axis=-1)
        return shift, tf.tanh(log_scale)


class _TimeConditionedField(tf.Module):
    """FFJORD's `dx/dt = g(t, x)`: an MLP on `x` with the time as context.

    The MLP's zero output layer makes the field 0 at creation, so a fresh
    FFJORD is the identity.
    """

    def __init__(self, dims, dtype, name=None):
        super().__init__(name=name)
        self.mlp = MLP(dims, dims, hidden_units=(32, 32), activation=tf.tanh,
                       context_features=1, dtype=dtype, name='field_mlp')

    def __call__(self, time, x):
        time = tf.fill(tf.concat([tf.shape(x)[:-1], [1]], axis=0),
                       tf.cast(time, x.dtype))
        return self.mlp(x, context=time)


class GenericFlowsTest(tf.test.TestCase, parameterized.TestCase):

    def _model(self, kind):
        tf_keras.utils.set_random_seed(17)
        networks, layers = [], []
        dims = 2 + 2
        for i in range(3):
            if kind == 'maf':
                net = tfb.AutoregressiveNetwork(
                    params=2, event_shape=[dims], hidden_units=[32, 32],
                    activation='relu', name=f'made_{i}')
                layers.append(tfb.MaskedAutoregressiveFlow(
                    shift_and_log_scale_fn=_BoundedMade(net),
                    name=f'maf_{i}'))
                layers.append(tfb.Permute([3, 2, 1, 0], name=f'perm_{i}'))
            else:
                net = _ShiftAndLogScale(2, 2, name=f'nvp_net_{i}')
                layers.append(tfb.RealNVP(num_masked=2,
                                          shift_and_log_scale_fn=net,
                                          name=f'real_nvp_{i}'))
                layers.append(tfb.Permute([2, 3, 1, 0], name=f'perm_{i}'))
            networks.append(net)
        q_net = tfb.AutoregressiveNetwork(
            params=2, event_shape=[2], conditional=True,
            conditional_event_shape=[2], hidden_units=[32, 32],
            activation='relu', name='q_made')
        networks.append(q_net)
        q = ConditionalFlow(
            tfb.MaskedAutoregressiveFlow(
                shift_and_log_scale_fn=_BoundedMade(q_net), name='q_maf'),
            (2,), kwargs_fn=lambda c, t: {'conditional_input': c})
        model = VFlow(tfb.Chain(layers, name='p_flow'), (2,), 2, posterior=q,
                      rng=tf.random.Generator.from_seed(1))
        return model, networks

    @parameterized.parameters('maf', 'realnvp')
    def test_trains_on_the_checkerboard(self, kind):
        model, networks = self._model(kind)
        train = data.sample_checkerboard(20000, seed=0)
        test = data.sample_checkerboard(2000, seed=1)
        before = model.elbo(test, seed=[1, 1]).numpy()
        self.assertTrue(np.all(np.isfinite(before)))

        # Every network's variables belong to the model and get a gradient.
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.elbo(train[:256], training=True,
                                              seed=[2, 2]))
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        model_ids = {id(v) for v in variables}
        net_vars = [v for net in networks for v in net.trainable_variables]
        self.assertNotEmpty(net_vars)
        self.assertTrue(all(id(v) in model_ids for v in net_vars))
        for v, g in zip(variables, grads):
            self.assertIsNotNone(g, msg=v.name)
            self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.0,
                               msg=v.name)

        step = model_helpers.adam_step(model)

        rng = np.random.default_rng(0)
        for i in range(400):
            batch = train[rng.integers(0, len(train), 256)]
            step(batch, tf.constant([i, 5]))
        after = model.elbo(test, seed=[1, 1]).numpy()
        print(kind, 'held-out ELBO', before.mean(), '->', after.mean())
        self.assertTrue(np.all(np.isfinite(after)))
        self.assertGreater(after.mean(), before.mean() + 1.0)
        # A lower bound of a model's log-likelihood cannot beat the data's
        # entropy on held-out points (Gibbs), up to noise.
        stderr = after.std() / math.sqrt(len(after))
        self.assertLess(after.mean(),
                        data.CHECKERBOARD_LOG_LIKELIHOOD + 4 * stderr)
        self.assertEqual(model.sample(3, seed=[1, 2]).shape, [3, 2])

    def test_p_factoring_out_dimensions_the_tfp_way(self):
        # A p that splits its event and transforms one part
        # (tfb.Split, tfb.JointMap) as TFP's multi-scale flows do: the
        # model routes `training` through the JointMap by child name, and
        # the ELBO of a plain flow (no z, no dequantizer) is its density.
        tf.random.set_seed(4)

        def coupling(dims, name):
            net = nets.MLP(dims // 2, dims, hidden_units=(8,),
                           name=f'{name}_net')
            for v in net.trainable_variables:
                v.assign(0.3 * tf.random.normal(v.shape))
            return vb.AffineCoupling(net, vb.ChannelSplit(event_ndims=1),
                                     name=name)

        inner = coupling(2, 'inner')
        p_flow = tfb.Chain([coupling(4, 'outer'),
                            tfb.Invert(tfb.Split(2, axis=-1)),
                            tfb.JointMap([inner, tfb.Identity()]),
                            tfb.Split(2, axis=-1)])
        model = VFlow(p_flow, data_shape=[4])
        x = tf.random.stateless_normal([5, 4], [1, 2])
        with tf.GradientTape() as tape:
            elbo = model.elbo(x, training=True, seed=[1, 2])
            total = tf.reduce_sum(elbo)
        self.assertAllClose(elbo, model.p.log_prob(x))
        grads = tape.gradient(total, inner.trainable_variables)
        self.assertTrue(all(g is not None and float(tf.reduce_max(tf.abs(g)))
                            > 0 for g in grads))

    def test_ffjord_as_p(self):
        # A continuous-time flow (TFP's FFJORD, exact trace) as p over
        # [x, z]: its log-det comes from integrating the trace of the
        # field's Jacobian, and it has forward_min_event_ndims = 0, so the
        # model must reduce it over the event itself.
        dtype = tf.float64
        tf.random.set_seed(3)
        field = _TimeConditionedField(4, dtype, name='field')
        solver = tfp.math.ode.DormandPrince(rtol=1e-6, atol=1e-6)
        ffjord = tfb.FFJORD(
            state_time_derivative_fn=field, ode_solve_fn=solver.solve,
            trace_augmentation_fn=tfb.ffjord.trace_jacobian_exact,
            dtype=dtype, name='ffjord')
        q = builders.conditional_vector_flow(2, 2, 1, 'q', hidden_units=(16,),
                                             dtype=dtype)
        model = VFlow(ffjord, (2,), 2, posterior=q,
                      rng=tf.random.Generator.from_seed(1), dtype=dtype)
        model_ids = {id(v) for v in model.trainable_variables}
        self.assertNotEmpty(field.trainable_variables)
        self.assertTrue(all(id(v) in model_ids
                            for v in field.trainable_variables))

        train = data.sample_checkerboard(20000, seed=0).astype(np.float64)
        test = data.sample_checkerboard(1000, seed=1).astype(np.float64)
        before = model.elbo(test, seed=[1, 1]).numpy()
        step = model_helpers.adam_step(model, learning_rate=1e-2)
        rng = np.random.default_rng(0)
        # Few steps: each makes the field stiffer, and the Jacobian below
        # differentiates through every step of the ODE solve.
        for i in range(30):
            step(train[rng.integers(0, len(train), 128)], tf.constant([i, 5]))
        after = model.elbo(test, seed=[1, 1]).numpy()
        print('ffjord held-out ELBO', before.mean(), '->', after.mean())
        self.assertTrue(np.all(np.isfinite(after)))
        self.assertGreater(after.mean(), before.mean() + 1.0)

        # Change of variables through the trained (no longer identity) ODE:
        # log p(xz) = log N(f^-1(xz)) + log|det d f^-1 / d xz| by autodiff.
        xz = tf.constant(np.random.default_rng(2).normal(size=[3, 4]), dtype)

        @tf.function
        def inverse_and_jacobian(xz):
            with tf.GradientTape() as tape:
                tape.watch(xz)
                latent = ffjord.inverse(xz)
            return latent, tape.batch_jacobian(latent, xz,
                                               experimental_use_pfor=False)

        latent, jacobian = inverse_and_jacobian(xz)
        self.assertGreater(float(tf.reduce_max(tf.abs(latent - xz))), 0.05)
        base = tfd.MultivariateNormalDiag(tf.zeros([4], dtype))
        expected = base.log_prob(latent) + tf.linalg.slogdet(jacobian)[1]
        self.assertAllClose(model.p.log_prob(xz), expected, atol=1e-4)

        log_px = model.log_prob(test[:200], 8, seed=[3, 3]).numpy()
        self.assertTrue(np.all(np.isfinite(log_px)))
        samples = model.sample(5, seed=[1, 2])
        self.assertEqual(samples.shape, [5, 2])
        self.assertTrue(np.all(np.isfinite(samples.numpy())))


# ----------------------------------------------------------------------------
# Dropout: on in the training bound, off when scoring.
# ----------------------------------------------------------------------------

class DropoutTest(tf.test.TestCase):

    def test_initialize_takes_training_and_returns_the_plain_elbo(self):
        # Flow++ initialises with dropout on (its DDI pass runs in
        # training mode); `training=False` initialises without. Either way
        # the returned ELBO is the dropout-free score of the batch.
        def build():
            tf.random.set_seed(5)
            return presets.build('tiny_flowpp', dequant_blocks=0,
                                 dropout=0.5, seed=0)

        x = data.photo_patches(8, 'train', max_patches=16)
        dropping, plain = build(), build()
        returned = dropping.initialize(x, training=True, seed=[1, 2])
        plain.initialize(x, training=False, seed=[1, 2])
        self.assertGreater(max(
            float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(
                dropping.trainable_variables, plain.trainable_variables)),
            1e-4)
        self.assertAllClose(returned, dropping.elbo(x, seed=[1, 2]),
                            atol=1e-3, rtol=0)

    def test_dropout_acts_in_training_only(self):
        # A Flow++ with uniform dequantisation has networks only in p, so a
        # difference between the two modes at one seed (one u) is p's
        # dropout.
        tf.random.set_seed(5)
        model = presets.build('tiny_flowpp', dequant_blocks=0, dropout=0.5,
                              seed=0)
        x = data.photo_patches(8, 'train', max_patches=8)
        model.initialize(x, training=False, seed=[1, 2])
        seed = [3, 4]
        scored = model.elbo(x, training=False, seed=seed)
        trained = model.elbo(x, training=True, seed=seed)
        self.assertGreater(float(tf.reduce_max(tf.abs(trained - scored))),
                           1e-2)
        # Scoring draws no dropout masks: the same seed, the same numbers,
        # whatever the generator did in between.
        self.assertAllEqual(model.elbo(x, training=False, seed=seed), scored)
        first = model.log_prob(x, 3, seed=seed)
        model.elbo(x, training=True, seed=seed)
        self.assertAllEqual(model.log_prob(x, 3, seed=seed), first)


# ----------------------------------------------------------------------------
# A short training run on real photo patches.
# ----------------------------------------------------------------------------

class TrainingTest(tf.test.TestCase):

    def test_tiny_vflow_learns_photo_patches(self):
        tf.random.set_seed(19)
        model = presets.build('tiny_vflow', seed=0)
        train = data.photo_patches(8, 'train', max_patches=4096, seed=0)
        test = data.photo_patches(8, 'test', max_patches=128, seed=0)
        model.initialize(train[:64], seed=[1, 2])

        def test_bpd():
            elbo = model.elbo(test, seed=[5, 6])
            return float(model.bits_per_dim(tf.reduce_mean(elbo)))

        before = test_bpd()
        step = model_helpers.adam_step(model, clip_norm=1.0)

        rng = np.random.default_rng(0)
        losses = []
        for i in range(200):
            batch = train[rng.integers(0, len(train), 16)]
            loss, norm = step(batch, tf.constant([i, 7]))
            losses.append(float(loss))
            self.assertTrue(np.isfinite(losses[-1]) and np.isfinite(norm),
                            msg=f'step {i}')
        after = test_bpd()
        print(f'tiny_vflow test ELBO bpd {before:.3f} -> {after:.3f}')
        self.assertTrue(np.isfinite(after))
        self.assertLess(after, before - 0.5)
        self.assertGreater(after, 0.0)


# ----------------------------------------------------------------------------
# Details of the estimators: the seeds of initialisation, sticking the landing
# in r, the pixel check of every integer type.
# ----------------------------------------------------------------------------

class EstimatorDetailsTest(tf.test.TestCase):

    def test_initialize_with_a_seed_is_fitted_to_that_seed_s_noise(self):
        # `initialize` docstring: with a `seed`, every layer is fitted to
        # this noise; the model's generator draws none of it, so two equal
        # models whose generators are in different states initialise alike.
        def build():
            tf.random.set_seed(5)  # The initial weights.
            return presets.build('checkerboard_vflow_3_4', seed=0)

        x = data.sample_checkerboard(64, seed=2)
        models = [build(), build()]
        models[1].rng.uniform_full_int([2], tf.int32)  # Another state.
        returned = [model.initialize(x, seed=[1, 1]) for model in models]
        self.assertAllEqual(returned[0], returned[1])
        for a, b in zip(models[0].trainable_variables,
                        models[1].trainable_variables):
            self.assertAllEqual(a, b, msg=a.name)

    def test_sticking_the_landing_drops_the_score_of_r(self):
        # `elbo` docstring: 'sticking_the_landing' drops the score term
        # d log r(u|x) / d phi taken at the fixed sample u. With D_Z = 0
        # (no q, whose removed score would also reach r through x~), r's
        # gradient of the loss -mean ELBO is the reparameterisation one
        # minus the mean score of r at the u that elbo draws.
        model, x = _small_float64_image_vflow(augment_channels=0)
        x = x[:3]
        variables = list(model.dequantizer.trainable_variables)
        grads = {}
        for estimator in ('reparameterization', 'sticking_the_landing'):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(
                    x, seed=[6, 7], gradient_estimator=estimator))
            grads[estimator] = tape.gradient(loss, variables)
        seed_r, _ = tfp.random.split_seed(tf.constant([6, 7]), n=2)
        condition = tf.cast(x, tf.float64) / 256.0 - 0.5
        u, _ = model.dequantizer.sample_and_log_prob(condition, seed_r)
        with tf.GradientTape() as tape:
            score = tf.reduce_mean(model.r.log_prob(
                tf.identity(u),
                bijector_kwargs=model.dequantizer.conditioning_kwargs(
                    condition)))
        scores = tape.gradient(score, variables)
        self.assertGreater(max(float(tf.reduce_max(tf.abs(s)))
                               for s in scores), 1e-3)
        for v, reparam, sticking, s in zip(
                variables, grads['reparameterization'],
                grads['sticking_the_landing'], scores):
            self.assertAllClose(sticking, reparam - s, atol=1e-8, rtol=1e-6,
                                msg=v.name)

    def test_pixels_of_every_number_type_are_checked(self):
        # `elbo` docstring: images are integers, and pixel values outside
        # the model's levels are refused, whatever the integer type (only
        # uint8 data cannot leave the range of an 8-bit model); images of
        # any float type must hold whole numbers (not scaled or
        # dequantised) and then score as the integers do.
        model = VFlow(tfb.Identity(), data_shape=[1, 2, 1])
        for dtype in (np.uint16, np.uint32, np.int64):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'must be below 256', msg=dtype):
                model.elbo(np.array([[[[3], [300]]]], dtype), seed=[1, 2])
        pixels = np.array([[[[3], [255]]]], np.int32)
        for dtype in (np.float16, np.float64):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        'must be whole numbers', msg=dtype):
                model.elbo((pixels / 255.0).astype(dtype), seed=[1, 2])
        for dtype in (np.uint16, np.float16, np.float64):
            self.assertAllEqual(
                model.elbo(pixels.astype(dtype), seed=[1, 2]),
                model.elbo(pixels, seed=[1, 2]), msg=dtype)

    def test_samples_are_drawn_without_dropout(self):
        # `sample` draws from p with a stateless seed: p's dropout (on in
        # `elbo(training=True)` only) draws no masks, so the same seed gives
        # the same samples whatever the generator did in between.
        tf.random.set_seed(5)
        model = presets.image_model((4, 4, 2), [[G('column', 1, 1, 8, 2)]],
                                    dropout=0.5, seed=0)
        model_helpers.perturb(model.trainable_variables, 0.1)
        x = np.arange(2 * 4 * 4 * 2).reshape(2, 4, 4, 2) % 256
        self.assertNotAllClose(model.elbo(x, training=True, seed=[1, 2]),
                               model.elbo(x, seed=[1, 2]))
        first = model.sample(4, seed=[3, 4])
        model.rng.uniform_full_int([2], tf.int32)
        self.assertAllEqual(model.sample(4, seed=[3, 4]), first)


# ----------------------------------------------------------------------------
# Argument and contract details of VFlow and ConditionalFlow.
# ----------------------------------------------------------------------------

def _tiny_flowpp_dequantizer_with_dropout():
    """tiny_flowpp's r with dropout 0.5 and weights moved off their init
    (the couplings' output layers start at zero, where dropout inside them
    changes nothing)."""
    tf.random.set_seed(5)
    dequantizer = presets.build('tiny_flowpp', dropout=0.5, seed=0).dequantizer
    model_helpers.perturb(dequantizer.trainable_variables, 0.1)
    return dequantizer


class ModelContractDetailsTest(tf.test.TestCase):

    def test_unsigned_sample_counts_int32_cannot_hold_are_refused(self):
        # `log_prob` docstring: num_samples is in [1, 2^31), as any integer
        # scalar tensor; a uint32 2^31 wraps to -2^31 in int32 (and then
        # scored NaN) unless it is checked in its own dtype.
        model = VFlow(tfb.Identity(), data_shape=[2])
        x = tf.zeros([1, 2])
        self.assertAllClose(
            model.log_prob(x, tf.constant(3, tf.uint32), seed=[1, 2]),
            [-math.log(2 * math.pi)])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r'num_samples must be below 2\^31'):
            model.log_prob(x, tf.constant(2**31, tf.uint32), seed=[1, 2])

    def test_unsigned_sample_numbers_int32_cannot_hold_are_refused(self):
        # `sample` docstring: num is a non-negative integer scalar below
        # 2^31; a uint32 2^31 wraps to -2^31 in int32.
        model = VFlow(tfb.Identity(), data_shape=[2])
        self.assertEqual(
            model.sample(tf.constant(3, tf.uint32), seed=[1, 2]).shape, [3, 2])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r'num must be below 2\^31'):
            model.sample(tf.constant(2**31, tf.uint32), seed=[1, 2])

    def test_a_sample_count_of_unknown_rank_is_a_count(self):
        # `log_prob` takes num_samples as an integer scalar tensor, also
        # one whose rank a trace does not know. With p the identity and
        # no z, every draw is log N(x): the estimate is that for any S.
        model = VFlow(tfb.Identity(), data_shape=[2])
        x = tf.constant([[0.0, 1.0], [2.0, -1.0]])
        score = tf.function(
            lambda x, n: model.log_prob(x, n, seed=[1, 2]),
            input_signature=[tf.TensorSpec([None, 2]),
                             tf.TensorSpec(None, tf.int32)])
        try:
            got = score(x, tf.constant(3))
        except TypeError as e:
            self.fail(f'a count of unknown rank refused: {e}')
        self.assertAllClose(got, [-math.log(2 * math.pi) - 0.5,
                                  -math.log(2 * math.pi) - 2.5])

    def test_image_seeds_hash_the_pixel_values_whatever_the_dtype(self):
        # `example_seeds` docstring: images are hashed as int32 pixel
        # values, so models of any float dtype give an image the same seed
        # (and uint8, int32 or whole float pixels too).
        x = np.array([[[[3], [200]]], [[[0], [255]]]], np.uint8)
        expected = VFlow(tfb.Identity(), data_shape=[1, 2, 1]).example_seeds(
            x, [1, 2])
        wide = VFlow(tfb.Identity(), data_shape=[1, 2, 1], dtype=tf.float64)
        for pixels in (x, x.astype(np.int32), x.astype(np.float32)):
            self.assertAllEqual(wide.example_seeds(pixels, [1, 2]), expected)

    def test_sticking_the_landing_is_refused_with_dropout_in_r_alone(self):
        # `elbo` raises for 'sticking_the_landing' in training with dropout
        # in q or r: here q has no network and r drops out.
        model = VFlow(tfb.Identity(), data_shape=[8, 8, 3],
                      augment_channels=1,
                      posterior=ConditionalFlow(tfb.Identity(), [8, 8, 1]),
                      dequantizer=presets.build(
                          'tiny_flowpp', dropout=0.3, seed=0).dequantizer)
        x = np.zeros([1, 8, 8, 3], np.uint8)
        with self.assertRaisesRegex(ValueError, 'dropout in training breaks'):
            model.elbo(x, training=True,
                       gradient_estimator='sticking_the_landing')

    def test_reconstruction_error_draws_without_dropout(self):
        # `reconstruction_error` docstring: xz is drawn as elbo does,
        # without dropout. p's forward doubles what its inverse keeps, so
        # the error is max |xz|, here max |x~| (q's z is tiny), which r's
        # dropout would move.
        double = tfb.Inline(
            forward_fn=lambda y: 2.0 * y, inverse_fn=lambda x: x,
            forward_log_det_jacobian_fn=lambda y: tf.zeros([]),
            forward_min_event_ndims=0, is_constant_jacobian=True)
        model = VFlow(double, data_shape=[8, 8, 3], augment_channels=1,
                      posterior=ConditionalFlow(tfb.Scale(1e-3), [8, 8, 1]),
                      dequantizer=_tiny_flowpp_dequantizer_with_dropout())
        x = data.photo_patches(8, 'test', max_patches=2)
        xz = _augmented(model, x, [4, 5])
        self.assertAllClose(model.reconstruction_error(x, seed=[4, 5]),
                            tf.reduce_max(tf.abs(xz), axis=[1, 2, 3]),
                            atol=1e-5, rtol=0)

    def test_reconstruction_error_checks_per_example_seeds(self):
        # Its seed is taken as for `elbo`: per-example seeds must cover the
        # batch, refused with elbo's messages.
        model = presets.build('checkerboard_vflow_3_4', seed=0)
        x = np.zeros([3, 2], np.float32)
        for bad, message in ((tf.constant([[1, 2], [3, 4]]),
                              'one row per example'),
                             (tf.zeros([0, 2], tf.int32), 'none given')):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        message):
                model.reconstruction_error(x, seed=bad)

    def test_count_params_counts_trainable_scalars_only(self):
        # `count_params` docstring: trainable scalars of r, q and p.
        fixed = VFlow(tfb.Shift(tf.Variable([1.0, 2.0], trainable=False)),
                      data_shape=[2])
        self.assertEqual(fixed.count_params(), 0)
        trained = VFlow(tfb.Shift(tf.Variable([1.0, 2.0])), data_shape=[2])
        self.assertEqual(trained.count_params(), 2)

    def test_the_context_network_gets_the_training_flag(self):
        # `ConditionalFlow`: context_net is called `net(c, training=...)`,
        # and `training` enables dropout in the networks, the context
        # network's included.
        dequantizer = _tiny_flowpp_dequantizer_with_dropout()
        network, seen = dequantizer.context_net, []

        def recording(condition, training=False):
            seen.append(training)
            return network(condition, training=training)

        condition = tf.zeros([2, 8, 8, 3])
        with mock.patch.object(dequantizer, 'context_net', recording):
            for training in (True, False):
                dequantizer.sample_and_log_prob(condition, [1, 2],
                                                training=training)
        self.assertEqual(seen, [True, False])

    def test_sticking_the_landing_keeps_a_fresh_conditional_maf_s_value(self):
        # `sample_and_log_prob`: with stop_score, log_p keeps its value. A
        # one-layer q, a TFP conditional MAF whose network is built on its
        # first call, holds no variables yet but is the flow itself, not a
        # squash to be applied without its conditional_input.
        made = tfb.AutoregressiveNetwork(
            params=2, event_shape=[2], conditional=True,
            conditional_event_shape=[2], hidden_units=[8], name='q_made')
        q = ConditionalFlow(
            tfb.MaskedAutoregressiveFlow(
                shift_and_log_scale_fn=_BoundedMade(made), name='q_maf'),
            (2,), kwargs_fn=lambda c, t: {'conditional_input': c})
        condition = tf.constant([[0.5, -1.0], [2.0, 0.0]])
        self.assertEmpty(q.trainable_variables)
        try:
            y, held = q.sample_and_log_prob(condition, [3, 4],
                                            stop_score=True)
        except ValueError as e:
            self.fail(f'the MAF was applied as a squash: {e}')
        y_plain, log_q = q.sample_and_log_prob(condition, [3, 4])
        self.assertAllClose(y, y_plain)
        self.assertAllClose(held, log_q)

    def test_initialize_does_not_warn_about_a_flow_without_layers(self):
        # `data_dependent_init`: `VFlow.initialize` expects no layers (its
        # flows may be TFP bijectors alone), so a model without
        # data-dependent layers initialises without a warning.
        model = VFlow(tfb.Shift([1.0, -1.0]), data_shape=[2])
        with self.assertNoLogs(level='WARNING'):
            model.initialize(tf.zeros([4, 2]), seed=[1, 2])

    def test_repeat_rows_passes_scalars_on(self):
        # `repeat_rows` docstring: tensors (and arrays) with rows are
        # repeated row by row; scalars, 0-d arrays included, are passed on.
        rows = np.arange(6.0).reshape(2, 3)
        repeated = conditional.repeat_rows(
            {'context': rows, 'tensor': tf.constant(rows),
             'scale': np.array(2.0), 'shift': tf.constant(1.0),
             'training': True}, 2)
        self.assertAllEqual(repeated['context'], np.repeat(rows, 2, axis=0))
        self.assertIsInstance(repeated['context'], np.ndarray)
        self.assertAllEqual(repeated['tensor'], np.repeat(rows, 2, axis=0))
        self.assertEqual(np.shape(repeated['scale']), ())
        self.assertEqual(repeated['shift'].shape, [])
        self.assertIs(repeated['training'], True)

    def test_refused_data_is_named_by_the_model_s_kind(self):
        # `_check_data`: x is refused as a batch of the model's data, images
        # for [H, W, C] and vectors for [D].
        images = VFlow(tfb.Identity(), data_shape=[1, 2, 1])
        vectors = VFlow(tfb.Identity(), data_shape=[2])
        for model, bad, message in (
                (images, np.zeros([2, 1, 2, 3], np.uint8),
                 r'x must be a batch of images of shape \[N, 1, 2, 1\]'),
                (vectors, np.zeros([3], np.float32),
                 r'x must be a batch of vectors of shape \[N, 2\]'),
                (images, np.zeros([2, 1, 2, 1], bool),
                 'x must be a batch of images of numbers; got dtype bool'),
                (vectors, np.zeros([2, 2], bool),
                 'x must be a batch of vectors of numbers; got dtype bool')):
            with self.assertRaisesRegex((ValueError, TypeError), message):
                model.elbo(bad, seed=[1, 2])

    def test_a_latent_shape_that_is_not_static_is_refused_by_name(self):
        # `VFlow` needs p's latent shape (the inverse event shape of
        # [x~, z]) when it is built: an unknown one is refused, naming it.
        unknown = tfb.Inline(
            forward_fn=tf.identity, inverse_fn=tf.identity,
            inverse_log_det_jacobian_fn=lambda x: tf.zeros([]),
            inverse_event_shape_fn=lambda s: tf.TensorShape([None]),
            forward_min_event_ndims=1)
        with self.assertRaises(Exception) as caught:
            VFlow(unknown, data_shape=[2])
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception),
                         r'p_bijector.inverse_event_shape\(\[2\]\) must be '
                         'static')

    def test_a_kwargs_fn_gets_the_training_flag(self):
        # `ConditionalFlow`: kwargs_fn is called `fn(context, training)`
        # with the `training` given, so a custom conditional layer (a TFP
        # conditional MAF with dropout, say) can switch it on and off.
        seen = []

        def recording(context, training):
            seen.append(training)
            return {}

        flow = ConditionalFlow(tfb.Shift(tf.constant([0.5, -1.0])), (2,),
                               kwargs_fn=recording)
        condition = tf.zeros([2, 2])
        for training in (True, False):
            flow.sample_and_log_prob(condition, [1, 2], training=training)
            flow.conditioning_kwargs(condition, training=training)
        self.assertEqual(seen, [True, True, False, False])

    def test_uint8_pixels_are_checked_against_fewer_than_256_levels(self):
        # `elbo` docstring: pixel values outside the model's levels are
        # refused; only uint8 data given to a model of 256 levels or more
        # cannot leave its range. With 255 levels (0..254) the uint8 value
        # 255 is outside, and is refused rather than scored.
        model = VFlow(tfb.Identity(), data_shape=[1, 2, 1], num_bins=255)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'must be below 255'):
            model.elbo(np.array([[[[3], [255]]]], np.uint8), seed=[1, 2])
        ok = np.array([[[[3], [254]]]], np.uint8)
        self.assertAllEqual(model.elbo(ok, seed=[1, 2]),
                            model.elbo(ok.astype(np.int32), seed=[1, 2]))

    def test_integer_log_likelihoods_are_not_rounded_to_float32(self):
        # `bits_per_dim` is -log_likelihood / (D_x ln 2): a log-likelihood
        # one nat lower costs 1 / (D_x ln 2) more bits per dimension, for
        # integer inputs too (float32 cannot tell 2^24 from 2^24 + 1).
        model = VFlow(tfb.Identity(), data_shape=[2])
        got = model.bits_per_dim(
            tf.constant([-2**24, -(2**24 + 1)], tf.int64)).numpy()
        self.assertAllClose(got[1] - got[0], 1 / (2 * math.log(2.0)),
                            atol=1e-6, rtol=0)

    def test_float64_bits_per_dim_keep_float64_precision(self):
        # -log_likelihood / (D ln 2) to float64's precision: the divisor
        # is not rounded to float32 on its way.
        model = VFlow(tfb.Identity(), data_shape=[3])
        ll = np.array([-1234.5678901234567, -3.0], np.float64)
        self.assertAllClose(model.bits_per_dim(ll),
                            -ll / (3 * math.log(2.0)), rtol=1e-15, atol=0)


class UnseededGeneratorTest(tf.test.TestCase):

    def test_without_a_global_seed_each_program_draws_anew(self):
        # `unseeded_generator` follows TF's global seed: without one, its
        # draw differs from program to program, as every unseeded TF op's
        # does (with one, see test_seedless_builds_follow_the_global_seed).
        script = ('from vflow_tfp import random_state\n'
                  'print(random_state.unseeded_generator().uniform_full_int('
                  '[4], "int64").numpy().tolist())\n')

        def draw():
            proc = subprocess.run(
                [sys.executable, '-c', script], capture_output=True,
                text=True, timeout=300,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            return json.loads(proc.stdout.strip().splitlines()[-1])

        self.assertNotEqual(draw(), draw())


class BuilderTest(tf.test.TestCase):
    """`vflow_tfp.models.builders` called directly, with the options and
    shapes the presets do not reach."""

    def test_each_step_is_actnorm_then_1x1_then_coupling(self):
        # Module docstring: a step group is `steps` repetitions of
        # `ActNorm -> Invertible1x1Conv -> coupling`, data -> latent, and a
        # SwapHalves when `steps` is odd. Parameter counts and the splits'
        # layout cannot see the order of a step's layers.
        layers = builders.image_step_group((4, 4, 4), G('column', 3, 1, 8, 2),
                                           'g')
        self.assertEqual(
            [type(b).__name__ for b in layers],
            ['ActNorm', 'Invertible1x1Conv', 'MixLogisticCoupling'] * 3
            + ['SwapHalves'])

    def test_layer_names_are_unique(self):
        # Module docstring: "names are unique and deterministic, so
        # contexts and `training` can be routed by `chain_kwargs`".
        layers, _ = builders.image_flow(
            (4, 4, 4), [[G('column', 2, 1, 8, 2)], [G('channel', 3, 1, 8, 2)]],
            'p')
        names = [b.name for b in layers]
        self.assertLen(set(names), len(names), names)

    def test_mixture_couplings_on_channel_halves_of_unequal_size(self):
        # On 3 channels the channel halves differ in size: each mixture
        # coupling's conditioner outputs `num_params(K)` values per element
        # of the half that coupling transforms (parity i % 2), and the
        # group inverts.
        group = G('channel', 2, 1, 8, 2)
        layers = builders.image_step_group((4, 4, 3), group, 'g',
                                           pointwise=False)
        halves = group.partition.half_event_shapes((4, 4, 3))
        self.assertNotEqual(halves[0][-1], halves[1][-1])
        couplings = [b for b in layers if isinstance(b, vb.Coupling)]
        self.assertLen(couplings, 2)
        for i, coupling in enumerate(couplings):
            self.assertEqual(
                coupling.conditioner.output_shape[-1],
                halves[1 - i % 2][-1] * vb.MixLogisticCoupling.num_params(2))
        chain = tfb.Chain(layers)
        x = tf.random.stateless_normal([2, 4, 4, 3], [1, 2])
        self.assertAllClose(chain.forward(chain.inverse(x)), x, atol=1e-5)

    def test_a_group_of_zero_blocks_has_conditioners_without_blocks(self):
        # StepGroup: `blocks` is the conditioners' block count `B`, passed
        # on as ConvAttnNet's `num_blocks` (">= 0").
        try:
            group = G('column', 1, 0, 8, 2)
        except ValueError as e:
            self.fail(f'blocks=0 refused: {e}')
        layers = builders.image_step_group((4, 4, 2), group, 'g')
        nets_ = [b.conditioner for b in layers if isinstance(b, vb.Coupling)]
        self.assertLen(nets_, 1)
        self.assertEmpty(nets_[0].residual_blocks)

    def test_f_affine_has_its_blocks(self):
        # f_affine: "conv 3x3, `blocks` x [gated conv, layer norm], conv
        # 3x3".
        for blocks in (1, 2):
            with self.subTest(blocks=blocks):
                coupling = builders.f_affine((4, 4, 5), 3, 8, 'f',
                                             blocks=blocks)
                self.assertLen(coupling.conditioner.residual_blocks, blocks)

    def test_linear_top_takes_the_flow_s_dtype(self):
        # Every layer of a float64 vector flow is float64, the
        # `linear_top` dense map too (else the float64 checkerboard
        # presets with `linear_top=True` mix dtypes).
        layers = builders.vector_flow(2, 2, 'p', hidden_units=(4,),
                                      linear_top=True, dtype=tf.float64)
        self.assertEqual(layers[-1].name, 'p_top')
        self.assertEqual({b.dtype for b in layers}, {tf.float64})

    def test_conditional_image_flow_squashes_only_if_asked(self):
        # "followed by a sigmoid if `squash` (into (0, 1))": without it
        # the draws are the flow's own, of either sign.
        condition = tf.zeros([2, 4, 4, 2])
        for squash in (True, False):
            with self.subTest(squash=squash):
                flow = builders.conditional_image_flow(
                    (4, 4, 2), (4, 4, 2), G('column', 1, 1, 8, 2), 'r',
                    context_filters=4, context_blocks=1, squash=squash)
                draws, _ = flow.sample_and_log_prob(condition, seed=[1, 2])
                inside = (float(tf.reduce_min(draws)) > 0.0
                          and float(tf.reduce_max(draws)) < 1.0)
                self.assertEqual(inside, squash)

    def test_an_odd_group_ends_by_swapping_its_own_halves(self):
        # An odd number of steps leaves the halves swapped at the end of
        # the group (SPEC §1.9): the SwapHalves exchanges the halves of the
        # group's partition, `merge(b, a)`.
        x = tf.reshape(tf.range(2 * 4 * 4 * 4, dtype=tf.float32),
                       [2, 4, 4, 4])
        for split in ('column', 'channel'):
            with self.subTest(split=split):
                group = G(split, 1, 1, 8, 2)
                swap = builders.image_step_group((4, 4, 4), group, 'g')[-1]
                self.assertIsInstance(swap, vb.SwapHalves)
                a, b = group.partition.split(x)
                self.assertAllEqual(swap.inverse(x),
                                    group.partition.merge(b, a))

    def test_the_context_is_arranged_like_the_group_s_halves(self):
        # conditional_image_flow: "The context network processes the
        # condition arranged like the halves of `group.partition`" (SPEC
        # §1.12), for a channel split as for the presets' column splits.
        for split in ('column', 'channel'):
            with self.subTest(split=split):
                group = G(split, 1, 1, 8, 2)
                flow = builders.conditional_image_flow(
                    (4, 4, 2), (4, 4, 2), group, 'r', context_filters=4,
                    context_blocks=1)
                half = group.partition.half_event_shapes((4, 4, 2))[0]
                self.assertEqual(tuple(flow.context_net.output_shape),
                                 tuple(half[:-1]) + (4,))
                draws, _ = flow.sample_and_log_prob(
                    tf.zeros([2, 4, 4, 2]), seed=[1, 2])
                self.assertEqual(draws.shape, [2, 4, 4, 2])


class ConditionalDistributionDetailsTest(tf.test.TestCase):
    """`ConditionalFlow` and `UniformDequantizer` details: the squash's
    log-density with `stop_score`, dtypes, rows of an unknown rank."""

    def test_outer_layers_of_varying_jacobian_keep_the_log_density(self):
        # y = exp(sigmoid(s)): with stop_score, log_p keeps its value, the
        # log-density of the plain pass, also when more than one outer
        # layer without parameters has a Jacobian that varies: each is
        # taken at its own input, the sigmoid's at s and exp's at
        # sigmoid(s).
        shift = tf.Variable(tf.constant([0.3, -0.8], tf.float64))
        q = ConditionalFlow(
            tfb.Chain([tfb.Exp(), vb.Sigmoid(), tfb.Shift(shift)]), (2,),
            dtype=tf.float64)
        condition = tf.zeros([8, 1], tf.float64)
        y, log_q = q.sample_and_log_prob(condition, [3, 4])
        y_held, log_q_held = q.sample_and_log_prob(condition, [3, 4],
                                                   stop_score=True)
        self.assertAllClose(y_held, y, atol=1e-12, rtol=0)
        self.assertAllClose(log_q_held, log_q, atol=1e-12, rtol=0)
        self.assertAllClose(log_q, q.distribution.log_prob(y), atol=1e-10,
                            rtol=0)

    def test_a_float64_uniform_dequantizer_s_log_density_is_float64(self):
        # log r(u|x) = 0 in the dequantiser's dtype, as u is: a float64
        # VFlow subtracts it from its float64 log-densities.
        dequantizer = UniformDequantizer([2, 1], dtype=tf.float64)
        for seed in ([1, 2], [[1, 2], [3, 4]]):
            u, log_r = dequantizer.sample_and_log_prob(
                tf.zeros([2, 2, 1], tf.float64), seed)
            self.assertEqual(u.dtype, tf.float64)
            self.assertEqual(log_r.dtype, tf.float64)
            self.assertAllEqual(log_r, tf.zeros([2], tf.float64))

    def test_repeat_rows_repeats_a_tensor_of_unknown_rank(self):
        # `repeat_rows`: every tensor with rows is repeated row by row, also
        # one whose rank is known only when it runs (a condition of any
        # shape in a traced function).
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
        def repeated(context):
            return conditional.repeat_rows({'context': context}, 2)[
                'context']

        rows = np.arange(6.0, dtype=np.float32).reshape(2, 3)
        self.assertAllEqual(repeated(rows), np.repeat(rows, 2, axis=0))


if __name__ == '__main__':
    tf.test.main()
