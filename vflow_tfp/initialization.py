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

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ['data_dependent_init', 'is_active']

_STATE = threading.local()


def _clear_bijector_caches():
    """Empties TFP's bijector caches (every class that keeps one).

    TFP answers `inverse(x)` from its cache when `x` was inverted before and
    the result is still referenced, without running the layer; a layer
    would then skip its initialisation, and after it the cached results of
    the old parameters would be stale.
    """
    pending, seen = [tfp.bijectors.Bijector], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        cache = vars(cls).get('_cache')
        if isinstance(cache, cache_util.BijectorCache):
            cache.clear()   # the class-level cache: a fresh storage
        pending.extend(cls.__subclasses__())


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
    _clear_bijector_caches()
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = previous
        _clear_bijector_caches()


def is_active():
    """True inside `data_dependent_init()`."""
    return getattr(_STATE, 'active', False)
