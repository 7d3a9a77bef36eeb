"""Data-dependent initialization: a switch that layers read while they run.

Flow++ and VFlow initialise every ActNorm and every conv/dense layer from the
statistics of a batch (SPEC §1.1, §1.7): one pass through the whole model in
which each layer, in order, sets its parameters so that its own output on that
batch has zero mean and unit variance, and hands that normalised output on.
Running the model's ordinary loss once inside `data_dependent_init()` performs
exactly that pass; every layer that supports it checks `is_active()` and, if
set, calls its own explicit `initialize(...)` before computing its output.

Run the pass eagerly and, under a `tf.distribute.Strategy`, in
cross-replica context, so that each assignment reaches every replica's copy
of the variable. The switch is read in Python, so a `tf.function` sees it
when it is traced, not when it runs: a function traced before the context
reuses a graph without the initialisation (the pass then initialises
nothing, and the context warns when it ends), and one traced inside the
context keeps the initialisation in its graph, so each later call
initialises again from its own batch (a warning says so when it is
traced). The switch is per thread: a layer that another thread runs meanwhile
(an evaluation, say) is not in the pass and keeps its parameters.
"""

import contextlib
import threading

from absl import logging
import tensorflow as tf

from vflow_tfp import bijector_caches

__all__ = ['data_dependent_init', 'is_active', 'record_initialization']

_STATE = threading.local()


@contextlib.contextmanager
def data_dependent_init(expect_layers=True):
    """Context in which layers initialise themselves from the data they see.

    Args:
      expect_layers: warn at the end of the pass if no layer initialised
        itself (most likely a `tf.function` traced before the context ran).
        `VFlow.initialize` passes `False`: its flows may be made of TFP
        bijectors alone. Default value: `True`.

    #### Example

    ```python
    with vflow_tfp.data_dependent_init():
        flow.log_prob(x_init_batch)   # every layer initialised, in order
    ```
    """
    previous = getattr(_STATE, 'pass_', None)
    # A cached result would let a layer skip its initialisation, and after
    # the pass results cached under the old parameters would be stale.
    bijector_caches.clear()
    pass_ = _STATE.pass_ = {'layers': 0, 'traced': False}
    try:
        yield
    finally:
        _STATE.pass_ = previous
        bijector_caches.clear()
    if expect_layers and not pass_['layers']:
        logging.warning(
            'data_dependent_init(): no layer initialised itself. Either the '
            'model has no data-dependent layers, or the pass called a '
            'tf.function traced before the context, whose graph has no '
            'initialisation: run the pass eagerly.')


def is_active():
    """True inside `data_dependent_init()`."""
    return getattr(_STATE, 'pass_', None) is not None


def record_initialization(name):
    """Called by a layer `name` that initialises itself in the current pass."""
    pass_ = _STATE.pass_
    pass_['layers'] += 1
    if not tf.executing_eagerly() and not pass_['traced']:
        pass_['traced'] = True
        logging.warning(
            'data_dependent_init(): %s initialises itself while a '
            'tf.function is traced, so the graph keeps the initialisation '
            'and every call of that function initialises again from its '
            'batch. Run the pass eagerly, or do not call the function '
            'again.', name)
