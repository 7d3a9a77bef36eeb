"""The README's Python example runs as written and does what it says."""

import pathlib
import re

import numpy as np
import tensorflow as tf

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


class ReadmeTest(tf.test.TestCase):

    def test_quick_example_runs(self):
        blocks = re.findall(r'```python\n(.*?)```', README.read_text(),
                            flags=re.S)
        self.assertNotEmpty(blocks)
        namespace = {}
        exec(compile(blocks[0], str(README), 'exec'), namespace)  # pylint: disable=exec-used
        self.assertEqual(namespace['bits_per_dim'].shape, [16])
        self.assertTrue(np.all(np.isfinite(namespace['bits_per_dim'])))
        self.assertEqual(namespace['samples'].shape, [4, 8, 8, 3])
        self.assertTrue(np.all(np.isfinite(namespace['samples'])))
        self.assertEqual(namespace['z'].shape, [16, 8, 8, 3])
        self.assertTrue(np.all((namespace['z'] > 0) & (namespace['z'] < 1)))
        self.assertTrue(np.all(np.isfinite(namespace['log_qz'])))


if __name__ == '__main__':
    tf.test.main()
