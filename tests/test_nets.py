"""Tests for `vflow_tfp.nets`: layers, blocks and conditioner networks."""

import threading
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from vflow_tfp import initialization
from vflow_tfp import nets
from vflow_tfp.nets import layers as layers_lib
from vflow_tfp.bijectors import partitions

DTYPES = (('float32', tf.float32), ('float64', tf.float64))


# ----------------------------------------------------------------------------
# Independent numpy references of SPEC §1.1-1.4.
# ----------------------------------------------------------------------------

def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def np_concat_elu(x):
    return np_elu(np.concatenate([x, -x], axis=-1))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gate(h):
    c = h.shape[-1] // 2
    return h[..., :c] * np_sigmoid(h[..., c:])


def np_dense(x, layer):
    return x @ layer.weights().numpy() + layer.bias.numpy()


def np_conv(x, layer):
    """SAME, stride-1 cross-correlation, written as a sum over kernel taps."""
    w, b = layer.weights().numpy(), layer.bias.numpy()
    k = w.shape[0]
    r = k // 2
    _, height, width, _ = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.zeros(x.shape[:3] + (w.shape[-1],))
    for p in range(k):
        for q in range(k):
            out += xp[:, p:p + height, q:q + width, :] @ w[p, q]
    return out + b


def np_layer_norm(x, layer, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * layer.gamma.numpy() + (
        layer.beta.numpy())


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_attention(x, pos_emb, block, layout='3_heads_d'):
    """Naive SPEC §1.4: explicit loops over batch and heads."""
    batch, height, width, channels = x.shape
    heads = block.num_heads
    d = channels // heads
    tokens = height * width
    c = np_dense((x + pos_emb).reshape(batch, tokens, channels), block.qkv)
    out = np.zeros((batch, tokens, channels))
    for b in range(batch):
        for h in range(heads):
            if layout == '3_heads_d':
                q = c[b, :, h * d:(h + 1) * d]
                k = c[b, :, channels + h * d:channels + (h + 1) * d]
                v = c[b, :, 2 * channels + h * d:2 * channels + (h + 1) * d]
            else:  # Wrong (heads, 3, d) layout, to show the test is sharp.
                base = 3 * d * h
                q = c[b, :, base:base + d]
                k = c[b, :, base + d:base + 2 * d]
                v = c[b, :, base + 2 * d:base + 3 * d]
            weights = np_softmax(q @ k.T / np.sqrt(d))
            out[b, :, h * d:(h + 1) * d] = weights @ v
    out = out.reshape(batch, height, width, channels)
    return x + np_gate(np_dense(out, block.proj_out))


def np_residual_block(x, block, context=None):
    """Naive SPEC §1.3 (no dropout)."""
    c1 = np_conv(np_concat_elu(x), block.conv_in)
    if context is not None:
        c1 = c1 + np_dense(np_concat_elu(context), block.context_proj)
    c1 = np_concat_elu(c1)
    if isinstance(block.conv_out, nets.Conv2D):
        c2 = np_conv(c1, block.conv_out)
    else:
        c2 = np_dense(c1, block.conv_out)
    return x + np_gate(c2)


def randomize(module, scale=0.5, seed=0):
    """Overwrites every variable with N(0, scale^2) so no term is trivial."""
    rs = np.random.RandomState(seed)
    for v in module.trainable_variables:
        v.assign(scale * rs.randn(*v.shape.as_list()))


def record_linear_outputs():
    """Patches Dense/Conv2D so each call's (layer, output) is recorded."""
    records = []
    patches = []
    for cls in (nets.Dense, nets.Conv2D):
        original = cls.__call__

        def recording(self, x, _original=original):
            y = _original(self, x)
            records.append((self, y))
            return y

        patches.append(mock.patch.object(cls, '__call__', recording))
    return records, patches


def conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def dense_params(c_in, c_out):
    return c_in * c_out + c_out


def conv_attn_param_count(height, width, c_in, filters, num_blocks, out,
                          attention, context_channels, output_nonlinearity):
    f = filters
    block = conv_params(3, 2 * f, f) + dense_params(2 * f, 2 * f) + 2 * f
    if context_channels:
        block += dense_params(2 * context_channels, f)
    if attention:
        block += dense_params(f, 3 * f) + dense_params(f, 2 * f) + 2 * f
    total = conv_params(3, c_in, f) + num_blocks * block
    total += conv_params(3, 2 * f if output_nonlinearity else f, out)
    if attention:
        total += height * width * f
    return total


def conv_attn_variable_count(num_blocks, attention, context_channels):
    # conv_in, context_proj, conv_out, LayerNorm: two variables each.
    per_block = 2 + (2 if context_channels else 0) + 2 + 2
    if attention:
        per_block += 2 + 2 + 2  # qkv, proj_out, LN
    return 2 + num_blocks * per_block + 2 + (1 if attention else 0)


# ----------------------------------------------------------------------------
# Layers.
# ----------------------------------------------------------------------------

class LayersTest(tf.test.TestCase, parameterized.TestCase):

    def test_concat_elu_and_gate(self):
        x = np.random.RandomState(0).randn(2, 3, 4)
        self.assertAllClose(nets.concat_elu(tf.constant(x)), np_concat_elu(x))
        self.assertAllClose(nets.gate(tf.constant(x)), np_gate(x))
        self.assertEqual(nets.concat_elu(tf.constant(x)).shape, (2, 3, 8))
        with self.assertRaisesRegex(ValueError, 'even'):
            nets.gate(tf.zeros([2, 3]))

    @parameterized.named_parameters(*DTYPES)
    def test_dense_any_rank_matches_numpy(self, dtype):
        layer = nets.Dense(3, 5, dtype=dtype)
        randomize(layer)
        self.assertEqual(layer.kernel.shape, (3, 5))
        self.assertEqual(layer.bias.shape, (5,))
        rs = np.random.RandomState(1)
        for shape in [(3,), (4, 3), (2, 4, 3), (2, 2, 3, 3)]:
            x = rs.randn(*shape)
            y = layer(tf.constant(x, dtype))
            self.assertEqual(y.dtype, dtype)
            self.assertEqual(y.shape, shape[:-1] + (5,))
            self.assertAllClose(y, np_dense(x, layer), atol=1e-5)
        with self.assertRaisesRegex(ValueError, '3 channels'):
            layer(tf.zeros([2, 4], dtype))

    @parameterized.named_parameters(*DTYPES)
    def test_conv2d_matches_numpy(self, dtype):
        for k in (1, 3, 5):
            layer = nets.Conv2D(3, 4, kernel_size=k, dtype=dtype)
            randomize(layer)
            self.assertEqual(layer.kernel.shape, (k, k, 3, 4))
            x = np.random.RandomState(k).randn(2, 5, 6, 3)
            y = layer(tf.constant(x, dtype))
            self.assertEqual(y.dtype, dtype)
            self.assertAllClose(y, np_conv(x, layer), atol=1e-5)
            # An empty batch (sample(0)) keeps the output channels; TF
            # 2.21's oneDNN kernel returns the input's on some CPUs.
            for call in (layer, tf.function(layer.__call__)):
                self.assertEqual(call(tf.zeros([0, 5, 6, 3], dtype)).shape,
                                 [0, 5, 6, 4])
        with self.assertRaisesRegex(ValueError, 'odd'):
            nets.Conv2D(3, 4, kernel_size=2)

    def test_initial_weights(self):
        layer = nets.Conv2D(64, 64)
        self.assertAllEqual(layer.bias, np.zeros(64))
        self.assertNear(float(tf.math.reduce_std(layer.kernel)), 0.05, 2e-3)
        self.assertNear(float(tf.reduce_mean(layer.kernel)), 0.0, 2e-3)

    @parameterized.named_parameters(*DTYPES)
    def test_layer_norm_matches_numpy(self, dtype):
        layer = nets.LayerNorm(4, dtype=dtype)
        self.assertAllEqual(layer.gamma, np.ones(4))
        self.assertAllEqual(layer.beta, np.zeros(4))
        self.assertLen(layer.trainable_variables, 2)
        randomize(layer)
        x = 3.0 + 2.0 * np.random.RandomState(2).randn(2, 3, 3, 4)
        y = layer(tf.constant(x, dtype))
        self.assertEqual(y.dtype, dtype)
        self.assertAllClose(y, np_layer_norm(x, layer), atol=1e-5)

    @parameterized.product(
        kind=('dense', 'nin', 'conv'), init_scale=(1.0, 0.1),
        dtype=(tf.float32, tf.float64))
    def test_data_dependent_init(self, kind, init_scale, dtype):
        rs = np.random.RandomState(3)
        if kind == 'dense':
            layer = nets.Dense(5, 4, init_scale=init_scale, dtype=dtype)
            x = 3.0 + 2.0 * rs.randn(64, 5)
        else:
            cls = nets.Dense if kind == 'nin' else nets.Conv2D
            layer = cls(5, 4, init_scale=init_scale, dtype=dtype)
            x = 3.0 + 2.0 * rs.randn(4, 6, 6, 5)
        x = tf.constant(x, dtype)
        axes = list(range(x.shape.rank - 1))
        kernel_before = layer.kernel.numpy()
        layer(x)  # Outside the context: no initialisation.
        self.assertAllEqual(layer.kernel, kernel_before)
        with mock.patch.object(type(layer), 'initialize', autospec=True,
                               side_effect=type(layer).initialize) as init:
            with initialization.data_dependent_init():
                y = layer(x)
            init.assert_called_once()
        self.assertEqual(y.dtype, dtype)
        mean, var = tf.nn.moments(y, axes)
        self.assertAllClose(mean, np.zeros(4), atol=1e-5)
        self.assertAllClose(var, np.full(4, init_scale ** 2), rtol=1e-4)
        self.assertNotAllClose(layer.kernel, kernel_before)
        # The parameters were assigned, not just the output normalised.
        self.assertAllClose(layer(x), y, atol=1e-5)

    @parameterized.product(kind=('nin', 'conv'),
                           dtype=(tf.float32, tf.float64))
    def test_weight_norm(self, kind, dtype):
        # SPEC §6.3 (Salimans & Kingma 2016): W = g V / ||V||, the norm per
        # output channel, and the DDI sets g and b, not the direction V.
        rs = np.random.RandomState(5)
        cls = nets.Dense if kind == 'nin' else nets.Conv2D
        layer = cls(5, 4, weight_norm=True, dtype=dtype)
        plain = cls(5, 4, dtype=dtype)
        self.assertTrue(layer.weight_norm)
        self.assertIsNone(plain.gain)
        self.assertEqual(
            sum(v.shape.num_elements() for v in layer.trainable_variables),
            sum(v.shape.num_elements() for v in plain.trainable_variables)
            + 4)
        layer.gain.assign(rs.rand(4) + 0.5)
        layer.bias.assign(rs.randn(4))
        v = layer.kernel.numpy()
        axes = tuple(range(v.ndim - 1))
        plain.kernel.assign(layer.gain.numpy() * v
                            / np.sqrt((v ** 2).sum(axes)))
        plain.bias.assign(layer.bias)
        x = tf.constant(rs.randn(2, 6, 6, 5), dtype)
        self.assertAllClose(layer(x), plain(x))
        self.assertAllClose(layer.weights(), plain.kernel)
        # The map ignores V's norm, so its gradient is orthogonal to V.
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(layer(x)))
        grad = tape.gradient(loss, layer.kernel).numpy()
        tol = 1e-4 if dtype == tf.float32 else 1e-10
        self.assertAllClose((grad * v).sum(axes), np.zeros(4), atol=tol)
        layer.kernel.assign(3.0 * v)
        self.assertAllClose(layer(x), plain(x))
        with initialization.data_dependent_init():
            y = layer(3.0 + 2.0 * x)
        mean, var = tf.nn.moments(y, list(range(3)))
        self.assertAllClose(mean, np.zeros(4), atol=1e-5)
        self.assertAllClose(var, np.ones(4), rtol=1e-4)
        self.assertAllEqual(layer.kernel, 3.0 * v)
        self.assertAllClose(layer(3.0 + 2.0 * x), y, atol=1e-5)

    def test_dropout(self):
        x = tf.ones([200, 50])
        rng = tf.random.Generator.from_seed(0)
        self.assertIs(nets.dropout(x, 0.0, None, True), x)
        self.assertIs(nets.dropout(x, 0.3, rng, False), x)
        y = nets.dropout(x, 0.3, rng, True).numpy()
        keep = nets.dropout_keep_probability(0.3)
        self.assertAllClose(y[y != 0], np.full((y != 0).sum(), 1 / keep))
        self.assertNear((y == 0).mean(), 0.3, 0.02)
        self.assertNear(y.mean(), 1.0, 0.03)
        # The mask comes from `rng`: the same seed gives the same mask.
        y1 = nets.dropout(x, 0.3, tf.random.Generator.from_seed(5), True)
        y2 = nets.dropout(x, 0.3, tf.random.Generator.from_seed(5), True)
        self.assertAllEqual(y1, y2)
        self.assertNotAllEqual(y1, nets.dropout(x, 0.3, rng, True))
        # A boolean tensor for `training` is honoured.
        self.assertAllEqual(
            nets.dropout(x, 0.3, rng, tf.constant(False)), x)
        self.assertNotAllEqual(
            nets.dropout(x, 0.3, rng, tf.constant(True)), x)
        # Also one whose value is known only when the graph runs.
        traced = tf.function(lambda training: nets.dropout(x, 0.3, rng,
                                                           training),
                             input_signature=[tf.TensorSpec([], tf.bool)])
        self.assertAllEqual(traced(tf.constant(False)), x)
        self.assertNear(float(tf.reduce_mean(tf.cast(
            traced(tf.constant(True)) == 0, tf.float32))), 0.3, 0.02)
        with self.assertRaisesRegex(ValueError, 'Generator'):
            nets.dropout(x, 0.3, None, True)
        with self.assertRaisesRegex(ValueError, r'\[0, 1\)'):
            nets.dropout(x, 1.0, rng, True)

    @parameterized.parameters(
        # (rate, random bits per element the realised rate needs)
        (0.2, 8), (0.5, 8), (0.9, 8), (0.1, 16), (0.01, 16), (0.999, 16),
        (1e-6, 32))
    def test_dropout_keep_probability(self, rate, bits):
        keep = nets.dropout_keep_probability(rate)
        # A multiple of 2^-bits, within 1% of the rate, and no coarser grid
        # would do.
        self.assertEqual(keep * 2**bits, round(keep * 2**bits))
        self.assertGreater(keep, 0.0)
        self.assertLessEqual(abs((1 - keep) - rate), 0.01 * rate)
        if bits > 8:
            coarse = round((1 - rate) * 2**(bits // 2)) / 2**(bits // 2)
            self.assertTrue(coarse == 0 or
                            abs((1 - coarse) - rate) > 0.01 * rate)

    @parameterized.parameters(0.2, 0.1, 0.003)
    def test_dropout_mask_statistics_and_gradient(self, rate):
        # An odd size leaves part of the last random word unused.
        x = tf.random.stateless_normal([101, 999], seed=[3, 4])
        rng = tf.random.Generator.from_seed(9)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = nets.dropout(x, rate, rng, True)
        keep = nets.dropout_keep_probability(rate)
        dropped = (y.numpy() == 0).mean()
        n = x.shape.num_elements()
        self.assertNear(dropped, 1 - keep, 5 * np.sqrt(keep * (1 - keep) / n))
        kept = y.numpy() != 0
        self.assertAllClose(y.numpy()[kept], x.numpy()[kept] / keep)
        # The gradient is the same scaled mask.
        self.assertAllClose(tape.gradient(y, x), kept / keep)

    @parameterized.parameters(tf.float64, tf.float16, tf.bfloat16)
    def test_dropout_dtypes_and_xla(self, dtype):
        x = tf.ones([4, 5, 7], dtype)

        @tf.function(jit_compile=True)
        def drop(x):
            return nets.dropout(x, 0.25, rng, True)

        rng = tf.random.Generator.from_seed(1)
        y = drop(x)
        self.assertEqual(y.dtype, dtype)
        values = np.unique(tf.cast(y, tf.float64).numpy())
        self.assertAllClose(values, [0.0, 1 / 0.75], rtol=1e-2)

    @parameterized.parameters(0.2, 0.5)
    def test_dropout_drops_with_exactly_its_keep_probability(self, rate):
        # `m ~ Bernoulli(k)` with `k = dropout_keep_probability(rate)`, and
        # the kept values are scaled by 1/k: E[y] = x only if the mask keeps
        # with probability k itself, not one 8-bit step away (1/256 = 0.004,
        # about 20 standard deviations of the dropped fraction here).
        x = tf.ones([2**22])
        y = nets.dropout(x, rate, tf.random.Generator.from_seed(11), True)
        keep = nets.dropout_keep_probability(rate)
        n = x.shape.num_elements()
        std = np.sqrt(keep * (1 - keep) / n)
        self.assertNear(float(tf.reduce_mean(tf.cast(y == 0, tf.float32))),
                        1 - keep, 5 * std)
        self.assertNear(float(tf.reduce_mean(y)), 1.0, 5 * std / keep)

    def test_dropout_of_a_rate_rounding_to_zero_is_a_no_op(self):
        # dropout_keep_probability: a rate below 2^-33 rounds to 0, a no-op;
        # its keep probability is 1, so no element may be dropped.
        x = tf.ones([64, 8])
        rng = tf.random.Generator.from_seed(0)
        self.assertEqual(nets.dropout_keep_probability(1e-11), 1.0)
        self.assertAllEqual(nets.dropout(x, 1e-11, rng, True), x)

    def test_layer_norm_adds_epsilon_to_the_variance(self):
        # SPEC §1.2 / LayerNorm: y = (x - mu) / sqrt(var + epsilon). On
        # rows of variance near epsilon, where the floor matters, the
        # result must still be that formula.
        layer = nets.LayerNorm(4)
        randomize(layer)
        rs = np.random.RandomState(4)
        x = 1.0 + 3e-3 * rs.randn(5, 4)
        self.assertAllClose(layer(tf.constant(x, tf.float32)),
                            np_layer_norm(x, layer), atol=1e-4)

    @parameterized.parameters(tf.bfloat16, tf.float16)
    def test_layer_norm_keeps_a_low_precision_input_dtype(self, dtype):
        # Mixed precision (module docstring): a layer given a bfloat16 or
        # float16 input computes in that dtype; its statistics are taken
        # in the variables' dtype, so the values are the float32 ones up
        # to the rounding of the input and output.
        layer = nets.LayerNorm(4)
        randomize(layer)
        x = tf.cast(3.0 + 2.0 * np.random.RandomState(6).randn(3, 4), dtype)
        y = layer(x)
        self.assertEqual(y.dtype, dtype)
        self.assertAllClose(
            tf.cast(y, tf.float32),
            np_layer_norm(tf.cast(x, tf.float64).numpy(), layer),
            atol=0.05, rtol=0.02)

    @parameterized.parameters('dense', 'conv')
    def test_data_dependent_init_of_a_low_precision_input(self, kind):
        # Mixed precision (module docstring): the DDI statistics are taken in
        # the variables' dtype. The batch's own values (bfloat16 numbers)
        # then give a float32 pre-activation of mean 0 and std init_scale
        # per channel to float32 accuracy, not to bfloat16 rounding (~1e-3).
        rs = np.random.RandomState(1)
        if kind == 'dense':
            layer = nets.Dense(16, 4, init_scale=0.5)
            x = 3.0 + 2.0 * rs.randn(256, 16)
        else:
            layer = nets.Conv2D(16, 4, init_scale=0.5)
            x = 3.0 + 2.0 * rs.randn(8, 8, 8, 16)
        x = tf.cast(x, tf.bfloat16)
        with initialization.data_dependent_init():
            self.assertEqual(layer(x).dtype, tf.bfloat16)
        y = layer(tf.cast(x, tf.float32))
        mean, var = tf.nn.moments(y, list(range(y.shape.rank - 1)))
        self.assertAllClose(mean, np.zeros(4), atol=1e-4)
        self.assertAllClose(tf.sqrt(var), np.full(4, 0.5), rtol=1e-4)

    @parameterized.parameters(False, True)
    def test_data_dependent_init_adds_epsilon_to_the_variance(
            self, weight_norm):
        # initialize: s = init_scale / sqrt(v + 1e-8). On a batch whose rows
        # are all the same, v = 0 and the kernel is scaled by
        # init_scale / 1e-4 (the gain, with weight normalisation), b = -m s.
        layer = nets.Dense(3, 2, init_scale=0.5, weight_norm=weight_norm,
                           dtype=tf.float64)
        x = tf.constant(np.tile([[0.3, -1.2, 2.0]], [8, 1]), tf.float64)
        kernel = layer.weights().numpy()
        mean = x[0].numpy() @ kernel
        with initialization.data_dependent_init():
            layer(x)
        self.assertAllClose(layer.weights(), kernel * 0.5e4, rtol=1e-6)
        self.assertAllClose(layer.bias, -mean * 0.5e4, rtol=1e-6)

    def test_a_linear_layer_counts_as_initialised_in_a_pass(self):
        # data_dependent_init warns at the end of a pass in which no layer
        # initialised itself; a Dense or Conv2D layer that did counts.
        rs = np.random.RandomState(2)
        for layer, x in ((nets.Dense(3, 2), rs.randn(8, 3)),
                         (nets.Conv2D(3, 2), rs.randn(2, 3, 3, 3))):
            with mock.patch.object(initialization.logging,
                                   'warning') as warning:
                with initialization.data_dependent_init():
                    layer(tf.constant(x, tf.float32))
            warning.assert_not_called()

    def test_a_linear_layer_traced_in_a_pass_initialises_and_warns(self):
        # The DDI switch is read at trace time: a Dense or Conv2D layer
        # traced inside data_dependent_init() keeps its initialisation in
        # the graph (its output on the batch is normalised), and the pass
        # warns, naming the layer, that the function was traced.
        rs = np.random.RandomState(6)
        for layer, x in ((nets.Dense(3, 2, name='traced_dense'),
                          3.0 + rs.randn(16, 3)),
                         (nets.Conv2D(3, 2, name='traced_conv'),
                          3.0 + rs.randn(2, 4, 4, 3))):
            with self.assertLogs('absl', 'WARNING') as logs:
                with initialization.data_dependent_init():
                    y = tf.function(layer.__call__)(
                        tf.constant(x, tf.float32))
            self.assertIn(f'{layer.name} initialises itself while a '
                          'tf.function is traced', logs.output[0])
            mean, var = tf.nn.moments(y, list(range(y.shape.rank - 1)))
            self.assertAllClose(mean, np.zeros(2), atol=1e-4)
            self.assertAllClose(var, np.ones(2), rtol=1e-3)


# ----------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------

class BlocksTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.product(use_nin=(True, False), context_channels=(0, 3),
                           weight_norm=(False, True))
    def test_residual_block_matches_numpy(self, use_nin, context_channels,
                                          weight_norm):
        block = nets.GatedResidualBlock(
            4, context_channels=context_channels, use_nin=use_nin,
            weight_norm=weight_norm, dtype=tf.float64)
        self.assertEqual(block.context_proj is None, not context_channels)
        self.assertIsInstance(block.conv_out,
                              nets.Dense if use_nin else nets.Conv2D)
        randomize(block)
        rs = np.random.RandomState(4)
        x = rs.randn(2, 3, 4, 4)
        context = rs.randn(2, 3, 4, 3) if context_channels else None
        y = block(x, context=context)
        self.assertEqual(y.shape, x.shape)
        self.assertAllClose(y, np_residual_block(x, block, context),
                            atol=1e-10)

    @parameterized.product(num_heads=(1, 2, 4), weight_norm=(False, True))
    def test_attention_matches_numpy(self, num_heads, weight_norm):
        block = nets.GatedAttention(8, num_heads=num_heads,
                                    weight_norm=weight_norm,
                                    dtype=tf.float64)
        randomize(block, scale=0.7)
        rs = np.random.RandomState(5)
        x = rs.randn(2, 2, 3, 8)  # T = 6 tokens.
        pos_emb = rs.randn(2, 3, 8)
        y = block(tf.constant(x), tf.constant(pos_emb))
        self.assertEqual(y.shape, x.shape)
        self.assertAllClose(y, np_attention(x, pos_emb, block), atol=1e-10)
        if num_heads > 1:
            self.assertNotAllClose(
                y, np_attention(x, pos_emb, block, layout='heads_3_d'))
        # The positional embedding matters (it enters the attention input).
        self.assertNotAllClose(y, block(tf.constant(x), tf.zeros_like(
            pos_emb)))

    def test_attention_dropout_acts_in_training_only(self):
        # Dropout on the attended values (SPEC): masks from the block's rng,
        # none in evaluation, where the block is its dropout-free twin.
        def block(dropout, seed=3):
            tf.random.set_seed(11)
            b = nets.GatedAttention(8, num_heads=2, dropout=dropout,
                                    rng=tf.random.Generator.from_seed(seed),
                                    dtype=tf.float64)
            randomize(b, scale=0.7)
            return b
        rs = np.random.RandomState(6)
        x = tf.constant(rs.randn(2, 2, 3, 8))
        pos_emb = tf.constant(rs.randn(2, 3, 8))
        dropping, twin, plain = block(0.5), block(0.5), block(0.0)
        evaluated = dropping(x, pos_emb)
        self.assertAllClose(evaluated, plain(x, pos_emb, training=True))
        trained = dropping(x, pos_emb, training=True)
        self.assertNotAllClose(trained, evaluated)
        self.assertNotAllClose(dropping(x, pos_emb, training=True), trained)
        self.assertAllClose(twin(x, pos_emb, training=True), trained)

    def test_dropout_acts_where_the_spec_puts_it(self):
        # SPEC §1.3: the residual block drops out concat_elu(c1) (2F
        # channels); §1.4: attention drops out the merged heads (F channels),
        # before the output projection. The numpy references run without
        # dropout, so only the place of the one dropout call tells.
        seen = []
        original = layers_lib.dropout

        def recording(x, *args, **kwargs):
            seen.append(x)
            return original(x, *args, **kwargs)

        rs = np.random.RandomState(0)
        residual = nets.GatedResidualBlock(
            4, dropout=0.5, rng=tf.random.Generator.from_seed(1),
            dtype=tf.float64)
        x = tf.constant(rs.randn(2, 3, 3, 4))
        with mock.patch.object(layers_lib, 'dropout', recording):
            residual(x, training=True)
        self.assertLen(seen, 1)
        c1 = residual.conv_in(nets.concat_elu(x))
        self.assertAllClose(seen[0], nets.concat_elu(c1), atol=1e-12)
        seen.clear()
        attention = nets.GatedAttention(
            8, num_heads=2, dropout=0.5,
            rng=tf.random.Generator.from_seed(1), dtype=tf.float64)
        with mock.patch.object(layers_lib, 'dropout', recording):
            attention(tf.constant(rs.randn(2, 2, 3, 8)),
                      tf.constant(rs.randn(2, 3, 8)), training=True)
        self.assertLen(seen, 1)
        self.assertEqual(seen[0].shape, (2, 2, 3, 8))
        # The gated outputs start small (init scale 0.1).
        self.assertEqual(residual.conv_out.init_scale, 0.1)
        self.assertEqual(nets.GatedResidualBlock(
            4, use_nin=False).conv_out.init_scale, 0.1)
        self.assertEqual(attention.proj_out.init_scale, 0.1)

    def test_attention_validation(self):
        with self.assertRaisesRegex(ValueError, 'multiple of num_heads'):
            nets.GatedAttention(6, num_heads=4)
        for make in (lambda: nets.GatedResidualBlock(4, dropout=1.0),
                     lambda: nets.GatedAttention(8, dropout=1.0)):
            with self.assertRaisesRegex(ValueError,
                                        r'dropout must be in \[0, 1\)'):
                make()
        with self.assertRaisesRegex(ValueError, 'query_block must be'):
            nets.GatedAttention(8, query_block=0)

        @tf.function(input_signature=[tf.TensorSpec([1, None, 4])])
        def lean(q):
            return nets.dot_product_attention(q, q, q, query_block=2)

        with self.assertRaisesRegex(ValueError, 'static number of queries'):
            lean.get_concrete_function()
        block = nets.GatedAttention(8, num_heads=4)
        with self.assertRaisesRegex(ValueError, 'pos_emb'):
            block(tf.zeros([1, 2, 2, 8]), tf.zeros([2, 3, 8]))

    def test_residual_block_context_validation(self):
        block = nets.GatedResidualBlock(4, context_channels=3)
        x = tf.zeros([2, 3, 4, 4])
        with self.assertRaisesRegex(ValueError, 'needs a context'):
            block(x)
        with self.assertRaisesRegex(ValueError, 'context of shape'):
            block(x, context=tf.zeros([2, 3, 4, 2]))
        with self.assertRaisesRegex(ValueError, 'context of shape'):
            block(x, context=tf.zeros([2, 3, 2, 3]))
        plain = nets.GatedResidualBlock(4)
        with self.assertRaisesRegex(ValueError, 'without a context'):
            plain(x, context=tf.zeros([2, 3, 4, 3]))
        with self.assertRaisesRegex(ValueError, '4 input channels'):
            plain(tf.zeros([2, 3, 4, 5]))

    def test_attention_projects_the_dropped_out_heads(self):
        # SPEC §1.4: c2 = nin(dropout(merge_heads(A), p)), y = x + gate(c2).
        # The dropout takes the dropout-free attention (not x + pos_emb, the
        # attention input), and its output is what the projection takes.
        calls = []
        original = layers_lib.dropout

        def recording(x, *args, **kwargs):
            calls.append((x, original(x, *args, **kwargs)))
            return calls[-1][1]

        block = nets.GatedAttention(8, num_heads=2, dropout=0.5,
                                    rng=tf.random.Generator.from_seed(2),
                                    dtype=tf.float64)
        randomize(block, scale=0.7)
        rs = np.random.RandomState(7)
        x, pos_emb = rs.randn(2, 2, 3, 8), rs.randn(2, 3, 8)
        with mock.patch.object(layers_lib, 'dropout', recording):
            y = block(tf.constant(x), tf.constant(pos_emb), training=True)
        self.assertLen(calls, 1)
        kept, dropped = calls[0]
        self.assertNotAllClose(dropped, kept)
        self.assertAllClose(x + nets.gate(block.proj_out(kept)),
                            np_attention(x, pos_emb, block), atol=1e-10)
        self.assertAllClose(y, x + nets.gate(block.proj_out(dropped)),
                            atol=1e-10)

    def test_a_low_precision_block_casts_its_context(self):
        # Mixed precision (layers module docstring): given a bfloat16 input,
        # the block computes in bfloat16; a context of the variables' dtype
        # (float32) is cast to it, and the result is float32's up to
        # rounding.
        block = nets.GatedResidualBlock(4, context_channels=3)
        randomize(block)
        rs = np.random.RandomState(8)
        x = tf.constant(rs.randn(2, 3, 4, 4), tf.float32)
        context = tf.constant(rs.randn(2, 3, 4, 3), tf.float32)
        low = block(tf.cast(x, tf.bfloat16), context=context)
        self.assertEqual(low.dtype, tf.bfloat16)
        self.assertAllClose(tf.cast(low, tf.float32),
                            block(x, context=context), atol=0.1, rtol=0.05)

    def test_a_default_dropout_generator_follows_the_global_seed(self):
        # rng=None with p > 0: a generator seeded from TF's global seed is
        # created, so blocks built after the same tf.random.set_seed drop
        # out the same units, as their weights are the same.
        rs = np.random.RandomState(3)
        x = tf.constant(rs.randn(2, 2, 3, 8), tf.float32)
        pos_emb = tf.constant(rs.randn(2, 3, 8), tf.float32)
        for make, args in (
                (lambda: nets.GatedResidualBlock(8, dropout=0.5), ()),
                (lambda: nets.GatedAttention(8, dropout=0.5), (pos_emb,))):
            outputs = []
            for _ in range(2):
                tf.random.set_seed(5)
                block = make()
                self.assertIsInstance(block.rng, tf.random.Generator)
                outputs.append(block(x, *args, training=True))
            self.assertAllEqual(outputs[0], outputs[1])

    @parameterized.parameters(True, False)
    def test_data_dependent_init_scales_of_the_residual_block(self, use_nin):
        # The DDI pass gives each layer's output zero mean and unit variance
        # on the batch (vflow_tfp.initialization), except the gated output
        # layer c2, of init_scale 0.1 (SPEC §1.3): conv_in and context_proj
        # to std 1, conv_out to std 0.1.
        block = nets.GatedResidualBlock(4, context_channels=2,
                                        use_nin=use_nin, dtype=tf.float64)
        rs = np.random.RandomState(9)
        x = tf.constant(1.0 + 2.0 * rs.randn(8, 4, 4, 4))
        context = tf.constant(rs.randn(8, 4, 4, 2))
        records, patches = record_linear_outputs()
        with patches[0], patches[1], initialization.data_dependent_init():
            block(x, context=context)
        stds = {layer.name: tf.math.reduce_std(out, axis=[0, 1, 2])
                for layer, out in records}
        self.assertAllClose(stds['conv_in'], np.ones(4), rtol=1e-4)
        self.assertAllClose(stds['context_proj'], np.ones(4), rtol=1e-4)
        self.assertAllClose(stds['conv_out'], np.full(8, 0.1), rtol=1e-4)

    def test_an_input_of_unknown_channels_is_refused_by_name(self):
        # `__call__` docstrings: a wrong input shape is a ValueError; the
        # blocks take [B, H, W, C] inputs with static H, W and C, so an input
        # whose channel count is unknown when traced is refused by name.
        spec = tf.TensorSpec([None, 3, 4, None])
        for block, args in ((nets.GatedResidualBlock(4), ()),
                            (nets.GatedAttention(4, num_heads=2),
                             (tf.zeros([3, 4, 4]),))):
            traced = tf.function(lambda x, b=block, a=args: b(x, *a),
                                 input_signature=[spec])
            with self.assertRaises(Exception) as caught:
                traced.get_concrete_function()
            self.assertIsInstance(caught.exception, ValueError,
                                  msg=block.name)
            self.assertRegex(str(caught.exception), 'static H, W, C')

    def test_a_misshaped_pos_emb_is_refused_naming_its_shape(self):
        # `__call__` docstring: pos_emb is [H, W, F] (broadcast over B); the
        # error names that shape, not the input's [B, H, W, F].
        block = nets.GatedAttention(8, num_heads=2)
        with self.assertRaisesRegex(ValueError, r'pos_emb must have shape '
                                    r'\(2, 3, 8\); got \(3, 2, 8\)'):
            block(tf.zeros([1, 2, 3, 8]), tf.zeros([3, 2, 8]))

    def test_a_low_precision_attention_block_casts_its_pos_emb(self):
        # Mixed precision (layers module docstring): given a bfloat16 input,
        # the attention block computes in bfloat16; a positional embedding
        # of the variables' dtype (float32) is cast to it, and the result is
        # float32's up to rounding.
        block = nets.GatedAttention(8, num_heads=2)
        randomize(block, scale=0.7)
        rs = np.random.RandomState(9)
        x = tf.constant(rs.randn(2, 2, 3, 8), tf.float32)
        pos_emb = tf.constant(rs.randn(2, 3, 8), tf.float32)
        try:
            low = block(tf.cast(x, tf.bfloat16), pos_emb)
        except (TypeError, tf.errors.InvalidArgumentError) as e:
            self.fail(f'a float32 pos_emb was not cast to bfloat16: {e}')
        self.assertEqual(low.dtype, tf.bfloat16)
        self.assertAllClose(tf.cast(low, tf.float32), block(x, pos_emb),
                            atol=0.1, rtol=0.05)


# ----------------------------------------------------------------------------
# ConvAttnNet.
# ----------------------------------------------------------------------------

def _assert_every_variable_gets_a_gradient(test, net, input_shape):
    """Asserts that no trainable variable of `net` has a None gradient."""
    x = tf.random.normal(input_shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x) ** 2)
    test.assertNotIn(None, tape.gradient(loss, net.trainable_variables))


def _assert_a_float64_batch_is_converted(test, net, shape):
    """A float64 NumPy batch is taken in the float32 variables' dtype: the
    output of the same batch in float32."""
    x = np.random.RandomState(5).randn(*shape)
    try:
        y = net(x)
    except (ValueError, TypeError, tf.errors.OpError) as e:
        test.fail(f'a float64 input was refused: {e}')
    test.assertEqual(y.dtype, tf.float32)
    test.assertAllClose(y, net(tf.constant(x, tf.float32)), atol=1e-6)


def _net(**kwargs):
    config = dict(input_shape=(4, 4, 3), output_channels=10, filters=8,
                  num_blocks=2)
    config.update(kwargs)
    return nets.ConvAttnNet(**config)


class ConvAttnNetTest(tf.test.TestCase, parameterized.TestCase):

    def test_image_networks_reject_bad_input_shapes(self):
        for shape in [(4, 4), (4, 0, 3), (4, 4, 3, 1)]:
            for make in [lambda s: nets.ConvAttnNet(s, 6, filters=8,
                                                    num_blocks=1),
                         lambda s: nets.GlowNet(s, 6, filters=8)]:
                with self.assertRaisesRegex(
                        ValueError, r'input_shape must be \(H, W, C\)'):
                    make(shape)

    @parameterized.product(
        dtype=(tf.float32, tf.float64), attention=(True, False),
        output_nonlinearity=(False, True))
    def test_shape_and_dtype(self, dtype, attention, output_nonlinearity):
        net = _net(attention=attention,
                   output_nonlinearity=output_nonlinearity, dtype=dtype)
        y = net(tf.random.normal([2, 4, 4, 3], dtype=dtype))
        self.assertEqual(y.shape, (2, 4, 4, 10))
        self.assertEqual(y.dtype, dtype)
        self.assertEqual(net.output_shape, (4, 4, 10))
        self.assertTrue(all(v.dtype == dtype for v in net.trainable_variables))
        self.assertAllInSet(tf.math.is_finite(y), [True])

    @parameterized.product(attention=(True, False), context_channels=(0, 5),
                           output_nonlinearity=(False, True))
    def test_parameter_count(self, attention, context_channels,
                             output_nonlinearity):
        net = _net(attention=attention, context_channels=context_channels,
                   output_nonlinearity=output_nonlinearity)
        got = sum(v.shape.num_elements() for v in net.trainable_variables)
        expected = conv_attn_param_count(
            4, 4, 3, 8, 2, 10, attention, context_channels,
            output_nonlinearity)
        self.assertEqual(got, expected)
        self.assertLen(net.trainable_variables, conv_attn_variable_count(
            2, attention, context_channels))
        # pos_emb is one variable shared by every attention block.
        pos = [v for v in net.trainable_variables if v.shape == (4, 4, 8)]
        self.assertLen(pos, 1 if attention else 0)

    def test_parameter_count_reproduces_flowpp_total(self):
        # SPEC §7/§10: the released Flow++ CIFAR model has 31,443,440
        # parameters. Built from these networks plus the per-half
        # per-element ActNorms (2 x 2 x 1536 per step) and per-half C x C
        # 1x1 matrices, the total must match exactly. K = 32 mixtures give
        # C * (2 + 3K) = 98 C conditioner outputs.
        def size(module):
            return sum(v.shape.num_elements()
                       for v in module.trainable_variables)

        norms = 2 * 2 * 32 * 16 * 3

        def step(net, half_channels):
            return norms + 2 * half_channels ** 2 + size(net)

        main_32 = nets.ConvAttnNet((32, 16, 3), 294, filters=96,
                                   num_blocks=10)
        main_channel = nets.ConvAttnNet((16, 16, 6), 588, filters=96,
                                        num_blocks=10)
        main_checker = nets.ConvAttnNet((16, 8, 12), 1176, filters=96,
                                        num_blocks=10)
        dequant = nets.ConvAttnNet((32, 16, 3), 294, filters=96,
                                   num_blocks=2, context_channels=32)
        context = nets.ContextNet((32, 32, 3), partitions.ColumnSplit())
        self.assertEqual(context.output_shape, (32, 16, 32))
        self.assertEqual(size(main_32), conv_attn_param_count(
            32, 16, 3, 96, 10, 294, True, 0, False))
        total = (4 * step(main_32, 3) + 2 * step(main_channel, 6)
                 + 3 * step(main_checker, 12) + 4 * step(dequant, 3)
                 + size(context))
        self.assertEqual(total, 31_443_440)

    @parameterized.parameters(True, False)
    def test_data_dependent_init(self, attention):
        net = _net(attention=attention, context_channels=2)
        rs = np.random.RandomState(6)
        x = tf.constant(2.0 + 3.0 * rs.randn(16, 4, 4, 3), tf.float32)
        context = tf.constant(rs.randn(16, 4, 4, 2), tf.float32)
        records, patches = record_linear_outputs()
        with patches[0], patches[1], initialization.data_dependent_init():
            y = net(x, context=context)
        per_block = 3 + (2 if attention else 0)
        self.assertLen(records, 2 + 2 * per_block)
        for layer, out in records:
            mean, var = tf.nn.moments(out, list(range(out.shape.rank - 1)))
            self.assertAllClose(mean, tf.zeros_like(mean), atol=1e-4,
                                msg=layer.name)
            self.assertAllClose(var, tf.fill(var.shape, layer.init_scale ** 2),
                                rtol=1e-3, msg=layer.name)
        self.assertIs(records[-1][0], net.proj_out)
        # The output has the small scale of the last conv's init_scale 0.1.
        mean, var = tf.nn.moments(y, [0, 1, 2])
        self.assertAllClose(mean, np.zeros(10), atol=1e-4)
        self.assertAllClose(tf.sqrt(var), np.full(10, 0.1), rtol=1e-3)
        # Outside the context the initialised net reproduces that output.
        self.assertAllClose(net(x, context=context), y, atol=1e-5)

    def test_output_init_scale_reaches_the_output_conv(self):
        # VFlow's f_affine network starts at output std 1 (SPEC §1.13).
        net = _net(output_init_scale=1.0)
        self.assertEqual(net.proj_out.init_scale, 1.0)
        x = tf.random.stateless_normal([16, 4, 4, 3], [1, 2])
        with initialization.data_dependent_init():
            y = net(x)
        _, var = tf.nn.moments(y, [0, 1, 2])
        self.assertAllClose(var, np.ones(10), rtol=1e-3)

    def test_position_embedding_starts_small(self):
        # SPEC: N(0, 0.01^2), added to every attention block's input.
        tf.random.set_seed(0)
        net = nets.ConvAttnNet((16, 16, 2), 4, filters=32, num_blocks=1,
                               num_heads=4)
        self.assertNear(float(tf.math.reduce_std(net.pos_emb)), 0.01, 1e-3)

    def test_blocks_run_in_the_spec_order(self):
        # SPEC §1.5: proj_in, then per block [gated conv, LN, attention
        # (with pos_emb), LN], concat_elu, proj_out; the context enters
        # every gated conv.
        net = _net(context_channels=2, output_nonlinearity=True,
                   dtype=tf.float64)
        randomize(net)
        rs = np.random.RandomState(3)
        x = tf.constant(rs.randn(2, 4, 4, 3))
        context = tf.constant(rs.randn(2, 4, 4, 2))
        h = net.proj_in(x)
        norms = iter(net.norms)
        for residual, attention in zip(net.residual_blocks,
                                       net.attention_blocks):
            h = next(norms)(residual(h, context=context))
            h = next(norms)(attention(h, net.pos_emb))
        expected = net.proj_out(nets.concat_elu(h))
        self.assertAllClose(net(x, context=context), expected, atol=1e-10)

    def test_data_dependent_init_with_dropout(self):
        net = _net(dropout=0.2, rng=tf.random.Generator.from_seed(1))
        x = tf.random.normal([8, 4, 4, 3])
        with initialization.data_dependent_init():
            y = net(x, training=True)
        self.assertAllInSet(tf.math.is_finite(y), [True])
        self.assertAllInSet(
            tf.math.is_finite(net(x, training=True)), [True])

    def test_context(self):
        net = _net(context_channels=5)
        x = tf.random.normal([2, 4, 4, 3])
        c1 = tf.random.normal([2, 4, 4, 5])
        c2 = tf.random.normal([2, 4, 4, 5])
        self.assertNotAllClose(net(x, context=c1), net(x, context=c2))
        with self.assertRaisesRegex(ValueError, 'needs a context'):
            net(x)
        with self.assertRaisesRegex(ValueError, 'context'):
            net(x, context=tf.zeros([2, 4, 4, 4]))
        with self.assertRaisesRegex(ValueError, 'context'):
            net(x, context=tf.zeros([2, 4, 2, 5]))
        with self.assertRaisesRegex(ValueError, 'without a context'):
            _net(num_blocks=0)(x, context=c1)
        # Without blocks the context would never reach the output.
        with self.assertRaisesRegex(ValueError, r'context_channels=5\) needs '
                                    'num_blocks >= 1'):
            _net(num_blocks=0, context_channels=5)

    def test_every_variable_gets_a_gradient_even_without_blocks(self):
        # With no block, a positional embedding would be unused: a None
        # gradient, which the distributed step's all-reduce cannot take.
        for blocks in (0, 1):
            net = _net(num_blocks=blocks)
            self.assertEqual(net.pos_emb is None, blocks == 0)
            _assert_every_variable_gets_a_gradient(self, net, [2, 4, 4, 3])

    def test_input_validation(self):
        net = _net()
        with self.assertRaisesRegex(ValueError,
                                    r'expects inputs of shape \[B, 4, 4, 3\]'
                                    r'.*got \(2, 4, 4, 2\)'):
            net(tf.zeros([2, 4, 4, 2]))
        with self.assertRaisesRegex(ValueError, r'got \(2, 4, 3, 3\)'):
            net(tf.zeros([2, 4, 3, 3]))
        with self.assertRaisesRegex(ValueError, 'multiple of num_heads'):
            _net(filters=6)

    def test_dropout(self):
        tf.random.set_seed(7)
        net = _net(dropout=0.5, context_channels=2,
                   rng=tf.random.Generator.from_seed(3))
        tf.random.set_seed(7)
        twin = _net(dropout=0.5, context_channels=2,
                    rng=tf.random.Generator.from_seed(3))
        tf.random.set_seed(7)
        no_dropout = _net(dropout=0.0, context_channels=2)
        for module in (net, twin, no_dropout):
            randomize(module, scale=0.3)
        x = tf.random.normal([2, 4, 4, 3])
        c = tf.random.normal([2, 4, 4, 2])
        eval_out = net(x, context=c)
        self.assertAllEqual(eval_out, net(x, context=c, training=False))
        train_1 = net(x, context=c, training=True)
        train_2 = net(x, context=c, training=True)
        self.assertNotAllClose(train_1, eval_out)
        self.assertNotAllClose(train_1, train_2)
        # Masks come from the rng: a twin with the same seed repeats them.
        self.assertAllClose(twin(x, context=c), eval_out)
        self.assertAllClose(twin(x, context=c, training=True), train_1)
        # Rate 0: training=True is identical to evaluation.
        self.assertAllClose(no_dropout(x, context=c, training=True), eval_out)
        self.assertIsNone(no_dropout.rng)
        # The rng is shared by all blocks; one is created if none is given.
        self.assertTrue(all(b.rng is net.rng for b in
                            net.residual_blocks + net.attention_blocks))
        auto = _net(dropout=0.1)
        self.assertIsInstance(auto.rng, tf.random.Generator)
        self.assertTrue(all(b.rng is auto.rng for b in
                            auto.residual_blocks + auto.attention_blocks))

    def test_tf_function_none_batch_and_jit(self):
        net = _net(context_channels=2)
        randomize(net, scale=0.3)
        spec = [tf.TensorSpec([None, 4, 4, 3], tf.float32),
                tf.TensorSpec([None, 4, 4, 2], tf.float32)]

        def call(x, c):
            return net(x, context=c)

        graph_fn = tf.function(call, input_signature=spec)
        jit_fn = tf.function(call, input_signature=spec, jit_compile=True)
        for batch in (3, 1):
            x = tf.random.normal([batch, 4, 4, 3])
            c = tf.random.normal([batch, 4, 4, 2])
            eager = net(x, context=c)
            self.assertAllClose(graph_fn(x, c), eager, atol=1e-5)
            self.assertAllClose(jit_fn(x, c), eager, atol=1e-5)
        concrete = graph_fn.get_concrete_function()
        self.assertEqual(concrete.output_shapes.as_list(), [None, 4, 4, 10])

    def test_jit_dropout(self):
        net = _net(dropout=0.5, rng=tf.random.Generator.from_seed(2))
        jit_fn = tf.function(
            lambda x: net(x, training=True),
            input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)],
            jit_compile=True)
        x = tf.random.normal([2, 4, 4, 3])
        self.assertNotAllClose(jit_fn(x), jit_fn(x))
        self.assertNotAllClose(jit_fn(x), net(x))

    @parameterized.named_parameters(*DTYPES)
    def test_gradients(self, dtype):
        net = _net(context_channels=2, output_nonlinearity=True, dtype=dtype)
        x = tf.random.normal([2, 4, 4, 3], dtype=dtype)
        c = tf.random.normal([2, 4, 4, 2], dtype=dtype)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(net(x, context=c)))
        grads = tape.gradient(loss, net.trainable_variables)
        self.assertLen(grads, conv_attn_variable_count(2, True, 2))
        for v, g in zip(net.trainable_variables, grads):
            self.assertIsNotNone(g, msg=v.name)
            self.assertTrue(np.all(np.isfinite(g.numpy())), msg=v.name)
            self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.0,
                               msg=v.name)

    def test_compute_dtype_must_be_a_16_bit_float(self):
        # compute_dtype: None, tf.bfloat16 or tf.float16. The variables' own
        # float32 (or float64) is refused, not taken for mixed precision.
        for dtype in (tf.float32, 'float32', tf.float64):
            with self.assertRaisesRegex(ValueError, 'compute_dtype must be'):
                _net(compute_dtype=dtype)
        self.assertEqual(_net(compute_dtype='float16').compute_dtype,
                         tf.float16)

    def test_a_missing_context_is_refused_by_the_network_s_name(self):
        # A net built with context_channels > 0 refuses a call without a
        # context as a ValueError naming the network and its
        # context_channels, not one of its inner blocks.
        net = _net(context_channels=5)
        with self.assertRaisesRegex(
                ValueError, r'^conv_attn_net was built with '
                r'context_channels=5 and needs a context'):
            net(tf.zeros([2, 4, 4, 3]))


