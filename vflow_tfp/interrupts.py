"""Signals that interrupt work which cannot stop at a step.

The trainer's restore, data-dependent init and export, `bin/sample.py`'s
sampling and `bin/toy_experiment.py`'s sweep run inside `SignalInterrupts`:
a signal unwinds them as Ctrl-C does (their staging directories removed),
where the default SIGTERM would end the process and leave the staging
behind, and a Ctrl-C whose raise C code dropped still stops them.
"""

import signal
import sys
import threading

__all__ = ['STOP_SIGNALS', 'SignalInterrupts']

# A scheduler's stop, Ctrl-C, and the terminal of a foreground run closing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalInterrupts:
    """Within the `with` block, `signals` raise `KeyboardInterrupt`.

    Python runs a handler wherever the main thread next runs Python code,
    also in code that C calls back, which may drop the handler's raise (a
    finalizer only reports it: "Exception ignored in") or return anyway
    (CPython then raises `SystemError` "... returned a result with an
    exception set"). Each signal is therefore recorded in `received` (the
    signals of the block, kept after it until the object is entered again):
    `check()` raises for a signal whose raise was lost, the block ends with
    a `KeyboardInterrupt` for one, raised in place of any error that came
    after it, and the report of a dropped raise is kept off stderr. Off the
    main thread, where Python takes no handlers, the block runs unchanged.

    Args:
      signals: the signals to handle. Default value: `STOP_SIGNALS`.
      on_signal: optional `fn(signal.Signals)` called on each signal,
        before the raise.
    """

    def __init__(self, signals=STOP_SIGNALS, on_signal=None):
        self._signals = tuple(signals)
        self._on_signal = on_signal
        self._previous = {}
        self._previous_hook = None
        self._installed = False
        self._deferred = False
        self.received = []

    def _handle(self, signum, frame):
        del frame
        sig = signal.Signals(signum)
        self.received.append(sig)
        if self._on_signal is not None:
            self._on_signal(sig)
        if not self._deferred:
            raise KeyboardInterrupt

    def _report_unraisable(self, unraisable):
        if self.received and issubclass(unraisable.exc_type,
                                        KeyboardInterrupt):
            return  # the block ends with it anyway
        self._previous_hook(unraisable)

    def check(self):
        """Raises `KeyboardInterrupt` if a signal came (its raise lost)."""
        if self.received:
            raise KeyboardInterrupt

    def defer_to_exit(self):
        """From now to the end of the block, signals are recorded only.

        For a last step that must not stop halfway, such as moving a
        finished output into place: a signal that comes meanwhile raises
        its `KeyboardInterrupt` when the block ends, after that step, so
        the caller can tell a finished output from an interrupted one.
        """
        self._deferred = True

    def __enter__(self):
        # A block ends with an interrupt for its own signals only, not for
        # one an earlier block of this object ended with.
        self._deferred = False
        self.received = []
        # Off the main thread nothing is installed, so nothing is restored
        # (the hook there may belong to a block on the main thread).
        self._installed = (
            threading.current_thread() is threading.main_thread())
        if self._installed:
            self._previous = {sig: signal.signal(sig, self._handle)
                              for sig in self._signals}
            self._previous_hook = sys.unraisablehook
            sys.unraisablehook = self._report_unraisable
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._installed:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            sys.unraisablehook = self._previous_hook
            self._installed = False
        self._previous = {}
        if not self.received:
            return False
        if exc_type is None:
            raise KeyboardInterrupt
        if issubclass(exc_type, Exception):
            raise KeyboardInterrupt from exc
        return False  # KeyboardInterrupt itself, SystemExit, ...
