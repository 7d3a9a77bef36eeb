"""The README's Python examples run as written and do what they say."""

import pathlib
import re

import numpy as np
import tensorflow as tf

from vflow_tfp.models import catalog
from vflow_tfp.models import presets

# absolute(), not resolve(): under Bazel the runfiles, not the source tree
# behind their symlinks, must hold the README (a data dependency).
README = pathlib.Path(__file__).absolute().parent.parent / 'README.md'


class ReadmeTest(tf.test.TestCase):

    def test_examples_run(self):
        blocks = re.findall(r'```python\n(.*?)```', README.read_text(),
                            flags=re.S)
        self.assertLen(blocks, 3)
        namespace = {}
        for block in blocks:
            # pylint: disable-next=exec-used
            exec(compile(block, str(README), 'exec'), namespace)
        # The bijector example.
        self.assertEqual(namespace['bits_per_dim'].shape, [16])
        self.assertTrue(np.all(np.isfinite(namespace['bits_per_dim'])))
        self.assertEqual(namespace['samples'].shape, [4, 8, 8, 3])
        self.assertTrue(np.all(np.isfinite(namespace['samples'])))
        self.assertEqual(namespace['z'].shape, [16, 8, 8, 3])
        self.assertTrue(np.all((namespace['z'] > 0) & (namespace['z'] < 1)))
        self.assertTrue(np.all(np.isfinite(namespace['log_qz'])))
        # The model example.
        self.assertEqual(namespace['elbo'].shape, [32])
        self.assertTrue(np.all(np.isfinite(namespace['log_px'])))
        self.assertEqual(namespace['generated'].dtype, tf.uint8)
        self.assertEqual(namespace['generated'].shape, [4, 8, 8, 3])
        # The training example: 20 steps, then the held-out bound.
        results = namespace['results']
        self.assertEqual(results['step'], 20)
        self.assertTrue(np.isfinite(results['train_bpd']))
        self.assertTrue(np.isfinite(results['test_bpd']))

    def test_the_preset_table_gives_each_preset_s_summary(self):
        # The "what" column of the README's preset table is describe(name).
        rows = re.findall(r'^\| `(\w+)` \| [\d,]+ \| [\d.]+ Mi \| (.*) \|$',
                          README.read_text(), flags=re.M)
        self.assertGreaterEqual(len(rows), 20)
        for name, summary in rows:
            self.assertEqual(summary, catalog.describe(name), msg=name)

    def _assert_table_counts(self, names):
        """Each of `names` built with its defaults has the parameter count
        of its row in the README's preset table."""
        rows = dict(re.findall(r'^\| `(\w+)` \| ([\d,]+) \| [\d.]+ Mi \|',
                               README.read_text(), flags=re.M))
        for name in names:
            self.assertIn(name, rows)
            self.assertEqual(presets.build(name, seed=0).count_params(),
                             int(rows[name].replace(',', '')), msg=name)

    def test_the_preset_table_counts_the_small_presets_parameters(self):
        # "Parameter counts as printed by count_params()": the CPU-sized
        # presets, Glow and the toy models, built with their defaults.
        self._assert_table_counts([
            'small_vflow_32', 'small_vflow_16', 'small_flowpp_16',
            'tiny_vflow', 'tiny_flowpp', 'glow_cifar10',
            'checkerboard_glow_3', 'checkerboard_vflow_3_10'])

    def test_the_preset_table_counts_the_imagenet_vflows_parameters(self):
        # The VFlow ImageNet presets (about 40 s: 320M parameters in all);
        # flowpp_imagenet32's count is asserted by test_models.
        self._assert_table_counts(['vflow_imagenet32', 'vflow_imagenet64'])


if __name__ == '__main__':
    tf.test.main()
