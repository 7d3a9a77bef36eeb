"""Runs `bin/train.py` with tfds mocked: `python run_with_mock_data.py FLAGS...`.

`tfds.testing.mock_data` patches tfds in this process only, so the tests
launch training through this wrapper: everything else, flags and flagfiles
included, is `bin/train.py` itself.
"""

import os
import runpy
import sys

import tensorflow_datasets as tfds

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                     'bin', 'train.py')

if __name__ == '__main__':
    sys.argv[0] = TRAIN
    with tfds.testing.mock_data(num_examples=int(
            os.environ.get('MOCK_NUM_EXAMPLES', '64'))):
        runpy.run_path(TRAIN, run_name='__main__')
