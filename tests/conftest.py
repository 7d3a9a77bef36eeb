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
