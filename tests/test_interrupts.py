"""`interrupts.SignalInterrupts`: signals as Ctrl-C inside a block."""

import signal
import sys
import threading

import pytest

from vflow_tfp import interrupts

import lost_signals

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason='Python runs signal handlers on the main thread only.')


def _handlers():
    return {sig: signal.getsignal(sig) for sig in interrupts.STOP_SIGNALS}


def test_a_signal_interrupts_the_block_and_the_handlers_come_back():
    before = _handlers()
    hook = sys.unraisablehook
    seen = []
    ran_on = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts(on_signal=seen.append) as signals:
            signal.raise_signal(signal.SIGTERM)
            ran_on.append(True)  # not reached
    assert not ran_on
    assert signals.received == [signal.SIGTERM]
    assert seen == [signal.SIGTERM]
    assert _handlers() == before
    # So does the hook that reports exceptions C code could not raise.
    assert sys.unraisablehook is hook


def test_a_raise_that_c_code_lost_stops_at_check_and_at_the_end():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts() as signals:
            assert lost_signals.send_lost_signal(signal.SIGINT)
            reached.append('after the lost raise')
            signals.check()
            reached.append('after check')  # not reached
    assert reached == ['after the lost raise']
    # A block that ends without an exception of its own ends with the
    # signal's interrupt in place of a normal exit.
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts():
            assert lost_signals.send_lost_signal(signal.SIGINT)
    # An error after the signal gives way to the signal's interrupt.
    with pytest.raises(KeyboardInterrupt) as caught:
        with interrupts.SignalInterrupts():
            assert lost_signals.send_lost_signal(signal.SIGINT)
            raise OSError('after the signal')
    assert isinstance(caught.value.__cause__, OSError)
    # But a deliberate exit keeps its status: it is no error to replace.
    # (Caught as any BaseException: an interrupt in its place would stop
    # pytest itself.)
    try:
        with interrupts.SignalInterrupts():
            assert lost_signals.send_lost_signal(signal.SIGINT)
            sys.exit(3)
    except BaseException as e:  # pylint: disable=broad-except
        exited = e
    assert type(exited) is SystemExit and exited.code == 3, repr(exited)


def test_deferred_signals_let_the_last_step_finish_then_interrupt():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts() as signals:
            signals.defer_to_exit()
            signal.raise_signal(signal.SIGINT)
            steps.append('moved into place')
            signal.raise_signal(signal.SIGTERM)
            steps.append('after a second signal')
    assert steps == ['moved into place', 'after a second signal']
    assert signals.received == [signal.SIGINT, signal.SIGTERM]
    # The deferral belongs to that block: entered again, a signal raises.
    with pytest.raises(KeyboardInterrupt):
        with signals:
            signal.raise_signal(signal.SIGINT)
            steps.append('not reached')
    assert steps[-1] == 'after a second signal'
    # And so do its signals: a block without one ends as it ends.
    try:
        with signals:
            steps.append('no signal')
    except KeyboardInterrupt:
        pytest.fail("a block without a signal ended with an earlier block's")
    assert signals.received == []
    assert steps[-1] == 'no signal'


def test_no_signal_no_interrupt():
    with interrupts.SignalInterrupts() as signals:
        signals.defer_to_exit()
        signals.check()
    assert signals.received == []


def test_other_unreportable_errors_are_still_reported():
    # Only the report of a signal's dropped raise is kept off stderr: any
    # other exception that C code could not raise (here a finalizer's)
    # still reaches the hook that reports it, signal or not.
    class Failing:
        def __del__(self):
            raise ValueError('a finalizer failed')

    reported = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append(
        unraisable.exc_type)
    try:
        with interrupts.SignalInterrupts():
            Failing()
        assert reported == [ValueError]
        with pytest.raises(KeyboardInterrupt):
            with interrupts.SignalInterrupts():
                assert lost_signals.send_lost_signal(signal.SIGINT)
                Failing()
    finally:
        sys.unraisablehook = hook
    assert reported == [ValueError, ValueError]


def test_a_block_of_no_signals_puts_the_hook_back_too():
    # The hook comes back after every block, also one that handles no
    # signals (`signals=()`): a second block of the same object still
    # passes a finalizer's error on to the hook outside.
    class Failing:
        def __del__(self):
            raise ValueError('a finalizer failed')

    reported = []

    def outside(unraisable):
        reported.append(unraisable.exc_type)

    hook = sys.unraisablehook
    sys.unraisablehook = outside
    try:
        block = interrupts.SignalInterrupts(signals=())
        for _ in range(2):
            with block:
                Failing()
            assert sys.unraisablehook is outside
    finally:
        sys.unraisablehook = hook
    assert reported == [ValueError, ValueError]


