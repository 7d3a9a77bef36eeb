"""Gated residual blocks of the Flow++ conditioner (SPEC §1.3, §1.4).

* `GatedResidualBlock` (`gated_conv`): a residual conv block with a gated
  output and an optional additive context input.
* `GatedAttention` (`gated_attn`): a residual multi-head global
  self-attention block with a gated output.

Both keep the channel count `F` of their input and add their result to it.
Dropout (rate `p`) is applied only when `training=True`; the official code
also applies it in the data-dependent init pass, so run that pass with
`training=True` to reproduce it.
"""

import math

import tensorflow as tf

from vflow_tfp.nets import attention
from vflow_tfp.nets import layers

__all__ = ['GatedResidualBlock', 'GatedAttention']


def _check_rate(rate, owner):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f'{owner}: dropout must be in [0, 1); got {rate}.')
    return rate


def check_query_block(query_block, owner):
    if query_block is None:
        return None
    if int(query_block) != query_block or int(query_block) < 1:
        raise ValueError(f'{owner}: query_block must be None or a positive '
                         f'int; got {query_block!r}.')
    return int(query_block)


def _check_image(x, channels, owner):
    if x.shape.rank != 4 or any(d is None for d in x.shape[1:]):
        raise ValueError(f'{owner} expects [B, H, W, C] inputs with static '
                         f'H, W, C; got shape {x.shape}.')
    if int(x.shape[-1]) != channels:
        raise ValueError(f'{owner} expects {channels} input channels; got '
                         f'shape {x.shape}.')