class GlowNetTest(tf.test.TestCase):

    def test_matches_numpy(self):
        # conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3, with every weight
        # moved off its (zero) initialisation.
        net = nets.GlowNet((4, 4, 3), 6, filters=5, dtype=tf.float64)
        randomize(net, scale=1.0, seed=3)
        x = np.random.RandomState(4).randn(2, 4, 4, 3)
        h = np.maximum(np_conv(x, net.conv_in), 0.0)
        h = np.maximum(np_conv(h, net.conv_hidden), 0.0)
        self.assertAllClose(net(tf.constant(x)), np_conv(h, net.conv_out),
                            rtol=1e-10, atol=1e-10)

    def test_a_width_below_one_is_refused_by_name(self):
        # Raises ValueError for an invalid width, naming the network and
        # its `filters` argument rather than an inner layer.
        with self.assertRaisesRegex(
                ValueError, r'^glow_net: filters must be >= 1; got 0\.$'):
            nets.GlowNet((4, 4, 3), 6, filters=0)

    def test_an_input_of_another_image_shape_is_refused(self):
        # GlowNet maps `[B, H, W, C_in]` of its `input_shape` (H, W, C_in):
        # like the other image networks, another height or width is a
        # ValueError naming the expected shape, not a silently wider map.
        net = nets.GlowNet((4, 4, 3), 6, filters=5)
        for shape in ([2, 8, 4, 3], [2, 4, 2, 3]):
            with self.assertRaisesRegex(
                    ValueError, r'glow_net expects inputs of shape '
                    r'\[B, 4, 4, 3\]'):
                net(tf.zeros(shape))

    def test_an_input_is_taken_in_the_variables_dtype(self):
        # A float64 numpy batch is converted to the float32 variables'
        # dtype, as by the other conditioners.
        net = nets.GlowNet((4, 4, 3), 6, filters=5)
        randomize(net, scale=1.0, seed=3)
        _assert_a_float64_batch_is_converted(self, net, [2, 4, 4, 3])


