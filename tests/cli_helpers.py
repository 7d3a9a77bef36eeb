"""Runs a `bin/*.py` absl script's `main` inside the test process.

Flags are parsed by absl exactly as on the command line and `SystemExit` is
caught, so a test sees the exit code and the output without paying for a new
interpreter and TensorFlow start-up. Each script is imported once (its flags
are global), so scripts run this way must not define the same flag names.
"""

import contextlib
import importlib.util
import io
import os
import re
import sys

from absl import logging as absl_logging
from absl.testing import flagsaver

# A line of absl's log format: `W1203 11:56:41.989312 1397803 file.py:394] `.
_LOG_LINE = re.compile(
    r'^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] .*\n?', flags=re.M)

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'bin')


def _script(name):
    module_name = f'vflow_tfp_bin_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, os.path.join(BIN, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]


def run_script(name, *args, stdout=None):
    """Runs `bin/NAME.py ARGS` in this process: (exit code, stdout, stderr).

    The script prints to a `StringIO`, whose text is returned, or to
    `stdout` if given (then the returned stdout is `None`).
    """
    script = _script(name)
    out, err = stdout or io.StringIO(), io.StringIO()
    # flagsaver restores --verbosity but not the absl logger's level, which
    # a script sets (score.py quietens INFO): later tests in this process
    # would lose the INFO records they look for.
    absl_logger = absl_logging.get_absl_logger()
    level = absl_logger.level
    with flagsaver.flagsaver(), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        script.FLAGS.unparse_flags()
        try:
            # The script's own parser, as `app.run` calls it.
            script.main(script._parse_flags([f'{name}.py', *args]))  # pylint: disable=protected-access
            code = 0
        except SystemExit as e:
            code = e.code
        finally:
            absl_logger.setLevel(level)
    # Under pytest the libraries' absl log records go to pytest's log
    # capture; under `tf.test.main` (Bazel) absl writes them to stderr. The
    # tests compare the script's own messages, so the records are dropped.
    return (code, None if stdout else out.getvalue(),
            _LOG_LINE.sub('', err.getvalue()))
