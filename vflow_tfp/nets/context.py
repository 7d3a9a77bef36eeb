"""Shallow context processor of the conditional flows (SPEC §1.12).

VFlow's dequantiser r(u|x) and posterior q(z|x~) condition every residual
block of every coupling on one context tensor computed once per forward pass
by this network. The input is split with the same partition as the
couplings' halves and the halves are stacked on channels, so context position
`(h, w')` of a `ColumnSplit` sees image pixels `(h, 2w')` and `(h, 2w'+1)`
and lines up with the halves the couplings operate on. The ImageNet code path
(SPEC §6.3) uses deeper processors: a layer norm after every block, and on
ImageNet 32x32 an attention block (with its own layer norm) after each.
"""

import tensorflow as tf

from vflow_tfp.nets import blocks
from vflow_tfp.nets import layers

__all__ = ['ContextNet']


class ContextNet(layers.MixedPrecisionOption, tf.Module):
    """Context processor: split, stack halves, conv, gated residual blocks.

    For an image `x` `[B, H, W, C]` and `F = filters`:

    ```none
    (a, b) = partition.split(x)                  # each [B, H', W', C_a|C_b]
    h = concat([a, b], axis=-1)                  # [B, H', W', C_a + C_b]
    h = conv3x3(h)                               # -> F, init_scale 1
    repeat num_blocks times:
      h = gated_residual_block(h)                # 3x3 second layer, no context
      h = layernorm(h)                           # only if layer_norm
      h = gated_attention(h, pos_emb)            # only if attention
      h = layernorm(h)                           # only if both
    ```

    By default (the CIFAR code) there is no layernorm, attention or output
    layer; `pos_emb` is one `[H', W', F]` variable, `N(0, 0.01^2)` at
    creation, shared by the attention blocks. For `ColumnSplit` on
    `[B, 32, 32, 3]` the stacked input is `[B, 32, 16, 6]` with
    `h[..., w', :3] = x[..., 2w', :]` and `h[..., w', 3:] = x[..., 2w'+1, :]`,
    and the output `[B, 32, 16, F]`. Any input scaling (e.g.
    `x / 256 - 0.5` for r) is the caller's job.

    Attributes:
      proj_in: the input `Conv2D`.
      residual_blocks: list of `GatedResidualBlock` (`use_nin=False`).
      attention_blocks: list of `GatedAttention` (empty without attention).
      pos_emb: the positional embedding variable, or `None`.
      norms: list of `LayerNorm` in call order (empty without layer_norm).
      rng: the dropout `tf.random.Generator`, or `None`.
    """

    def __init__(self, input_shape, partition, filters=32, num_blocks=3,
                 dropout=0.0, layer_norm=False, attention=False, num_heads=4,
                 attention_query_block=None, rng=None, weight_norm=False,
                 dtype=tf.float32, compute_dtype=None, name=None):
        """Creates the network.

        Args:
          input_shape: image event shape `(H, W, C)`, Python ints.
          partition: an image `vflow_tfp.bijectors.partitions.Partition`
            (`event_ndims == 3`) whose halves share a spatial shape.
          filters: Python int `F`. Default value: 32.
          num_blocks: Python int >= 0. Default value: 3.
          dropout: dropout rate in `[0, 1)` of every block. Default value: 0.
          layer_norm: a `LayerNorm` after every block. Default value:
            `False`.
          attention: a `GatedAttention` block after every residual block.
            Default value: `False`.
          num_heads: attention heads; must divide `filters`. Default value:
            4.
          attention_query_block: `None`, or the query block size of
            memory-lean attention. Default value: `None`.
          rng: `tf.random.Generator` shared by all blocks. Default value:
            `None` (one generator, seeded from TF's global seed, is created if
            `dropout > 0`).
          weight_norm: weight-normalised conv and dense layers (the
            ImageNet code path). Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          compute_dtype: `None`, or `tf.bfloat16` / `tf.float16` to compute
            in mixed precision (the output is in `dtype`). Default value:
            `None`.
          name: module name. Default value: `'context_net'`.

        Raises:
          ValueError: for an invalid shape, partition or hyperparameter.
        """
        super().__init__(name=name or 'context_net')
        input_shape = tuple(int(d) for d in input_shape)
        # Duck-typed so that this package does not import the bijectors.
        if not all(hasattr(partition, attr) for attr in
                   ('split', 'half_event_shapes', 'event_ndims')):
            raise TypeError(f'{self.name}: partition must be a Partition; '
                            f'got {partition!r}.')
        if partition.event_ndims != 3 or len(input_shape) != 3:
            raise ValueError(
                f'{self.name} processes images: needs input_shape (H, W, C) '
                f'and an image partition; got {input_shape} and '
                f'{partition!r}.')
        shape_a, shape_b = partition.half_event_shapes(input_shape)
        if shape_a[:2] != shape_b[:2]:
            raise ValueError(
                f'{self.name}: the halves of {partition!r} on {input_shape} '
                f'have different spatial shapes {shape_a} and {shape_b}; '
                'they cannot be stacked on channels.')
        num_blocks = int(num_blocks)
        if num_blocks < 0:
            raise ValueError(f'{self.name}: num_blocks must be >= 0; got '
                             f'{num_blocks}.')
        self._input_shape = input_shape
        self._partition = partition
        self._filters = int(filters)
        self._output_shape = tuple(shape_a[:2]) + (self._filters,)
        self._dtype = tf.as_dtype(dtype)
        self.compute_dtype = compute_dtype
        dropout = float(dropout)
        self.rng = rng = layers.dropout_generator(dropout, rng)
        self._layer_norm = bool(layer_norm)
        self._attention = bool(attention)
        wn = dict(weight_norm=weight_norm, dtype=dtype)
        with self.name_scope:
            self.proj_in = layers.Conv2D(shape_a[-1] + shape_b[-1],
                                         self._filters, 3, name='proj_in',
                                         **wn)
            self.pos_emb = None
            if self._attention and num_blocks:
                self.pos_emb = tf.Variable(
                    tf.random.normal(self._output_shape, stddev=0.01,
                                     dtype=self._dtype),
                    name='pos_emb')
            self.residual_blocks, self.attention_blocks = [], []
            self.norms = []
            for i in range(num_blocks):
                self.residual_blocks.append(blocks.GatedResidualBlock(
                    self._filters, use_nin=False, dropout=dropout, rng=rng,
                    name=f'gated_conv_{i}', **wn))
                if self._layer_norm:
                    self.norms.append(layers.LayerNorm(
                        self._filters, dtype=dtype, name=f'norm_conv_{i}'))
                if self._attention:
                    self.attention_blocks.append(blocks.GatedAttention(
                        self._filters, num_heads=num_heads, dropout=dropout,
                        query_block=attention_query_block, rng=rng,
                        name=f'gated_attn_{i}', **wn))
                    if self._layer_norm:
                        self.norms.append(layers.LayerNorm(
                            self._filters, dtype=dtype,
                            name=f'norm_attn_{i}'))

    @property
    def input_shape(self):
        """`(H, W, C)` as Python ints."""
        return self._input_shape

    @property
    def output_shape(self):
        """`(H', W', filters)` as Python ints, `(H', W')` a half's shape."""
        return self._output_shape

    @property
    def partition(self):
        return self._partition

    @tf.Module.with_name_scope
    def __call__(self, x, training=False):
        """Computes the context.

        Args:
          x: `[B, H, W, C]` tensor, already scaled by the caller.
          training: enables dropout. Default value: `False`.

        Returns:
          `[B] + output_shape` tensor.

        Raises:
          ValueError: if `x` does not have static shape `[B] + input_shape`.
        """
        x = tf.convert_to_tensor(x, dtype=self._dtype)
        layers.check_image_input(x, self._input_shape, self.name)
        a, b = self._partition.split(x)
        h = self.proj_in(layers.to_compute(tf.concat([a, b], axis=-1),
                                           self._compute_dtype))
        norms = iter(self.norms)
        for i, block in enumerate(self.residual_blocks):
            h = block(h, training=training)
            if self._layer_norm:
                h = next(norms)(h)
            if self._attention:
                h = self.attention_blocks[i](h, self.pos_emb,
                                             training=training)
                if self._layer_norm:
                    h = next(norms)(h)
        return tf.cast(h, self._dtype)