class GatedResidualBlock(tf.Module):
    """Gated residual conv block with optional context (SPEC §1.3).

    For `x` `[B, H, W, F]` and an optional context `a` `[B, H, W, C_a]`:

    ```none
    c1 = conv3x3(concat_elu(x))                      # 2F -> F
    c1 = c1 + nin(concat_elu(a))                     # 2C_a -> F, if C_a > 0
    c1 = dropout(concat_elu(c1), p)                  # 2F channels
    c2 = nin(c1)  if use_nin  else  conv3x3(c1)      # 2F -> 2F, init_scale 0.1
    y  = x + gate(c2)                                # gate(a|g) = a*sigmoid(g)
    ```

    `nin` is a `Dense` layer applied per pixel. Every linear layer supports
    the data-dependent init of SPEC §1.1.

    Attributes:
      conv_in: the first `Conv2D` (2F -> F).
      context_proj: the context `Dense` (2C_a -> F), or `None`.
      conv_out: the second layer (`Dense` or `Conv2D`, 2F -> 2F).
      rng: the dropout `tf.random.Generator`, or `None`.
    """

    def __init__(self, channels, context_channels=0, use_nin=True,
                 dropout=0.0, rng=None, weight_norm=False, dtype=tf.float32,
                 name=None):
        """Creates the block.

        Args:
          channels: Python int `F`, input and output channels.
          context_channels: Python int `C_a`; 0 for an unconditional block.
            Default value: 0.
          use_nin: `True` for a 1x1 second layer (coupling networks),
            `False` for a 3x3 one (context processors). Default value: `True`.
          dropout: dropout rate `p` in `[0, 1)`. Default value: 0.
          rng: `tf.random.Generator` for the dropout masks. Default value:
            `None` (a generator seeded from TF's global seed
            is created if `p > 0`).
          weight_norm: weight-normalised linear layers (`layers.Dense`).
            Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'gated_residual_block'`.

        Raises:
          ValueError: for non-positive `channels`, negative
            `context_channels` or a rate outside `[0, 1)`.
        """
        super().__init__(name=name or 'gated_residual_block')
        channels = int(channels)
        context_channels = int(context_channels)
        if channels < 1:
            raise ValueError(f'{self.name}: channels must be >= 1; got '
                             f'{channels}.')
        if context_channels < 0:
            raise ValueError(f'{self.name}: context_channels must be >= 0; '
                             f'got {context_channels}.')
        self._channels = channels
        self._context_channels = context_channels
        self._use_nin = bool(use_nin)
        self._dropout = _check_rate(dropout, self.name)
        self._dtype = tf.as_dtype(dtype)
        self.rng = layers.dropout_generator(self._dropout, rng)
        wn = dict(weight_norm=weight_norm, dtype=dtype)
        with self.name_scope:
            self.conv_in = layers.Conv2D(2 * channels, channels, 3,
                                         name='conv_in', **wn)
            self.context_proj = None
            if context_channels:
                self.context_proj = layers.Dense(
                    2 * context_channels, channels, name='context_proj',
                    **wn)
            if self._use_nin:
                self.conv_out = layers.Dense(
                    2 * channels, 2 * channels, init_scale=0.1,
                    name='conv_out', **wn)
            else:
                self.conv_out = layers.Conv2D(
                    2 * channels, 2 * channels, 3, init_scale=0.1,
                    name='conv_out', **wn)

    @property
    def channels(self):
        return self._channels

    @property
    def context_channels(self):
        return self._context_channels

    @property
    def dropout_rate(self):
        """The dropout rate `p` of the block, active only in training."""
        return self._dropout

    def _check_context(self, x, context):
        if self._context_channels and context is None:
            raise ValueError(
                f'{self.name} was built with context_channels='
                f'{self._context_channels} and needs a context tensor of '
                f'shape [B, {x.shape[1]}, {x.shape[2]}, '
                f'{self._context_channels}]; got None.')
        if not self._context_channels and context is not None:
            raise ValueError(
                f'{self.name} was built without a context '
                '(context_channels=0) but was given one of shape '
                f'{context.shape}.')
        if context is None:
            return None
        context = tf.cast(layers.as_input(context, self._dtype), x.dtype)
        expected = [x.shape[1], x.shape[2], self._context_channels]
        if (context.shape.rank != 4
                or [d for d in context.shape[1:]] != expected):
            raise ValueError(
                f'{self.name} expects a context of shape [B] + {expected} '
                f'(the spatial shape of its input); got {context.shape}.')
        return context

    @tf.Module.with_name_scope
    def __call__(self, x, context=None, training=False):
        """Applies the block (see the class docstring).

        Args:
          x: `[B, H, W, F]` tensor.
          context: `[B, H, W, C_a]` tensor if `context_channels > 0`, else
            `None`.
          training: enables dropout. Default value: `False`.

        Returns:
          `[B, H, W, F]` tensor.

        Raises:
          ValueError: for a wrong input shape or a missing, unexpected or
            mis-shaped context.
        """
        x = layers.as_input(x, self._dtype)
        _check_image(x, self._channels, self.name)
        context = self._check_context(x, context)
        c1 = self.conv_in(layers.concat_elu(x))
        if context is not None:
            c1 = c1 + self.context_proj(layers.concat_elu(context))
        c1 = layers.dropout(layers.concat_elu(c1), self._dropout, self.rng,
                            training)
        return x + layers.gate(self.conv_out(c1))


