"""The Glow coupling conditioner (Kingma & Dhariwal 2018).

Three convolutions with ReLUs, the public Glow code's (and TFP's
`tfb.GlowDefaultNetwork`'s) layout, with this package's data-dependent init.
"""

import tensorflow as tf

from vflow_tfp.nets import layers

__all__ = ['GlowNet']


class GlowNet(tf.Module):
    """Glow's conditioner: conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3.

    For `x` `[B, H, W, C_in]` and `F = filters`:

    ```none
    h = relu(conv3x3(x))        # C_in -> F
    h = relu(conv1x1(h))        # F -> F
    y = conv3x3(h)              # F -> output_channels, starts at 0
    ```

    The output kernel and bias start at zero, so a fresh coupling using the
    network is the identity map (Glow's zero initialisation). The hidden
    layers take part in the data-dependent init (unit-variance
    pre-activations). The parameter count is
    `9 C_in F + F + F^2 + F + 9 F output_channels + output_channels`.

    Attributes:
      conv_in, conv_hidden, conv_out: the three `Conv2D` layers.
    """

    def __init__(self, input_shape, output_channels, filters=512,
                 dtype=tf.float32, name=None):
        """Creates the network.

        Args:
          input_shape: `(H, W, C_in)`, Python ints.
          output_channels: Python int, channels of the output.
          filters: Python int `F`, hidden channels. Default value: 512.
          dtype: float dtype of the variables. Default value: `tf.float32`.
          name: module name. Default value: `'glow_net'`.

        Raises:
          ValueError: for an invalid shape or width.
        """
        super().__init__(name=name or 'glow_net')
        input_shape = layers.image_shape(input_shape, self.name)
        filters = int(filters)
        if filters < 1:
            raise ValueError(f'{self.name}: filters must be >= 1; got '
                             f'{filters}.')
        self._input_shape = input_shape
        self._output_channels = int(output_channels)
        with self.name_scope:
            self.conv_in = layers.Conv2D(input_shape[-1], filters, 3,
                                         dtype=dtype, name='conv_in')
            self.conv_hidden = layers.Conv2D(filters, filters, 1, dtype=dtype,
                                             name='conv_hidden')
            self.conv_out = layers.Conv2D(filters, self._output_channels, 3,
                                          init_scale=0.0, kernel_stddev=0.0,
                                          dtype=dtype, name='conv_out')

    @property
    def input_shape(self):
        return self._input_shape

    @tf.Module.with_name_scope
    def __call__(self, x, context=None, training=False):
        """`[B, H, W, C_in]` -> `[B, H, W, output_channels]`.

        `context` must be `None` (Glow is unconditional) and `training` is
        accepted for the coupling calling convention (no dropout).
        """
        del training  # No dropout in Glow's conditioner.
        if context is not None:
            raise ValueError(f'{self.name} takes no context; got one of shape '
                             f'{getattr(context, "shape", None)}.')
        x = tf.convert_to_tensor(x, dtype=self.conv_in.kernel.dtype)
        layers.check_image_input(x, self._input_shape, self.name)
        h = tf.nn.relu(self.conv_in(x))
        h = tf.nn.relu(self.conv_hidden(h))
        return self.conv_out(h)
