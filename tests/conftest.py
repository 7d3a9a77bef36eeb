"""Test session set-up: two logical CPU devices for multi-replica tests.

Logical devices must be configured before TensorFlow initialises its
runtime, so this runs at import, before any test module touches TF.
`tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])` then runs two replicas
on this machine; everything else keeps using `/cpu:0`.
"""

import tensorflow as tf

_cpus = tf.config.list_physical_devices('CPU')
if _cpus:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_configure(config):
    """Under pytest-xdist, builds the offline photo data sets once, in the
    controlling process, before any worker starts: two workers preparing one
    TFDS data set into the same directory at once would race."""
    if not hasattr(config, 'workerinput') and getattr(
            config.option, 'numprocesses', None):
        from vflow_tfp import data  # pylint: disable=g-import-not-at-top
        for size in (8, 16, 32):
            data.image_dataset(f'photo_patches/{size}x{size}', 'train', 1,
                               shuffle=False, repeat=False)
