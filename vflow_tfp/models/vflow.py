"""VFlow: a generative flow on data augmented with variational dimensions.

The model (VFlow paper §3, SPEC §2) has three distributions:

* `r`, the dequantiser r(u | x): noise `u` in (0, 1)^D added to the integer
  image `x`; a conditional flow (Flow++'s variational dequantisation) or
  uniform. Absent for continuous data.
* `q`, the augmentation posterior q(z | x~): `D_Z` extra channels (features)
  drawn given the pre-processed data `x~`. With `D_Z = 0` the model is a plain
  Flow++ / Glow / RealNVP flow.
* `p`, the flow over the augmented data `[x~, z]` (concatenated on the last
  axis): a `tfd.TransformedDistribution` with any bijector whose `inverse` maps
  `[x~, z]` to a standard normal latent.

For images, `x~ = logit(0.05 + 0.9 (x + u) / 256)` (`ImageLogit`), and the
evidence lower bound of one image is (SPEC §2.3, VFlow Eq. 7)

```none
ELBO(x) = log p(x~, z) + log|d x~ / d(x + u)| - log q(z | x~) - log r(u | x)
```

in nats, with `u ~ r(.|x)` and `z ~ q(.|x~)`. Bits per dimension divide by
`D_x ln 2`, counting only the data dimensions (not `z`). The importance-
weighted estimate `log (1/S) sum_s exp(ELBO_s)` (VFlow Eq. 5) is a tighter
bound that tends to `log p(x)` as `S` grows.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import vflow_tfp.initialization as initialization
from vflow_tfp import bijectors as vb
from vflow_tfp import random_state
from vflow_tfp.bijectors import shape_checks
from vflow_tfp.models import conditional
from vflow_tfp.models import seeds as seeds_lib

__all__ = ['GRADIENT_ESTIMATORS', 'VFlow']

#: Gradient estimators of `VFlow.elbo` (see there).
GRADIENT_ESTIMATORS = ('reparameterization', 'sticking_the_landing')

tfb = tfp.bijectors
tfd = tfp.distributions


class VFlow(tf.Module):
    """VFlow / Flow++ / plain flow model with ELBO, IW likelihood and sampling.

    #### Example

    ```python
    model = vflow_tfp.models.presets.build('tiny_vflow')
    model.initialize(images)                   # uint8 [N, 8, 8, 3]
    loss = -tf.reduce_mean(model.elbo(images, training=True))
    bpd = model.bits_per_dim(model.log_prob(images, num_samples=64))
    samples = model.sample(16)                 # uint8 images
    ```
    """

    def __init__(self,
                 p_bijector,
                 data_shape,
                 augment_channels=0,
                 posterior=None,
                 dequantizer=None,
                 num_bins=256,
                 rng=None,
                 dtype=tf.float32,
                 name=None):
        """Creates the model.

        Args:
          p_bijector: bijector of `p`: its `inverse` maps augmented data
            `[x~, z]` (event shape `data_shape[:-1] + [C + augment_channels]`)
            to the latent; any TFP bijector. Conditional layers of `p` get
            `training` through `vflow_tfp.bijectors.chain_kwargs`.
          data_shape: event shape of the data: `[H, W, C]` for images
            (integers in `[0, num_bins)`, dequantised by `dequantizer` and
            logit-transformed) or `[D]` for continuous vectors.
          augment_channels: `D_Z`, channels (images) or features (vectors) of
            the augmentation `z`; 0 for a plain flow. Default value: 0.
          posterior: `ConditionalFlow` over `z` given `x~` (event shape
            `data_shape[:-1] + [D_Z]`); required iff `augment_channels > 0`.
          dequantizer: for images, a `ConditionalFlow` over `u` in (0, 1)
            conditioned on `x / num_bins - 0.5`, or a `UniformDequantizer`
            (the default for images); must be `None` for vectors.
          num_bins: discrete values per data dimension (256 for 8-bit).
          rng: `tf.random.Generator` for the noise of `r`, `q` and sampling
            when no seed is given; create it (like the model) under a
            `tf.distribute` strategy's scope for per-replica streams.
            Default value: a new generator seeded from TF's global seed
            (`vflow_tfp.random_state.unseeded_generator`).
          dtype: float dtype. Default value: `tf.float32`.
          name: module name. Default value: `'vflow'`.
        """
        super().__init__(name=name or 'vflow')
        data_shape = shape_checks.as_event_shape(data_shape, 'data_shape')
        if len(data_shape) not in (1, 3):
            raise ValueError('data_shape must be [H, W, C] (images) or [D] '
                             f'(vectors); got {list(data_shape)}.')
        self._data_shape = data_shape
        self._is_image = len(self._data_shape) == 3
        self._augment_channels = int(augment_channels)
        if self._augment_channels < 0:
            raise ValueError('augment_channels must be >= 0; got '
                             f'{augment_channels}.')
        if (posterior is None) != (self._augment_channels == 0):
            raise ValueError('A posterior q(z|x) is required exactly when '
                             'augment_channels > 0; got augment_channels='
                             f'{self._augment_channels} and posterior='
                             f'{posterior!r}.')
        self._augment_shape = self._data_shape[:-1] + (self._augment_channels,)
        if posterior is not None and tuple(posterior.event_shape) != (
                self._augment_shape):
            raise ValueError(f'posterior.event_shape must be '
                             f'{list(self._augment_shape)}; got '
                             f'{list(posterior.event_shape)}.')
        if self._is_image and dequantizer is None:
            dequantizer = conditional.UniformDequantizer(self._data_shape,
                                                         dtype=dtype)
        if not self._is_image and dequantizer is not None:
            raise ValueError('Vector data is continuous: no dequantizer.')
        if dequantizer is not None and tuple(dequantizer.event_shape) != (
                self._data_shape):
            raise ValueError(f'dequantizer.event_shape must be '
                             f'{list(self._data_shape)}; got '
                             f'{list(dequantizer.event_shape)}.')
        self._dtype = tf.as_dtype(dtype)
        self._num_bins = shape_checks.as_size(num_bins, 'num_bins',
                                              minimum=2)
        self.dequantizer = dequantizer
        self.posterior = posterior
        self.image_logit = vb.ImageLogit(num_bins=num_bins) if (
            self._is_image) else None
        self.p_bijector = p_bijector
        self._joint_shape = self._data_shape[:-1] + (
            self._data_shape[-1] + self._augment_channels,)
        latent_shape = p_bijector.inverse_event_shape(self._joint_shape)
        if not tf.TensorShape(latent_shape).is_fully_defined():
            raise ValueError('p_bijector.inverse_event_shape('
                             f'{list(self._joint_shape)}) must be static; got '
                             f'{latent_shape}.')
        self._latent_shape = tuple(int(d) for d in latent_shape)
        zero = tf.constant(0.0, dtype)
        self.p = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(zero, tf.ones_like(zero)),
                       self._latent_shape),
            p_bijector)
        self.rng = (rng if rng is not None
                    else random_state.unseeded_generator())

    # -- properties -------------------------------------------------------

    @property
    def r(self):
        """The dequantisation distribution r(u|x), or `None` (vectors)."""
        return None if self.dequantizer is None else (
            self.dequantizer.distribution)

    @property
    def q(self):
        """The augmentation posterior q(z|x~), or `None` (plain flow)."""
        return None if self.posterior is None else self.posterior.distribution

    @property
    def data_shape(self):
        return self._data_shape

    @property
    def num_bins(self):
        """Discrete values per data dimension (256 for 8-bit images)."""
        return self._num_bins

    @property
    def augment_channels(self):
        return self._augment_channels

    @property
    def latent_shape(self):
        return self._latent_shape

    @property
    def num_data_dims(self):
        """`D_x`, the dimensions bits/dim are counted over (not z)."""
        return math.prod(self._data_shape)

    def count_params(self):
        """Number of trainable scalars of r, q and p."""
        return int(sum(v.shape.num_elements()
                       for v in self.trainable_variables))

    # -- the bound --------------------------------------------------------

    def _new_seed(self, seed=None):
        """`seed`, or a fresh stateless seed drawn from `self.rng`."""
        if seed is None:
            return self.rng.uniform_full_int([2], dtype=tf.int32)
        seed = seeds_lib.as_seed(seed)
        seeds_lib.is_per_example(seed)  # Refuses other shapes by name.
        return seed

    def _check_seed_rows(self, seed, rows):
        """Per-example seeds must divide the `rows` drawn into equal blocks."""
        if not seeds_lib.is_per_example(seed):
            return seed
        num_seeds = tf.shape(seed)[0]
        with tf.control_dependencies([
                tf.debugging.assert_positive(
                    num_seeds, message='per-example seeds: none given'),
                tf.debugging.assert_equal(
                    rows % tf.maximum(num_seeds, 1), 0,
                    message='per-example seeds need one row per example '
                            '(or per block of equally many examples)')]):
            return tf.identity(seed)

    def _seeds(self, seed, n):
        seed = self._new_seed(seed)
        if seeds_lib.is_per_example(seed):
            return seeds_lib.split_rows(seed, n)
        return tfp.random.split_seed(seed, n=n)

    def example_seeds(self, x, seed):
        """Per-example seeds `[N, 2]` from the content of `x` and `seed`.

        With them `elbo` and `log_prob` give every example an estimate that
        depends only on the example, `seed` (and the sample count), not on
        the batch it is in (`vflow_tfp.models.seeds.example_seeds`, hashing
        images as int32 pixel values and vectors in the model's dtype). Not
        XLA-compilable; the exported signatures use it.

        Args:
          x: batch of data `[N] + data_shape`.
          seed: int32 `[2]`.

        Returns:
          int32 `[N, 2]`.
        """
        x = self._check_data(x)
        x = tf.cast(x, tf.int32 if self._is_image else self._dtype)
        return seeds_lib.example_seeds(x, seed)

    def _check_data(self, x):
        """`x` as a tensor, refused unless it is a batch of this data.

        The shape is checked when the graph is built (every model call would
        otherwise broadcast, say, one grayscale channel against three and
        score it); only a tensor of unknown rank is checked when it runs.
        """
        x = tf.convert_to_tensor(x)
        kind = 'images' if self._is_image else 'vectors'
        if x.dtype == tf.bool or not (x.dtype.is_integer or
                                      x.dtype.is_floating):
            raise TypeError(f'x must be a batch of {kind} of numbers; got '
                            f'dtype {x.dtype.name}.')
        expected = tf.TensorShape((None,) + self._data_shape)
        if x.shape.rank is None:
            return tf.ensure_shape(x, expected)
        if not x.shape.is_compatible_with(expected):
            dims = ', '.join(str(d) for d in self._data_shape)
            raise ValueError(f'x must be a batch of {kind} of shape '
                             f'[N, {dims}]; got shape {x.shape.as_list()}.')
        return x

    def _preprocess(self, x, seed, training, stop_score=False,
                    draws_per_row=1):
        """x -> x~ and log|d x~/d x| - log r(u|x), `draws_per_row` per example.

        The draws of an example are consecutive rows; r's networks of x
        alone run once per example.
        """
        if not self._is_image:
            # A cast, not a conversion: tensors of another float dtype too.
            x = conditional.repeat_rows(
                tf.cast(tf.convert_to_tensor(x), self._dtype), draws_per_row)
            return x, tf.zeros(tf.shape(x)[:1], self._dtype)
        x = tf.convert_to_tensor(x)
        if not (x.dtype == tf.uint8 and self._num_bins >= 256):
            # (uint8 data cannot leave the range of an 8-bit model.)
            self._check_pixels(x)
        x = tf.cast(x, self._dtype)
        condition = x / self._num_bins - 0.5
        u, log_r = self.dequantizer.sample_and_log_prob(
            condition, seed, training, stop_score=stop_score,
            draws_per_row=draws_per_row)
        x_deq = conditional.repeat_rows(x, draws_per_row) + u
        x_tilde = self.image_logit.inverse(x_deq)
        log_det = self.image_logit.inverse_log_det_jacobian(x_deq,
                                                            event_ndims=3)
        return x_tilde, log_det - log_r

    def _check_pixels(self, x):
        # A pixel outside [0, num_bins) (8-bit data given to a model of
        # fewer levels, say) would be scored as a finite number or as NaN
        # instead of being refused. Eagerly the check raises at once; in a
        # `tf.function` it runs alongside the model (no control dependency,
        # so a GPU never waits on the host for it) and fails the call; XLA
        # drops it.
        if x.dtype.is_floating:
            # Images scaled to [0, 1] or already dequantised would be
            # dequantised again and scored as if they were integers.
            tf.debugging.assert_equal(
                x, tf.floor(x),
                message='pixel values must be whole numbers (integers in '
                        f'[0, {self._num_bins})), not scaled or dequantised')
        x = tf.cast(x, self._dtype)
        tf.debugging.assert_non_negative(
            x, message='pixel values must be >= 0')
        tf.debugging.assert_less(
            x, tf.cast(self._num_bins, x.dtype),
            message=f'pixel values must be below {self._num_bins}, the '
                    'number of levels of the model')

    def _joint(self, x, seed, training, stop_score=False, draws_per_row=1):
        """Returns ([x~, z], log|dx~/dx| - log r - log q) per draw.

        `draws_per_row` consecutive rows per example.
        """
        seed_r, seed_q = self._seeds(seed, 2)
        x_tilde, log_weight = self._preprocess(x, seed_r, training,
                                               stop_score, draws_per_row)
        if self.posterior is None:
            return x_tilde, log_weight
        if self._is_image:
            # x~ = logit(x + u) is new in every draw.
            condition, draws = x_tilde, 1
        else:
            # x~ = x: q's networks of x alone run once per example.
            condition, draws = tf.cast(x, self._dtype), draws_per_row
        z, log_q = self.posterior.sample_and_log_prob(
            condition, seed_q, training, stop_score=stop_score,
            draws_per_row=draws)
        return tf.concat([x_tilde, z], axis=-1), log_weight - log_q

    def p_log_prob(self, xz, training=False):
        """log p([x~, z]) of augmented data, with dropout if `training`."""
        kwargs = vb.chain_kwargs(self.p_bijector, training=training)
        return self.p.log_prob(xz, bijector_kwargs=kwargs)

    def elbo(self, x, training=False, seed=None,
             gradient_estimator='reparameterization', draws_per_row=1):
        """Evidence lower bounds of one draw each, in nats, `k` per example.

        The value does not depend on `gradient_estimator`; its gradient does.
        `'reparameterization'` differentiates the bound through the samples
        `u = u(eps; r)`, `z = z(eps'; q)` and through the densities' direct
        dependence on their parameters. `'sticking_the_landing'` (Roeder et
        al., 2017) drops the score terms `d log q(z|x~) / d phi` and
        `d log r(u|x) / d phi` taken at fixed samples, which have mean zero:
        the estimate stays unbiased and its variance vanishes where q and r
        match the posteriors they fit. It costs one more pass through q and
        r in their density direction and needs networks without dropout (see
        `ConditionalFlow.sample_and_log_prob`); the toy experiment uses it.

        Args:
          x: batch of data `[N] + data_shape`: integers for images (pixel
            values outside the model's levels are refused), floats for
            vectors (not checked, as in TFP: a non-finite vector scores NaN;
            the exported signatures refuse it).
          training: enables dropout in every network.
          seed: optional stateless seed, int32 `[2]` (one draw for the
            batch) or per-example `[N, 2]` (row `i`'s bound depends only on
            `x[i]` and `seed[i]`, unless dropout is on: with `training` its
            masks come from the networks' own generator; see
            `example_seeds`); also `[M, 2]` with the number of rows (`N`,
            or `N k` with `draws_per_row = k`) a multiple of `M`, one seed
            per block of consecutive rows (as `log_prob` draws an example's
            samples); default from `self.rng`.
          gradient_estimator: one of `GRADIENT_ESTIMATORS`. Default value:
            `'reparameterization'`.
          draws_per_row: `k`, independent bounds per example (Python int
            >= 1), as for `tf.repeat(x, k, axis=0)`: rows `i k .. (i + 1) k
            - 1` of the result are example `i`'s, and the seed is taken as
            for that repeated batch. The networks that see x alone (r's, and
            for vectors q's context-only layers) run once per example, not
            once per draw; `log_prob` uses it. Default value: 1.

        Returns:
          `[N k]` tensor of `log p(x~, z) + log|dx~/dx| - log q(z|x~) -
          log r(u|x)`.

        Raises:
          ValueError: for an unknown `gradient_estimator`,
            `'sticking_the_landing'` in training with dropout in q or r, or
            a seed of another shape or of values that int32 cannot hold
            (`seeds.as_seed`).
        """
        if gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(f'gradient_estimator must be one of '
                             f'{GRADIENT_ESTIMATORS}; got '
                             f'{gradient_estimator!r}.')
        stop_score = gradient_estimator == 'sticking_the_landing'
        # A tensor flag whose value the trace cannot see may be on.
        training_on = (tf.get_static_value(training) if tf.is_tensor(training)
                       else training)
        if stop_score and (training_on is None or training_on) and (
                self._q_or_r_drops_out()):
            raise ValueError(
                "gradient_estimator='sticking_the_landing' needs q and r to "
                'compute the same function in their sampling and density '
                'passes, which dropout in training breaks (the estimate '
                "would be biased): use 'reparameterization', dropout=0, or "
                'training=False'
                + ('' if training_on is not None else
                   ' (a training tensor whose value is unknown when traced '
                   'counts as on: pass a Python bool)') + '.')
        draws_per_row = shape_checks.as_size(draws_per_row, 'draws_per_row')
        x = self._check_data(x)
        if seed is not None:
            seed = self._check_seed_rows(self._new_seed(seed),
                                         tf.shape(x)[0] * draws_per_row)
        xz, log_weight = self._joint(x, seed, training, stop_score=stop_score,
                                     draws_per_row=draws_per_row)
        return self.p_log_prob(xz, training) + log_weight

    def reconstruction_error(self, x, seed=None):
        """How far p's two directions are from inverting each other on `x`.

        Draws `xz = [x~, z]` as `elbo` does (without dropout), maps it to
        the latent with `p_bijector.inverse` (the closed form that
        `log_prob` uses) and back with `p_bijector.forward` (the couplings'
        numerical inverse, which `sample` uses), and returns per example

            max_d |xz_d - forward(inverse(xz))_d|

        over its dimensions, in p's data domain (logit space for images).
        This is Flow++'s `val_inverr`. A sound model gives the float's
        rounding (4e-6 to 1.2e-5 for the small image presets in float32);
        a large value means that the inversion did not converge or
        the map is not invertible there, and then samples come from
        another model than the one `log_prob` scores.

        Args:
          x: batch of data `[N] + data_shape`, as for `elbo`.
          seed: optional stateless seed, as for `elbo`.

        Returns:
          `[N]` tensor in the model's dtype.
        """
        x = self._check_data(x)
        if seed is not None:
            seed = self._check_seed_rows(self._new_seed(seed), tf.shape(x)[0])
        xz, _ = self._joint(x, seed, training=False)
        kwargs = vb.chain_kwargs(self.p_bijector, training=False)
        latent = self.p_bijector.inverse(xz, **kwargs)
        # A new tensor: TFP's bijector cache would hand `xz` back unchanged.
        back = self.p_bijector.forward(tf.identity(latent), **kwargs)
        event_axes = list(range(1, 1 + len(self._data_shape)))
        return tf.reduce_max(tf.abs(back - xz), axis=event_axes)

    def _q_or_r_drops_out(self):
        """Whether a network of q or r has dropout (a `dropout_rate` > 0)."""
        flows = [f for f in (self.posterior, self.dequantizer)
                 if f is not None]
        return any(getattr(m, 'dropout_rate', 0) > 0
                   for flow in flows for m in flow.submodules)

    def log_prob(self, x, num_samples, chunk_size=16, seed=None):
        """Importance-weighted log-likelihood per example (float64).

        `log (1/S) sum_{s=1}^S exp(ELBO_s(x))` with `S = num_samples`
        independent draws of `(u, z)`, evaluated `chunk_size` draws at a time
        with a running float64 log-sum-exp, so memory does not grow with `S`.
        `S = 1` is the ELBO.

        With a seed `[2]`, pass `c` draws its noise for the whole batch from
        `fold_in(seed, c)`, so an example's estimate depends on its batch and
        on `chunk_size`. With per-example seeds `[N, 2]` (`example_seeds`),
        pass `c` draws the `chunk_size` samples of example `i` as one block
        from `fold_in(seed[i], c)`: the estimate of row `i` depends only on
        `x[i]`, `seed[i]`, `S` and `chunk_size`, not on the other examples,
        their number or their order.

        Args:
          x: batch `[N] + data_shape`.
          num_samples: `S`, Python int or integer scalar tensor, in
            [1, 2^31).
          chunk_size: draws per pass, a Python int: each pass evaluates
            `N * chunk_size` examples; at most `S` when `S` is a Python int.
            Default value: 16.
          seed: optional stateless seed, int32 `[2]` or per-example `[N, 2]`;
            default from `self.rng`.

        Returns:
          `[N]` float64 tensor.
        """
        x = self._check_data(x)
        seed = self._new_seed(seed)
        chunk_size = shape_checks.as_size(chunk_size, 'chunk_size')
        if not tf.is_tensor(num_samples):
            num_samples = shape_checks.as_size(num_samples, 'num_samples')
            # Checked before the int32 cast, which would wrap 2^32 + 1 to 1.
            if num_samples >= 2**31:
                raise ValueError('num_samples must be in [1, 2^31); got '
                                 f'{num_samples}.')
        elif (not num_samples.dtype.is_integer
              or num_samples.shape.rank not in (None, 0)):
            raise TypeError('num_samples must be an integer scalar; got '
                            f'{num_samples.dtype.name} of shape '
                            f'{num_samples.shape}.')
        if isinstance(num_samples, int) and num_samples < chunk_size:
            # Draws past S would be computed only to be masked out.
            chunk_size = num_samples
        num_samples = tf.convert_to_tensor(num_samples)
        # In the given dtype: int32 would wrap an int64 2^32 + 1 to 1.
        tf.debugging.assert_positive(num_samples,
                                     message='num_samples must be >= 1')
        if num_samples.dtype.size > 4 or num_samples.dtype == tf.uint32:
            tf.debugging.assert_less(
                num_samples, tf.constant(2**31, num_samples.dtype),
                message='num_samples must be below 2^31')
        num_samples = tf.cast(num_samples, tf.int32)
        seed = self._check_seed_rows(seed, tf.shape(x)[0])
        batch = tf.shape(x)[0]
        # Not (S + c - 1) // c: that wraps negative in int32 near S = 2^31.
        num_chunks = num_samples // chunk_size + tf.cast(
            num_samples % chunk_size > 0, tf.int32)
        per_example = seeds_lib.is_per_example(seed)

        def body(i, total):
            if per_example:
                # One seed per example and pass: the example's chunk of
                # draws is one block of rows (example-major).
                draw_seed = seeds_lib.fold_in_rows(seed, i)
            else:
                draw_seed = tf.random.experimental.stateless_fold_in(seed, i)
            elbo = self.elbo(x, training=False, seed=draw_seed,
                             draws_per_row=chunk_size)
            elbo = tf.reshape(tf.cast(elbo, tf.float64), [batch, chunk_size])
            index = i * chunk_size + tf.range(chunk_size)
            elbo = tf.where(index[tf.newaxis, :] < num_samples, elbo,
                            tf.constant(-math.inf, tf.float64))
            total = tf.reduce_logsumexp(
                tf.stack([total, tf.reduce_logsumexp(elbo, axis=1)]), axis=0)
            return i + 1, total

        _, total = tf.while_loop(
            lambda i, _: i < num_chunks, body,
            (tf.constant(0), tf.fill([batch], tf.constant(-math.inf,
                                                          tf.float64))))
        return total - tf.math.log(tf.cast(num_samples, tf.float64))

    def bits_per_dim(self, log_likelihood):
        """Converts per-example log-likelihoods in nats to bits/dim."""
        log_likelihood = tf.convert_to_tensor(log_likelihood)
        if not log_likelihood.dtype.is_floating:
            # An integer divisor D ln 2 would be truncated.
            log_likelihood = tf.cast(log_likelihood, tf.float64)
        # tf.constant, not tf.cast: a cast would round D ln 2 to float32
        # first, an error of ~3e-9 in float64's bits.
        return -log_likelihood / tf.constant(
            self.num_data_dims * math.log(2.0), log_likelihood.dtype)

    # -- initialisation and sampling --------------------------------------

    def initialize(self, x, training=True, seed=None):
        """Data-dependent initialisation of every layer from a batch `x`.

        Runs the ELBO once inside `vflow_tfp.data_dependent_init()`: r, then
        q, then p, each layer normalising its output on this batch (with
        dropout, as the official init pass). Call it once, eagerly, before
        training (in cross-replica context under a `tf.distribute` strategy).
        Returns the ELBO of the batch after initialisation, without dropout:
        an optimistic figure, since every layer has just been fitted to this
        batch and, with a `seed`, to this noise (the returned ELBO draws it
        again from the same seed; without one, fresh noise). On 64 8x8
        patches, `tiny_vflow` scored 0.06-0.09 bit/dim worse with fresh
        noise in one check; more on fewer images.
        """
        with initialization.data_dependent_init(expect_layers=False):
            self.elbo(x, training=training, seed=seed)
        return self.elbo(x, training=False, seed=seed)

    def sample(self, num, temperature=1.0, seed=None):
        """Draws `num` data points from p, discarding z.

        `eps ~ N(0, temperature^2 I)` in the latent, mapped through
        `p_bijector.forward` (the couplings' numerical inverse). Images come
        back in the input domain (`floor`, clipped to `[0, num_bins - 1]`),
        as uint8 (int32 for more than 256 levels); vectors as floats.

        Args:
          num: number of samples, a non-negative integer (Python int or
            integer scalar tensor).
          temperature: scale of the latent noise, finite and >= 0 (0 gives
            the image of the latent mode). Default value: 1.
          seed: optional stateless seed `[2]`; default from `self.rng`.

        Raises:
          TypeError: for a `num` that is not an integer scalar, or a
            `temperature` that is not a scalar.
          ValueError: for a Python `num` outside [0, 2^31), a seed of
            another shape than `[2]`, or of values that int32 cannot hold.
          InvalidArgumentError: for a negative `num` or a negative or
            non-finite `temperature` (eagerly at once, in a graph when run),
            and for images if the flow maps a latent to non-finite values
            (no pixel value stands for them).
        """
        if isinstance(num, (int, np.integer)) and not isinstance(num, bool):
            # Checked before the int32 cast, which would wrap 2^32 + 2 to 2.
            if not 0 <= num < 2**31:
                raise ValueError(f'num must be in [0, 2^31); got {num}.')
        num = tf.convert_to_tensor(num)
        if not num.dtype.is_integer or num.shape.rank not in (None, 0):
            raise TypeError('num must be an integer scalar; got '
                            f'{num.dtype.name} of shape {num.shape}.')
        tf.debugging.assert_non_negative(num, message='num must be >= 0')
        if num.dtype.size > 4 or num.dtype == tf.uint32:
            tf.debugging.assert_less(
                num, tf.constant(2**31, num.dtype),
                message='num must be below 2^31')
        num = tf.cast(num, tf.int32)
        if not tf.is_tensor(temperature):
            # A Python float beyond float32's range is finite in float64:
            # converted by TF's default float32 it would fail with a
            # message about conversion, not about the temperature.
            temperature = np.asarray(temperature, np.float64)
        temperature = tf.convert_to_tensor(temperature)
        if temperature.shape.rank not in (None, 0):
            # It would scale the latent's last axis, not the samples.
            raise TypeError('temperature must be a scalar; got shape '
                            f'{temperature.shape}.')
        temperature = tf.cast(temperature, self._dtype)
        tf.debugging.assert_equal(
            tf.math.is_finite(temperature) & (temperature >= 0), True,
            message='temperature must be finite and >= 0')
        seed = self._new_seed(seed)
        if seeds_lib.is_per_example(seed):
            raise ValueError('sample takes one seed [2], not per-example '
                             f'seeds; got shape {seed.shape}.')
        shape = tf.concat([tf.reshape(num, [1]),
                           tf.constant(self._latent_shape, tf.int32)], 0)
        eps = tf.random.stateless_normal(shape, seed, dtype=self._dtype)
        eps = eps * temperature
        xz = self.p_bijector.forward(
            eps, **vb.chain_kwargs(self.p_bijector, training=False))
        x = xz[..., :self._data_shape[-1]]
        if not self._is_image:
            return x
        # No pixel value stands for NaN (a uint8 cast would make it 0).
        x = tf.debugging.assert_all_finite(
            x, 'VFlow.sample: the flow gave non-finite values (an untrained '
            'or diverged model, or a temperature too high for it)')
        pixels = tf.floor(self.image_logit.forward(x))
        pixels = tf.clip_by_value(pixels, 0.0, self._num_bins - 1.0)
        return tf.cast(pixels, tf.uint8 if self._num_bins <= 256 else
                       tf.int32)
