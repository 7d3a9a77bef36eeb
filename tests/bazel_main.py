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
    # Python put this script's real directory (the source tree's tests/,
    # behind the runfiles symlink) on sys.path, where a helper module left
    # out of //:test_helpers would still be found. Only runfiles count.
    source_tests = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if p != source_tests]
    # Bazel runs a test without HOME in a sandbox whose home directory is
    # read-only, so TFDS could not build a data set in its default
    # ~/tensorflow_datasets on a fresh machine: each test gets its own.
    if os.environ.get('TEST_TMPDIR') and 'TFDS_DATA_DIR' not in os.environ:
        os.environ['TFDS_DATA_DIR'] = os.path.join(
            os.environ['TEST_TMPDIR'], 'tensorflow_datasets')
    if os.environ.get('XML_OUTPUT_FILE'):
        # Bazel collects per-test results from this file.
        args.append(f'--junitxml={os.environ["XML_OUTPUT_FILE"]}')
    sys.exit(pytest.main(args))
