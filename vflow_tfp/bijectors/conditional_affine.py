"""ConditionalAffine: an elementwise affine map conditioned on a context."""

import tensorflow as tf

from vflow_tfp.bijectors import fused
from vflow_tfp.bijectors import shape_checks

__all__ = ['ConditionalAffine']


class ConditionalAffine(fused.FusedBijector):
    """Elementwise affine map with scale and shift computed from a context.

    Oriented like every layer of this package (forward = latent -> data), for
    a context `c` and a network `h(c) = (h_s, t)` (two values per element):

    ```none
    inverse (data -> latent):  y = x * exp(s) + t
    forward (latent -> data):  x = (y - t) * exp(-s)
    inverse_log_det_jacobian = sum over the event of s
    s = tanh(h_s)             (scale_fn='tanh')
    s = log sigmoid(h_s + 2)  (scale_fn='sigmoid')
    s = h_s                   (scale_fn='exp', unbounded)
    ```

    It is a conditional ActNorm: unlike a coupling, it moves and scales
    *every* element of the event, and the parameters see only the context,
    not the input. As the first layer of a conditional flow's sampling
    direction (`tfb.Invert` of a data -> latent chain whose first layer it
    is) it makes the base distribution conditional,
    `eps' = mu(c) + sigma(c) * eps`, so every output dimension depends on the
    condition even when the flow has a single coupling (the toy VFlow's
    one-step q(z|x), `vflow_tfp.models.builders.conditional_vector_flow`).

    The network is any callable `net(context, training=False)` returning
    `[N, prod(event_shape) * 2]` for a context `[N, C]`, element-major
    (index `e * 2 + slot`, slot 0 = `h_s`, slot 1 = `t`, as the couplings);
    pass a `tf.Module` (e.g. `vflow_tfp.nets.MLP(C, 2 * D)`, whose zero output
    layer makes a fresh layer the identity) so its variables are tracked. The
    parameters broadcast against the input's batch shape: a context `[N, C]`
    serves an input `[S, N] + event_shape` (S draws per example), and a
    context batch that cannot broadcast against the input's is an error.

    Conditioning: `context` and `training` are bijector kwargs (see
    `vflow_tfp.bijectors.chain_kwargs`). Since `(s, t)` do not depend on the
    input, `conditioning_parameters(context, training)` computes them once,
    and the maps accept them as the kwargs `log_scale` and `shift` in place
    of the context: two passes on one context (a sample and then its density,
    as the sticking-the-landing estimator takes) run the network once
    (`vflow_tfp.bijectors.precompute_conditioning` does it for a chain).

    #### Example

    ```python
    net = vflow_tfp.nets.MLP(2, 2 * 8)            # x [N, 2] -> 8 (s, t) pairs
    layer = ConditionalAffine(net, event_shape=[8])
    y = layer.inverse(z, context=x)               # z [N, 8]
    ildj = layer.inverse_log_det_jacobian(z, event_ndims=1, context=x)
    ```
    """

    #: Bijector kwargs this layer accepts (see `chain_kwargs`).
    conditioning_kwargs = ('context', 'training')

    _SCALE_FNS = ('tanh', 'sigmoid', 'exp')

    def __init__(self, network, event_shape, scale_fn='tanh',
                 validate_args=False, dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          network: callable `net(context, training=False)`, see class doc.
          event_shape: shape of one event, integers >= 1 (`[D]` for
            vectors).
          scale_fn: `'tanh'`, `'sigmoid'` or `'exp'`. Default value:
            `'tanh'`.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'conditional_affine'`.

        Raises:
          ValueError: for an unknown `scale_fn` or an event shape that is
            empty or has a size that is not an integer >= 1.
          TypeError: if `network` is not callable.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'conditional_affine') as name:
            if scale_fn not in self._SCALE_FNS:
                raise ValueError(f'scale_fn must be one of {self._SCALE_FNS}; '
                                 f'got {scale_fn!r}.')
            shape_checks.check_network(network, 'network')
            event_shape = shape_checks.as_event_shape(event_shape)
            self._network = network
            self._event_shape = event_shape
            self._scale_fn = scale_fn
            super().__init__(
                forward_min_event_ndims=len(event_shape),
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def network(self):
        return self._network

    @property
    def event_shape(self):
        return self._event_shape

    @property
    def scale_fn(self):
        return self._scale_fn

    def conditioning_parameters(self, context=None, training=False):
        """`{'log_scale': s, 'shift': t}` for a context, computed once.

        Each of shape `batch_shape + event_shape`, where the batch shape is
        that of the network's output; pass them to `forward`/`inverse` (and
        their log-dets) instead of `context` and `training`, for any input
        whose batch they broadcast against.

        Raises:
          ValueError: if the network returns another width than
            `2 * prod(event_shape)`.
        """
        if context is not None:
            context = tf.convert_to_tensor(context, dtype=self.dtype)
        out = self._network(context, training=training)
        size = 1
        for d in self._event_shape:
            size *= d
        if out.shape[-1] is not None and int(out.shape[-1]) != 2 * size:
            raise ValueError(
                f'{self.name}: the network returned {out.shape[-1]} values '
                f'per example; an event of shape {list(self._event_shape)} '
                f'needs 2 x {size} = {2 * size}.')
        params = tf.reshape(out, tf.concat(
            [tf.shape(out)[:-1], self._event_shape, [2]], axis=0))
        raw, shift = params[..., 0], params[..., 1]
        if self._scale_fn == 'tanh':
            log_scale = tf.tanh(raw)
        elif self._scale_fn == 'sigmoid':
            log_scale = tf.math.log_sigmoid(raw + 2.0)
        else:
            log_scale = raw
        return {'log_scale': log_scale, 'shift': shift}

    def _log_scale_and_shift(self, x, context, training, log_scale, shift):
        """`(s, t)`, each broadcast to the shape of `x`."""
        shape_checks.check_event_shape(x, self._event_shape,
                                       'ConditionalAffine')
        if (log_scale is None) != (shift is None):
            raise ValueError(f'{self.name}: pass both log_scale and shift '
                             '(from conditioning_parameters), or neither.')
        if log_scale is None:
            if context is not None:  # a list has no shape to describe
                context = tf.convert_to_tensor(context, dtype=self.dtype)
            params = self.conditioning_parameters(context, training)
            log_scale, shift = params['log_scale'], params['shift']
            described = ('the batch shape of the parameters the network '
                         'returned for a context of shape '
                         f'{None if context is None else context.shape}')
        else:
            log_scale = tf.convert_to_tensor(log_scale, dtype=self.dtype)
            shift = tf.convert_to_tensor(shift, dtype=self.dtype)
            described = ('the batch shape of the given log_scale '
                         f'{log_scale.shape}')
        # The parameters, not the context, carry the batch: a context may
        # have any layout the network accepts. A mismatch would otherwise
        # surface as an AddV2 shape error far from its cause.
        event_ndims = len(self._event_shape)
        if x.shape.rank is not None and log_scale.shape.rank is not None:
            shape_checks.check_broadcastable(
                log_scale.shape[:log_scale.shape.rank - event_ndims],
                x.shape[:x.shape.rank - event_ndims], described,
                f'that of an input of shape {x.shape}', self.name)
        zeros = tf.zeros_like(x)
        return log_scale + zeros, shift + zeros

    def _reduce_event(self, log_det):
        return tf.reduce_sum(log_det,
                             axis=list(range(-len(self._event_shape), 0)))

    def _inverse_and_log_det(self, x, context=None, training=False,
                             log_scale=None, shift=None):
        log_scale, shift = self._log_scale_and_shift(x, context, training,
                                                     log_scale, shift)
        return x * tf.exp(log_scale) + shift, self._reduce_event(log_scale)

    def _forward_and_log_det(self, y, context=None, training=False,
                             log_scale=None, shift=None):
        log_scale, shift = self._log_scale_and_shift(y, context, training,
                                                     log_scale, shift)
        return ((y - shift) * tf.exp(-log_scale),
                -self._reduce_event(log_scale))
