"""Exponential moving average (Polyak averaging) of model weights."""

import contextlib

import tensorflow as tf

__all__ = ['WeightEMA']


class WeightEMA(tf.Module):
    """Shadow copies of variables that track their moving average.

    ```none
    shadow <- decay * shadow + (1 - decay) * variable      (update)
    ```

    Flow++ and VFlow evaluate, sample and export with the averaged weights
    (decay 0.999, no warm-up) and reset the shadows to the weights right after
    data-dependent initialisation (SPEC §3). `update` runs after each
    optimiser step, ordered after it by the caller's control flow (the
    official code grouped the two without an order: SPEC §9.12). Create it
    under a `tf.distribute` strategy's scope, next to the model, and call
    `update`/`reset` in cross-replica context.
    """

    def __init__(self, variables, decay=0.999, name=None):
        super().__init__(name=name or 'weight_ema')
        if not 0.0 <= decay < 1.0:
            raise ValueError(f'decay must be in [0, 1); got {decay}.')
        self.decay = float(decay)
        variables = tuple(variables)
        if not variables:
            raise ValueError('WeightEMA needs at least one variable.')
        # A closure is not tracked by tf.Module: the EMA owns (and
        # checkpoints) only its shadows, not the model's variables.
        self._sources = lambda: variables
        # The strategy whose scope the shadows are created in updates them,
        # whichever scope `update` is later called (or traced) in.
        self._strategy = tf.distribute.get_strategy()
        with self.name_scope:
            self.shadows = [
                tf.Variable(v.read_value(), trainable=False,
                            name=v.name.split(':')[0].replace('/', '_'))
                for v in variables]

    def update(self):
        """Moves every shadow towards its variable.

        Under a `tf.distribute` strategy each device moves its own copy of a
        shadow towards its own copy of the variable (`extended.update`, as
        optimisers do). A plain `assign` in cross-replica context would read
        every variable from the first device and broadcast the new shadows
        from there: the whole model copied out of one GPU per step.
        """
        decay = self.decay

        def move(shadow, var):
            return shadow.assign(decay * shadow
                                 + (1.0 - decay) * tf.cast(var, shadow.dtype))

        with self._strategy.scope():
            for shadow, var in zip(self.shadows, self._sources()):
                self._strategy.extended.update(shadow, move, args=(var,))

    def reset(self):
        """Sets every shadow to its variable's current value."""
        for shadow, var in zip(self.shadows, self._sources()):
            shadow.assign(var)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the context the variables hold the averages, then revert.

        For evaluation, sampling and export with the averaged weights.
        """
        saved = [tf.identity(v) for v in self._sources()]
        for var, shadow in zip(self._sources(), self.shadows):
            var.assign(shadow)
        try:
            yield
        finally:
            for var, value in zip(self._sources(), saved):
                var.assign(value)
