"""Data-dependent initialization: a switch that layers read while they run.

Flow++ and VFlow initialise every ActNorm and every conv/dense layer from the
statistics of a batch (SPEC §1.1, §1.7): one pass through the whole model in
which each layer, in order, sets its parameters so that its own output on that
batch has zero mean and unit variance, and hands that normalised output on.
Running the model's ordinary loss once inside `data_dependent_init()` performs
exactly that pass; every layer that supports it checks `is_active()` and, if
set, calls its own explicit `initialize(...)` before computing its output.

Run the pass eagerly (or in one `tf.function`) and, under a
`tf.distribute.Strategy`, in cross-replica context, so that each assignment
reaches every replica's copy of the variable.
"""

import contextlib
import threading

from vflow_tfp import bijector_caches

__all__ = ['data_dependent_init', 'is_active']

_STATE = threading.local()


@contextlib.contextmanager
def data_dependent_init():
    """Context in which layers initialise themselves from the data they see.

    #### Example

    ```python
    with vflow_tfp.data_dependent_init():
        flow.log_prob(x_init_batch)   # every layer initialised, in order
    ```
    """
    previous = is_active()
    # A cached result would let a layer skip its initialisation, and after
    # the pass results cached under the old parameters would be stale.
    bijector_caches.clear()
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = previous
        bijector_caches.clear()


def is_active():
    """True inside `data_dependent_init()`."""
    return getattr(_STATE, 'active', False)