# ----------------------------------------------------------------------------
# ContextNet.
# ----------------------------------------------------------------------------

class ContextNetTest(tf.test.TestCase, parameterized.TestCase):

    def test_every_variable_gets_a_gradient_even_without_blocks(self):
        # pos_emb is shared by the attention blocks: with attention but no
        # block it would be an unused variable with a None gradient, which
        # the distributed step's all-reduce cannot take.
        for blocks in (0, 1):
            net = nets.ContextNet((4, 4, 2), partitions.ChannelSplit(),
                                  filters=8, num_blocks=blocks,
                                  attention=True)
            self.assertEqual(net.pos_emb is None, blocks == 0)
            _assert_every_variable_gets_a_gradient(self, net, [2, 4, 4, 2])

    def test_column_split_layout(self):
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                              num_blocks=2, dtype=tf.float64)
        self.assertEqual(net.output_shape, (4, 4, 4))
        self.assertEqual(net.proj_in.in_channels, 6)
        self.assertLen(net.residual_blocks, 2)
        self.assertTrue(all(isinstance(b.conv_out, nets.Conv2D)
                            for b in net.residual_blocks))
        randomize(net)
        x = np.random.RandomState(8).randn(2, 4, 8, 3)

        def manual(h):
            h = net.proj_in(h)
            for block in net.residual_blocks:
                h = block(h)
            return h

        # Position (h, w') holds pixel (h, 2w') in channels 0-2 and pixel
        # (h, 2w'+1) in channels 3-5.
        interleaved = np.concatenate([x[:, :, 0::2], x[:, :, 1::2]], axis=-1)
        y = net(x)
        self.assertEqual(y.shape, (2, 4, 4, 4))
        self.assertAllClose(y, manual(interleaved), atol=1e-10)
        swapped = np.concatenate([x[:, :, 1::2], x[:, :, 0::2]], axis=-1)
        self.assertNotAllClose(y, manual(swapped))

    @parameterized.product(
        partition=('checkerboard', 'channel'), dtype=(tf.float32, tf.float64))
    def test_shapes(self, partition, dtype):
        # Both halves are stacked on channels: 2 x 4 or 2 x 2 input channels.
        if partition == 'checkerboard':
            part, expected, stacked = partitions.Checkerboard(), (4, 4, 5), 8
        else:
            part, expected, stacked = partitions.ChannelSplit(), (4, 8, 5), 4
        net = nets.ContextNet((4, 8, 4), part, filters=5, num_blocks=1,
                              dtype=dtype)
        self.assertEqual(net.output_shape, expected)
        y = net(tf.random.normal([3, 4, 8, 4], dtype=dtype))
        self.assertEqual(y.shape, (3,) + expected)
        self.assertEqual(y.dtype, dtype)
        # conv3x3(C -> F) + blocks of two 3x3 convs (2F -> F, 2F -> 2F).
        self.assertEqual(net.proj_in.in_channels, stacked)
        expected_params = conv_params(3, stacked, 5) + conv_params(
            3, 10, 5) + conv_params(3, 10, 10)
        self.assertEqual(sum(v.shape.num_elements()
                             for v in net.trainable_variables),
                         expected_params)

    @parameterized.parameters(True, False)
    def test_imagenet_processors(self, attention):
        # SPEC §6.3: blocks x [gated conv, LN, attention, LN] (ImageNet 32)
        # or x [gated conv, LN] (VFlow ImageNet 64), weight-normalised.
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                              num_blocks=2, layer_norm=True,
                              attention=attention, weight_norm=True,
                              dtype=tf.float64)
        self.assertLen(net.norms, 4 if attention else 2)
        self.assertLen(net.attention_blocks, 2 if attention else 0)
        self.assertEqual(net.pos_emb is not None, attention)
        linear = [m for m in net.submodules
                  if isinstance(m, (nets.Dense, nets.Conv2D))]
        self.assertTrue(all(m.weight_norm for m in linear))
        # Each linear layer has a gain per output channel.
        block = conv_params(3, 8, 4) + conv_params(3, 8, 8) + 12 + 2 * 4
        if attention:
            block += dense_params(4, 12) + dense_params(4, 8) + 20 + 2 * 4
        self.assertEqual(
            sum(v.shape.num_elements() for v in net.trainable_variables),
            conv_params(3, 6, 4) + 4 + 2 * block
            + (4 * 4 * 4 if attention else 0))
        randomize(net)
        x = np.random.RandomState(9).randn(2, 4, 8, 3)

        def manual(h):
            h = net.proj_in(h)
            norms = iter(net.norms)
            for i, residual in enumerate(net.residual_blocks):
                h = next(norms)(residual(h))
                if attention:
                    h = next(norms)(net.attention_blocks[i](h, net.pos_emb))
            return h

        interleaved = np.concatenate([x[:, :, 0::2], x[:, :, 1::2]], axis=-1)
        self.assertAllClose(net(x), manual(interleaved), atol=1e-10)
        with initialization.data_dependent_init():
            net(x)
        self.assertAllInSet(tf.math.is_finite(net(x)), [True])

    def test_position_embedding_starts_small(self):
        # SPEC: N(0, 0.01^2), as in the coupling networks.
        tf.random.set_seed(0)
        net = nets.ContextNet((16, 32, 3), partitions.ColumnSplit(),
                              filters=32, num_blocks=1, attention=True,
                              layer_norm=True)
        self.assertNear(float(tf.math.reduce_std(net.pos_emb)), 0.01, 1e-3)

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, 'even'):
            nets.ContextNet((4, 7, 3), partitions.ColumnSplit())
        with self.assertRaisesRegex(ValueError, 'images'):
            nets.ContextNet((8,), partitions.ChannelSplit(event_ndims=1))
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                              num_blocks=1)
        with self.assertRaisesRegex(ValueError, r'\[B, 4, 8, 3\]'):
            net(tf.zeros([2, 4, 6, 3]))

    def test_ddi_dropout_and_jit(self):
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                              num_blocks=2, dropout=0.3)
        self.assertIsInstance(net.rng, tf.random.Generator)
        self.assertTrue(all(b.rng is net.rng for b in net.residual_blocks))
        x = tf.random.normal([4, 4, 8, 3])
        with initialization.data_dependent_init():
            net(x)
        # proj_in was initialised on the stacked halves.
        h = net.proj_in(tf.concat(partitions.ColumnSplit().split(x), -1))
        mean, var = tf.nn.moments(h, [0, 1, 2])
        self.assertAllClose(mean, np.zeros(4), atol=1e-4)
        self.assertAllClose(var, np.ones(4), rtol=1e-3)
        eager = net(x)
        self.assertAllEqual(eager, net(x))
        self.assertNotAllClose(net(x, training=True), eager)
        jit_fn = tf.function(
            net, input_signature=[tf.TensorSpec([None, 4, 8, 3])],
            jit_compile=True)
        self.assertAllClose(jit_fn(x), eager, atol=1e-5)

    def test_halves_of_different_channel_counts_are_stacked(self):
        # The halves must share a spatial shape only: ChannelSplit of 3
        # channels gives halves of 1 and 2 channels, stacked back to C_a +
        # C_b = 3 (which is x itself).
        try:
            net = nets.ContextNet((4, 4, 3), partitions.ChannelSplit(),
                                  filters=4, num_blocks=1, dtype=tf.float64)
        except ValueError as e:
            self.fail(f'halves of one spatial shape were refused: {e}')
        self.assertEqual(net.proj_in.in_channels, 3)
        self.assertEqual(net.output_shape, (4, 4, 4))
        randomize(net)
        x = np.random.RandomState(2).randn(2, 4, 4, 3)
        expected = net.residual_blocks[0](net.proj_in(x))
        self.assertAllClose(net(x), expected, atol=1e-10)

    def test_attention_options_reach_every_attention_block(self):
        # num_heads, dropout and attention_query_block are passed to every
        # GatedAttention block of the context network and of the coupling
        # networks (ConvAttnNet).
        def context_net(**kwargs):
            return nets.ContextNet((4, 8, 3), partitions.ColumnSplit(),
                                   filters=8, num_blocks=2, attention=True,
                                   **kwargs)

        for make in (context_net, _net):
            net = make(num_heads=2, dropout=0.25, attention_query_block=3)
            self.assertLen(net.attention_blocks, 2)
            for block in net.attention_blocks:
                self.assertEqual(block.num_heads, 2)
                self.assertEqual(block.dropout_rate, 0.25)
                self.assertEqual(block.query_block, 3)
            # num_heads must divide filters.
            with self.assertRaisesRegex(ValueError, 'multiple of num_heads'):
                make(num_heads=3)

    def test_a_non_image_shape_or_partition_is_refused(self):
        # Either one alone is refused with the network's own message.
        for shape, partition in [
                ((4, 4, 3), partitions.ChannelSplit(event_ndims=1)),
                ((4, 4), partitions.ChannelSplit())]:
            with self.assertRaisesRegex(ValueError, 'context_net processes '
                                        r'images: needs input_shape \(H, W, '
                                        r'C\) and an image partition'):
                nets.ContextNet(shape, partition, filters=4, num_blocks=1)

    def test_an_input_is_taken_in_the_variables_dtype(self):
        # A float64 numpy batch is converted to the float32 variables'
        # dtype, as by the coupling networks.
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                              num_blocks=1)
        _assert_a_float64_batch_is_converted(self, net, [2, 4, 8, 3])


