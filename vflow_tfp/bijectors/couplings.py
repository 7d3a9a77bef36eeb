"""Coupling layers: NICE (additive), RealNVP/Glow (affine), Flow++ (mixture).

A coupling splits its event with a `Partition` into a conditioning half `c`
and a transformed half `e`, runs a conditioner network on `c` (and an
optional context), and transforms `e` elementwise with the network's output:

```none
inverse (data -> latent):  (c, e) -> (c, T(e; theta)),  theta = net(c, context)
forward (latent -> data):  (c, e') -> (c, T^{-1}(e'; theta))
inverse_log_det_jacobian = sum over e of log T'(e; theta)
```

`parity=0` conditions on the partition's first half and transforms the
second (the official code's coupling after an even number of `TupleFlip`s);
`parity=1` swaps the roles. Each call runs the conditioner once and returns
the map and its log-det together (`FusedBijector`).

The conditioner is any callable `net(c, context=None, training=False)`
returning, for `c` of shape `[N] + half_shape`, a tensor of shape
`[N] + half_shape[:-1] + [C_e * P]`: `P = params_per_element` values per
transformed element, channel-major (index `c * P + slot`, SPEC §1.5). Pass a
`tf.Module` (e.g. `vflow_tfp.nets.ConvAttnNet`) so its variables are tracked.

Conditioning: `context` and `training` are bijector kwargs. Inside a
`tfb.Chain`, build them with `vflow_tfp.bijectors.chain_kwargs`.
"""

import math

import tensorflow as tf

from vflow_tfp.bijectors import fused
from vflow_tfp.bijectors import mixture_logistic
from vflow_tfp.bijectors import shape_checks

__all__ = [
    'Coupling',
    'AdditiveCoupling',
    'AffineCoupling',
    'MixLogisticCoupling',
]


def _logaddexp(constant, x):
    """log(exp(constant) + exp(x)) for a Python float `constant`, stably."""
    big = tf.maximum(x, constant)
    return big + tf.math.log1p(tf.exp(-tf.abs(x - constant)))


def _fold_batch(x, event_ndims):
    """Reshapes `x` to one batch axis followed by its event axes."""
    event = x.shape[-event_ndims:]
    if not event.is_fully_defined():
        raise ValueError('Event dimensions must be static; got shape '
                         f'{x.shape}.')
    if x.shape.rank == event_ndims + 1:
        return x
    return tf.reshape(x, [-1] + event.as_list())


def _broadcast_batch(tensor, like, event_ndims):
    """`tensor` broadcast to the sample/batch shape of `like`.

    Keeps `tensor`'s own event axes; a context of shape `[3, c]` for `x`
    of shape `[2, 3, d]` (two draws per example) becomes `[2, 3, c]`, as in
    TFP's conditional bijectors.
    """
    batch = like.shape[:-event_ndims]
    if tensor.shape[:-event_ndims] == batch and batch.is_fully_defined():
        return tensor
    shape = tf.concat([tf.shape(like)[:-event_ndims],
                       tf.shape(tensor)[-event_ndims:]], axis=0)
    return tf.broadcast_to(tensor, shape)


def _joint_batch(x, context, event_ndims):
    """`x` broadcast to its batch shape broadcast with `context`'s.

    One point scored under several contexts (`x` `[d]`, context `[5, c]`)
    gives five results, as TFP's conditional bijectors give.
    """
    batch = tf.broadcast_static_shape(x.shape[:-event_ndims],
                                      context.shape[:-event_ndims])
    if batch == x.shape[:-event_ndims] and batch.is_fully_defined():
        return x
    shape = tf.broadcast_dynamic_shape(tf.shape(x)[:-event_ndims],
                                       tf.shape(context)[:-event_ndims])
    return tf.broadcast_to(x, tf.concat(
        [shape, tf.shape(x)[-event_ndims:]], axis=0))


