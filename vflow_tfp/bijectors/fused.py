"""Base class for bijectors that compute a map and its log-det in one pass.

`TransformedDistribution.log_prob` calls `bijector.inverse(y)` and then
`bijector.inverse_log_det_jacobian(y)` separately. For a coupling, both need
the conditioner network's output; computing it twice doubles the cost of
training. `FusedBijector` subclasses implement `_forward_and_log_det` and
`_inverse_and_log_det` once; TFP's greedy-attribute cache stores the log-det
next to the output, so the later log-det call is a lookup, in both directions.
"""

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ['FusedBijector']

tfb = tfp.bijectors


class FusedBijector(tfb.Bijector):
    """A `tfb.Bijector` whose map and log-det share one computation.

    Subclasses implement:

    * `_forward_and_log_det(x, **kwargs) -> (y, fldj)`
    * `_inverse_and_log_det(y, **kwargs) -> (x, ildj)`

    where the log-dets are reduced over `forward_min_event_ndims` /
    `inverse_min_event_ndims` (one value per event).
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name='_augmented_forward', inverse_name='_augmented_inverse')

    def _forward_and_log_det(self, x, **kwargs):
        raise NotImplementedError

    def _inverse_and_log_det(self, y, **kwargs):
        raise NotImplementedError

    def _augmented_forward(self, x, **kwargs):
        y, fldj = self._forward_and_log_det(x, **kwargs)
        return y, {'fldj': fldj, 'ildj': -fldj}

    def _augmented_inverse(self, y, **kwargs):
        x, ildj = self._inverse_and_log_det(y, **kwargs)
        return x, {'ildj': ildj, 'fldj': -ildj}

    def _forward(self, x, **kwargs):
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._augmented_inverse(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        attrs = self._cache.forward_attributes(x, **kwargs)
        if 'fldj' not in attrs:
            # `forward` was never called on `x`: run the fused pass once.
            self.forward(x, **kwargs)
            attrs = self._cache.forward_attributes(x, **kwargs)
        return attrs['fldj']

    def _inverse_log_det_jacobian(self, y, **kwargs):
        attrs = self._cache.inverse_attributes(y, **kwargs)
        if 'ildj' not in attrs:
            self.inverse(y, **kwargs)
            attrs = self._cache.inverse_attributes(y, **kwargs)
        return attrs['ildj']
