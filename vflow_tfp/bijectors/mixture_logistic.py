"""Mixture-of-logistics CDF, its logit, density and inverse (SPEC §1.6).

Everything is computed in log space. With the logistic component CDF
`sigmoid(z)`, `log sigmoid(z) = -softplus(-z)` and
`log(1 - sigmoid(z)) = -softplus(z)` are finite for every float, so

```none
log F(x)       = logsumexp_k [log pi_k - softplus(-z_k)]
log (1 - F(x)) = logsumexp_k [log pi_k - softplus(z_k)]
log f(x)       = logsumexp_k [log pi_k - softplus(z_k) - softplus(-z_k) - l_k]
z_k = (x - mu_k) exp(-l_k)
```

and `logit F = log F - log(1 - F)` never becomes infinite: the official code
computed `1 - F` as `1 - exp(log F)`, which is 0 in float32 once every `z_k`
exceeds about 17 (SPEC §1.6, §9.5).

The inverse solves `logit F(x) = tau` per element. Because every component
CDF is increasing, `x_lo = min_k (mu_k + s_k tau)` and
`x_hi = max_k (mu_k + s_k tau)` bracket the root exactly (at `x_lo` every
component CDF is `<= sigmoid(tau)`, at `x_hi` every one is `>=`), however far
in the tails `tau` lies (in exact arithmetic: when one component carries
nearly all the weight, the root sits on an end, where rounding can give
`logit F - tau` either sign, so the ends are checked before the search is
trusted). Chandrupatla's method then converges per element.
"""

import collections

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    'MixtureLogisticTerms',
    'mixture_logistic_terms',
    'inverse_logit_cdf',
]

MixtureLogisticTerms = collections.namedtuple(
    'MixtureLogisticTerms', ['log_cdf', 'log_survival', 'log_pdf'])


def mixture_logistic_terms(x, logits, means, log_scales):
    """log F(x), log(1 - F(x)) and log f(x) of a logistic mixture.

    Args:
      x: float tensor of shape `S`.
      logits: unnormalised mixture log-weights, shape `S + [K]`.
      means: component locations, shape `S + [K]`.
      log_scales: component log-scales, shape `S + [K]` (clamp them from
        below before calling if they are network outputs).

    Returns:
      `MixtureLogisticTerms(log_cdf, log_survival, log_pdf)`, each of shape
      `S`.
    """
    return _terms(x, tf.nn.log_softmax(logits, axis=-1), means, log_scales,
                  tf.exp(-log_scales))


def _terms(x, log_weights, means, log_scales, inverse_scales, pdf=True):
    """`mixture_logistic_terms` from the normalised log-weights and the
    inverse scales (`log_pdf` left `None` unless `pdf`)."""
    return MixtureLogisticTerms(*(
        None if t is None else tf.reduce_logsumexp(t, axis=-1)
        for t in _component_terms(x, log_weights, means, log_scales,
                                  inverse_scales, pdf)))


def _component_terms(x, log_weights, means, log_scales, inverse_scales,
                     pdf=True):
    """The terms of each component, shape `S + [K]`: `log pi_k + log
    sigmoid(z_k)`, `log pi_k + log sigmoid(-z_k)` and `log pi_k + log
    f_k(x)` (`None` unless `pdf`), whose log-sum-exps are the mixture's."""
    z = (x[..., tf.newaxis] - means) * inverse_scales
    softplus_z = tf.nn.softplus(z)
    softplus_neg_z = tf.nn.softplus(-z)
    log_pdf = None
    if pdf:
        log_pdf = log_weights - softplus_z - softplus_neg_z - log_scales
    return MixtureLogisticTerms(log_weights - softplus_neg_z,
                                log_weights - softplus_z, log_pdf)


