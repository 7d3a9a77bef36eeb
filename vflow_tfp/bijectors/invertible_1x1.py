"""Invertible 1x1 convolutions: a learned linear map of the channels."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp.bijectors import own_variables
from vflow_tfp.bijectors import shape_checks

__all__ = ['Invertible1x1Conv', 'Invertible1x1ConvLU', 'LUFactors']

LUFactors = collections.namedtuple(
    'LUFactors', ['permutation', 'sign', 'lower', 'upper', 'log_s'])
LUFactors.__doc__ = (
    'Variables of `Invertible1x1ConvLU`, each with a leading axis of size k '
    '(one matrix per half): permutation [k, c] int32 and sign [k, c] fixed; '
    'lower, upper [k, c, c] and log_s [k, c] trained. The permutation '
    'matrix is `P = eye(c)[permutation]`: its row i is the unit vector '
    'e_{permutation[i]}.')

tfb = tfp.bijectors


def _random_orthogonal(size, dtype):
    q, r = tf.linalg.qr(tf.random.normal([size, size], dtype=tf.float64))
    # Fix the signs so the draw is Haar-distributed rather than QR-biased.
    q = q * tf.sign(tf.linalg.diag_part(r))[tf.newaxis, :]
    return tf.cast(q, dtype)


def _matmul_last_axis(x, matrix):
    """`y[..., :] = x[..., :] @ matrix` as a single 2-D matrix product.

    MKL's einsum with a tiny contraction axis transposes and batches; a
    reshape to `[positions, c]` and one GEMM is several times faster.
    """
    if x.shape.rank == 2:
        return tf.matmul(x, matrix)
    channels = int(matrix.shape[-1])
    flat = tf.reshape(x, [-1, int(matrix.shape[-2])])
    y = tf.reshape(tf.matmul(flat, matrix), tf.concat(
        [tf.shape(x, out_type=tf.int32)[:-1],
         tf.constant([channels], tf.int32)], axis=0))
    return tf.ensure_shape(y, x.shape[:-1].concatenate([channels]))


def _block_diagonal(matrices):
    """`blockdiag(M_0, ..., M_{k-1})` of a `[k, c, c]` stack."""
    k, c = int(matrices.shape[0]), int(matrices.shape[-1])
    rows = [tf.pad(matrices[i], [[0, 0], [i * c, (k - 1 - i) * c]])
            for i in range(k)]
    return tf.concat(rows, axis=0)


class _Pointwise(own_variables.CreatesOwnVariables,
                 shape_checks.BuiltForOneEventShape, tfb.Bijector):
    """Shared machinery: one matrix per half (or one for the whole event).

    Subclasses provide `_weight()`, `_inverse_weight()` and
    `_log_abs_det()` with shapes `[k, c, c]`, `[k, c, c]` and `[k]`, where
    `k` is 1 without a partition and 2 with one; each direction computes
    only what it uses.
    """

    def _setup(self, event_shape, partition):
        event_shape = shape_checks.as_event_shape(event_shape)
        if partition is None:
            half_shapes = (event_shape,)
        else:
            shape_checks.check_partition(partition)
            if len(event_shape) != partition.event_ndims:
                raise ValueError(
                    f'{type(self).__name__}: partition {partition} acts on '
                    f'{partition.event_ndims}-d events; got event shape '
                    f'{list(event_shape)}.')
            half_shapes = partition.half_event_shapes(event_shape)
            if half_shapes[0][-1] != half_shapes[1][-1]:
                raise ValueError('Per-half matrices need halves with equal '
                                 f'channel counts; got {half_shapes}.')
        self._event_shape = event_shape
        self._partition = partition
        self._half_shapes = half_shapes
        self._channels = half_shapes[0][-1]
        # Number of positions each half's matrix is applied at.
        self._positions = [int(np.prod(s[:-1], dtype=np.int64))
                           for s in half_shapes]
        return len(half_shapes), self._channels

    @property
    def event_shape(self):
        return self._event_shape

    @property
    def partition(self):
        return self._partition

    def _parts(self, x):
        if self._partition is None:
            return (x,)
        return self._partition.split(x)

    def _join(self, parts):
        if self._partition is None:
            return parts[0]
        return self._partition.merge(*parts)

    def _apply(self, x, matrices):
        if self._partition is None:
            return _matmul_last_axis(x, matrices[0])
        blocks = self._partition.as_channel_blocks(x)
        if blocks is not None:
            # One product with blockdiag(W_a, W_b) on the side-by-side
            # layout: about 8x faster (forward and gradient) on CPU than
            # split, two products with tiny matrices and merge.
            kernel = _block_diagonal(matrices)
            return self._partition.from_channel_blocks(
                _matmul_last_axis(blocks, kernel), self._event_shape)
        parts = self._parts(x)
        out = [_matmul_last_axis(part, matrices[i])
               for i, part in enumerate(parts)]
        return self._join(out)

    def _ildj(self):
        log_abs_det = self._log_abs_det()
        positions = tf.constant(self._positions, dtype=log_abs_det.dtype)
        return tf.cast(tf.reduce_sum(positions * log_abs_det), self.dtype)

    def _inverse(self, x):
        self._check(x)
        return self._apply(x, self._weight())

    def _forward(self, y):
        self._check(y)
        return self._apply(y, self._inverse_weight())

    def _inverse_log_det_jacobian(self, x):
        self._check(x)
        return self._ildj()

    def _forward_log_det_jacobian(self, y):
        self._check(y)
        return -self._ildj()

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()


class Invertible1x1Conv(_Pointwise):
    """1x1 convolution with a dense matrix (official Flow++/VFlow `Pointwise`).

    ```none
    inverse (data -> latent):  y[..., p, :] = x[..., p, :] W   (each p)
    forward (latent -> data):  x[..., p, :] = y[..., p, :] W^{-1}
    inverse_log_det_jacobian = N * log|det W|
    ```

    `N` is the number of positions (`H * W` for images, 1 for vectors).
    `log|det W|` and `W^{-1}` are computed in float64 whatever the layer's
    dtype (SPEC §1.8). With a `partition`, each half gets its own matrix
    (`W_a` on half a, `W_b` on half b: the official step's per-half
    `Pointwise`), and the log-det sums `N_a log|det W_a| + N_b log|det W_b|`.

    Initialisation: `W = I + noise_scale * N(0, 1)` (0.01 in VFlow, 0.001 in
    Flow++); `noise_scale=None` draws a random orthogonal matrix instead.
    """

    def __init__(self,
                 event_shape,
                 partition=None,
                 noise_scale=0.01,
                 weights=None,
                 validate_args=False,
                 dtype=tf.float32,
                 name=None):
        """Creates the layer.

        Args:
          event_shape: `[H, W, C]` for images or `[D]` for vectors.
          partition: optional `vflow_tfp.bijectors.Partition`; if given, one
            matrix per half.
          noise_scale: scale of the Gaussian perturbation of the identity at
            initialisation, or `None` for a random orthogonal matrix.
            Default value: `0.01`.
          weights: optional variable of shape `[k, c, c]` (k = 2 with a
            partition, else 1) to use instead of creating one.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'invertible_1x1_conv'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'invertible_1x1_conv') as name:
            num_matrices, channels = self._setup(event_shape, partition)
            if weights is None:
                if noise_scale is None:
                    init = tf.stack([_random_orthogonal(channels, dtype)
                                     for _ in range(num_matrices)])
                else:
                    init = (tf.eye(channels, batch_shape=[num_matrices],
                                   dtype=dtype)
                            + noise_scale * tf.random.normal(
                                [num_matrices, channels, channels],
                                dtype=dtype))
                weights = tf.Variable(init, name='weights')
            parameters.update(weights=weights)
            shape_checks.check_parameter_shape(
                weights, [num_matrices, channels, channels], 'weights',
                'Invertible1x1Conv')
            shape_checks.check_parameter_dtype(weights, dtype, 'weights',
                                               'Invertible1x1Conv')
            self._weights = weights
            super().__init__(
                forward_min_event_ndims=len(self._event_shape),
                is_constant_jacobian=True,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name)

    @property
    def weights(self):
        return self._weights

    def _weight(self):
        return tf.convert_to_tensor(self._weights, dtype=self.dtype)

    def _inverse_weight(self):
        w64 = tf.cast(self._weights, tf.float64)
        return tf.cast(tf.linalg.inv(w64), self.dtype)

    def _log_abs_det(self):
        w64 = tf.cast(self._weights, tf.float64)
        # log|det W| = sum_i log|R_ii| with W = QR: Householder QR compiles
        # under XLA (slogdet's LU does not) and, unlike a Cholesky
        # factorisation of W W^T, does not square W's condition number.
        r = tf.linalg.qr(w64)[1]
        return tf.reduce_sum(
            tf.math.log(tf.abs(tf.linalg.diag_part(r))), axis=-1)


