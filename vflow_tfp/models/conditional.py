"""Conditional distributions by flows: VFlow's q(z|x), the dequantiser r(u|x).

Both are a standard normal pushed through a flow whose layers see a context
computed from the conditioning tensor (SPEC §1.12, §2). Their closed-form
direction is the sampling direction, so sampling and its log-density cost one
pass and no root finding: the bijector's `forward` maps noise to samples.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors import chain as chain_lib

from vflow_tfp import bijectors as vb
from vflow_tfp.bijectors import shape_checks
from vflow_tfp.models import seeds as seeds_lib

__all__ = ['ConditionalFlow', 'UniformDequantizer']

tfb = tfp.bijectors
tfd = tfp.distributions


class ConditionalFlow(tf.Module):
    """A density over `event_shape` conditioned on a tensor `c`.

    ```none
    eps ~ N(0, I),   y = f(eps; h(c))          (f = bijector.forward)
    log p(y | c) = log N(eps; 0, I) - log |det d f / d eps|
    ```

    `h = context_net` (or the identity when `None`) maps the condition to the
    context that `f`'s conditional layers receive as bijector kwargs.
    `distribution` is the `tfd.TransformedDistribution` itself; condition it
    with `conditioning_kwargs(c)`:

    ```python
    kw = cond_flow.conditioning_kwargs(c, training=True)
    y, log_p = cond_flow.distribution.experimental_sample_and_log_prob(
        n, seed=seed, bijector_kwargs=kw)
    ```

    To build one from a flow whose `inverse` is its closed-form direction (all
    flows of this package), pass `tfb.Invert(flow)`, followed by any squash:
    `tfb.Chain([vb.Sigmoid(), tfb.Invert(flow)])` for VFlow's q and Flow++'s r.
    """

    def __init__(self, bijector, event_shape, context_net=None, kwargs_fn=None,
                 dtype=tf.float32, name=None):
        """Creates the distribution.

        Args:
          bijector: a `tfb.Bijector` mapping noise of `event_shape` to
            samples (any TFP bijector; conditional layers take kwargs).
          event_shape: event shape of the noise and the samples.
          context_net: optional callable `net(c, training=...) -> context`.
          kwargs_fn: optional `fn(context, training) -> bijector kwargs`.
            Default: `vflow_tfp.bijectors.chain_kwargs(bijector,
            context=context, training=training)`; pass e.g.
            `lambda c, t: {'conditional_input': c}` for a conditional
            `tfb.MaskedAutoregressiveFlow`.
          dtype: float dtype. Default value: `tf.float32`.
          name: module name.
        """
        if context_net is not None:
            shape_checks.check_network(context_net, 'context_net')
        super().__init__(name=name or 'conditional_flow')
        self.bijector = bijector
        self.context_net = context_net
        self._kwargs_fn = kwargs_fn
        self._event_shape = tuple(int(d) for d in event_shape)
        zero = tf.constant(0.0, dtype)
        self.distribution = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(zero, tf.ones_like(zero)),
                       self._event_shape),
            bijector)

    @property
    def event_shape(self):
        return self._event_shape

    def conditioning_kwargs(self, condition, training=False):
        """Bijector kwargs that condition `distribution` on `condition`.

        Layers whose parameters depend on the context alone get those
        parameters (`vflow_tfp.bijectors.precompute_conditioning`), so
        passes that share the kwargs run their networks once.
        """
        context = condition
        if self.context_net is not None:
            context = self.context_net(condition, training=training)
        if self._kwargs_fn is not None:
            kwargs = self._kwargs_fn(context, training)
        else:
            kwargs = vb.chain_kwargs(self.bijector, context=context,
                                     training=training)
        return vb.precompute_conditioning(self.bijector, kwargs)

    def sample_and_log_prob(self, condition, seed, training=False,
                            stop_score=False, draws_per_row=1):
        """`draws_per_row` samples per row of `condition`; their log-density.

        Row `i` of `condition` conditions rows `i * k .. (i + 1) * k - 1` of
        the result (`k = draws_per_row`), as if `condition` had been
        `tf.repeat(condition, k, axis=0)`, but the context network and the
        layers whose parameters depend on the context alone run once per
        row of `condition`, not once per draw.

        With `stop_score`, `log_p` keeps its value but its gradient is only
        the path derivative `d log p(y | c) / dy * dy/dtheta` through the
        sample: the score `d log p(y | c) / d(theta, c)` at `y` held fixed,
        whose expectation over `y` is zero, is removed. In a variational
        bound this is the "sticking the landing" estimator (Roeder et al.,
        2017): unbiased, and its variance vanishes as the distribution
        approaches the posterior it fits. It costs one more pass through the
        flow in its density direction (`bijector.inverse`, numerical root
        finding for mixture-of-logistics couplings), so it suits flows whose
        both directions are closed-form, such as affine couplings. The second
        pass must compute the same function as the first: with dropout active
        it would draw other masks and the removed term would no longer have
        mean zero, so use it with deterministic networks.

        Args:
          condition: tensor with a leading batch axis of size N.
          seed: stateless seed, int32 `[2]` (one draw for the batch) or
            per-example `[M, 2]` with `N` a multiple of `M`: block `i` of
            `N / M` consecutive rows draws its noise from `seed[i]` alone
            (`vflow_tfp.models.seeds.sample_rows`).
          training: enables dropout in the networks.
          stop_score: remove the score term from the gradient of `log_p`.
          draws_per_row: `k`, a Python int >= 1. With per-example seeds
            `[M, 2]`, `N k` must be a multiple of `M`. Default value: 1.

        Returns:
          `(y, log_p)` of shapes `[N k] + event_shape` and `[N k]`.
        """
        draws_per_row = shape_checks.as_size(draws_per_row, 'draws_per_row')
        kwargs = repeat_rows(self.conditioning_kwargs(condition, training),
                             draws_per_row)
        seed = seeds_lib.as_seed(seed)
        base = self.distribution.distribution
        num = tf.shape(condition)[0] * draws_per_row
        ndims = len(self._event_shape)
        # With a score to remove, the bijector is applied in two stages and
        # the score is removed at the fixed output s of its parameterised
        # part rather than at y = squash(s): the squash has no parameters and
        # no condition, so both scores are equal, but a sigmoid can round y
        # onto the edge of its range (1.0 in float32 from s > 17), where the
        # density pass of y is infinite and the whole gradient turns NaN.
        squash, flow, flow_kwargs = (
            self._split_squash(kwargs) if stop_score
            else ([], self.distribution.bijector, kwargs))
        if squash or seeds_lib.is_per_example(seed):
            # What `experimental_sample_and_log_prob` does, with the base
            # noise drawn row by row for per-example seeds.
            eps = (seeds_lib.sample_rows(base, seed, num)
                   if seeds_lib.is_per_example(seed)
                   else base.sample(num, seed=seed))
            s = flow.forward(eps, **flow_kwargs)
            log_p = base.log_prob(eps) - flow.forward_log_det_jacobian(
                eps, event_ndims=ndims, **flow_kwargs)
        else:
            s, log_p = self.distribution.experimental_sample_and_log_prob(
                num, seed=seed, bijector_kwargs=kwargs)
        y = s
        for layer in reversed(squash):
            log_p -= layer.forward_log_det_jacobian(y, event_ndims=ndims)
            y = layer.forward(y)
        if stop_score:
            # A new tensor, so the bijector cache cannot hand back the noise
            # and the inverse pass really sees the parameters at a fixed s.
            s_held = tf.stop_gradient(s)
            held = base.log_prob(flow.inverse(s_held, **flow_kwargs)) + (
                flow.inverse_log_det_jacobian(s_held, event_ndims=ndims,
                                              **flow_kwargs))
            log_p = log_p - (held - tf.stop_gradient(held))
        return y, log_p

    def _split_squash(self, kwargs):
        """`(squash, flow, flow_kwargs)`: the bijector as `squash o flow`.

        `squash` is the list of the bijector's outermost chain layers that
        hold no variables and take no kwargs (VFlow's final sigmoid),
        outermost first; `flow` is the rest, with its kwargs. Without such
        layers: `([], bijector, kwargs)`.
        """
        bijector = self.distribution.bijector
        # pylint: disable-next=protected-access
        is_chain = isinstance(bijector, chain_lib._Chain)
        layers = list(bijector.bijectors) if is_chain else [bijector]
        count = 0
        while (count < len(layers) - 1
               and not layers[count].trainable_variables
               and not vb.chain_kwargs(layers[count], context=0, training=0)
               and not kwargs.get(layers[count].name)):
            count += 1
        if not count:
            return [], bijector, kwargs
        rest = layers[count:]
        if len(rest) == 1:
            return layers[:count], rest[0], kwargs.get(rest[0].name, {})
        names = {b.name for b in rest}
        return layers[:count], tfb.Chain(rest), {
            k: v for k, v in kwargs.items() if k in names}


def repeat_rows(structure, repeats):
    """`tf.repeat(t, repeats, axis=0)` for every tensor `t` of `structure`.

    For conditioning kwargs: they hold tensors with one row per row of the
    condition (contexts, context-only parameters), which are repeated row by
    row, and scalars (`training`) and Python values, which are passed on.
    """
    if repeats == 1:
        return structure

    def repeat(value):
        if isinstance(value, np.ndarray) and value.ndim:
            # A condition given as an array, the context of a flow without
            # a context network: kept an array, which the layer converts
            # to its own dtype.
            return np.repeat(value, repeats, axis=0)
        if tf.is_tensor(value) and value.shape.rank != 0:
            return tf.repeat(value, repeats, axis=0)
        return value

    return tf.nest.map_structure(repeat, structure)


class UniformDequantizer(tf.Module):
    """Uniform dequantisation noise u ~ U(0, 1)^D, log r(u|x) = 0.

    `sample_and_log_prob(condition, seed, draws_per_row=1)` takes its
    arguments as `ConditionalFlow`'s: the seed `[2]` or per-example
    `[M, 2]`, and `draws_per_row` draws per row of `condition`.
    """

    def __init__(self, event_shape, dtype=tf.float32, name=None):
        super().__init__(name=name or 'uniform_dequantizer')
        self._event_shape = tuple(int(d) for d in event_shape)
        zero = tf.constant(0.0, dtype)
        self.distribution = tfd.Sample(tfd.Uniform(zero, tf.ones_like(zero)),
                                       self._event_shape)

    @property
    def event_shape(self):
        return self._event_shape

    def sample_and_log_prob(self, condition, seed, training=False,
                            stop_score=False, draws_per_row=1):
        del training, stop_score  # No parameters: nothing to stop.
        num = tf.shape(condition)[0] * shape_checks.as_size(draws_per_row,
                                                            'draws_per_row')
        seed = seeds_lib.as_seed(seed)
        if seeds_lib.is_per_example(seed):
            u = seeds_lib.sample_rows(self.distribution, seed, num)
        else:
            u = self.distribution.sample(num, seed=seed)
        return u, tf.zeros([num], self.distribution.dtype)
