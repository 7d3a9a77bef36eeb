"""Softmax attention with a hand-written gradient, optionally memory-lean.

For queries `Q` `[..., T_q, d]` (already scaled by `1/sqrt(d)`), keys `K`
and values `V` `[..., T, d]`:

```none
W = softmax(Q K^T)          # [..., T_q, T], rows sum to 1
A = W V                     # [..., T_q, d]
```

The gradient for an upstream `dA` uses `D = rowsum(dA * A)` (`[..., T_q, 1]`,
which equals `rowsum(dW * W)` since `dW = dA V^T`):

```none
dS = W * (dA V^T - D)       # gradient w.r.t. the logits Q K^T
dQ = dS K,   dK = dS^T Q,   dV = W^T dA
```

This needs two passes over the `T_q x T` matrix fewer than differentiating
`tf.nn.softmax` (its gradient recomputes `rowsum(dW * W)` over the full
matrix). With `query_block` set, the forward pass keeps only `A` and the
row-wise log-sum-exp `L`, and the backward pass recomputes
`W = exp(Q K^T - L)` one block of `query_block` queries at a time: no
`T x T` tensor outlives its block, so activation memory is linear in `T`
instead of quadratic (the FlashAttention schedule, with TensorFlow ops).
"""

import tensorflow as tf

__all__ = ['dot_product_attention']


def _blocks(x, block, length):
    sizes = [block] * (length // block)
    if length % block:
        sizes.append(length % block)
    return tf.split(x, sizes, axis=-2) if len(sizes) > 1 else [x]


def _full_attention(q, k, v):
    @tf.custom_gradient
    def attend(q, k, v):
        weights = tf.nn.softmax(tf.linalg.matmul(q, k, transpose_b=True))
        out = tf.linalg.matmul(weights, v)

        def grad(d_out):
            row = tf.reduce_sum(d_out * out, axis=-1, keepdims=True)
            d_logits = weights * (
                tf.linalg.matmul(d_out, v, transpose_b=True) - row)
            return (tf.linalg.matmul(d_logits, k),
                    tf.linalg.matmul(d_logits, q, transpose_a=True),
                    tf.linalg.matmul(weights, d_out, transpose_a=True))
        return out, grad
    return attend(q, k, v)


def _after(previous):
    """Orders the next block after `previous`: a graph executor would
    otherwise run the independent blocks at once, and hold all of their
    `T x T` pieces together."""
    return tf.control_dependencies([] if previous is None else [previous])


def _lean_attention(q, k, v, block):
    length = int(q.shape[-2])
    # The weights are exp(logits - L), not a softmax that renormalises its
    # rows: in bfloat16 or float16 a rounded L leaves rows summing to
    # 1 +- 0.3, so L and the exponent are computed in float32 there.
    wide = tf.float32 if q.dtype in (tf.bfloat16, tf.float16) else q.dtype

    @tf.custom_gradient
    def attend(q, k, v):
        def weights_of(q_block, lse):
            logits = tf.linalg.matmul(q_block, k, transpose_b=True)
            return tf.cast(tf.exp(tf.cast(logits, wide) - lse), q.dtype)

        outs, lses = [], []
        previous = None
        for q_block in _blocks(q, block, length):
            with _after(previous):
                logits = tf.linalg.matmul(q_block, k, transpose_b=True)
            logits = tf.cast(logits, wide)
            lse = tf.reduce_logsumexp(logits, axis=-1, keepdims=True)
            previous = tf.linalg.matmul(
                tf.cast(tf.exp(logits - lse), q.dtype), v)
            outs.append(previous)
            lses.append(lse)
        out = tf.concat(outs, axis=-2) if len(outs) > 1 else outs[0]
        lse = tf.concat(lses, axis=-2) if len(lses) > 1 else lses[0]

        def grad(d_out):
            row = tf.reduce_sum(d_out * out, axis=-1, keepdims=True)
            d_q, d_k, d_v = [], 0.0, 0.0
            previous = None
            for q_b, d_b, row_b, lse_b in zip(
                    _blocks(q, block, length), _blocks(d_out, block, length),
                    _blocks(row, block, length), _blocks(lse, block, length)):
                with _after(previous):
                    weights = weights_of(q_b, lse_b)
                    d_weights = tf.linalg.matmul(d_b, v, transpose_b=True)
                d_logits = weights * (d_weights - row_b)
                d_q.append(tf.linalg.matmul(d_logits, k))
                d_k += tf.linalg.matmul(d_logits, q_b, transpose_a=True)
                d_v += tf.linalg.matmul(weights, d_b, transpose_a=True)
                previous = d_v
            d_q = tf.concat(d_q, axis=-2) if len(d_q) > 1 else d_q[0]
            return d_q, d_k, d_v
        return out, grad
    return attend(q, k, v)


def dot_product_attention(q, k, v, query_block=None):
    """`softmax(q k^T) v` over the last two axes (see the module docstring).

    Args:
      q: `[..., T_q, d]` float tensor, already scaled by `1/sqrt(d)`; `T_q`
        must be static when `query_block` is set.
      k: `[..., T, d]`.
      v: `[..., T, d]`.
      query_block: `None` to keep the `T_q x T` weights for the backward
        pass (fastest); a positive Python int to recompute them in blocks of
        that many queries (memory linear in `T`, one extra matmul and `exp`
        per block in the backward pass).

    Returns:
      `[..., T_q, d]` tensor.
    """
    q = tf.convert_to_tensor(q)
    k = tf.convert_to_tensor(k, dtype=q.dtype)
    v = tf.convert_to_tensor(v, dtype=q.dtype)
    if query_block is None:
        return _full_attention(q, k, v)
    query_block = int(query_block)
    if query_block < 1:
        raise ValueError(f'query_block must be a positive int or None; got '
                         f'{query_block}.')
    if q.shape[-2] is None:
        raise ValueError('query_block needs a static number of queries; got '
                         f'q of shape {q.shape}.')
    return _lean_attention(q, k, v, query_block)
