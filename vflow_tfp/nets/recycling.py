"""Recycling dead hidden units: a switch that `MLP`s read while they run.

A ReLU unit whose pre-activation is negative on every input it sees has a
zero gradient everywhere and stays dead for the rest of training. In the toy
VFlow's 2 x 50 conditioners such units appear throughout the high-rate
phase of Adam (up to twenty per 5k steps), so a run can end with a sizeable
part of its width unused. Recycling (in the spirit of ReDo, Sokar et al.,
*The Dormant Neuron Phenomenon in Deep Reinforcement Learning*, ICML 2023)
gives that width back without changing what the network computes:

* a unit counts as dead when its activation is exactly zero at every point
  of the batch the network sees;
* its incoming weights are redrawn (a random direction with the (upper)
  median norm of the layer's live units) and its bias is set so that its
  pre-activation is zero at one randomly chosen point of the batch: its
  kink lies inside the data, and the direction is reversed if no point of
  the batch would lie on the unit's positive side, so it is alive there;
* its outgoing weights (the next layer's row) are set to zero, so the
  network's output on the batch is unchanged, and the unit rejoins training
  through the gradient of that zero row.

Running a model's loss once inside `recycling_dead_units(seed)` recycles the
dead units of every `MLP` it calls, on the inputs each one sees: the same
kind of switch as `vflow_tfp.data_dependent_init`, per thread and read in
Python (so at trace time inside a `tf.function`). Run the pass eagerly,
under a `tf.distribute.Strategy` in cross-replica context: a function traced
inside the context would recycle at every later call, and one traced before
it would not recycle at all.
"""

import contextlib
import numbers
import threading

import tensorflow as tf

__all__ = ['RecyclingReport', 'is_active', 'next_seed', 'record',
           'recycling_dead_units']

_STATE = threading.local()


class RecyclingReport:
    """What a `recycling_dead_units` pass did.

    Attributes:
      counts: list of `(layer_name, count)` pairs, one per hidden layer of
        every `MLP` called in the pass, `count` the number of units recycled
        (a Python int when run eagerly, else an int32 tensor).
    """

    def __init__(self):
        self.counts = []

    @property
    def total(self):
        """Units recycled in the pass (int when eager)."""
        return sum(count for _, count in self.counts)


@contextlib.contextmanager
def recycling_dead_units(seed):
    """Context in which every `MLP` recycles its dead hidden units.

    Args:
      seed: stateless seed (int32 `[2]`, or a Python int) of the new
        weights; each network call in the pass folds in its own counter, so
        the pass is reproducible.

    Yields:
      A `RecyclingReport` that fills in as networks run.

    #### Example

    ```python
    with vflow_tfp.nets.recycling_dead_units(seed=[step, 7]) as report:
        model.elbo(x_batch)          # every MLP recycles on what it sees
    print(report.total, 'units recycled')
    ```
    """
    if isinstance(seed, numbers.Integral):
        seed = [int(seed), 0]
    seed = tf.convert_to_tensor(seed, dtype=tf.int32)
    if seed.shape != [2]:
        raise ValueError(f'seed must be an int or int32 [2]; got shape '
                         f'{seed.shape}.')
    previous = getattr(_STATE, 'pass_', None)
    report = RecyclingReport()
    _STATE.pass_ = dict(seed=seed, calls=0, report=report)
    try:
        yield report
    finally:
        _STATE.pass_ = previous


def is_active():
    """True inside `recycling_dead_units()`."""
    return getattr(_STATE, 'pass_', None) is not None


def next_seed():
    """A fresh stateless seed for one network call of the current pass."""
    state = _STATE.pass_
    state['calls'] += 1
    return tf.random.experimental.stateless_fold_in(
        state['seed'], state['calls'])


def record(name, count):
    """Adds `count` recycled units of layer `name` to the pass's report."""
    if tf.executing_eagerly():
        count = int(count)
    _STATE.pass_['report'].counts.append((name, count))
