"""Learning-rate schedules of Flow++ and VFlow as stateless step functions.

The official VFlow schedule (SPEC §3) multiplies a module-level learning rate
by 0.99999 at every step after step 50,000 and so crashes when training is
resumed past that step (SPEC §9.7). Here the rate is a closed-form function
of the step counter, which a checkpoint restores: resuming at any step gives
exactly the rate an uninterrupted run would have used.
"""

import math

import tensorflow as tf
import tf_keras

__all__ = ['WarmupHoldDecay']


class WarmupHoldDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, a plateau, then exponential decay to a floor.

    ```none
    lr(step) = max_lr * step / warmup_steps                 step < warmup_steps
             = max_lr                                       step <= hold_until
             = max_lr * decay^min(step - hold_until, n_min) after
    n_min    = ceil(log(min_lr / max_lr) / log(decay))
    ```

    i.e. the rate decays by `decay` per step and freezes at the first value
    at or below `min_lr`, exactly as the official loop does. The decay counts
    from `hold_until`, as there: with `hold_until < warmup_steps` the rate
    would drop by `decay^(warmup_steps - hold_until)` in one step at the end
    of the warm-up, so `TrainConfig.validate` refuses that when `decay < 1`.

    VFlow CIFAR-10: `max_lr=1.2e-3, warmup_steps=2000, hold_until=50000,
    decay=0.99999, min_lr=3e-4` (the floor is reached near step 188,629).
    Flow++ CIFAR-10: `max_lr=3e-4, warmup_steps=2000, decay=1` (constant).
    """

    def __init__(self, max_lr, warmup_steps=0, hold_until=0, decay=1.0,
                 min_lr=0.0, name=None):
        super().__init__()
        if max_lr < 0 or min_lr < 0 or warmup_steps < 0 or hold_until < 0:
            raise ValueError('Learning rates and step counts must be >= 0; '
                             f'got max_lr={max_lr}, min_lr={min_lr}, '
                             f'warmup_steps={warmup_steps}, '
                             f'hold_until={hold_until}.')
        if not 0.0 < decay <= 1.0:
            raise ValueError(f'decay must be in (0, 1]; got {decay}.')
        if min_lr > max_lr:
            raise ValueError(f'min_lr={min_lr} exceeds max_lr={max_lr}.')
        self.max_lr = float(max_lr)
        self.warmup_steps = int(warmup_steps)
        self.hold_until = int(hold_until)
        self.decay = float(decay)
        self.min_lr = float(min_lr)
        self.name = name or 'warmup_hold_decay'

    def __call__(self, step):
        with tf.name_scope(self.name):
            step = tf.cast(step, tf.float64)
            warm = self.max_lr * step / max(self.warmup_steps, 1)
            after = tf.maximum(step - self.hold_until, 0.0)
            if self.decay < 1.0 and self.min_lr > 0.0:
                after = tf.minimum(after, self._steps_to_floor())
            # In log space: decay^n underflows gracefully for any n.
            decayed = self.max_lr * tf.exp(after * math.log(self.decay))
            lr = tf.where(step < self.warmup_steps, warm, decayed)
            return tf.cast(lr, tf.float32)

    def _steps_to_floor(self):
        """Decay steps until the rate first reaches `min_lr` or below."""
        log_decay = math.log(self.decay)
        steps = math.ceil(math.log(self.min_lr / self.max_lr) / log_decay)

        def at_floor(n):   # the rate after n decay steps, as __call__ has it
            return (self.max_lr * math.exp(n * log_decay)
                    <= self.min_lr * (1.0 + 1e-12))

        # The logarithms' rounding can put the ceiling one step off when
        # `min_lr` is itself `max_lr * decay^k`.
        while steps > 0 and at_floor(steps - 1):
            steps -= 1
        while not at_floor(steps):
            steps += 1
        return float(steps)

    def get_config(self):
        return dict(max_lr=self.max_lr, warmup_steps=self.warmup_steps,
                    hold_until=self.hold_until, decay=self.decay,
                    min_lr=self.min_lr, name=self.name)
