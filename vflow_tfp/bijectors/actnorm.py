"""ActNorm: a learned per-channel or per-element affine normalisation."""

from absl import logging
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import tensor_util

from vflow_tfp import initialization
from vflow_tfp.bijectors import own_variables
from vflow_tfp.bijectors import shape_checks

__all__ = ['ActNorm']

tfb = tfp.bijectors

# Fewer values per parameter than this make the initial scale unreliable:
# the variance of a handful of samples can be near 0, and its inverse square
# root then a huge scale that pushes later inputs far into the tails.
_FEW_INIT_VALUES = 16


class ActNorm(own_variables.CreatesOwnVariables,
              shape_checks.BuiltForOneEventShape, tfb.Bijector):
    """Affine normalisation with data-dependent initialisation.

    Oriented like every layer of this package (forward = latent -> data):

    ```none
    inverse (data -> latent):  y = x * exp(log_scale) + shift
    forward (latent -> data):  x = (y - shift) * exp(-log_scale)
    inverse_log_det_jacobian = N * sum(log_scale)
    ```

    where `N` is the number of positions that share one parameter: `H * W` for
    the per-channel (Glow) variant on images, 1 for the per-element variant
    (official Flow++/VFlow `Norm`, SPEC §1.7, parameters of shape `[H, W, C]`)
    and for vectors. The scale is stored as a log-scale, so it cannot reach
    zero (the official code clamps a raw scale at 1e-10, where its gradient
    dies: SPEC §9.2).

    `initialize(x)` sets the parameters from a batch of data-side inputs so
    that `inverse(x)` has zero mean and unit variance per parameter (moments
    over the batch axes, and also H and W for the per-channel variant):
    `log_scale = -log(sqrt(var + 1e-8))`, `shift = -mean * exp(log_scale)`.
    It runs automatically on the first `inverse` inside
    `vflow_tfp.data_dependent_init()`.

    #### Example

    ```python
    norm = ActNorm(event_shape=[32, 32, 3], per_channel=False)
    norm.initialize(images)          # or run a model under data_dependent_init
    z = norm.inverse(images)         # zero mean, unit variance per element
    ```
    """

    def __init__(self,
                 event_shape,
                 per_channel=True,
                 log_scale=None,
                 shift=None,
                 validate_args=False,
                 dtype=tf.float32,
                 name=None):
        """Creates the layer.

        Args:
          event_shape: shape of one event, `[H, W, C]` for images or `[D]` for
            vectors; integers >= 1.
          per_channel: `True` for one scale and shift per channel (Glow);
            `False` for one per element (official Flow++/VFlow).
            Default value: `True`.
          log_scale: optional variable (or tensor) of the parameter shape to
            use instead of creating one. Default value: `None` (a new
            zero-initialised variable).
          shift: as `log_scale`, for the shift.
          validate_args: Python `bool`, passed to `tfb.Bijector`.
          dtype: float dtype of the parameters. Default value: `tf.float32`.
          name: name of the bijector. Default value: `'act_norm'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'act_norm') as name:
            event_shape = shape_checks.as_event_shape(event_shape)
            param_shape = event_shape[-1:] if per_channel else event_shape
            if log_scale is None:
                log_scale = tf.Variable(
                    tf.zeros(param_shape, dtype), name='log_scale')
            if shift is None:
                shift = tf.Variable(tf.zeros(param_shape, dtype), name='shift')
            for what, value in (('log_scale', log_scale), ('shift', shift)):
                shape_checks.check_parameter_shape(value, param_shape, what,
                                                   'ActNorm')
                shape_checks.check_parameter_dtype(value, dtype, what,
                                                   'ActNorm')
            # The created variables go into `parameters`: two ActNorms with the
            # same sizes but different variables must never compare equal,
            # or TFP's global cache would hand one the other's outputs.
            parameters.update(log_scale=log_scale, shift=shift)
            self._event_shape = event_shape
            self._per_channel = bool(per_channel)
            self._log_scale = tensor_util.convert_nonref_to_tensor(
                log_scale, dtype=dtype, name='log_scale')
            self._shift = tensor_util.convert_nonref_to_tensor(
                shift, dtype=dtype, name='shift')
            super().__init__(
                forward_min_event_ndims=len(event_shape),
                is_constant_jacobian=True,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def event_shape(self):
        return self._event_shape

    @property
    def per_channel(self):
        return self._per_channel

    @property
    def log_scale(self):
        return self._log_scale

    @property
    def shift(self):
        return self._shift

    def _positions_per_parameter(self):
        if self._per_channel and len(self._event_shape) > 1:
            size = 1
            for d in self._event_shape[:-1]:
                size *= d
            return size
        return 1

    def initialize(self, x):
        """Sets the parameters from the data-side batch `x` (see class doc)."""
        if not (isinstance(self._log_scale, tf.Variable)
                and isinstance(self._shift, tf.Variable)):
            raise TypeError('ActNorm.initialize needs variable parameters; '
                            'this layer was built from constant tensors.')
        x = tf.convert_to_tensor(x, dtype=self.dtype)
        self._check(x)
        event_ndims = len(self._event_shape)
        stat_ndims = x.shape.rank - event_ndims
        if self._per_channel:
            stat_ndims = x.shape.rank - 1
        axes = list(range(stat_ndims))
        values = x.shape[:stat_ndims].num_elements()
        if values is not None and values < _FEW_INIT_VALUES:
            logging.warning(
                '%s: initialised from %d value(s) per parameter; with so '
                'few the scales can be extreme (use a larger init batch).',
                self.name, values)
        mean, variance = tf.nn.moments(x, axes=axes)
        log_scale = -0.5 * tf.math.log(variance + 1e-8)
        # Values beyond about 1e19 overflow float32's squares: the variance
        # is then taken of the data divided by their largest deviation, so
        # that the scale does not come out 0 (elsewhere the same numbers).
        centred = x - mean
        largest = tf.reduce_max(tf.abs(centred), axis=axes)
        largest = tf.where(largest > 0, largest, tf.ones_like(largest))
        relative = tf.reduce_mean(
            tf.square(centred / largest), axis=axes)
        log_scale = tf.where(
            tf.math.is_finite(variance), log_scale,
            -tf.math.log(largest) - 0.5 * tf.math.log(relative))
        self._log_scale.assign(log_scale)
        self._shift.assign(-mean * tf.exp(log_scale))

    def _forward(self, y):
        self._check(y)
        return (y - self._shift) * tf.exp(-self._log_scale)

    def _inverse(self, x):
        self._check(x)
        if initialization.is_active():
            initialization.record_initialization(self.name)
            self.initialize(x)
        return x * tf.exp(self._log_scale) + self._shift

    def _inverse_log_det_jacobian(self, x):
        self._check(x)
        return (self._positions_per_parameter()
                * tf.reduce_sum(self._log_scale))

    def _forward_log_det_jacobian(self, y):
        return -self._inverse_log_det_jacobian(y)
