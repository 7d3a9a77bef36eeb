"""A signal whose handler's raise does not reach the code it interrupted.

Python runs a signal handler wherever the main thread next runs Python code,
which may be code that C calls back. C may then drop the handler's
`KeyboardInterrupt` (a finalizer only reports it; `PyObject_HasAttr` clears
it), so it interrupts nothing, or return anyway, which CPython turns into a
`SystemError` raised from it. Both were seen in `bin/train.py`'s set-up
(TF's function finalizers; TF's `nest.is_nested`); this module makes them
happen on purpose, so tests do not wait for them by chance.
"""

import os
import sys
import time


def send_lost_signal(sig, timeout=10.0, report=False):
    """Sends `sig` to this process; its handler runs inside a finalizer.

    Returns whether the handler ran there and raised `KeyboardInterrupt`,
    which the finalizer lost (so a caller can assert that the loss it
    tests did happen). With `report`, the loss also goes to the process's
    `sys.unraisablehook`, as an unplanned one does (by default that prints
    "Exception ignored in" and a traceback).
    """
    lost = []
    hook = sys.unraisablehook

    def record(unraisable):
        lost.append(unraisable.exc_type)
        if report:
            hook(unraisable)

    sys.unraisablehook = record

    class _Finalized:

        def __del__(self):
            os.kill(os.getpid(), sig)
            # Another thread may take the signal: the handler then runs in
            # this loop once the main thread is told, and its raise ends it.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pass

    try:
        _Finalized()  # no reference is kept: finalized at once
    finally:
        sys.unraisablehook = hook
    return lost == [KeyboardInterrupt]


def send_signal_turned_into_an_error(sig, timeout=10.0):
    """Sends `sig` to this process; raises what CPython raises when a C
    function returns a result with the handler's exception set."""
    try:
        os.kill(os.getpid(), sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pass
    except KeyboardInterrupt as e:
        raise SystemError('<built-in method IsNested of PyCapsule object> '
                          'returned a result with an exception set') from e
    raise AssertionError(f'no handler of {sig!r} raised KeyboardInterrupt')


def python_args_sending_a_sigint(after, how):
    """`python -c` arguments to put before a script's path and arguments.

    The script runs with `after` ('module:name' or 'module:Class.method')
    patched to send SIGINT once, when it first returns, whose handler's
    raise C `lost` (reported to the process's `sys.unraisablehook`, as a
    finalizer does) or `turned_into_an_error`; or, `raised`, a SIGINT
    nothing loses: its handler runs, and raises what it raises, before
    `after` returns. stderr gets '(a SIGINT lost)' when the loss did happen.
    """
    send = dict(
        lost='lost_signals.send_lost_signal(signal.SIGINT, report=True)',
        turned_into_an_error=('lost_signals.send_signal_turned_into_an_error('
                              'signal.SIGINT)'),
        # Raised in this thread, and the handler run, before it returns.
        raised='signal.raise_signal(signal.SIGINT)',
    )[how]
    module, name = after.split(':')
    *owners, attribute = name.split('.')
    return ['-c', f'''
import functools, importlib, runpy, signal, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import lost_signals

owner = importlib.import_module({module!r})
for part in {owners!r}:
    owner = getattr(owner, part)
original = getattr(owner, {attribute!r})
sent = []

@functools.wraps(original)
def patched(*args, **kwargs):
    result = original(*args, **kwargs)
    if not sent:
        sent.append(True)
        if {send}:
            print('(a SIGINT lost)', file=sys.stderr)
    return result

setattr(owner, {attribute!r}, patched)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
''']