class Invertible1x1ConvLU(_Pointwise):
    """1x1 convolution in Glow's LU parameterisation.

    ```none
    W = P L (U + diag(sign * exp(log_s)))
    inverse (data -> latent):  y = x W                at every position
    forward (latent -> data):  x = y W^{-1}
    inverse_log_det_jacobian = N * sum(log_s)
    ```

    `P = eye(C)[permutation]` (so `x P` moves `x_i` to position
    `permutation[i]`) and `sign` are fixed; `L` (unit lower triangular),
    `U` (strictly upper triangular) and `log_s` are trained. The diagonal is
    `sign * exp(log_s)`, so `W` can never become singular (the official dense
    `Pointwise` can, the most reported NaN source of flow models), and the
    log-det costs O(C) instead of a determinant. Initialised from the LU
    decomposition of a random orthogonal matrix, as in Glow. With a
    `partition`, each half gets its own factors.
    """

    def __init__(self,
                 event_shape,
                 partition=None,
                 lu_factors=None,
                 validate_args=False,
                 dtype=tf.float32,
                 name=None):
        """Creates the layer.

        Args:
          event_shape: `[H, W, C]` for images or `[D]` for vectors.
          partition: optional `Partition`; if given, one matrix per half.
          lu_factors: optional `LUFactors` of variables to use instead of
            creating them; the float ones of the layer's `dtype`.
          validate_args: Python `bool`.
          dtype: float dtype. Default value: `tf.float32`.
          name: Default value: `'invertible_1x1_conv_lu'`.
        """
        parameters = dict(locals())
        with tf.name_scope(name or 'invertible_1x1_conv_lu') as name:
            num_matrices, channels = self._setup(event_shape, partition)
            if lu_factors is None:
                lu_factors = self._initial_factors(num_matrices, channels,
                                                   dtype)
            lu_factors = LUFactors(*lu_factors)
            vector, matrix = ([num_matrices, channels],
                              [num_matrices, channels, channels])
            for what, shape in (('permutation', vector), ('sign', vector),
                                ('lower', matrix), ('upper', matrix),
                                ('log_s', vector)):
                shape_checks.check_parameter_shape(
                    getattr(lu_factors, what), shape, f'lu_factors.{what}',
                    'Invertible1x1ConvLU')
                if what != 'permutation':
                    shape_checks.check_parameter_dtype(
                        getattr(lu_factors, what), dtype,
                        f'lu_factors.{what}', 'Invertible1x1ConvLU')
            parameters.update(lu_factors=lu_factors)
            self._lu_factors = lu_factors
            super().__init__(
                forward_min_event_ndims=len(self._event_shape),
                is_constant_jacobian=True,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name)

    @staticmethod
    def _initial_factors(num_matrices, channels, dtype):
        perms, lowers, uppers, signs, log_ss = [], [], [], [], []
        for _ in range(num_matrices):
            w = _random_orthogonal(channels, tf.float64)
            lu, perm = tf.linalg.lu(w)
            # tf.linalg.lu gives w[perm] = L U, i.e. w = P L U with
            # P = eye[invperm].
            perms.append(tf.math.invert_permutation(perm))
            lowers.append(tf.linalg.band_part(lu, -1, 0)
                          - tf.linalg.band_part(lu, 0, 0))
            uppers.append(tf.linalg.band_part(lu, 0, -1)
                          - tf.linalg.band_part(lu, 0, 0))
            diag = tf.linalg.diag_part(lu)
            signs.append(tf.sign(diag))
            log_ss.append(tf.math.log(tf.abs(diag)))
        return LUFactors(
            permutation=tf.Variable(tf.stack(perms), trainable=False,
                                    name='permutation'),
            sign=tf.Variable(tf.cast(tf.stack(signs), dtype),
                             trainable=False, name='sign'),
            lower=tf.Variable(tf.cast(tf.stack(lowers), dtype), name='lower'),
            upper=tf.Variable(tf.cast(tf.stack(uppers), dtype), name='upper'),
            log_s=tf.Variable(tf.cast(tf.stack(log_ss), dtype), name='log_s'))

    @property
    def lu_factors(self):
        return self._lu_factors

    def _factors(self, dtype):
        channels = self._channels
        eye = tf.eye(channels, dtype=dtype)
        lower_mask = tf.linalg.band_part(tf.ones_like(eye), -1, 0) - eye
        upper_mask = tf.transpose(lower_mask)
        f = self._lu_factors
        lower = tf.cast(f.lower, dtype) * lower_mask + eye
        diag = tf.cast(f.sign, dtype) * tf.exp(tf.cast(f.log_s, dtype))
        upper = tf.cast(f.upper, dtype) * upper_mask + tf.linalg.diag(diag)
        # P = eye[invperm] as a matrix: row i is e_{invperm[i]}.
        perm = tf.gather(tf.eye(channels, dtype=dtype), f.permutation)
        return perm, lower, upper

    def _weight(self):
        perm, lower, upper = self._factors(self.dtype)
        return tf.matmul(perm, tf.matmul(lower, upper))

    def _inverse_weight(self):
        # W^{-1} = U^{-1} L^{-1} P^T by triangular solves, in float64 so the
        # sampling direction loses no accuracy to a badly conditioned W.
        perm, lower, upper = self._factors(tf.float64)
        eye = tf.eye(self._channels, batch_shape=[len(self._half_shapes)],
                     dtype=tf.float64)
        l_inv = tf.linalg.triangular_solve(lower, eye, lower=True)
        u_inv = tf.linalg.triangular_solve(upper, eye, lower=False)
        w_inv = tf.matmul(u_inv, tf.matmul(l_inv, perm, transpose_b=True))
        return tf.cast(w_inv, self.dtype)

    def _log_abs_det(self):
        return tf.reduce_sum(self._lu_factors.log_s, axis=-1)
