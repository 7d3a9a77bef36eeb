"""The Flow++ coupling conditioner: gated convs plus attention (SPEC §1.5).

`ConvAttnNet` maps the conditioning half of a coupling (and an optional
context) to the coupling's parameters. With `attention=False` it is the
no-attention variant of SPEC §1.14 (`MixLogisticCoupling`, `AffineCoupling`);
with `output_nonlinearity=True` and `weight_norm=True` it is the
ImageNet/CelebA variant of SPEC §6.3, which applies `concat_elu` before the
output convolution and weight-normalises every conv and dense layer.
"""

import tensorflow as tf

from vflow_tfp.nets import blocks
from vflow_tfp.nets import layers

__all__ = ['ConvAttnNet']


class ConvAttnNet(layers.MixedPrecisionOption, tf.Module):
    """Flow++ coupling network (SPEC §1.5).

    For an input `x` `[B, H, W, C_in]`, `F = filters` and an optional context
    `a` `[B, H, W, C_a]`:

    ```none
    h = conv3x3(x)                               # C_in -> F, init_scale 1
    repeat num_blocks times:
      h = layernorm(gated_residual_block(h, a))  # 1x1 second layer
      h = layernorm(gated_attention(h, pos_emb)) # only if attention
    h = concat_elu(h)                            # only if output_nonlinearity
    y = conv3x3(h)                               # -> output_channels,
                                                 #    init_scale 0.1
    ```

    `pos_emb` is one `[H, W, F]` variable, `N(0, 0.01^2)` at creation, shared
    by all attention blocks of this network (none without attention blocks:
    an unused variable would get no gradient). No nonlinearity precedes the
    output conv in the CIFAR code (the default). Every conv/dense layer
    supports the data-dependent init of SPEC §1.1, so after a DDI pass the
    output has per-channel mean 0 and std 0.1 on that batch.

    The parameter count is

    ```none
    (9 C_in F + F) + [H W F if attention and num_blocks > 0]
      + num_blocks * ( (18 F^2 + F) + [2 C_a F + F if C_a > 0]
                       + (4 F^2 + 2F) + 2F
                       + [(3 F^2 + 3F) + (2 F^2 + 2F) + 2F if attention] )
      + 9 F' output_channels + output_channels,
    ```

    with `F' = 2F` if `output_nonlinearity` else `F`, plus one gain per
    output channel of every conv and dense layer with `weight_norm`.

    Attributes:
      proj_in: the input `Conv2D`.
      pos_emb: the positional embedding variable, or `None`.
      residual_blocks: list of `GatedResidualBlock`.
      attention_blocks: list of `GatedAttention` (empty without attention).
      norms: list of `LayerNorm`, one after every block (residual and
        attention, in call order).
      proj_out: the output `Conv2D`.
      rng: the dropout `tf.random.Generator`, or `None`.
    """

    def __init__(self, input_shape, output_channels, filters=96,
                 num_blocks=10, num_heads=4, attention=True,
                 context_channels=0, dropout=0.0, output_nonlinearity=False,
                 output_init_scale=0.1, attention_query_block=None, rng=None,
                 weight_norm=False, dtype=tf.float32, compute_dtype=None,
                 name=None):
        """Creates the network.

        Args:
          input_shape: `(H, W, C_in)`, Python ints.
          output_channels: Python int, channels of the output.
          filters: Python int `F`, hidden channels. Default value: 96.
          num_blocks: Python int `Bk` >= 0, >= 1 with a context.
            Default value: 10.
          num_heads: attention heads; must divide `F`. Default value: 4.
          attention: include the attention blocks and `pos_emb`.
            Default value: `True`.
          context_channels: channels `C_a` of the context added in every
            residual block; 0 for none. Default value: 0.
          dropout: dropout rate in `[0, 1)` of every block. Default value: 0.
          output_nonlinearity: apply `concat_elu` before the output conv.
            Default value: `False`.
          output_init_scale: data-dependent init scale of the output conv:
            0.1 for coupling networks, 1.0 for VFlow's f_affine network
            (SPEC §1.13). Default value: 0.1.
          attention_query_block: `None`, or the query block size of
            memory-lean attention (`GatedAttention.query_block`).
            Default value: `None`.
          rng: `tf.random.Generator` shared by all blocks for dropout.
            Default value: `None` (one generator, seeded from TF's global
            seed, is created if `dropout > 0`).
          weight_norm: weight-normalised conv and dense layers (the
            ImageNet code path). Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          compute_dtype: `None`, or `tf.bfloat16` / `tf.float16` to run the
            network in mixed precision: variables stay in `dtype`, the
            output is cast back to `dtype`. Default value: `None`.
          name: module name. Default value: `'conv_attn_net'`.

        Raises:
          ValueError: for an invalid shape or hyperparameter.
        """
        super().__init__(name=name or 'conv_attn_net')
        input_shape = layers.image_shape(input_shape, self.name)
        num_blocks = int(num_blocks)
        if num_blocks < 0:
            raise ValueError(f'{self.name}: num_blocks must be >= 0; got '
                             f'{num_blocks}.')
        height, width, in_channels = input_shape
        if num_blocks == 0 and int(context_channels):
            # A net of just the two projections would silently ignore it.
            raise ValueError(
                f'{self.name}: a context (context_channels='
                f'{int(context_channels)}) needs num_blocks >= 1, since it '
                'enters only through the residual blocks; got num_blocks=0.')
        filters = int(filters)
        self._input_shape = input_shape
        self._output_channels = int(output_channels)
        self._filters = filters
        self._attention = bool(attention)
        self._context_channels = int(context_channels)
        self._output_nonlinearity = bool(output_nonlinearity)
        self._dtype = tf.as_dtype(dtype)
        self.compute_dtype = compute_dtype
        dropout = float(dropout)
        self.rng = rng = layers.dropout_generator(dropout, rng)
        wn = dict(weight_norm=weight_norm, dtype=dtype)
        with self.name_scope:
            self.proj_in = layers.Conv2D(in_channels, filters, 3,
                                         name='proj_in', **wn)
            self.pos_emb = None
            if self._attention and num_blocks:
                self.pos_emb = tf.Variable(
                    tf.random.normal([height, width, filters], stddev=0.01,
                                     dtype=self._dtype),
                    name='pos_emb')
            self.residual_blocks = []
            self.attention_blocks = []
            self.norms = []
            for i in range(num_blocks):
                self.residual_blocks.append(blocks.GatedResidualBlock(
                    filters, context_channels=self._context_channels,
                    use_nin=True, dropout=dropout, rng=rng,
                    name=f'gated_conv_{i}', **wn))
                self.norms.append(layers.LayerNorm(
                    filters, dtype=dtype, name=f'norm_conv_{i}'))
                if self._attention:
                    self.attention_blocks.append(blocks.GatedAttention(
                        filters, num_heads=num_heads, dropout=dropout,
                        query_block=attention_query_block, rng=rng,
                        name=f'gated_attn_{i}', **wn))
                    self.norms.append(layers.LayerNorm(
                        filters, dtype=dtype, name=f'norm_attn_{i}'))
            out_in = 2 * filters if self._output_nonlinearity else filters
            self.proj_out = layers.Conv2D(
                out_in, self._output_channels, 3,
                init_scale=output_init_scale, name='proj_out', **wn)

    @property
    def input_shape(self):
        """`(H, W, C_in)` as Python ints."""
        return self._input_shape

    @property
    def output_shape(self):
        """`(H, W, output_channels)` as Python ints."""
        return self._input_shape[:2] + (self._output_channels,)

    @property
    def context_channels(self):
        return self._context_channels

    @tf.Module.with_name_scope
    def __call__(self, x, context=None, training=False):
        """Computes the coupling parameters.

        Args:
          x: `[B, H, W, C_in]` tensor (B may be unknown).
          context: `[B, H, W, C_a]` tensor if `context_channels > 0`, else
            `None`.
          training: enables dropout. Default value: `False`.

        Returns:
          `[B, H, W, output_channels]` tensor.

        Raises:
          ValueError: if `x` does not have static shape `[B] + input_shape`,
            or the context is missing, unexpected or mis-shaped.
        """
        x = tf.convert_to_tensor(x, dtype=self._dtype)
        layers.check_image_input(x, self._input_shape, self.name)
        # Checked here too so that a net with num_blocks=0 is just as strict.
        if self._context_channels and context is None:
            raise ValueError(
                f'{self.name} was built with context_channels='
                f'{self._context_channels} and needs a context; got None.')
        if not self._context_channels and context is not None:
            raise ValueError(
                f'{self.name} was built without a context '
                '(context_channels=0) but was given one of shape '
                f'{getattr(context, "shape", None)}.')
        h = self.proj_in(layers.to_compute(x, self._compute_dtype))
        if context is not None:
            context = layers.to_compute(context, self._compute_dtype)
        norms = iter(self.norms)
        for i, residual in enumerate(self.residual_blocks):
            h = next(norms)(residual(h, context=context, training=training))
            if self._attention:
                h = self.attention_blocks[i](h, self.pos_emb,
                                             training=training)
                h = next(norms)(h)
        if self._output_nonlinearity:
            h = layers.concat_elu(h)
        return tf.cast(self.proj_out(h), self._dtype)
