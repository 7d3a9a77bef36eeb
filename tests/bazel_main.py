"""Bazel's entry point for a test module: runs it under pytest, as CI does.

`py_test` runs its `main` as a script. Run as scripts, the test modules
would go through `tf.test.main`, which skips their pytest-style test
functions and never loads `tests/conftest.py` (the two logical CPU devices
of the multi-replica tests). One module per process (`-n 0`): Bazel runs
the modules in parallel itself.
"""

import os
import sys

import pytest

if __name__ == '__main__':
    args = ['-q', '-n', '0', *sys.argv[1:]]
    if os.environ.get('XML_OUTPUT_FILE'):
        # Bazel collects per-test results from this file.
        args.append(f'--junitxml={os.environ["XML_OUTPUT_FILE"]}')
    sys.exit(pytest.main(args))