# ----------------------------------------------------------------------------
# MLP.
# ----------------------------------------------------------------------------

class MLPTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(*DTYPES)
    def test_zero_init_is_identity_conditioner(self, dtype):
        net = nets.MLP(3, 4, dtype=dtype)
        self.assertEqual([layer.out_features for layer in net.hidden_layers],
                         [50, 50])
        x = tf.random.normal([5, 3], dtype=dtype)
        y = net(x)
        self.assertEqual(y.dtype, dtype)
        self.assertAllEqual(y, np.zeros([5, 4]))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(x) * tf.range(4, dtype=dtype))
        grads = tape.gradient(loss, net.trainable_variables)
        self.assertTrue(all(g is not None for g in grads))
        # A zero output layer still learns: its kernel gradient is non-zero.
        kernel_grad = [g for v, g in zip(net.trainable_variables, grads)
                       if v is net.output_layer.kernel]
        self.assertLen(kernel_grad, 1)
        self.assertGreater(float(tf.reduce_max(tf.abs(kernel_grad[0]))), 0.0)
        self.assertEqual(
            sum(v.shape.num_elements() for v in net.trainable_variables),
            dense_params(3, 50) + dense_params(50, 50) + dense_params(50, 4))

    @parameterized.named_parameters(*DTYPES)
    def test_matches_numpy_with_context(self, dtype):
        net = nets.MLP(3, 4, hidden_units=(6, 5), activation=tf.tanh,
                       context_features=2, output_init_scale=1.0,
                       dtype=dtype)
        self.assertNear(float(tf.math.reduce_std(net.output_layer.kernel)),
                        0.05, 0.03)
        randomize(net)
        rs = np.random.RandomState(9)
        x, c = rs.randn(2, 7, 3), rs.randn(2, 7, 2)
        h = np.concatenate([x, c], -1)
        for layer in net.hidden_layers:
            h = np.tanh(np_dense(h, layer))
        expected = np_dense(h, net.output_layer)
        y = net(tf.constant(x, dtype), context=tf.constant(c, dtype))
        self.assertEqual(y.shape, (2, 7, 4))
        self.assertAllClose(y, expected, atol=1e-5)
        self.assertNotAllClose(
            y, net(tf.constant(x, dtype), context=tf.constant(-c, dtype)))
        with self.assertRaisesRegex(ValueError, 'needs a context'):
            net(tf.constant(x, dtype))
        with self.assertRaisesRegex(ValueError, 'context'):
            net(tf.constant(x, dtype), context=tf.zeros([2, 7, 3], dtype))
        with self.assertRaisesRegex(ValueError, 'of the rank of its input'):
            net(tf.constant(x, dtype), context=tf.zeros([7, 2], dtype))
        with self.assertRaisesRegex(ValueError, 'without a context'):
            nets.MLP(3, 4)(tf.zeros([2, 3]), context=tf.zeros([2, 2]))

    @parameterized.parameters(0.0, 0.5)
    def test_data_dependent_init(self, output_init_scale):
        net = nets.MLP(3, 4, hidden_units=(8, 8),
                       output_init_scale=output_init_scale)
        x = tf.constant(
            5.0 + 2.0 * np.random.RandomState(10).randn(128, 3), tf.float32)
        records, patches = record_linear_outputs()
        with patches[0], patches[1], initialization.data_dependent_init():
            y = net(x)
        self.assertLen(records, 3)
        for layer, out in records[:2]:
            mean, var = tf.nn.moments(out, [0])
            self.assertAllClose(mean, np.zeros(8), atol=1e-4)
            self.assertAllClose(var, np.ones(8), rtol=1e-3)
        self.assertAllClose(tf.math.reduce_std(y, 0),
                            np.full(4, output_init_scale), rtol=1e-3)
        self.assertAllClose(net(x), y, atol=1e-5)

    @staticmethod
    def _dead_sets(net, inputs):
        """Per hidden layer, the units dead on `inputs` (numpy reference)."""
        h, dead_sets = np.asarray(inputs), []
        for layer in net.hidden_layers:
            pre = np_dense(h, layer)
            dead_sets.append(np.where(np.all(pre <= 0, axis=0))[0])
            h = np.maximum(pre, 0)
        return dead_sets

    def _net_with_dead_units(self, dtype, dead=(1, 4)):
        net = nets.MLP(3, 2, hidden_units=(6, 5), context_features=1,
                       output_init_scale=1.0, dtype=dtype)
        randomize(net)
        # Units dead on any input in [-3, 3]^4: a bias far below what the
        # weights can reach.
        for layer, units in zip(net.hidden_layers, dead):
            layer.bias.assign(tf.tensor_scatter_nd_update(
                layer.bias, [[units]], tf.constant([-100.0], dtype)))
        return net

    @parameterized.named_parameters(*DTYPES)
    def test_recycle_dead_units_keeps_the_function(self, dtype):
        net = self._net_with_dead_units(dtype)
        rs = np.random.RandomState(3)
        x = tf.constant(rs.uniform(-3, 3, [256, 3]), dtype)
        c = tf.constant(rs.uniform(-3, 3, [256, 1]), dtype)
        inputs = tf.concat([x, c], -1)
        # The dead sets, found independently: the forced units and any
        # that the random weights killed.
        dead_sets = self._dead_sets(net, inputs)
        self.assertIn(1, dead_sets[0])
        self.assertIn(4, dead_sets[1])
        before = net(x, context=c)
        old = [(layer.kernel.numpy(), layer.bias.numpy())
               for layer in net.hidden_layers]
        counts = net.recycle_dead_units(inputs, seed=tf.constant([1, 2]))
        self.assertEqual([int(n) for n in counts], [len(d) for d in dead_sets])
        self.assertAllClose(net(x, context=c), before, atol=1e-5)
        h = inputs
        for i, (layer, dead) in enumerate(zip(net.hidden_layers, dead_sets)):
            pre = layer(h)
            # Every unit is alive on the batch now, the recycled ones too.
            self.assertTrue(np.all(np.any(pre.numpy() > 0, axis=0)), i)
            kernel, bias = old[i]
            keep = np.setdiff1d(np.arange(layer.out_features), dead)
            expected = kernel.copy()
            if i:  # The rows out of the previous layer's recycled units.
                expected[dead_sets[i - 1]] = 0.0
            self.assertAllEqual(layer.kernel.numpy()[:, keep],
                                expected[:, keep])
            self.assertAllEqual(layer.bias.numpy()[keep], bias[keep])
            radius = np.sort(np.linalg.norm(expected[:, keep], axis=0))[
                len(keep) // 2]
            self.assertAllClose(
                np.linalg.norm(layer.kernel.numpy()[:, dead], axis=0),
                np.full(len(dead), radius), rtol=1e-4)
            # Zero outgoing rows, except into units of the next layer that
            # were recycled themselves (their new columns are all random).
            if i == 0:
                following = net.hidden_layers[1]
                columns = np.setdiff1d(np.arange(following.out_features),
                                       dead_sets[1])
            else:
                following = net.output_layer
                columns = np.arange(following.out_features)
            self.assertAllEqual(following.kernel.numpy()[dead][:, columns],
                                np.zeros([len(dead), len(columns)]))
            h = tf.nn.relu(pre)
        # Nothing is dead any more: a second pass recycles nothing.
        self.assertEqual(
            [int(n) for n in net.recycle_dead_units(inputs, [3, 4])], [0, 0])

    def test_every_recycled_unit_is_alive_even_on_a_few_rows(self):
        # Every unit of the first layer dead: the second layer's columns are
        # all zeroed, and on 4 rows a kink at the row of largest projection
        # (1 pick in 4) would leave a unit dead again.
        # Alive by a margin, not by a rounding residue (a unit whose only
        # positive value is ~1e-7 gets no gradient to speak of).
        for rows, seed in [(4, [3, 4]), (2, [5, 6]), (2, [7, 8])]:
            net = nets.MLP(3, 2, hidden_units=(200, 200), name='all_dead')
            net.hidden_layers[0].bias.assign(tf.fill([200], -100.0))
            net.hidden_layers[1].bias.assign(tf.fill([200], -100.0))
            x = tf.random.stateless_uniform([rows, 3], [1, 2], -1, 1)
            counts = net.recycle_dead_units(x, seed=tf.constant(seed))
            self.assertEqual([int(n) for n in counts], [200, 200])
            h = x
            for layer in net.hidden_layers:
                pre = layer(h).numpy()
                self.assertGreater(pre.max(axis=0).min(), 1e-4,
                                   msg=f'{rows} rows, {layer.name}')
                h = tf.nn.relu(pre)

    def test_recycled_units_take_the_upper_median_norm(self):
        # Live incoming norms 1, 2, 3, 4 (an even count): the recycled
        # columns get the upper median, 3.
        net = nets.MLP(2, 1, hidden_units=(6,), dtype=tf.float64)
        layer = net.hidden_layers[0]
        layer.kernel.assign(np.stack([np.arange(1.0, 7.0), np.zeros(6)]))
        layer.bias.assign([0.0, 0.0, 0.0, 0.0, -100.0, -100.0])
        x = tf.random.stateless_uniform([32, 2], [1, 2], 0.5, 1.5,
                                        dtype=tf.float64)
        counts = net.recycle_dead_units(x, seed=tf.constant([1, 2]))
        self.assertEqual(int(counts[0]), 2)
        self.assertAllClose(np.linalg.norm(layer.kernel.numpy()[:, 4:],
                                           axis=0), [3.0, 3.0], rtol=1e-10)

    def test_with_no_live_unit_recycled_units_take_the_mean_norm(self):
        # No unit of the layer is live: the recycled columns get the mean
        # incoming norm of the layer's units (1, 2, 3 and 6: 3), and 1
        # where those are all 0.
        net = nets.MLP(2, 1, hidden_units=(4,), dtype=tf.float64)
        layer = net.hidden_layers[0]
        x = tf.random.stateless_uniform([32, 2], [1, 2], 0.5, 1.5,
                                        dtype=tf.float64)
        for kernel, radius in (([[1.0, 2.0, 3.0, 6.0], [0.0] * 4], 3.0),
                               ([[0.0] * 4] * 2, 1.0)):
            layer.kernel.assign(kernel)
            layer.bias.assign([-100.0] * 4)
            counts = net.recycle_dead_units(x, seed=tf.constant([1, 2]))
            self.assertEqual(int(counts[0]), 4)
            self.assertAllClose(np.linalg.norm(layer.kernel.numpy(), axis=0),
                                [radius] * 4, rtol=1e-10)

    def test_each_network_of_a_pass_draws_its_own_units(self):
        # Two networks of the same shape and weights in one pass: each
        # call folds its own counter into the pass's seed, so their new
        # units differ (one seed would give both the same ones).
        twins = [nets.MLP(3, 2, hidden_units=(8,), name=f'twin{i}')
                 for i in range(2)]
        for net in twins:
            net.hidden_layers[0].kernel.assign(tf.ones([3, 8]))
            net.hidden_layers[0].bias.assign(tf.fill([8], -100.0))
        x = tf.random.stateless_uniform([16, 3], [3, 3], -1, 1)
        with nets.recycling_dead_units(seed=4) as outer:
            # A pass opened and closed inside leaves this one running.
            with nets.recycling_dead_units(seed=5):
                pass
            for net in twins:
                net(x)
        self.assertEqual([count for _, count in outer.counts], [8, 8])
        self.assertNotAllClose(twins[0].hidden_layers[0].kernel,
                               twins[1].hidden_layers[0].kernel)

    def test_recycled_units_learn(self):
        net = self._net_with_dead_units(tf.float32)
        x = tf.random.stateless_uniform([64, 3], [5, 6], -3, 3)
        c = tf.random.stateless_uniform([64, 1], [5, 7], -3, 3)

        def dead_unit_grads():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(net(x, context=c) - 1.0))
            grads = tape.gradient(loss, [net.hidden_layers[1].kernel,
                                         net.output_layer.kernel])
            return grads[0][:, 4], grads[1][4]

        incoming, outgoing = dead_unit_grads()
        self.assertAllEqual(outgoing, np.zeros(2))
        net.recycle_dead_units(tf.concat([x, c], -1), [7, 8])
        incoming, outgoing = dead_unit_grads()
        # The zero outgoing row gets a gradient (so the unit rejoins), the
        # incoming weights only once that row moves.
        self.assertGreater(float(tf.reduce_max(tf.abs(outgoing))), 0.0)
        self.assertAllEqual(incoming, np.zeros(6))

    def test_recycling_switch_reports_every_call(self):
        net = self._net_with_dead_units(tf.float32, dead=(0, 2))
        other = nets.MLP(2, 3, hidden_units=(4,), name='other')
        x = tf.random.stateless_uniform([128, 3], [1, 1], -3, 3)
        c = tf.random.stateless_uniform([128, 1], [1, 2], -3, 3)
        before = net(x, context=c)
        dead = sum(len(d) for d in self._dead_sets(net, tf.concat([x, c], -1)))
        self.assertEqual(self._dead_sets(other, x[:, :2])[0].size, 0)
        with nets.recycling_dead_units(seed=11) as report:
            during = net(x, context=c)
            other(x[:, :2])
        self.assertAllClose(during, before, atol=1e-5)
        self.assertGreaterEqual(dead, 2)
        self.assertEqual(report.total, dead)
        self.assertEqual(
            [d.size for d in self._dead_sets(net, tf.concat([x, c], -1))],
            [0, 0])
        self.assertEqual([name for name, _ in report.counts],
                         ['mlp/hidden_0', 'mlp/hidden_1', 'other/hidden_0'])
        # Outside the switch nothing happens.
        net.hidden_layers[0].bias.assign(
            tf.fill([6], tf.constant(-100.0)))
        net(x, context=c)
        self.assertAllEqual(net.hidden_layers[0].bias, np.full(6, -100.0))
        with self.assertRaisesRegex(ValueError, 'seed must be'):
            with nets.recycling_dead_units(seed=[1, 2, 3]):
                pass

    def test_an_eager_pass_reports_python_ints(self):
        # RecyclingReport documents its counts (and so `total`) as Python
        # ints when run eagerly: callers log and serialise them as such.
        net = self._net_with_dead_units(tf.float32)
        x = tf.random.stateless_uniform([64, 3], [8, 1], -3, 3)
        c = tf.random.stateless_uniform([64, 1], [8, 2], -3, 3)
        with nets.recycling_dead_units(seed=3) as report:
            net(x, context=c)
        self.assertLen(report.counts, 2)
        for name, count in report.counts:
            self.assertIs(type(count), int, msg=name)
        self.assertIs(type(report.total), int)
        # The two units killed above, at least.
        self.assertGreaterEqual(report.total, 2)

    def test_recycling_in_a_jit_function(self):
        # XLA draws other stateless random numbers than eager TF, so this
        # checks the properties, not equality with the eager pass.
        net = self._net_with_dead_units(tf.float32)
        x = tf.random.stateless_uniform([64, 4], [2, 2], -3, 3)
        dead_sets = self._dead_sets(net, x)
        before = net(x[:, :3], context=x[:, 3:])

        @tf.function(jit_compile=True)
        def recycle(inputs):
            return net.recycle_dead_units(inputs, tf.constant([4, 4]))

        self.assertEqual([int(n) for n in recycle(x)],
                         [len(d) for d in dead_sets])
        self.assertAllClose(net(x[:, :3], context=x[:, 3:]), before,
                            atol=1e-5)
        self.assertEqual([int(n) for n in recycle(x)], [0, 0])

    def test_jit_none_batch(self):
        net = nets.MLP(3, 4, context_features=1, output_init_scale=1.0)
        fn = tf.function(
            lambda x, c: net(x, context=c, training=True),
            input_signature=[tf.TensorSpec([None, 3]),
                             tf.TensorSpec([None, 1])],
            jit_compile=True)
        x, c = tf.random.normal([6, 3]), tf.random.normal([6, 1])
        self.assertAllClose(fn(x, c), net(x, context=c), atol=1e-5)

    def test_only_units_whose_activation_is_zero_are_dead(self):
        # A unit is dead when its activation is exactly zero on the whole
        # batch. With tanh, a unit saturated at -1 still passes -1 on: it is
        # not dead, so nothing is recycled and the weights stay.
        net = nets.MLP(3, 2, hidden_units=(4,), activation=tf.tanh,
                       output_init_scale=1.0)
        layer = net.hidden_layers[0]
        layer.bias.assign([0.0, -100.0, 0.0, 0.0])
        kernel = layer.kernel.numpy()
        x = tf.random.stateless_uniform([16, 3], [1, 3], -1, 1)
        counts = net.recycle_dead_units(x, seed=tf.constant([1, 2]))
        self.assertEqual([int(n) for n in counts], [0])
        self.assertAllEqual(layer.kernel, kernel)
        self.assertAllEqual(layer.bias, [0.0, -100.0, 0.0, 0.0])

    def test_a_recycled_unit_s_kink_may_lie_at_any_row(self):
        # b[j] = -(h_i W[:, j]) for one random row i of h: the new unit's
        # pre-activation is zero at a row of the batch, and with two rows and
        # 64 recycled units each row is that row for some unit.
        net = nets.MLP(2, 1, hidden_units=(64,), dtype=tf.float64)
        layer = net.hidden_layers[0]
        layer.bias.assign(tf.fill([64], tf.constant(-100.0, tf.float64)))
        x = tf.constant([[1.0, 0.5], [-0.3, 2.0]], tf.float64)
        counts = net.recycle_dead_units(x, seed=tf.constant([3, 1]))
        self.assertEqual(int(counts[0]), 64)
        pre = np.abs(layer(x).numpy())
        picked = np.argmin(pre, axis=0)
        self.assertAllClose(pre[picked, np.arange(64)], np.zeros(64),
                            atol=1e-12)
        self.assertEqual(set(picked), {0, 1})

    def test_a_traced_pass_reports_int32_tensors(self):
        # RecyclingReport: the counts are Python ints when run eagerly, else
        # int32 tensors, as in a function traced inside the pass (without
        # autograph, like the library's own training steps).
        net = self._net_with_dead_units(tf.float32)
        x = tf.random.stateless_uniform([64, 3], [8, 1], -3, 3)
        c = tf.random.stateless_uniform([64, 1], [8, 2], -3, 3)
        dead = self._dead_sets(net, tf.concat([x, c], -1))
        with nets.recycling_dead_units(seed=3) as report:

            @tf.function(autograph=False)
            def run():
                net(x, context=c)
                return report.total

            total = run()
        self.assertLen(report.counts, 2)
        for name, count in report.counts:
            self.assertIsInstance(count, tf.Tensor, msg=name)
            self.assertEqual(count.dtype, tf.int32, msg=name)
        self.assertEqual(int(total), sum(len(d) for d in dead))

    def test_a_pass_is_active_only_in_the_thread_that_runs_it(self):
        # The recycling switch is the same kind of switch as
        # data_dependent_init, which is per thread: a network another thread
        # runs meanwhile (e.g. an evaluation) does not recycle.
        net = self._net_with_dead_units(tf.float32)
        x = tf.random.stateless_uniform([64, 3], [9, 1], -3, 3)
        c = tf.random.stateless_uniform([64, 1], [9, 2], -3, 3)
        bias = net.hidden_layers[0].bias.numpy()
        seen = []

        def other_thread():
            seen.append(nets.recycling.is_active())
            net(x, context=c)

        with nets.recycling_dead_units(seed=5) as report:
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        self.assertEqual(seen, [False])
        self.assertEqual(report.counts, [])
        self.assertAllEqual(net.hidden_layers[0].bias, bias)

    def test_recycling_sees_every_point_of_a_batch_of_any_rank(self):
        # A unit is dead when its activation is zero at every point the
        # network sees: for inputs [2, 32, 4] (a batch with a sample axis),
        # at all 64 points, and afterwards none is dead on them.
        net = self._net_with_dead_units(tf.float32)
        inputs = tf.random.stateless_uniform([2, 32, 4], [6, 1], -3, 3)
        flat = tf.reshape(inputs, [64, 4])
        dead_sets = self._dead_sets(net, flat)
        before = net(inputs[..., :3], context=inputs[..., 3:])
        counts = net.recycle_dead_units(inputs, seed=tf.constant([2, 3]))
        self.assertEqual([int(n) for n in counts], [len(d) for d in dead_sets])
        self.assertAllClose(net(inputs[..., :3], context=inputs[..., 3:]),
                            before, atol=1e-5)
        self.assertEqual([d.size for d in self._dead_sets(net, flat)], [0, 0])

    def test_an_eager_pass_without_dead_units_reports_python_ints(self):
        # RecyclingReport: a count is a Python int when run eagerly, also
        # a count of 0 (a layer with no dead unit), and so is `total`.
        net = nets.MLP(3, 2, hidden_units=(6, 5), output_init_scale=1.0)
        randomize(net, seed=1)
        x = tf.random.stateless_uniform([64, 3], [8, 3], -3, 3)
        self.assertEqual([d.size for d in self._dead_sets(net, x)], [0, 0])
        with nets.recycling_dead_units(seed=3) as report:
            net(x)
        self.assertEqual([count for _, count in report.counts], [0, 0])
        for name, count in report.counts:
            self.assertIs(type(count), int, msg=name)
        self.assertIs(type(report.total), int)

    def test_each_pass_reports_only_its_own_networks(self):
        # RecyclingReport.counts: one pair per hidden layer of every MLP
        # called in *the* pass; a later pass starts an empty report.
        net = nets.MLP(3, 2, hidden_units=(4,), name='once')
        x = tf.random.stateless_uniform([16, 3], [8, 4], -1, 1)
        reports = []
        for seed in (1, 2):
            with nets.recycling_dead_units(seed=seed) as report:
                net(x)
            reports.append(report)
        for report in reports:
            self.assertEqual([name for name, _ in report.counts],
                             ['once/hidden_0'])


