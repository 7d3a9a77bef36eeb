"""Quieting TensorFlow's routine notes around the calls that emit them."""

import contextlib
import logging
import re

from absl import logging as absl_logging

__all__ = ['drop_retracing_warnings', 'forget_failed_restore', 'quiet_info']

# TensorFlow logs through its own logger (`tf.get_logger()`) and, in newer
# modules such as SavedModel's signature serialisation and the checkpoint
# saver, through absl's; TFDS logs through absl's too.
_LOGGERS = ('tensorflow', 'absl')


@contextlib.contextmanager
def quiet_info():
    """Drops INFO records of TF's and absl's loggers in the `with` body.

    For calls that log routine notes at INFO whenever the caller logs at
    INFO, as `bin/train.py` does: SavedModel export (every captured
    variable of every signature, thousands of characters of tensor ids),
    each checkpoint save (the saver's sharding time) and each evaluation
    pipeline TFDS builds (three lines on loading the split). Warnings and
    errors still pass, and the levels are restored afterwards. Only the
    calling thread should log meanwhile: absl's logger carries this
    package's own INFO lines too.
    """
    with _quiet_below(logging.WARNING):
        yield


def forget_failed_restore(checkpoint):
    """Keeps TF quiet about a restore into `checkpoint` that raised part-way.

    A `tf.train.Checkpoint.restore` that stops at a value of another shape
    raises before it returns the status whose `expect_partial()` would say
    that the rest of the checkpoint is not wanted. The pending restore stays
    attached to the objects it had not reached, and when they are collected
    (whenever the caller drops them) TF warns of every value left in the
    checkpoint: hundreds of lines that only repeat the error. This marks
    that pending restore as partial. The objects stay usable; their
    variables hold whatever the restore wrote before it stopped.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for trackable in tf.train.TrackableView(checkpoint).descendants():
        # TF keeps the pending restore only here, in private attributes: no
        # public handle reaches a restore that raised.
        pending = getattr(trackable, '_deferred_dependencies', None) or {}
        for positions in pending.values():
            for position in positions:
                coordinator = getattr(position, 'checkpoint', None)
                if hasattr(coordinator, 'expect_partial'):
                    coordinator.expect_partial = True


@contextlib.contextmanager
def _quiet_below(level):
    verbosity = absl_logging.get_verbosity()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    root_level = root.level
    # absl's verbosity as well as its logger's level: SavedModel export
    # saves and restores the verbosity around a step of its own, which
    # resets absl's logger (or, under `absl.app`, the root logger) to it.
    absl_level = absl_logging.converter.standard_to_absl(level)
    louder = verbosity > absl_level
    if louder:
        absl_logging.set_verbosity(absl_level)
        # With absl's handler on the root logger (`absl.app`), the
        # verbosity is set as the root's level, which may have been
        # stricter.
        root.setLevel(max(root.level, root_level))
    for logger in loggers:
        # The effective level, so a logger that inherits a stricter one
        # (say ERROR) is not loosened.
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    try:
        yield
    finally:
        if louder:
            absl_logging.set_verbosity(verbosity)
        for logger, level_before in zip(loggers + [root],
                                        levels + [root_level]):
            logger.setLevel(level_before)


class _RetracingFilter(logging.Filter):
    """Drops TF's excessive-retracing warnings about the functions of one
    class (`Class.` in the function's name)."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner
        # `Owner.` as a whole name: `MyOwner.step` is another class's.
        self._pattern = re.compile(rf'(?<!\w){re.escape(owner)}\.')

    def filter(self, record):
        message = record.getMessage()
        return not ('triggered tf.function retracing' in message
                    and self._pattern.search(message))


def drop_retracing_warnings(owner):
    """Drops, from now on, TF's warnings that functions of class `owner`
    (a name, e.g. `'Trainer'`) retrace too often.

    For classes whose every instance traces its own `tf.function`s once, by
    design: TF counts the traces of all instances' functions together (by
    their code), so a process that builds a few of them, say a
    hyperparameter sweep, is warned of "excessive retracing" that is not
    there. Other functions' warnings still pass. Idempotent.
    """
    logger = logging.getLogger('tensorflow')
    if not any(isinstance(f, _RetracingFilter) and f.owner == owner
               for f in logger.filters):
        logger.addFilter(_RetracingFilter(owner))
