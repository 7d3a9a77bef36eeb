"""Fully connected conditioner for vector data (e.g. the toy experiments).

The VFlow toy experiment (SPEC §7) uses Glow-style couplings whose
conditioners have two hidden layers of 50 units; `MLP` is that network, with
the coupling calling convention `net(x, context=None, training=False)`.
"""

import tensorflow as tf

from vflow_tfp.nets import layers
from vflow_tfp.nets import recycling

__all__ = ['MLP']


class MLP(tf.Module):
    """Multi-layer perceptron with an optional concatenated context.

    For `x` `[..., D_in]`, an optional context `a` `[..., D_a]` with the same
    leading shape, hidden sizes `n_1 .. n_L` and activation `f`:

    ```none
    h_0 = concat([x, a], axis=-1)          # just x if context_features == 0
    h_l = f(h_{l-1} W_l + b_l),  l = 1..L
    y   = h_L W_out + b_out                # [..., output_features], linear
    ```

    Hidden kernels start as `N(0, 0.05^2)`; the output kernel as
    `N(0, (0.05 * output_init_scale)^2)`, so the default
    `output_init_scale=0` gives `W_out = 0, b_out = 0`: the network outputs
    0 and a fresh coupling using it is the identity. All layers are `Dense`
    and take part in the data-dependent init (SPEC §1.1) when called inside
    `data_dependent_init()`: each hidden pre-activation is normalised to
    mean 0 and std 1 per unit on the batch, and the output pre-activation to
    std `output_init_scale` (so with the default 0 the output layer stays
    exactly zero: `W <- W * 0`, `b <- -m * 0`).

    Inside `recycling_dead_units(seed)` every call first recycles the
    hidden units that are dead on its inputs (`recycle_dead_units`).

    Attributes:
      hidden_layers: list of hidden `Dense` layers.
      output_layer: the output `Dense` layer.
    """

    def __init__(self, input_features, output_features, hidden_units=(50, 50),
                 activation=tf.nn.relu, context_features=0,
                 output_init_scale=0.0, dtype=tf.float32, name=None):
        """Creates the network.

        Args:
          input_features: Python int `D_in`.
          output_features: Python int, size of the output.
          hidden_units: sequence of Python ints, the hidden sizes (may be
            empty for a single affine layer). Default value: `(50, 50)`.
          activation: elementwise callable `f`. Default value: `tf.nn.relu`.
          context_features: Python int `D_a`; 0 for no context.
            Default value: 0.
          output_init_scale: scale >= 0 of the output layer at creation
            (kernel std `0.05 * output_init_scale`) and its DDI target std.
            Default value: 0 (zero output, identity coupling).
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'mlp'`.

        Raises:
          ValueError: for non-positive sizes or a negative
            `output_init_scale`.
        """
        super().__init__(name=name or 'mlp')
        self._input_features = int(input_features)
        self._output_features = int(output_features)
        self._context_features = int(context_features)
        hidden_units = tuple(int(n) for n in hidden_units)
        if (self._input_features < 1 or self._output_features < 1
                or self._context_features < 0
                or any(n < 1 for n in hidden_units)):
            raise ValueError(
                f'{self.name}: feature and hidden sizes must be positive '
                f'(context_features >= 0); got input_features='
                f'{input_features}, output_features={output_features}, '
                f'hidden_units={hidden_units}, context_features='
                f'{context_features}.')
        output_init_scale = float(output_init_scale)
        if output_init_scale < 0:
            raise ValueError(f'{self.name}: output_init_scale must be >= 0; '
                             f'got {output_init_scale}.')
        self._hidden_units = hidden_units
        self._activation = activation
        self._dtype = tf.as_dtype(dtype)
        sizes = (self._input_features + self._context_features,) + hidden_units
        with self.name_scope:
            self.hidden_layers = [
                layers.Dense(n_in, n_out, dtype=dtype, name=f'hidden_{i}')
                for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]
            self.output_layer = layers.Dense(
                sizes[-1], self._output_features,
                init_scale=output_init_scale,
                kernel_stddev=0.05 * output_init_scale, dtype=dtype,
                name='output')

    @property
    def hidden_units(self):
        return self._hidden_units

    @property
    def context_features(self):
        return self._context_features

    @tf.Module.with_name_scope
    def __call__(self, x, context=None, training=False):
        """Applies the network.

        Args:
          x: `[..., input_features]` tensor.
          context: `[..., context_features]` tensor with the leading shape
            of `x` if `context_features > 0`, else `None`.
          training: accepted for the conditioner calling convention; the MLP
            has no dropout, so it has no effect.

        Returns:
          `[..., output_features]` tensor.

        Raises:
          ValueError: for a wrong feature count or a missing, unexpected or
            mis-shaped context.
        """
        del training  # No stochastic layers.
        if x is None:
            # How a `ConditionalAffine` called without its context arrives.
            raise ValueError(f'{self.name} got None as its input; a '
                             'conditional layer it drives needs a context.')
        x = tf.convert_to_tensor(x, dtype=self._dtype)
        if x.shape.rank is None or x.shape.rank < 1 or (
                x.shape[-1] != self._input_features):
            raise ValueError(f'{self.name} expects inputs [..., '
                             f'{self._input_features}]; got {x.shape}.')
        if self._context_features:
            if context is None:
                raise ValueError(
                    f'{self.name} was built with context_features='
                    f'{self._context_features} and needs a context; got '
                    'None.')
            context = tf.convert_to_tensor(context, dtype=self._dtype)
            if (context.shape.rank != x.shape.rank
                    or context.shape[-1] != self._context_features):
                raise ValueError(
                    f'{self.name} expects a context [..., '
                    f'{self._context_features}] of the rank of its input '
                    f'{x.shape}; got {context.shape}.')
            h = tf.concat([x, context], axis=-1)
        elif context is not None:
            raise ValueError(
                f'{self.name} was built without a context '
                '(context_features=0) but was given one of shape '
                f'{getattr(context, "shape", None)}.')
        else:
            h = x
        if recycling.is_active():
            counts = self.recycle_dead_units(h, recycling.next_seed())
            for layer, count in zip(self.hidden_layers, counts):
                recycling.record(f'{self.name}/{layer.name}', count)
        for layer in self.hidden_layers:
            h = self._activation(layer(h))
        return self.output_layer(h)

    def recycle_dead_units(self, inputs, seed):
        """Re-initialises the hidden units that are dead on `inputs`.

        Layer by layer, with `h` the layer's input on the batch, a unit `j`
        whose activation `f(h W + b)_j` is 0 at every row of `h` gets

        ```none
        W[:, j] = s r v / |v|,  v ~ N(0, I),
                  r = upper median of |W[:, k]| over live units k
        b[j]    = -(h_i W[:, j])            for one random row i of h
        W_next[j, :] = 0
        ```

        with `s = -1` if row `i` has the largest projection `h_i v` (the
        unit would be zero on the whole batch again), else 1. With no live
        unit in the layer, `r` is the mean of `|W[:, k]|` over all its units
        instead, and `r = 1` if either comes out 0 (say every unit of the
        layer before was dead, so its rows here were zeroed). The unit is then
        active on part of the batch (unless all rows project alike), and
        the network's output on `inputs` is unchanged (up to float
        rounding). An optimiser's state is left alone: Adam's moments of
        these weights are near zero (their gradients were zero), so its
        first steps on them are several times its usual step. Resetting
        them to typical values made recycled units die again less often
        but did not improve the toy experiment (docs/toy/EXPERIMENTS.md).

        Args:
          inputs: `[..., input_features + context_features]` tensor, the
            network's first-layer input (`concat([x, context])`).
          seed: stateless seed, int32 `[2]`.

        Returns:
          List of the number of units recycled per hidden layer (int32
          scalar tensors).
        """
        h = tf.convert_to_tensor(inputs, dtype=self._dtype)
        h = tf.reshape(h, [-1, h.shape[-1]])
        rows = tf.shape(h, out_type=tf.int32)[0]
        seeds = tf.random.experimental.stateless_split(seed, 2 * len(
            self.hidden_layers))
        counts = []
        for i, layer in enumerate(self.hidden_layers):
            following = (self.hidden_layers[i + 1]
                         if i + 1 < len(self.hidden_layers)
                         else self.output_layer)
            dead = tf.reduce_all(
                tf.equal(self._activation(layer(h)), 0.0), axis=0)
            kernel = tf.convert_to_tensor(layer.kernel)
            norms = tf.norm(kernel, axis=0)
            live_norms = tf.sort(tf.boolean_mask(norms, ~dead))
            live = tf.size(live_norms)
            # With no live unit left, keep the layer's mean norm.
            radius = tf.cond(
                live > 0, lambda: live_norms[live // 2],
                lambda: tf.reduce_mean(norms))
            radius = tf.where(radius > 0, radius, tf.ones_like(radius))
            direction = tf.random.stateless_normal(
                tf.shape(kernel), seeds[2 * i], dtype=kernel.dtype)
            new_kernel = direction * (radius / tf.norm(direction, axis=0))
            pick = tf.random.stateless_uniform(
                [layer.out_features], seeds[2 * i + 1], 0, rows,
                dtype=tf.int32)
            projections = tf.matmul(h, new_kernel)          # [rows, out]
            # Both from the same product: recomputed another way, the
            # picked row's value can round one ulp below the maximum and
            # miss the flip, leaving the unit alive by a rounding residue.
            picked_proj = tf.gather_nd(projections, tf.stack(
                [pick, tf.range(layer.out_features)], axis=-1))
            # A kink at the row of largest projection leaves every row at
            # or below it: point the unit the other way.
            flip = picked_proj >= tf.reduce_max(projections, axis=0)
            sign = tf.where(flip, -tf.ones_like(picked_proj),
                            tf.ones_like(picked_proj))
            new_kernel = new_kernel * sign[tf.newaxis, :]
            new_bias = -picked_proj * sign
            layer.kernel.assign(tf.where(dead[tf.newaxis, :], new_kernel,
                                         kernel))
            layer.bias.assign(tf.where(dead, new_bias, layer.bias))
            following.kernel.assign(tf.where(
                dead[:, tf.newaxis], tf.zeros_like(following.kernel),
                following.kernel))
            counts.append(tf.reduce_sum(tf.cast(dead, tf.int32)))
            h = self._activation(layer(h))
        return counts
