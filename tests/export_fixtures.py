"""Trained and exported models shared by the export and scoring tests.

Each is trained and exported once per process (the export traces four
signatures, the slow part), into a directory removed at exit.
"""

import atexit
import collections
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from vflow_tfp import data
from vflow_tfp import export
from vflow_tfp.models import presets
import model_helpers

Exported = collections.namedtuple('Exported', 'model path train test_bpd')

# Importance samples of serving_default and draws per pass: small, to keep
# the tests fast; 5 samples per call then take two passes.
DEFAULT_NUM_SAMPLES = 4
CHUNK_SIZE = 4

_cache = {}


def _scratch_dir():
    path = tempfile.mkdtemp(prefix='vflow_tfp_export_test_')
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _train(model, train, steps, batch_size, learning_rate):
    # Eagerly: a few steps cost less than tracing the step.
    step = model_helpers.adam_step(model, learning_rate,
                                   clip_norm=1.0).python_function
    rng = np.random.default_rng(0)
    for i in range(steps):
        step(train[rng.integers(0, len(train), batch_size)],
             tf.constant([i, 9]))


def image_export():
    """`tiny_vflow` after 3 Adam steps on 8x8 photo patches, exported."""
    if 'image' not in _cache:
        model = model_helpers.initialized_tiny_vflow(23, [4, 5])
        train = data.photo_patches(8, 'train', max_patches=2048, seed=1)
        _train(model, train, steps=3, batch_size=16, learning_rate=2e-3)
        test = data.photo_patches(8, 'test', max_patches=64)
        test_bpd = float(tf.reduce_mean(model.bits_per_dim(
            model.elbo(test, seed=[7, 7]))))
        path = export.export_model(
            model, os.path.join(_scratch_dir(), 'tiny_vflow'),
            metadata={'preset': 'tiny_vflow', 'dataset': 'photo_patches/8x8',
                      'test_bpd': test_bpd},
            default_num_samples=DEFAULT_NUM_SAMPLES, chunk_size=CHUNK_SIZE)
        _cache['image'] = Exported(model, path, train, test_bpd)
    return _cache['image']


def vector_export():
    """A 10-dimensional checkerboard VFlow after 10 Adam steps, exported."""
    if 'vector' not in _cache:
        tf.random.set_seed(29)
        model = presets.build('checkerboard_vflow_3_10', seed=0)
        train = data.sample_checkerboard(1024, seed=3)
        model.initialize(train[:256], seed=[1, 2])
        _train(model, train, steps=10, batch_size=64, learning_rate=5e-3)
        path = export.export_model(
            model, os.path.join(_scratch_dir(), 'checkerboard'),
            metadata={'preset': 'checkerboard_vflow_3_10',
                      'dataset': 'checkerboard'},
            default_num_samples=DEFAULT_NUM_SAMPLES, chunk_size=CHUNK_SIZE)
        _cache['vector'] = Exported(model, path, train, None)
    return _cache['vector']