# ----------------------------------------------------------------------------
# Options, flags and validation of the conditioner networks.
# ----------------------------------------------------------------------------

def _dropout_training_flags(net, *args, **kwargs):
    """Calls `net(*args, **kwargs)` and returns the `training` argument of
    every `layers.dropout` call it made, in order."""
    flags = []
    original = layers_lib.dropout

    def recording(x, rate, rng, training):
        flags.append(training)
        return original(x, rate, rng, training)

    with mock.patch.object(layers_lib, 'dropout', recording):
        net(*args, **kwargs)
    return flags


class ConditionerOptionsTest(tf.test.TestCase, parameterized.TestCase):

    def test_layer_norm_uses_its_own_epsilon(self):
        # LayerNorm: y = (x - mu) / sqrt(var + epsilon) * gamma + beta, with
        # the `epsilon` it was built with (the variance floor), not only the
        # default 1e-5. Rows of variance ~1e-3 make epsilon = 0.1 dominate.
        layer = nets.LayerNorm(4, epsilon=0.1, dtype=tf.float64)
        randomize(layer)
        x = 1.0 + 0.03 * np.random.RandomState(1).randn(5, 4)
        self.assertAllClose(layer(tf.constant(x)),
                            np_layer_norm(x, layer, eps=0.1), atol=1e-10)

    def test_a_low_precision_variable_is_taken_as_a_low_precision_input(
            self):
        # Mixed precision (layers module docstring): a layer given a bfloat16
        # input computes in bfloat16; a bfloat16 tf.Variable is such an
        # input too, not refused as an impossible conversion to float32.
        x = tf.Variable(tf.random.stateless_normal([4, 3], [1, 2],
                                                   dtype=tf.bfloat16))
        for layer in (nets.Dense(3, 2), nets.LayerNorm(3)):
            try:
                y = layer(x)
            except (TypeError, ValueError) as e:
                self.fail(f'{layer.name} refused a bfloat16 variable: {e}')
            self.assertEqual(y.dtype, tf.bfloat16, msg=layer.name)

    def test_data_dependent_init_ignores_the_old_bias(self):
        # initialize: y = x W is the pre-activation *without* bias, so a
        # layer re-initialised after its bias moved still gets mean 0 and
        # std init_scale per channel on the batch.
        rs = np.random.RandomState(4)
        for layer, x in ((nets.Dense(5, 4, init_scale=0.5), rs.randn(64, 5)),
                         (nets.Conv2D(5, 4, init_scale=0.5),
                          rs.randn(4, 6, 6, 5))):
            layer.bias.assign(3.0 + rs.randn(4))
            with initialization.data_dependent_init():
                y = layer(tf.constant(1.0 + 2.0 * x, tf.float32))
            mean, var = tf.nn.moments(y, list(range(y.shape.rank - 1)))
            self.assertAllClose(mean, np.zeros(4), atol=1e-4, msg=layer.name)
            self.assertAllClose(tf.sqrt(var), np.full(4, 0.5), rtol=1e-4,
                                msg=layer.name)

    def test_linear_layers_refuse_bad_arguments_by_name(self):
        # Sizes are positive ints (2.5 and 0 are refused, not truncated or
        # taken), and a negative kernel_stddev or init_scale (the DDI's
        # target std) is named as such.
        for make, error in (
                (lambda: nets.Dense(2.5, 3),
                 'dense: in_features must be a positive int'),
                (lambda: nets.Dense(0, 3), 'in_features must be a positive'),
                (lambda: nets.Conv2D(3, 1.5),
                 'conv2d: out_channels must be a positive int'),
                (lambda: nets.Conv2D(3, 0), 'out_channels must be a positive'),
                (lambda: nets.LayerNorm(0), 'channels must be a positive'),
                (lambda: nets.Dense(3, 2, kernel_stddev=-0.1),
                 'kernel_stddev must be >= 0'),
                (lambda: nets.Conv2D(3, 2, kernel_stddev=-0.1),
                 'kernel_stddev must be >= 0'),
                (lambda: nets.Dense(3, 2, init_scale=-0.5),
                 'init_scale must be >= 0'),
                (lambda: nets.Conv2D(3, 2, init_scale=-0.5),
                 'init_scale must be >= 0')):
            with self.assertRaisesRegex(ValueError, error):
                make()

    def test_dropout_refuses_a_negative_rate(self):
        # dropout: ValueError if `rate` is outside [0, 1), below it too.
        rng = tf.random.Generator.from_seed(0)
        with self.assertRaisesRegex(ValueError, r'rate must be in \[0, 1\)'):
            nets.dropout(tf.ones([4, 4]), -0.1, rng, True)

    def test_query_block_must_be_an_integer(self):
        # query_block: None or a positive int; 2.5 is refused, not truncated
        # to 2, by the block and by the option setter alike.
        with self.assertRaisesRegex(ValueError, 'query_block must be None or '
                                    'a positive int'):
            nets.GatedAttention(8, query_block=2.5)
        block = nets.GatedAttention(8)
        with self.assertRaisesRegex(ValueError, 'query_block must be None or '
                                    'a positive int'):
            nets.set_attention_query_block(block, 2.5)
        self.assertIsNone(block.query_block)

    def test_a_missing_context_names_its_expected_shape(self):
        # The error names the context shape [B, H, W, C_a] of the input's
        # spatial shape (H = 3, W = 5 here, not the other way round).
        block = nets.GatedResidualBlock(4, context_channels=2)
        with self.assertRaisesRegex(ValueError,
                                    r'needs a context tensor of shape '
                                    r'\[B, 3, 5, 2\]'):
            block(tf.zeros([1, 3, 5, 4]))

    def test_mlp_refuses_an_empty_hidden_layer_by_its_own_name(self):
        # MLP raises ValueError for non-positive sizes, naming the network.
        with self.assertRaisesRegex(ValueError, '^toy: feature and hidden '
                                    'sizes must be positive'):
            nets.MLP(3, 4, hidden_units=(5, 0), name='toy')

    @parameterized.parameters(False, True)
    def test_training_reaches_every_dropout_of_a_conv_attn_net(self,
                                                               training):
        # `training` enables the dropout of every block: the gated convs'
        # and the attention blocks' alike.
        net = _net(dropout=0.5, rng=tf.random.Generator.from_seed(1))
        flags = _dropout_training_flags(net, tf.zeros([2, 4, 4, 3]),
                                        training=training)
        self.assertEqual(flags, [training] * 4)

    @parameterized.parameters(False, True)
    def test_training_reaches_every_dropout_of_a_context_net(self, training):
        # ContextNet: `training` enables the dropout of every block,
        # attention blocks included.
        net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=8,
                              num_blocks=2, attention=True, num_heads=2,
                              dropout=0.5)
        flags = _dropout_training_flags(net, tf.zeros([2, 4, 8, 3]),
                                        training=training)
        self.assertEqual(flags, [training] * 4)

    def test_context_net_shares_its_rng_with_every_block(self):
        # rng: the generator shared by all blocks, attention blocks
        # included (one is created if none is given).
        for rng in (tf.random.Generator.from_seed(3), None):
            net = nets.ContextNet((4, 8, 3), partitions.ColumnSplit(),
                                  filters=8, num_blocks=2, attention=True,
                                  num_heads=2, dropout=0.25, rng=rng)
            self.assertIsInstance(net.rng, tf.random.Generator)
            if rng is not None:
                self.assertIs(net.rng, rng)
            self.assertTrue(all(
                b.rng is net.rng
                for b in net.residual_blocks + net.attention_blocks))

    def _assert_value_error(self, make, regex):
        """Asserts that `make()` raises a ValueError matching `regex` (not
        another exception type)."""
        try:
            make()
        except ValueError as e:
            self.assertRegex(str(e), regex)
        except Exception as e:  # pylint: disable=broad-except
            self.fail(f'{type(e).__name__} instead of ValueError: {e}')
        else:
            self.fail('no ValueError raised')

    def test_blocks_refuse_a_negative_dropout_rate(self):
        # GatedResidualBlock / GatedAttention: ValueError for a rate
        # outside [0, 1), below it as well as above.
        for make in (lambda: nets.GatedResidualBlock(4, dropout=-0.1),
                     lambda: nets.GatedAttention(8, dropout=-0.1)):
            with self.assertRaisesRegex(ValueError,
                                        r'dropout must be in \[0, 1\)'):
                make()

    def test_attention_refuses_zero_heads_as_a_value_error(self):
        # GatedAttention: ValueError if channels is not a positive multiple
        # of num_heads; no channel count is a multiple of 0 heads.
        self._assert_value_error(lambda: nets.GatedAttention(8, num_heads=0),
                                 'multiple of num_heads')

    def test_mlp_refuses_a_scalar_input_as_a_value_error(self):
        # MLP: x is [..., input_features]; a scalar has no feature axis and
        # is a wrong feature count (ValueError).
        self._assert_value_error(lambda: nets.MLP(1, 2)(tf.constant(1.0)),
                                 r'expects inputs \[\.\.\., 1\]')

    def test_an_unknown_compute_dtype_is_a_value_error(self):
        # check_compute_dtype: None or a LOW_PRECISION dtype, ValueError
        # otherwise, also for a name that is no dtype at all.
        self._assert_value_error(lambda: _net(compute_dtype='half_float'),
                                 'compute_dtype must be None, bfloat16 or '
                                 'float16')

    def test_networks_refuse_a_negative_block_count(self):
        # num_blocks >= 0: -1 is refused, not taken for no blocks.
        for make in (
                lambda: _net(num_blocks=-1),
                lambda: nets.ContextNet((4, 8, 3), partitions.ColumnSplit(),
                                        filters=4, num_blocks=-1)):
            with self.assertRaisesRegex(ValueError,
                                        'num_blocks must be >= 0'):
                make()

    def test_a_negative_context_channel_count_is_refused_by_name(self):
        # GatedResidualBlock: ValueError for negative context_channels,
        # naming that argument (not an inner layer's).
        with self.assertRaisesRegex(ValueError,
                                    'context_channels must be >= 0'):
            nets.GatedResidualBlock(4, context_channels=-1)

    def test_context_net_refuses_halves_of_different_widths(self):
        # ContextNet: the partition's halves must share a spatial shape (H'
        # and W') to be stacked on channels; ValueError otherwise.
        class UnevenColumns:
            event_ndims = 3

            def split(self, x):
                return x[:, :, :2], x[:, :, 2:]

            def half_event_shapes(self, shape):
                height, width, channels = shape
                return (height, 2, channels), (height, width - 2, channels)

        with self.assertRaisesRegex(ValueError, 'different spatial shapes'):
            nets.ContextNet((4, 6, 3), UnevenColumns(), filters=4,
                            num_blocks=1)

    def test_mlp_refuses_a_negative_context_feature_count(self):
        # MLP: ValueError for non-positive sizes; context_features is 0 (no
        # context) or positive, never negative.
        with self.assertRaisesRegex(ValueError, 'context_features >= 0'):
            nets.MLP(3, 4, context_features=-1)

    def test_image_networks_refuse_inputs_of_another_rank_by_name(self):
        # check_image_input: x must be [B] + input_shape, else a ValueError
        # naming the network; an unbatched image or one with an extra
        # leading axis is refused too, with the network's own message.
        networks = (
            nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                            num_blocks=1),
            _net(input_shape=(4, 8, 3), num_blocks=1),
            nets.GlowNet((4, 8, 3), 6, filters=4))
        for net in networks:
            for shape in ((4, 8, 3), (1, 2, 4, 8, 3)):
                self._assert_value_error(
                    lambda n=net, s=shape: n(tf.zeros(s)),
                    f'^{net.name} expects inputs of shape '
                    r'\[B, 4, 8, 3\] \(H, W, C\)')

    def test_mlp_refuses_a_context_of_higher_rank(self):
        # MLP: the context has the leading shape of x, so a context of a
        # higher rank than x is mis-shaped (ValueError), as a lower one is.
        net = nets.MLP(3, 2, hidden_units=(4,), context_features=2)
        self._assert_value_error(
            lambda: net(tf.zeros([7, 3]), context=tf.zeros([2, 7, 2])),
            'of the rank of its input')