class GatedAttention(tf.Module):
    """Gated multi-head global self-attention block (SPEC §1.4).

    For `x` `[B, H, W, F]`, `heads` heads of size `d = F / heads`, and
    `T = H W` tokens:

    ```none
    c = nin(x + pos_emb)                  # F -> 3F, layout (3, heads, d)
    Q, K, V = the three F-channel thirds of c, each [B, heads, T, d]
    A = softmax_over_keys(Q K^T / sqrt(d)) V      # [B, heads, T, d], no mask
    c2 = nin(dropout(merge_heads(A), p))  # F -> 2F, init_scale 0.1
    y = x + gate(c2)
    ```

    Channel `s F + h d + j` of `c` is element `j` of head `h` of Q
    (`s = 0`), K (`s = 1`) or V (`s = 2`); `merge_heads` is the inverse
    layout (channel `h d + j`). The positional embedding enters only the
    attention input, not the residual stream. Cost is O(B heads T^2) time;
    memory is O(B heads T^2) by default and O(B heads T query_block) with
    `query_block` (see `vflow_tfp.nets.attention`).

    Attributes:
      qkv: the `Dense` F -> 3F projection.
      proj_out: the `Dense` F -> 2F output projection.
      rng: the dropout `tf.random.Generator`, or `None`.
    """

    def __init__(self, channels, num_heads=4, dropout=0.0, query_block=None,
                 rng=None, weight_norm=False, dtype=tf.float32, name=None):
        """Creates the block.

        Args:
          channels: Python int `F`; must be divisible by `num_heads`.
          num_heads: Python int. Default value: 4.
          dropout: dropout rate `p` in `[0, 1)`. Default value: 0.
          query_block: `None` to keep the attention weights for the
            backward pass, or a block size of queries for which they are
            recomputed instead (memory-lean; same values and gradients).
            Default value: `None`.
          rng: `tf.random.Generator` for the dropout masks. Default value:
            `None` (a generator seeded from TF's global seed
            is created if `p > 0`).
          weight_norm: weight-normalised linear layers (`layers.Dense`).
            Default value: `False`.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'gated_attention'`.

        Raises:
          ValueError: if `channels` is not a positive multiple of
            `num_heads`, or the rate is outside `[0, 1)`.
        """
        super().__init__(name=name or 'gated_attention')
        channels, num_heads = int(channels), int(num_heads)
        if num_heads < 1 or channels < 1 or channels % num_heads:
            raise ValueError(
                f'{self.name}: channels ({channels}) must be a positive '
                f'multiple of num_heads ({num_heads}).')
        self._channels = channels
        self._num_heads = num_heads
        self._head_dim = channels // num_heads
        self._dropout = _check_rate(dropout, self.name)
        self.query_block = query_block
        self._dtype = tf.as_dtype(dtype)
        self.rng = layers.dropout_generator(self._dropout, rng)
        with self.name_scope:
            self.qkv = layers.Dense(channels, 3 * channels, name='qkv',
                                    weight_norm=weight_norm, dtype=dtype)
            self.proj_out = layers.Dense(channels, 2 * channels,
                                         init_scale=0.1, name='proj_out',
                                         weight_norm=weight_norm,
                                         dtype=dtype)

    @property
    def channels(self):
        return self._channels

    @property
    def num_heads(self):
        return self._num_heads

    @property
    def dropout_rate(self):
        """The dropout rate `p` of the block, active only in training."""
        return self._dropout

    @property
    def query_block(self):
        """`None`, or the query block size of memory-lean attention (an
        execution option: settable, read when a function is traced)."""
        return self._query_block

    @query_block.setter
    def query_block(self, query_block):
        self._query_block = check_query_block(query_block, self.name)

    @tf.Module.with_name_scope
    def __call__(self, x, pos_emb, training=False):
        """Applies the block (see the class docstring).

        Args:
          x: `[B, H, W, F]` tensor.
          pos_emb: `[H, W, F]` positional embedding (broadcast over B).
          training: enables dropout. Default value: `False`.

        Returns:
          `[B, H, W, F]` tensor.

        Raises:
          ValueError: for wrongly shaped `x` or `pos_emb`.
        """
        x = layers.as_input(x, self._dtype)
        _check_image(x, self._channels, self.name)
        pos_emb = tf.cast(pos_emb, x.dtype)
        if pos_emb.shape != x.shape[1:]:
            raise ValueError(f'{self.name}: pos_emb must have shape '
                             f'{x.shape[1:]}; got {pos_emb.shape}.')
        height, width = int(x.shape[1]), int(x.shape[2])
        tokens = height * width
        heads, head_dim = self._num_heads, self._head_dim
        batch = tf.shape(x, out_type=tf.int32)[0]

        c = self.qkv(x + pos_emb)
        c = tf.reshape(c, tf.stack([batch, tokens, 3, heads, head_dim]))
        # -> [3, B, heads, T, d]; unstacked, because the gradient of
        # indexing (StridedSliceGrad) is slow on CPU.
        q, k, v = tf.unstack(tf.transpose(c, [2, 0, 3, 1, 4]))
        # Scaling the T x d queries, not the T x T logits, saves a pass.
        q = q * tf.constant(1.0 / math.sqrt(head_dim), x.dtype)
        attended = attention.dot_product_attention(
            q, k, v, query_block=self._query_block)
        attended = tf.transpose(attended, [0, 2, 1, 3])  # [B, T, heads, d]
        attended = tf.reshape(
            attended, tf.stack([batch, height, width, self._channels]))
        attended = layers.dropout(attended, self._dropout, self.rng,
                                  training)
        return x + layers.gate(self.proj_out(attended))
