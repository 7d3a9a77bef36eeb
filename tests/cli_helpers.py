"""Runs a `bin/*.py` absl script's `main` inside the test process.

Flags are parsed by absl exactly as on the command line and `SystemExit` is
caught, so a test sees the exit code and the output without paying for a new
interpreter and TensorFlow start-up. Each script is imported once; scripts
may define the same flag names (score.py's and toy_experiment.py's
--batch_size), so only the flags of the script in use are registered with
absl (`load_script`).
"""

import contextlib
import importlib.util
import io
import os
import re
import sys

from absl import flags
from absl import logging as absl_logging
from absl.testing import flagsaver

# A line of absl's log format: `W1203 11:56:41.989312 1397803 file.py:394] `.
_LOG_LINE = re.compile(
    r'^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] .*\n?', flags=re.M)

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'bin')


# The flags each script loaded in this process defined, by module name.
_SCRIPT_FLAGS = {}


def _register_flags_of(module_name):
    """Registers the flags of script `module_name` with absl, and no other
    loaded script's (they may share names)."""
    registered = flags.FLAGS
    for other, owned in _SCRIPT_FLAGS.items():
        for name, flag in owned.items():
            if (other != module_name and name in registered
                    and registered[name] is flag):
                delattr(registered, name)
    for name, flag in _SCRIPT_FLAGS.get(module_name, {}).items():
        if name not in registered:
            registered[name] = flag


def load_script(path, module_name):
    """The absl script at `path`, imported once as `module_name`, with its
    flags registered (call it outside `flagsaver` blocks, which would drop
    flags registered inside them)."""
    if module_name not in sys.modules:
        _register_flags_of(module_name)
        before = set(flags.FLAGS)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
        _SCRIPT_FLAGS[module_name] = {name: flags.FLAGS[name]
                                      for name in set(flags.FLAGS) - before}
    _register_flags_of(module_name)
    return sys.modules[module_name]


def _script(name):
    return load_script(os.path.join(BIN, f'{name}.py'),
                       f'vflow_tfp_bin_{name}')


def run_script(name, *args, stdout=None, stderr=None):
    """Runs `bin/NAME.py ARGS` in this process: (exit code, stdout, stderr).

    The script prints to a `StringIO`, whose text is returned, or to
    `stdout` if given (then the returned stdout is `None`); likewise
    `stderr` (a `StringIO` whose text is returned, log lines dropped).
    """
    script = _script(name)
    out, err = stdout or io.StringIO(), stderr or io.StringIO()
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
            # pylint: disable-next=protected-access
            script.main(script._parse_flags([f'{name}.py', *args]))
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
