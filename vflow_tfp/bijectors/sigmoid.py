"""Sigmoid squashes: Sigmoid, VFlow's SmoothSigmoid, and the image logit."""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp.bijectors import shape_checks

__all__ = ['Sigmoid', 'SmoothSigmoid', 'ImageLogit']

tfb = tfp.bijectors


class _ScaledSmoothSigmoid(tfb.Bijector):
    """y = scale * (sigmoid(x) - alpha) / (1 - 2 alpha), elementwise.

    Shared by the three public classes below; the math is stated there.

    With `validate_args=True`, `inverse` and its log-det assert that their
    input lies in the open image of `forward`,
    `scale * (-alpha, 1 - alpha) / (1 - 2 alpha)` (`(0, scale)` for
    `alpha = 0`), where the logit is finite: whatever `forward` returns
    passes, unless it rounded onto an end (`sigmoid(x)` is exactly 1 in
    float32 from `x` of about 17 on). Without it nothing is checked, and an
    input outside the image gives a silent NaN.
    """

    def _init(self, alpha, scale, parameters, validate_args, name):
        alpha = float(alpha)
        scale = float(scale)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f'alpha must be in [0, 0.5); got {alpha}.')
        if scale <= 0:
            raise ValueError(f'scale must be positive; got {scale}.')
        self._alpha = alpha
        self._scale = scale
        # log of d y / d sigmoid(x)
        self._log_slope = math.log(scale) - math.log1p(-2.0 * alpha)
        super(_ScaledSmoothSigmoid, self).__init__(
            forward_min_event_ndims=0,
            validate_args=validate_args,
            parameters=parameters,
            name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def alpha(self):
        return self._alpha

    @classmethod
    def _is_increasing(cls, **kwargs):
        # Lets `tfd.TransformedDistribution` compute `cdf` and `quantile`.
        return True

    def _check_float(self, t, direction):
        if not t.dtype.is_floating:
            raise TypeError(f'{self.name}: {direction} takes a float tensor; '
                            f'got {t.dtype.name}. Cast it first, e.g. '
                            'tf.cast(x, tf.float32).')

    def _forward(self, x):
        self._check_float(x, 'forward')
        if self._alpha == 0.0:
            return self._scale * tf.sigmoid(x)
        return (self._scale * (tf.sigmoid(x) - self._alpha)
                / (1.0 - 2.0 * self._alpha))

    def _forward_log_det_jacobian(self, x):
        self._check_float(x, 'forward')
        # log sigmoid'(x) = -softplus(-x) - softplus(x), stable for any x.
        return -tf.nn.softplus(-x) - tf.nn.softplus(x) + self._log_slope

    def _squashed(self, y):
        """v = alpha + (1 - 2 alpha) y / scale, the sigmoid's value."""
        self._check_float(y, 'inverse')
        return self._alpha + (1.0 - 2.0 * self._alpha) * (y / self._scale)

    def _maybe_assert_valid_y(self, y):
        """Assertions on the input of `inverse`; none unless validate_args."""
        if not self.validate_args:
            return []
        # On the sigmoid's value, so that the bounds are exactly where the
        # logit becomes infinite.
        v = self._squashed(y)
        width = self._scale / (1.0 - 2.0 * self._alpha)
        # `0.0 - ...`: alpha = 0 prints as 0, not -0.
        message = (f'{self.name}: the input of inverse must lie in '
                   f'({0.0 - self._alpha * width:.6g}, '
                   f'{(1.0 - self._alpha) * width:.6g}), the image of '
                   'forward, where the logit is finite.')
        return [tf.debugging.assert_greater(v, tf.zeros([], v.dtype), message),
                tf.debugging.assert_less(v, tf.ones([], v.dtype), message)]

    def _inverse(self, y):
        with tf.control_dependencies(self._maybe_assert_valid_y(y)):
            v = self._squashed(y)
            return tf.math.log(v) - tf.math.log1p(-v)

    def _inverse_log_det_jacobian(self, y):
        with tf.control_dependencies(self._maybe_assert_valid_y(y)):
            v = self._squashed(y)
            return -tf.math.log(v) - tf.math.log1p(-v) - self._log_slope


class SmoothSigmoid(_ScaledSmoothSigmoid):
    """VFlow's sigmoid with its ends cut off (paper Appendix B, SPEC §1.11).

    ```none
    forward:  y = (sigmoid(x) - alpha) / (1 - 2 alpha)
    inverse:  x = logit(v),  v = alpha + (1 - 2 alpha) y
    forward_log_det_jacobian
        = log sigmoid(x) + log(1 - sigmoid(x)) - log(1 - 2 alpha)
    ```

    Used inverted inside VFlow's mixture-of-logistics coupling: there
    `logit(alpha + (1 - 2 alpha) F)` stays within `±logit(1 - alpha)`
    (`±ln 19` for `alpha = 0.05`), which removes the infinite logits the
    plain Flow++ squash produces when `F` rounds to 0 or 1.
    The forward image is `(-alpha, 1 - alpha) / (1 - 2 alpha)`, slightly
    wider than (0, 1).
    """

    def __init__(self, alpha=0.05, validate_args=False, name=None):
        """Creates the layer.

        Args:
          alpha: Python float in [0, 0.5). Default value: `0.05`.
          validate_args: Python `bool`; if `True`, `inverse` asserts that its
            input lies in `(-alpha, 1 - alpha) / (1 - 2 alpha)`.
          name: Default value: `'smooth_sigmoid'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'smooth_sigmoid') as name:
            self._init(alpha, 1.0, parameters, validate_args, name)


class Sigmoid(_ScaledSmoothSigmoid):
    """The logistic sigmoid, with stable log-dets.

    ```none
    forward:  y = sigmoid(x)
    inverse:  x = log(y) - log(1 - y)
    forward_log_det_jacobian = -softplus(-x) - softplus(x)
    ```

    Ends the dequantiser r(u|x) and the VFlow posterior q(z|x) (SPEC §2).
    """

    def __init__(self, validate_args=False, name=None):
        """Creates the layer.

        Args:
          validate_args: Python `bool`; if `True`, `inverse` asserts that its
            input lies in (0, 1).
          name: Default value: `'sigmoid'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'sigmoid') as name:
            self._init(0.0, 1.0, parameters, validate_args, name)


class ImageLogit(_ScaledSmoothSigmoid):
    """The logit pre-processing of dequantised images (official `ImgProc`).

    For dequantised pixel values `x` in `[0, num_bins)`:

    ```none
    inverse (data -> latent):  x~ = logit(v),
                               v = alpha + (1 - 2 alpha) x / num_bins
    forward (latent -> data):  x = num_bins (sigmoid(x~) - alpha)
                                   / (1 - 2 alpha)
    inverse_log_det_jacobian
        = -log v - log(1 - v) + log((1 - 2 alpha) / num_bins)
    ```

    per dimension, so an image of D dimensions gets
    `D log(0.9/256) = -5.650538 D` nats from the last term with the defaults
    (SPEC §1.11). That term is the `-log 256` per dimension that turns a
    density on `[0, 256)^D` with unit-width bins into a discrete likelihood:
    no separate `+8 bits/dim` is needed.
    """

    def __init__(self, num_bins=256, alpha=0.05, validate_args=False,
                 name=None):
        """Creates the layer.

        Args:
          num_bins: number of discrete values per dimension (256 for 8-bit
            images), an integer >= 1. Default value: `256`.
          alpha: Python float in [0, 0.5). Default value: `0.05`.
          validate_args: Python `bool`; if `True`, `inverse` asserts that its
            input lies in `num_bins * (-alpha, 1 - alpha) / (1 - 2 alpha)`,
            the image of `forward` (which holds `[0, num_bins]`).
          name: Default value: `'image_logit'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'image_logit') as name:
            self._num_bins = shape_checks.as_size(num_bins, 'num_bins')
            self._init(alpha, self._num_bins, parameters, validate_args, name)

    @property
    def num_bins(self):
        return self._num_bins