def test_the_default_signals_each_interrupt_the_block():
    # STOP_SIGNALS: a scheduler's stop (SIGTERM), Ctrl-C (SIGINT) and the
    # terminal of a foreground run closing (SIGHUP). A recording handler
    # stands outside the block, so that a SIGHUP the block did not take
    # fails an assertion rather than end the test process.
    outside = []
    previous = signal.signal(signal.SIGHUP,
                             lambda signum, frame: outside.append(signum))
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with pytest.raises(KeyboardInterrupt):
                with interrupts.SignalInterrupts() as signals:
                    signal.raise_signal(sig)
            assert signals.received == [sig]
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert not outside


def test_on_signal_is_given_the_signal_as_signal_signals():
    # `on_signal(signal.Signals)`: callers name the signal (say in an exit
    # message), which a bare number cannot do.
    names = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts(
                on_signal=lambda sig: names.append(sig.name)) as signals:
            signal.raise_signal(signal.SIGTERM)
    assert names == ['SIGTERM']
    assert [type(sig) for sig in signals.received] == [signal.Signals]


def test_off_the_main_thread_the_block_runs_unchanged():
    # Python takes no signal handlers there: the block neither installs
    # any nor touches the unraisable hook, on entry or exit.
    before = _handlers()
    hook = sys.unraisablehook
    outcome = []

    def work():
        try:
            with interrupts.SignalInterrupts():
                outcome.append('ran')
            outcome.append(sys.unraisablehook is hook)
        except Exception as e:  # pylint: disable=broad-except
            outcome.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome == ['ran', True]
    assert sys.unraisablehook is hook
    assert _handlers() == before


def test_an_interrupt_lost_without_a_signal_is_still_reported():
    # Only the raise of a signal that came is kept off stderr (the block
    # ends with it); a KeyboardInterrupt that C code dropped with no
    # signal received would otherwise vanish without a trace.
    class Interrupting:
        def __del__(self):
            raise KeyboardInterrupt

    reported = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append(
        unraisable.exc_type)
    try:
        with interrupts.SignalInterrupts() as signals:
            Interrupting()
    finally:
        sys.unraisablehook = hook
    assert signals.received == []
    assert reported == [KeyboardInterrupt]


def test_on_signal_is_called_for_a_deferred_signal_too():
    # `on_signal` is called on each signal: also on one that comes after
    # `defer_to_exit()`, which only puts off the raise to the block's end.
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.SignalInterrupts(on_signal=seen.append) as signals:
            signals.defer_to_exit()
            signal.raise_signal(signal.SIGTERM)
            called_by_then = list(seen)
    # (Checked out here: an assertion inside the block would give way to
    # the signal's KeyboardInterrupt.)
    assert called_by_then == [signal.SIGTERM]
    assert signals.received == [signal.SIGTERM]


def test_a_block_used_before_leaves_the_hook_alone_off_the_main_thread():
    # Off the main thread the block runs unchanged, also for a
    # SignalInterrupts that was used on the main thread before: the hook
    # that reports unraisable exceptions stays whatever it is by then.
    signals = interrupts.SignalInterrupts()
    with signals:
        pass
    hook = sys.unraisablehook

    def installed(unraisable):
        hook(unraisable)

    outcome = []

    def work():
        with signals:
            outcome.append('ran')
        outcome.append(sys.unraisablehook is installed)

    sys.unraisablehook = installed
    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        sys.unraisablehook = hook
    assert outcome == ['ran', True]


def test_only_the_given_signals_interrupt_the_block():
    # `signals`: the signals to handle (bin/export.py takes SIGINT and
    # SIGTERM only). Another signal keeps the handler it had outside the
    # block, here a recording one, so that a SIGHUP the block took would
    # fail an assertion rather than end the test process.
    outside = []
    previous = signal.signal(signal.SIGHUP,
                             lambda signum, frame: outside.append(signum))
    interrupted = False
    try:
        try:
            with interrupts.SignalInterrupts((signal.SIGTERM,)) as signals:
                signal.raise_signal(signal.SIGHUP)
        except KeyboardInterrupt:
            interrupted = True
        with pytest.raises(KeyboardInterrupt):
            with interrupts.SignalInterrupts((signal.SIGTERM,)) as given:
                signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert not interrupted, 'a signal not among `signals` interrupted'
    assert outside == [signal.SIGHUP]
    assert signals.received == []
    assert given.received == [signal.SIGTERM]