def inverse_logit_cdf(tau, logits, means, log_scales, max_iterations=100):
    """Solves `logit F(x) = tau` elementwise for `x`.

    The root is found without gradient tracking by Chandrupatla's method on
    the exact bracket of the module docstring, stopping per element when the
    bracket is a few ulps (of the bracket ends) wide or the residual is at
    rounding level, then refined by a second pass on the narrowed bracket
    down to a few ulps of the root itself (for a root nearer 0 than the
    narrowest component's scale `s_min`, a few ulps of `min(s_min, 1)`). An
    end of the bracket where `logit F - tau` already has the sign of the
    root's side (rounding, at a root on that end) is taken as the root
    without a search. The returned value then carries
    the implicit-function gradients of `F(x*) = sigmoid(tau)`, exactly as if
    the solve were differentiated, at no extra cost:

    ```none
    dx/dtau = F (1 - F) / f,        dx/dmu_k = r_k,
    dx/dlog s_k = r_k (x* - mu_k),  dx/dlogit_k = -pi_k (sigmoid(z_k) - F) / f,
    r_k = pi_k f_k(x*) / f(x*),     z_k = (x* - mu_k) / s_k,
    ```

    with `f` the mixture density and `r` the components' responsibilities,
    computed in log space so that they stay exact where `f` is tiny. Where
    `dx/dtau` and `dx/dlogit`, which scale as `1/f`, overflow (a root on the
    flat stretch between two far-apart narrow components), they are set to
    0.

    Args:
      tau: target logits, shape `S`.
      logits, means, log_scales: mixture parameters, shape `S + [K]`.
      max_iterations: cap on Chandrupatla iterations per element.

    Returns:
      `(x, num_iterations)`: the root, shape `S`, and the int32 number of
      iterations each element used (both passes; each is capped at
      `max_iterations`).
    """
    dtype = tau.dtype
    eps = tf.constant(tf.experimental.numpy.finfo(dtype.as_numpy_dtype).eps,
                      dtype)
    sg = tf.stop_gradient
    tau_c, logits_c, means_c, log_scales_c = (
        sg(tau), sg(logits), sg(means), sg(log_scales))
    ends = means_c + tf.exp(log_scales_c) * tau_c[..., tf.newaxis]
    low = tf.reduce_min(ends, axis=-1)
    high = tf.reduce_max(ends, axis=-1)
    value_tolerance = 4.0 * eps * (tf.abs(tau_c) + 1.0)
    # The position tolerances are a few ulps of x, with a floor for roots
    # near 0 of a few ulps of min(s_min, 1): logit F moves by up to
    # 2 / s_min per unit of x, so a floor of 4 eps, enough for wide
    # components, would span thousands of ulps of a narrow one.
    floor = tf.minimum(tf.reduce_min(tf.exp(log_scales_c), axis=-1),
                       tf.ones([], dtype))

    # Computed once, not in each of the root finder's iterations.
    log_weights = tf.nn.log_softmax(logits_c, axis=-1)
    inverse_scales = tf.exp(-log_scales_c)

    def objective(x):
        terms = _terms(x, log_weights, means_c, log_scales_c, inverse_scales,
                       pdf=False)
        return terms.log_cdf - terms.log_survival - tau_c

    def solve(low, high, position_tolerance, max_iterations):
        return tfp.math.find_root_chandrupatla(
            objective, low=low, high=high,
            position_tolerance=position_tolerance,
            value_tolerance=value_tolerance, max_iterations=max_iterations)

    # The bracket holds the root exactly, but when one component carries
    # nearly all the weight the root lies on a bracket end, where g is zero
    # up to rounding and may come out with the sign of the other end. The
    # solver does not check the ends' signs: it would drop the root and
    # search the bracket to its cap (the whole batch waiting on it). Such a
    # root is taken here, and its element gets an empty bracket, which the
    # solver leaves at once.
    at_low = objective(low) >= 0.0
    at_high = ~at_low & (objective(high) <= 0.0)
    low, high = tf.where(at_high, high, low), tf.where(at_low, low, high)

    # A few ulps of the bracket ends: one wide component makes the bracket
    # thousands of times wider than the root, so this pass can stop that
    # many ulps of the root away from it ...
    coarse_tolerance = 4.0 * eps * (
        tf.maximum(tf.abs(low), tf.abs(high)) + floor)
    coarse = solve(low, high, coarse_tolerance, max_iterations)
    # ... and a second pass on the bracket it leaves (the root lies within
    # twice its tolerance) stops within a few ulps of the root itself.
    # Where the first pass stopped on the value tolerance instead, the
    # narrowed bracket may miss the root, so the better estimate is kept.
    coarse_root = coarse.estimated_root
    fine = solve(tf.maximum(coarse_root - 2.0 * coarse_tolerance, low),
                 tf.minimum(coarse_root + 2.0 * coarse_tolerance, high),
                 4.0 * eps * (tf.abs(coarse_root) + floor),
                 max_iterations)
    root = tf.where(
        tf.abs(fine.objective_at_estimated_root)
        <= tf.abs(coarse.objective_at_estimated_root),
        fine.estimated_root, coarse_root)
    root = sg(tf.where(at_low | at_high, low, root))
    num_iterations = coarse.num_iterations + fine.num_iterations
    # TFP's solver loses static sizes of 1 (a `[None, 1]` target comes back
    # `[None, None]`); a one-channel half would then leave the next layer
    # without the static event shape it needs.
    root = tf.ensure_shape(root, tau.shape)
    num_iterations = tf.ensure_shape(num_iterations, tau.shape)

    # The implicit derivatives at the root, from d F(x*) = 0 with
    # F = sum_k pi_k sigmoid(z_k): dx = -dF|_x / f, and dx/dtau =
    # F (1 - F) / f. In log space, per component (pi_k f_k(x*) / f are the
    # responsibilities), so that they stay exact where the density f is
    # tiny: differentiating logit F at the root instead took ratios of sums
    # that underflow, and the means' and scales' gradients came out 0 long
    # before f itself underflowed.
    components = _component_terms(root, log_weights, means_c, log_scales_c,
                                  inverse_scales)
    log_cdf, log_survival, log_f = (tf.reduce_logsumexp(t, axis=-1)
                                    for t in components)
    responsibilities = tf.exp(components.log_pdf - log_f[..., tf.newaxis])
    d_log_scales = responsibilities * (root[..., tf.newaxis] - means_c)
    # dx/dlogit_k = -pi_k (sigmoid(z_k) - F) / f, taken as
    # (pi_k sigmoid(-z_k) F - pi_k sigmoid(z_k) (1 - F)) / f, which does not
    # cancel.
    d_logits = (
        tf.exp(components.log_survival + (log_cdf - log_f)[..., tf.newaxis])
        - tf.exp(components.log_cdf + (log_survival - log_f)[..., tf.newaxis]))
    d_tau = tf.exp(log_cdf + log_survival - log_f)
    # These two scale as 1 / f: on the flat stretch between far-apart
    # narrow components they overflow (f below ~1e-38 in float32), and
    # such an element gets zero gradients for them instead of inf or NaN.
    d_tau = tf.where(tf.math.is_finite(d_tau), d_tau, tf.zeros_like(d_tau))
    d_logits = tf.where(tf.math.is_finite(d_logits), d_logits,
                        tf.zeros_like(d_logits))
    # The value is the root; the gradients are those above.
    x = root + d_tau * (tau - tau_c) + tf.reduce_sum(
        responsibilities * (means - means_c)
        + d_log_scales * (log_scales - log_scales_c)
        + d_logits * (logits - logits_c), axis=-1)
    return x, num_iterations
