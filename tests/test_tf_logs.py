"""Tests of `vflow_tfp.tf_logs`."""

import gc
import logging
import os
import tempfile
import unittest

from absl import logging as absl_logging

from vflow_tfp import tf_logs


class _Records(logging.Handler):
    """Collects `(logger name, level name, message)` of what reaches root."""

    def __init__(self):
        super().__init__(level=logging.NOTSET)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.levelname,
                             record.getMessage()))


class QuietInfoTest(unittest.TestCase):

    def setUp(self):
        super().setUp()
        self.records = _Records()
        root = logging.getLogger()
        root.addHandler(self.records)
        self.addCleanup(root.removeHandler, self.records)
        self.addCleanup(root.setLevel, root.level)
        self.addCleanup(absl_logging.set_verbosity,
                        absl_logging.get_verbosity())
        for name in ('tensorflow', 'absl'):
            logger = logging.getLogger(name)
            self.addCleanup(logger.setLevel, logger.level)
        absl_logging.set_verbosity(absl_logging.INFO)
        logging.getLogger('tensorflow').setLevel(logging.INFO)

    def _messages(self):
        return [message for _, _, message in self.records.records]

    def test_info_is_dropped_and_warnings_pass(self):
        tf_logger = logging.getLogger('tensorflow')
        absl_level = logging.getLogger('absl').level
        with tf_logs.quiet_info():
            absl_logging.info('absl note')
            tf_logger.info('tf note')
            absl_logging.warning('absl warning')
            tf_logger.warning('tf warning')
        absl_logging.info('absl after')
        tf_logger.info('tf after')
        self.assertEqual(self._messages(), ['absl warning', 'tf warning',
                                            'absl after', 'tf after'])
        self.assertEqual(absl_logging.get_verbosity(), absl_logging.INFO)
        self.assertEqual(tf_logger.level, logging.INFO)
        self.assertEqual(logging.getLogger('absl').level, absl_level)

    def test_absl_s_own_logger_is_quieted_too(self):
        # absl's verbosity may say WARNING while the 'absl' logger's own
        # level lets INFO through.
        absl_logger = logging.getLogger('absl')
        absl_logging.set_verbosity(absl_logging.WARNING)
        absl_logger.setLevel(logging.INFO)
        with tf_logs.quiet_info():
            absl_logging.info('absl note')
        self.assertEqual(self._messages(), [])
        self.assertEqual(absl_logger.level, logging.INFO)

    def test_a_verbosity_saved_and_restored_inside_stays_quiet(self):
        # SavedModel export does this around one of its steps; a quieted
        # logger level alone was reset by it to INFO.
        with tf_logs.quiet_info():
            saved = absl_logging.get_verbosity()
            absl_logging.set_verbosity(absl_logging.FATAL)
            absl_logging.set_verbosity(saved)
            absl_logging.info('after the inner restore')
        self.assertEqual(self._messages(), [])

    def test_a_stricter_inherited_level_is_kept(self):
        tf_logger = logging.getLogger('tensorflow')
        tf_logger.setLevel(logging.NOTSET)
        logging.getLogger().setLevel(logging.ERROR)
        with tf_logs.quiet_info():
            tf_logger.warning('not at ERROR')
        self.assertEqual(self._messages(), [])
        self.assertEqual(tf_logger.level, logging.NOTSET)

    def test_levels_come_back_after_an_error(self):
        with self.assertRaises(KeyError):
            with tf_logs.quiet_info():
                raise KeyError('boom')
        self.assertEqual(absl_logging.get_verbosity(), absl_logging.INFO)
        self.assertEqual(logging.getLogger('tensorflow').level, logging.INFO)
        absl_logging.info('heard')
        self.assertEqual(self._messages(), ['heard'])

    def test_a_stricter_root_level_under_absl_s_handler_is_kept(self):
        # Under absl.app, absl's handler sits on the root logger and absl's
        # verbosity sets the root's level. A stricter root level (ERROR) is
        # neither loosened in the block nor replaced afterwards ("the
        # levels are restored afterwards"), whether the verbosity needs
        # quieting (INFO) or not (WARNING).
        root = logging.getLogger()
        handler = absl_logging.get_absl_handler()
        if handler not in root.handlers:
            root.addHandler(handler)
            self.addCleanup(root.removeHandler, handler)
        for verbosity in (absl_logging.WARNING, absl_logging.INFO):
            absl_logging.set_verbosity(verbosity)
            root.setLevel(logging.ERROR)
            with tf_logs.quiet_info():
                self.assertEqual(root.level, logging.ERROR, verbosity)
            self.assertEqual(root.level, logging.ERROR, verbosity)
            self.assertEqual(absl_logging.get_verbosity(), verbosity)


