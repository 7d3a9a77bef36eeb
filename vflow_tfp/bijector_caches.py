"""Emptying TFP's bijector caches.

TFP caches every bijector result under the identity of its input tensor
(`tfp.bijectors.Bijector`'s class-level `_cache`): while the output is still
referenced, `inverse(x)` and `inverse_log_det_jacobian(x)` on the same
tensor object return the stored results without running the layer. In
eager mode that outlives a change of the layer's variables, so a loop that
updates the weights and scores the same `x` tensor again gets the old
log-likelihood and an incomplete gradient; TFP's own variable-backed
bijectors (e.g. `tfb.Scale(tf.Variable(...))`) behave the same way. Inside
a `tf.function` each call runs the graph afresh, so a training step wrapped
in one (as it should be, for speed) is unaffected.

`clear()` empties every bijector class's cache: call it after an eager
update when the same input tensor is scored again.
"""

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ['clear']


def clear():
    """Empties TFP's bijector caches (every class that keeps one).

    #### Example

    ```python
    for _ in range(steps):          # eager, on one fixed batch `x`
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(x))
        optimizer.apply_gradients(...)
        vflow_tfp.clear_bijector_caches()   # or use a tf.function step
    ```
    """
    pending, seen = [tfp.bijectors.Bijector], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        # The cache the class uses, wherever it comes from: its own, a
        # parent's or a mixin's that is no bijector (clearing one twice is
        # harmless).
        cache = getattr(cls, '_cache', None)
        if isinstance(cache, cache_util.BijectorCache):
            cache.clear()   # the class-level cache: a fresh storage
        pending.extend(cls.__subclasses__())
