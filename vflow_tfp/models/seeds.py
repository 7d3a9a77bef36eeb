"""Per-example stateless seeds: noise that follows the example, not the batch.

A stateless seed `[2]` gives one draw for a whole batch, so the noise an
example receives depends on its position and on the batch it shares. A
*per-example* seed tensor `[M, 2]` gives each block of `N / M` consecutive
rows noise that depends only on its own seed (`M = N`: one row each): the
models' `elbo` and `log_prob` accept one, and then the estimate for an
example is the same however the data are batched.

`example_seeds(x, seed)` derives row `i`'s seed from the bytes of `x[i]` and
`seed` with a fingerprint (FarmHash Fingerprint64, stable across platforms
and releases), so an example's score is a function of its content, the seed
and the sample count alone: equal examples score equally wherever they
appear. The other functions derive further seeds row by row and draw a
block of samples per seed; they are XLA-compatible, `example_seeds` is not
(TF has no XLA kernel for fingerprints), so compute the seeds outside a
`jit_compile=True` function and pass them in. The same seed gives the same
noise eagerly and in a `tf.function`, but not under XLA: TF's XLA kernels
turn a stateless seed into other random numbers (`stateless_normal` with
the same seed differs between `jit_compile=True` and not, also for
`alg='philox'`), so seeded results are reproducible within one of the two
modes, not across them.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    'as_seed',
    'example_seeds',
    'fold_in_rows',
    'is_per_example',
    'sample_rows',
    'split_rows',
]


def as_seed(seed):
    """`seed` as an int32 tensor, a Python or NumPy value checked first.

    TF converts such values to int32 without a word by wrapping or
    truncating them: seed `2**32 + 1` would draw the noise of seed 1, and
    `1.9` that of 1. A tensor is taken as it is (TF refuses other dtypes).

    Raises:
      ValueError: for values that are not integers, or not in
        `[-2**31, 2**31)`.
    """
    if not isinstance(seed, (tf.Tensor, tf.Variable)):
        values = np.asarray(seed)
        if values.dtype.kind not in 'iu':
            raise ValueError('a seed must hold int32 integers; got '
                             f'{values.dtype} values.')
        if values.size and not (-2**31 <= values.min() and
                                values.max() < 2**31):
            outside = (values.min() if values.min() < -2**31
                       else values.max())
            raise ValueError('a seed must hold int32 integers, in [-2**31, '
                             f'2**31); got {outside}.')
    return tf.convert_to_tensor(seed, tf.int32)


def is_per_example(seed):
    """Whether `seed` (a tensor) is per-example `[N, 2]` rather than `[2]`.

    Raises:
      ValueError: for a seed of unknown rank, of a rank other than 1 or 2,
        or whose last dimension is not 2.
    """
    rank = seed.shape.rank
    if rank not in (1, 2) or seed.shape[-1] not in (None, 2):
        raise ValueError(f'a seed must be int32 [2] or per-example [N, 2]; '
                         f'got shape {seed.shape}.')
    return rank == 2


def example_seeds(x, seed):
    """Per-example seeds `[N, 2]` from the content of each example and `seed`.

    `seeds[i] = Fingerprint64(bytes(x[i]) || bytes(seed))`, read as two
    int32. `x` is hashed as given, so callers should first bring it to one
    dtype (the models use int32 pixel values for images and their float
    dtype for vectors): an example's seed does not depend on the rest of
    the batch, and rows with equal bytes get equal seeds.

    Args:
      x: numeric tensor `[N, ...]`.
      seed: int32 `[2]`.

    Returns:
      int32 `[N, 2]`.
    """
    x = tf.convert_to_tensor(x)
    seed = as_seed(seed)
    seed.shape.assert_is_compatible_with([2])
    num = tf.shape(x, out_type=tf.int32)[0]
    rows = tf.reshape(tf.bitcast(x, tf.uint8), tf.stack([num, -1]))
    # The seed is tiled before its bitcast: TF has no GPU kernel that tiles
    # uint8 (the bytes are the same).
    salt = tf.bitcast(tf.tile(seed[tf.newaxis], tf.stack([num, 1])),
                      tf.uint8)
    data = tf.concat([rows, tf.reshape(salt, tf.stack([num, 8]))], axis=1)
    return _as_seeds(tf.fingerprint(data))


def _as_seeds(fingerprints):
    """uint8 `[N, 8]` fingerprints -> int32 `[N, 2]` seeds."""
    return tf.bitcast(tf.reshape(fingerprints, [-1, 2, 4]), tf.int32)


def fold_in_rows(seeds, data):
    """`stateless_fold_in(seeds[i], data[i])` for every row.

    Args:
      seeds: int32 `[M, 2]`.
      data: int32 `[M]`, or a scalar folded into every row.

    Returns:
      int32 `[M, 2]`.
    """
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    data = tf.broadcast_to(tf.convert_to_tensor(data, tf.int32),
                           tf.shape(seeds)[:1])
    return tf.map_fn(
        lambda args: tf.random.experimental.stateless_fold_in(*args),
        (seeds, data), fn_output_signature=tf.TensorSpec([2], tf.int32))


def split_rows(seeds, n):
    """Splits every row's seed into `n` seeds, as `tfp.random.split_seed`.

    Args:
      seeds: int32 `[M, 2]`.
      n: Python int.

    Returns:
      A list of `n` int32 `[M, 2]` tensors.
    """
    n = int(n)
    split = tf.map_fn(lambda s: tf.stack(tfp.random.split_seed(s, n=n)),
                      tf.convert_to_tensor(seeds, tf.int32),
                      fn_output_signature=tf.TensorSpec([n, 2], tf.int32))
    return tf.unstack(split, num=n, axis=1)


def sample_rows(distribution, seeds, num_rows=None):
    """Draws `num_rows` rows of `distribution`, a block per row of `seeds`.

    With `M` seeds and `num_rows = M k`, rows `i k .. (i + 1) k - 1` are
    `distribution.sample(k, seed=seeds[i])`: block `i` depends on `seeds[i]`
    and `k` alone, whatever the other seeds. One seed per block rather than
    per row keeps the row-by-row loop short (the models draw the `k`
    importance samples of an example as one block).

    Args:
      distribution: a distribution with a static event shape and no batch
        shape.
      seeds: int32 `[M, 2]`.
      num_rows: `M k`, a multiple of `M` (int or int32 scalar). Default
        value: `M` (one row per seed).

    Returns:
      `[num_rows] + event_shape`.

    Raises:
      ValueError: for a distribution with a batch shape or a dynamic event
        shape.
      InvalidArgumentError: (when run) if `num_rows` is not a multiple of
        `M`.
    """
    event_shape = distribution.event_shape
    if not (event_shape.is_fully_defined()
            and distribution.batch_shape.rank == 0):
        raise ValueError('sample_rows needs a static event shape and no '
                         f'batch shape; got event shape {event_shape}, batch '
                         f'shape {distribution.batch_shape}.')
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    num_seeds = tf.shape(seeds)[0]
    if num_rows is None:
        num_rows = num_seeds
    num_rows = tf.convert_to_tensor(num_rows, tf.int32)
    with tf.control_dependencies([tf.debugging.assert_equal(
            num_rows % num_seeds, 0,
            message='the number of rows must be a multiple of the number '
                    'of seeds')]):
        per_seed = num_rows // num_seeds
    blocks = tf.map_fn(
        lambda s: distribution.sample(per_seed, seed=s), seeds,
        fn_output_signature=tf.TensorSpec([None] + event_shape.as_list(),
                                          distribution.dtype))
    return tf.reshape(blocks, tf.concat(
        [tf.reshape(num_rows, [1]),
         tf.constant(event_shape.as_list(), tf.int32)], axis=0))
