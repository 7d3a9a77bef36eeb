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
component CDF is `<= sigmoid(tau)`, at `x_hi` every one is `>=`), however far in
the tails `tau` lies (in exact arithmetic: when one component carries
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
      `MixtureLogisticTerms(log_cdf, log_survival, log_pdf)`, each of shape `S`.
    """
    return _terms(x, tf.nn.log_softmax(logits, axis=-1), means, log_scales,
                  tf.exp(-log_scales))


def _terms(x, log_weights, means, log_scales, inverse_scales, pdf=True):
    """`mixture_logistic_terms` from the normalised log-weights and the
    inverse scales (`log_pdf` left `None` unless `pdf`)."""
    z = (x[..., tf.newaxis] - means) * inverse_scales
    softplus_z = tf.nn.softplus(z)
    softplus_neg_z = tf.nn.softplus(-z)
    log_cdf = tf.reduce_logsumexp(log_weights - softplus_neg_z, axis=-1)
    log_survival = tf.reduce_logsumexp(log_weights - softplus_z, axis=-1)
    log_pdf = None
    if pdf:
        log_pdf = tf.reduce_logsumexp(
            log_weights - softplus_z - softplus_neg_z - log_scales, axis=-1)
    return MixtureLogisticTerms(log_cdf, log_survival, log_pdf)


def _logit_cdf_fn(logits, means, log_scales):
    """`x -> logit F(x)` of the mixture. What does not depend on `x` (the
    log-weights, the inverse scales) is computed here, once, rather than
    in each of the root finder's iterations."""
    log_weights = tf.nn.log_softmax(logits, axis=-1)
    inverse_scales = tf.exp(-log_scales)

    def logit_cdf(x):
        terms = _terms(x, log_weights, means, log_scales, inverse_scales,
                       pdf=False)
        return terms.log_cdf - terms.log_survival
    return logit_cdf


def inverse_logit_cdf(tau, logits, means, log_scales, max_iterations=100):
    """Solves `logit F(x) = tau` elementwise for `x`.

    The root is found without gradient tracking by Chandrupatla's method on
    the exact bracket of the module docstring, stopping per element when the
    bracket is a few ulps (of the bracket ends) wide or the residual is at
    rounding level, then refined by a second pass on the narrowed bracket
    down to a few ulps of the root itself. An end of the bracket where
    `logit F - tau` already has the sign of the root's side (rounding, at a
    root on that end) is taken as the root. The returned value then carries
    implicit-function gradients,

    ```none
    x = x* - (g(x*) - stop_gradient(g(x*))) / stop_gradient(g'(x*)),
    g(x) = logit F(x) - tau,   g'(x) = f(x) / (F(x) (1 - F(x))),
    ```

    so `dx/dtau = 1/g'` and `dx/dtheta = -(dg/dtheta)/g'` for every mixture
    parameter, exactly as if the solve were differentiated, at no extra cost.
    Where `g'(x*)` underflows to 0 (a root on the flat stretch between two
    far-apart narrow components) those gradients are set to 0.

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

    logit_cdf = _logit_cdf_fn(logits_c, means_c, log_scales_c)

    def objective(x):
        return logit_cdf(x) - tau_c

    def solve(low, high, position_tolerance, max_iterations):
        return tfp.math.find_root_chandrupatla(
            objective, low=low, high=high,
            position_tolerance=position_tolerance,
            value_tolerance=value_tolerance, max_iterations=max_iterations)

    # A few ulps of the bracket ends: one wide component makes the bracket
    # thousands of times wider than the root, so this pass can stop that
    # many ulps of the root away from it ...
    coarse_tolerance = 4.0 * eps * (
        tf.maximum(tf.abs(low), tf.abs(high)) + 1.0)
    coarse = solve(low, high, coarse_tolerance, max_iterations)
    # ... and a second pass on the bracket it leaves (the root lies within
    # twice its tolerance) stops within a few ulps of the root itself.
    # Where the first pass stopped on the value tolerance instead, the
    # narrowed bracket may miss the root, so the better estimate is kept.
    coarse_root = coarse.estimated_root
    fine = solve(tf.maximum(coarse_root - 2.0 * coarse_tolerance, low),
                 tf.minimum(coarse_root + 2.0 * coarse_tolerance, high),
                 4.0 * eps * (tf.abs(coarse_root) + 1.0),
                 max_iterations)
    root = tf.where(
        tf.abs(fine.objective_at_estimated_root)
        <= tf.abs(coarse.objective_at_estimated_root),
        fine.estimated_root, coarse_root)
    # The bracket holds the root exactly, but when one component carries
    # nearly all the weight the root lies on a bracket end, where g is zero
    # up to rounding and may come out with the sign of the other end. The
    # solver does not check the ends' signs: it then drops the root and
    # "converges" anywhere in the bracket. A root at an end is found here.
    root = sg(tf.where(objective(low) >= 0.0, low,
                       tf.where(objective(high) <= 0.0, high, root)))
    num_iterations = coarse.num_iterations + fine.num_iterations
    # TFP's solver loses static sizes of 1 (a `[None, 1]` target comes back
    # `[None, None]`); a one-channel half would then leave the next layer
    # without the static event shape it needs.
    root = tf.ensure_shape(root, tau.shape)
    num_iterations = tf.ensure_shape(num_iterations, tau.shape)

    terms = mixture_logistic_terms(root, logits, means, log_scales)
    residual = terms.log_cdf - terms.log_survival - tau
    slope = tf.exp(terms.log_pdf - terms.log_cdf - terms.log_survival)
    # A root on a plateau between far-apart narrow components has a density
    # that underflows to 0 even in float64; the value term is 0 there, and a
    # plain division would make the root and every gradient NaN. Such an
    # element gets the root with zero implicit gradients instead.
    x = root - tf.math.divide_no_nan(residual - sg(residual), sg(slope))
    return x, num_iterations