class Coupling(fused.FusedBijector):
    """Base class of the couplings; subclasses define the elementwise map.

    Subclasses implement `params_per_element` and

    * `_transform(e, params) -> (y, log_det)`: the data -> latent map of the
      transformed half and its elementwise log-derivative;
    * `_untransform(y, params) -> (e, log_det)`: its inverse and the
      elementwise log-derivative of that inverse;

    with `params` of shape `e.shape + [P]`.
    """

    #: Bijector kwargs a coupling accepts (see `chain_kwargs`).
    conditioning_kwargs = ('context', 'training')

    def _init_coupling(self, conditioner, partition, parity, validate_args,
                       dtype, parameters, name):
        shape_checks.check_partition(partition)
        if parity not in (0, 1):
            raise ValueError(f'parity must be 0 or 1; got {parity!r}.')
        shape_checks.check_network(conditioner, 'conditioner')
        self._conditioner = conditioner
        self._partition = partition
        self._parity = int(parity)
        fused.FusedBijector.__init__(
            self,
            forward_min_event_ndims=partition.event_ndims,
            validate_args=validate_args,
            dtype=dtype,
            parameters=parameters,
            name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @property
    def conditioner(self):
        return self._conditioner

    @property
    def partition(self):
        return self._partition

    @property
    def parity(self):
        return self._parity

    @property
    def params_per_element(self):
        raise NotImplementedError

    def _transform(self, e, params):
        raise NotImplementedError

    def _untransform(self, y, params):
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------

    def _halves(self, x):
        try:
            a, b = self._partition.split(x)
        except ValueError as e:  # named by the layer, not only the partition
            raise ValueError(f'{self.name}: {e}') from e
        return (a, b) if self._parity == 0 else (b, a)

    def _join(self, cond, trans):
        if self._parity == 0:
            return self._partition.merge(cond, trans)
        return self._partition.merge(trans, cond)

    def _with_context(self, x, context):
        """`(x, context)`: both of the batch shape the two broadcast to."""
        if context is None:
            return x, None
        event_ndims = self._partition.event_ndims
        context = tf.convert_to_tensor(context, dtype=x.dtype)
        if context.shape.rank is None or x.shape.rank is None:
            return x, _broadcast_batch(context, x, event_ndims)
        # Statically, before `broadcast_to` fails with a bare "Incompatible
        # shapes" at run time.
        shape_checks.check_broadcastable(
            context.shape[:max(context.shape.rank - event_ndims, 0)],
            x.shape[:x.shape.rank - event_ndims],
            f'the batch shape of a context of shape {context.shape}',
            f'that of an input of shape {x.shape}', self.name)
        x = _joint_batch(x, context, event_ndims)
        return x, _broadcast_batch(context, x, event_ndims)

    def _params(self, cond, trans, context, training):
        """Runs the conditioner once; returns params of shape e.shape + [P].

        `context`, if any, has the batch shape of `cond` (`_with_context`).
        """
        event_ndims = self._partition.event_ndims
        trans_channels = int(trans.shape[-1])
        num_params = self.params_per_element
        # Networks take one batch axis: fold any sample/batch axes into it.
        flat_cond = _fold_batch(cond, event_ndims)
        flat_context = context
        if context is not None:
            flat_context = _fold_batch(context, event_ndims)
        try:
            out = self._conditioner(flat_cond, context=flat_context,
                                    training=training)
        except TypeError as e:
            if 'context' not in str(e):
                raise
            # E.g. a Keras model, whose call takes no `context`.
            raise TypeError(
                f'{self.name}: its conditioner must take net(c, '
                f'context=None, training=False) ({e}); wrap a network that '
                'takes only c in a tf.Module whose __call__ does.') from e
        except (ValueError, tf.errors.InvalidArgumentError) as e:
            # E.g. a network built for another shape: Keras layers refuse it
            # with a ValueError; a plain `tf.matmul` fails in its kernel when
            # run eagerly.
            reason = e.message if isinstance(e, tf.errors.OpError) else e
            raise ValueError(
                f'{self.name}: its conditioner refused the conditioning half '
                f'of shape {flat_cond.shape}: {reason}') from e
        expected = trans_channels * num_params
        if out.shape[-1] is not None and int(out.shape[-1]) != expected:
            raise ValueError(
                f'{self.name}: the conditioner returned {out.shape[-1]} '
                f'channels; this coupling needs {trans_channels} transformed '
                f'channels x {num_params} parameters = {expected}.')
        out = tf.reshape(
            out, tf.concat([tf.shape(trans)[:-1],
                            [trans_channels, num_params]], axis=0))
        return tf.ensure_shape(out, trans.shape.concatenate([num_params]))

    def _reduce_event(self, log_det):
        axes = list(range(-self._partition.event_ndims, 0))
        return tf.reduce_sum(log_det, axis=axes)

    def _inverse_and_log_det(self, x, context=None, training=False):
        x, context = self._with_context(x, context)
        cond, trans = self._halves(x)
        params = self._params(cond, trans, context, training)
        y, log_det = self._transform(trans, params)
        return self._join(cond, y), self._reduce_event(log_det)

    def _forward_and_log_det(self, y, context=None, training=False):
        y, context = self._with_context(y, context)
        cond, trans = self._halves(y)
        params = self._params(cond, trans, context, training)
        x, log_det = self._untransform(trans, params)
        return self._join(cond, x), self._reduce_event(log_det)


class AdditiveCoupling(Coupling):
    """NICE's additive coupling: a volume-preserving shift.

    ```none
    inverse (data -> latent):  y_e = x_e + t(x_c)
    forward (latent -> data):  x_e = y_e - t(y_c)
    log_det_jacobian = 0
    ```

    One conditioner output per transformed element (`params_per_element = 1`).
    """

    def __init__(self, conditioner, partition, parity=0, validate_args=False,
                 dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          conditioner: callable `net(c, context=None, training=False)`; see
            the module docstring.
          partition: a `Partition` (`ColumnSplit`, `ChannelSplit`, ...).
          parity: 0 transforms the partition's second half, 1 the first.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'additive_coupling'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'additive_coupling') as name:
            self._init_coupling(conditioner, partition, parity, validate_args,
                                dtype, parameters, name)

    @property
    def params_per_element(self):
        return 1

    def _transform(self, e, params):
        return e + tf.squeeze(params, -1), tf.zeros_like(e)

    def _untransform(self, y, params):
        return y - tf.squeeze(params, -1), tf.zeros_like(y)


class AffineCoupling(Coupling):
    """RealNVP/Glow affine coupling with a bounded log-scale.

    ```none
    inverse (data -> latent):  y_e = x_e exp(s) + t
    forward (latent -> data):  x_e = (y_e - t) exp(-s)
    inverse_log_det_jacobian = sum_e s
    s = tanh(h_s)             (scale_fn='tanh', official Flow++/VFlow)
    s = log sigmoid(h_s + 2)  (scale_fn='sigmoid', Glow)
    s = h_s                   (scale_fn='exp', VFlow's f_affine)
    ```

    `(h_s, t)` are the conditioner's two outputs per element (slots 0 and 1).
    `'tanh'` and `'sigmoid'` keep `exp(s)` bounded (`[e^-1, e]`, resp.
    `(0, 1)`), so a badly trained network cannot blow the scale up; `'exp'`
    is unbounded, as the paper's f_affine `y = mu(z) + exp(s(z)) x` (whose
    official code adds 1e-6 to the scale but leaves it out of the log-det,
    SPEC §9.13; here the log-det is exact).
    """

    _SCALE_FNS = ('tanh', 'sigmoid', 'exp')

    def __init__(self, conditioner, partition, parity=0, scale_fn='tanh',
                 validate_args=False, dtype=tf.float32, name=None):
        """Creates the layer.

        Args:
          conditioner: callable `net(c, context=None, training=False)`.
          partition: a `Partition`.
          parity: 0 transforms the partition's second half, 1 the first.
          scale_fn: `'tanh'` (official), `'sigmoid'` (Glow) or `'exp'`
            (unbounded). Default value: `'tanh'`.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'affine_coupling'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'affine_coupling') as name:
            if scale_fn not in self._SCALE_FNS:
                raise ValueError(f'scale_fn must be one of {self._SCALE_FNS}; '
                                 f'got {scale_fn!r}.')
            self._scale_fn = scale_fn
            self._init_coupling(conditioner, partition, parity, validate_args,
                                dtype, parameters, name)

    @property
    def params_per_element(self):
        return 2

    @property
    def scale_fn(self):
        return self._scale_fn

    def _log_scale_and_shift(self, params):
        raw, shift = tf.unstack(params, axis=-1)
        if self._scale_fn == 'tanh':
            log_scale = tf.tanh(raw)
        elif self._scale_fn == 'sigmoid':
            log_scale = tf.math.log_sigmoid(raw + 2.0)
        else:
            log_scale = raw
        return log_scale, shift

    def _transform(self, e, params):
        log_scale, shift = self._log_scale_and_shift(params)
        return e * tf.exp(log_scale) + shift, log_scale

    def _untransform(self, y, params):
        log_scale, shift = self._log_scale_and_shift(params)
        return (y - shift) * tf.exp(-log_scale), -log_scale


class MixLogisticCoupling(Coupling):
    """Flow++'s mixture-of-logistics coupling, with VFlow's stable variant.

    With `F` the CDF of a K-component logistic mixture with per-element
    weights `pi`, means `mu` and scales `exp(l)` (`l >= min_log_scale`), and
    `s = tanh(h_s)`:

    ```none
    variant='flowpp':  y_e = logit(F(x_e)) exp(s) + t
    variant='vflow':   y_e = logit(alpha + (1 - 2 alpha) F(x_e)) exp(s) + t,
                       alpha = 0.05
    inverse_log_det_jacobian
        = sum_e [log f(x_e) - log v - log(1 - v) + log(1 - 2 alpha) + s]
    ```

    with `v` the argument of the logit (`alpha = 0` for `'flowpp'`). This is
    the data -> latent (`inverse`) direction, in closed form. The `forward`
    direction inverts the mixture CDF numerically (`inverse_logit_cdf`:
    exact per-element bracket, Chandrupatla's method, implicit gradients).

    Conditioner slots per element (`params_per_element = 2 + 3K`, SPEC §1.5):
    0 = `h_s`, 1 = `t`, `2..K+1` = mixture logits, `K+2..2K+1` = means,
    `2K+2..3K+1` = log-scales.

    All logs are taken in log space, so the `'flowpp'` variant stays finite
    where the official code's `logit(F)` became infinite (SPEC §9.5). The
    `'vflow'` variant bounds the logit to `±ln 19`, so each coupling's image is
    the interval `t ± ln(19) exp(s)`; `forward` clamps a latent value outside
    it to just inside, as the official code clips `F` to [0, 1] (SPEC §9.4).
    The density is then sub-normalised (the latents outside the image carry
    the missing mass), and `forward` is not injective there: at a clamped
    element its log-det is that of the unclamped map, so
    `experimental_sample_and_log_prob` of a distribution that samples
    through `forward` differs from `log_prob(sample)` for such samples.
    Score samples with `log_prob`. (VFlow's q and r sample through the
    closed-form direction, `tfb.Invert` of their flows, and are exact.)
    A clamped element lies some 16 logistic scales into the tail, so a
    sigmoid after it (an `ImageLogit` in front of the data) can round it
    onto an end of its range in float32, where `log_prob` of the sample is
    not finite; `VFlow.sample` rounds such pixels into the data range, and
    the `'flowpp'` variant has no clamp.
    The same rounding limits the `'vflow'` variant's data round trip:
    beyond about 17 component scales from every component (37 in float64),
    `alpha + (1 - 2 alpha) F` rounds to `alpha` or `1 - alpha`, so
    `inverse` maps such data to (nearly) one latent value and
    `forward(inverse(x))` does not give `x` back. `log_prob` is still right
    there (the log-det is computed in log space); the `'flowpp'` variant
    round-trips (within 3e-5 at 40 scales in float32).
    """

    _VARIANTS = {'flowpp': 0.0, 'vflow': 0.05}

    def __init__(self,
                 conditioner,
                 partition,
                 num_components,
                 parity=0,
                 variant='flowpp',
                 min_log_scale=-7.0,
                 max_iterations=100,
                 validate_args=False,
                 dtype=tf.float32,
                 name=None):
        """Creates the layer.

        Args:
          conditioner: callable `net(c, context=None, training=False)`.
          partition: a `Partition`.
          num_components: K, the number of logistic components (32 in the
            papers' CIFAR models).
          parity: 0 transforms the partition's second half, 1 the first.
          variant: `'flowpp'` (logit of the mixture CDF) or `'vflow'`
            (logit of `0.05 + 0.9 F`). Default value: `'flowpp'`.
          min_log_scale: lower clamp of the component log-scales.
            Default value: `-7.`.
          max_iterations: cap on root-finder iterations in `forward`, an
            integer >= 1. Default value: `100`.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'mix_logistic_coupling'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'mix_logistic_coupling') as name:
            if variant not in self._VARIANTS:
                raise ValueError(f'variant must be one of '
                                 f'{sorted(self._VARIANTS)}; got {variant!r}.')
            self._num_components = shape_checks.as_size(num_components,
                                                        'num_components')
            self._variant = variant
            self._alpha = self._VARIANTS[variant]
            self._min_log_scale = float(min_log_scale)
            self._max_iterations = shape_checks.as_size(max_iterations,
                                                        'max_iterations')
            self._init_coupling(conditioner, partition, parity, validate_args,
                                dtype, parameters, name)

    @classmethod
    def num_params(cls, num_components):
        """Conditioner outputs per transformed element: `2 + 3K`."""
        return 2 + 3 * shape_checks.as_size(num_components, 'num_components')

    @property
    def params_per_element(self):
        return self.num_params(self._num_components)

    @property
    def num_components(self):
        return self._num_components

    @property
    def variant(self):
        return self._variant

    def _unpack(self, params):
        k = self._num_components
        raw_scale, shift, logits, means, log_scales = tf.split(
            params, [1, 1, k, k, k], axis=-1)
        log_scale = tf.tanh(tf.squeeze(raw_scale, -1))
        shift = tf.squeeze(shift, -1)
        log_scales = tf.maximum(log_scales, self._min_log_scale)
        return log_scale, shift, logits, means, log_scales

    def _squash_logs(self, terms):
        """log v and log(1 - v) for v = alpha + (1 - 2 alpha) F."""
        if self._alpha == 0.0:
            return terms.log_cdf, terms.log_survival
        log_alpha = math.log(self._alpha)
        log_width = math.log1p(-2.0 * self._alpha)
        log_v = _logaddexp(log_alpha, log_width + terms.log_cdf)
        log_1mv = _logaddexp(log_alpha, log_width + terms.log_survival)
        return log_v, log_1mv

    def _transform(self, e, params):
        log_scale, shift, logits, means, log_scales = self._unpack(params)
        terms = mixture_logistic.mixture_logistic_terms(
            e, logits, means, log_scales)
        log_v, log_1mv = self._squash_logs(terms)
        y = (log_v - log_1mv) * tf.exp(log_scale) + shift
        log_det = (terms.log_pdf - log_v - log_1mv
                   + math.log1p(-2.0 * self._alpha) + log_scale)
        return y, log_det

    def _target_logit(self, u):
        """logit of the mixture CDF value that the latent logit `u` encodes."""
        if self._alpha == 0.0:
            return u
        alpha = self._alpha
        eps = tf.experimental.numpy.finfo(u.dtype.as_numpy_dtype).eps
        # Outside the coupling's image there is no preimage: clamp just inside
        # it (F in [eps, 1 - eps]), the analogue of the official clip to [0, 1]
        # but returning a finite tail value instead of a bracket edge.
        margin = (1.0 - 2.0 * alpha) * eps
        p = tf.clip_by_value(tf.sigmoid(u), alpha + margin,
                             1.0 - alpha - margin)
        return tf.math.log(p - alpha) - tf.math.log((1.0 - alpha) - p)

    def _solve(self, y, log_scale, shift, logits, means, log_scales):
        """The numerical inverse: `(x, u, iterations per element)`."""
        u = (y - shift) * tf.exp(-log_scale)
        x, iterations = mixture_logistic.inverse_logit_cdf(
            self._target_logit(u), logits, means, log_scales,
            max_iterations=self._max_iterations)
        return x, u, iterations

    def inverse_iterations(self, y, context=None):
        """Root-finder iterations each element of `forward(y)` takes.

        A diagnostic of the numerical inverse (the benchmarks report it):
        an int32 tensor of the transformed half's shape.
        """
        # As `forward` takes it: any tensor-like context, broadcast.
        y, context = self._with_context(y, context)
        cond, trans = self._halves(y)
        params = self._params(cond, trans, context, False)
        return self._solve(trans, *self._unpack(params))[2]

    def _untransform(self, y, params):
        log_scale, shift, logits, means, log_scales = self._unpack(params)
        x, u, _ = self._solve(y, log_scale, shift, logits, means, log_scales)
        # Chain rule through u -> F -> x, each factor in log space:
        # -s, log sigmoid'(u) - log(1 - 2 alpha), -log f(x).
        terms = mixture_logistic.mixture_logistic_terms(
            x, logits, means, log_scales)
        log_det = (-log_scale - tf.nn.softplus(u) - tf.nn.softplus(-u)
                   - math.log1p(-2.0 * self._alpha) - terms.log_pdf)
        return x, log_det