class PrecisionAndInitialStateTest(tf.test.TestCase):
    """Mixed precision and initial parameters of the layers, MLP and
    ContextNet, as their docstrings state them."""

    def test_weight_norm_gain_starts_at_one(self):
        # layers: with weight_norm a layer holds V and a gain g per output
        # channel (init 1), so a fresh layer applies W = V / ||V||: unit
        # norm per output channel, whatever the scale of V.
        for layer in (nets.Dense(6, 4, weight_norm=True),
                      nets.Conv2D(3, 4, kernel_size=3, weight_norm=True)):
            self.assertAllEqual(layer.gain, np.ones(4), msg=layer.name)
            w = layer.weights().numpy().reshape(-1, 4)
            self.assertAllClose(np.linalg.norm(w, axis=0), np.ones(4),
                                rtol=1e-5, msg=layer.name)

    def test_weight_norm_is_computed_in_the_variables_dtype(self):
        # weights(dtype): g V / ||V|| computed in the variables' dtype and
        # then cast, so the bfloat16 kernel of a mixed-precision call is the
        # float32 kernel rounded once, not a norm taken in bfloat16.
        rs = np.random.RandomState(7)
        layer = nets.Dense(64, 8, weight_norm=True)
        layer.kernel.assign(rs.randn(64, 8))
        layer.gain.assign(rs.rand(8) + 0.5)
        self.assertAllEqual(layer.weights(tf.bfloat16),
                            tf.cast(layer.weights(), tf.bfloat16))

    def test_layer_norm_statistics_of_a_low_precision_input(self):
        # Mixed precision: layer-norm statistics are computed in the
        # variables' dtype, so a bfloat16 input gives the float32 result on
        # the same values up to the output's rounding, also on rows whose
        # mean is large against their spread (where bfloat16 moments lose
        # the variance).
        layer = nets.LayerNorm(16)
        randomize(layer)
        rs = np.random.RandomState(3)
        x = tf.cast(100.0 + rs.randn(4, 16), tf.bfloat16)
        expected = layer(tf.cast(x, tf.float32))
        y = layer(x)
        self.assertEqual(y.dtype, tf.bfloat16)
        self.assertAllClose(tf.cast(y, tf.float32), expected,
                            rtol=2**-7, atol=2**-7)

    def test_mlp_output_kernel_std_follows_output_init_scale(self):
        # MLP: the output kernel starts as N(0, (0.05 * output_init_scale)^2)
        # for any scale, not just 0 and 1.
        tf.random.set_seed(1)
        net = nets.MLP(3, 64, hidden_units=(64,), output_init_scale=4.0)
        self.assertNear(float(tf.math.reduce_std(net.output_layer.kernel)),
                        0.2, 0.02)

    def test_mlp_converts_array_inputs_to_its_dtype(self):
        # MLP: like the other conditioner networks, arrays and lists are
        # taken in the variables' dtype, the input and the context alike.
        net = nets.MLP(3, 2, hidden_units=(5,), context_features=2,
                       output_init_scale=1.0)
        randomize(net)
        rs = np.random.RandomState(4)
        x, c = rs.randn(6, 3), rs.randn(6, 2)
        expected = net(tf.constant(x, tf.float32),
                       context=tf.constant(c, tf.float32))
        refusals = (TypeError, ValueError, tf.errors.InvalidArgumentError)
        for inputs in ((x, c), (x.tolist(), c.tolist())):
            try:
                y = net(inputs[0], context=inputs[1])
            except refusals as e:
                self.fail(f'{type(inputs[0]).__name__} inputs were refused: '
                          f'{e}')
            self.assertEqual(y.dtype, tf.float32)
            self.assertAllClose(y, expected, atol=1e-6)

    def _context_net(self, **kwargs):
        return nets.ContextNet((4, 8, 3), partitions.ColumnSplit(), filters=4,
                               num_blocks=1, **kwargs)

    def test_context_net_checks_its_compute_dtype_argument(self):
        # ContextNet(compute_dtype=...): None, bfloat16 or float16, taken as
        # the dtype it names; any other dtype is a ValueError at creation.
        self.assertEqual(
            self._context_net(compute_dtype='bfloat16').compute_dtype,
            tf.bfloat16)
        self.assertIsInstance(
            self._context_net(compute_dtype='float16').compute_dtype,
            tf.dtypes.DType)
        with self.assertRaisesRegex(ValueError, 'compute_dtype must be None, '
                                    'bfloat16 or float16'):
            self._context_net(compute_dtype=tf.float64)

    def test_context_net_runs_every_convolution_in_its_compute_dtype(self):
        # Mixed precision: convolutions run in the low precision dtype (the
        # input convolution too), and the output is in the variables' dtype.
        net = self._context_net(compute_dtype=tf.bfloat16)
        records, patches = record_linear_outputs()
        with patches[0], patches[1]:
            y = net(tf.random.normal([2, 4, 8, 3]))
        self.assertEqual(y.dtype, tf.float32)
        self.assertLen(records, 3)
        self.assertEqual([out.dtype for _, out in records],
                         [tf.bfloat16] * 3)


if __name__ == '__main__':
    tf.test.main()