class ForgetFailedRestoreTest(unittest.TestCase):

    def _restore_that_fails(self, forget, saved_before=False, depth=0):
        """Restores a checkpoint with a value of another shape and a child
        the target lacks; returns TF's warnings once the target is gone.
        `saved_before`: the target checkpoint has its save counter already
        (as one that has saved), so nothing of the restore waits on it.
        `depth`: the model sits that many modules below the checkpoint."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        def nest(module):
            for _ in range(depth):
                outer = tf.Module()
                outer.inner = module
                module = outer
            return module

        saved = tf.Module()
        saved.weights = tf.Variable(tf.zeros([2]))
        saved.head = tf.Module()
        saved.head.bias = tf.Variable(tf.zeros([4]))
        with tempfile.TemporaryDirectory() as tmp:
            path = tf.train.Checkpoint(model=nest(saved)).save(
                os.path.join(tmp, 'ckpt'))
            target = tf.Module()
            target.weights = tf.Variable(tf.zeros([3]))
            checkpoint = tf.train.Checkpoint(model=nest(target))
            if saved_before:
                checkpoint.save_counter  # pylint: disable=pointless-statement
            with self.assertRaisesRegex(ValueError, 'incompatible'):
                checkpoint.restore(path)
        if forget:
            tf_logs.forget_failed_restore(checkpoint)
            self.assertEqual(target.weights.shape, [3])  # Still usable.
        records = _Records()
        tf_logger = logging.getLogger('tensorflow')
        tf_logger.addHandler(records)
        self.addCleanup(tf_logger.removeHandler, records)
        del checkpoint, target
        gc.collect()
        tf_logger.removeHandler(records)
        return [message for _, level, message in records.records
                if level == 'WARNING']

    def test_a_failed_restore_leaves_no_warnings_for_later(self):
        # Without it TF warns, on collection, of the values left behind.
        warnings = self._restore_that_fails(forget=False)
        self.assertTrue(any('could not be found' in w and 'head' in w
                            for w in warnings), warnings)
        self.assertEqual(self._restore_that_fails(forget=True), [])

    def test_the_pending_restore_of_a_nested_object_is_forgotten_too(self):
        # The checkpoint itself waits for nothing (its save counter exists):
        # the restore is pending only on the model's missing child.
        self.assertTrue(self._restore_that_fails(forget=False,
                                                 saved_before=True))
        self.assertEqual(
            self._restore_that_fails(forget=True, saved_before=True), [])

    def test_a_pending_restore_deep_in_the_checkpoint_is_forgotten_too(self):
        # "This marks that pending restore as partial", wherever it waits:
        # here on a child two modules below the checkpoint's model.
        self.assertTrue(self._restore_that_fails(
            forget=False, saved_before=True, depth=2))
        self.assertEqual(self._restore_that_fails(
            forget=True, saved_before=True, depth=2), [])


class RetracingWarningsTest(unittest.TestCase):

    def _tf_logger_without_filters(self):
        """TF's logger as in a fresh process (a trainer built before in this
        one has installed the filter already), and its records."""
        tf_logger = logging.getLogger('tensorflow')
        filters = list(tf_logger.filters)
        self.addCleanup(setattr, tf_logger, 'filters', filters)
        tf_logger.filters = [f for f in filters if not isinstance(
            f, tf_logs._RetracingFilter)]  # pylint: disable=protected-access
        records = _Records()
        tf_logger.addHandler(records)
        self.addCleanup(tf_logger.removeHandler, records)
        return tf_logger, records

    def test_only_the_owner_s_retracing_warnings_are_dropped(self):
        tf_logger, records = self._tf_logger_without_filters()
        template = ('5 out of the last 5 calls to <function {}.<locals>.step '
                    'at 0x7f> triggered tf.function retracing. Tracing is '
                    'expensive')
        tf_logs.drop_retracing_warnings('Trainer')
        tf_logs.drop_retracing_warnings('Trainer')  # Idempotent.
        self.assertEqual(len([f for f in tf_logger.filters if isinstance(
            # pylint: disable-next=protected-access
            f, tf_logs._RetracingFilter)]), 1)
        # Functions of other classes pass, also of one whose name ends in
        # the owner's, or of one that only mentions it.
        others = ['my_loop', 'MyTrainer._make_train_step', 'make_Trainer_step',
                  'TrainerFactory.build']
        for owner in ['Trainer._make_train_step'] + others:
            tf_logger.warning(template.format(owner))
        tf_logger.warning('Trainer. something else')
        self.assertEqual([message for _, _, message in records.records],
                         [template.format(o) for o in others]
                         + ['Trainer. something else'])

    def test_each_owner_s_warnings_are_dropped(self):
        # Idempotent per owner: a second class's call adds its own filter.
        tf_logger, records = self._tf_logger_without_filters()
        tf_logs.drop_retracing_warnings('Trainer')
        tf_logs.drop_retracing_warnings('Scorer')
        for owner in ('Trainer.step', 'Scorer.score', 'Other.run'):
            tf_logger.warning(f'5 out of the last 5 calls to <function '
                              f'{owner} at 0x7f> triggered tf.function '
                              'retracing.')
        self.assertEqual([message for _, _, message in records.records],
                         ['5 out of the last 5 calls to <function Other.run '
                          'at 0x7f> triggered tf.function retracing.'])

    def test_a_warning_logged_with_arguments_is_read_as_formatted(self):
        # A record's message is its text with its arguments filled in: a
        # retracing warning that names the owner's function through a
        # `%s` argument is dropped too, and another class's passes.
        tf_logger, records = self._tf_logger_without_filters()
        tf_logs.drop_retracing_warnings('Trainer')
        template = ('%d out of the last %d calls to <function %s at 0x7f> '
                    'triggered tf.function retracing.')
        for owner in ('Trainer.step', 'Other.run'):
            tf_logger.warning(template, 5, 5, owner)
        self.assertEqual([message for _, _, message in records.records],
                         [template % (5, 5, 'Other.run')])


if __name__ == '__main__':
    unittest.main()
