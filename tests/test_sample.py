"""Sampling an export: `vflow_tfp.sampling` and `bin/sample.py`."""

import errno
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import export
from vflow_tfp import images
from vflow_tfp import models
from vflow_tfp import sampling
import export_fixtures
import lost_signals

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'bin', 'sample.py')


def _run_sample(*args):
    # A new process: bin/score.py, which tests run in-process, defines
    # flags of the same names.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, SAMPLE, *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _run_on_a_terminal(*args):
    """Runs `python ARGS` with stderr on a terminal: (exit code, the text
    the terminal showed)."""
    terminal, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.DEVNULL,
            stderr=secondary, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    finally:
        os.close(secondary)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the process closed the terminal.
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(terminal)
    return proc.wait(timeout=300), b''.join(chunks).decode()


class ImagesTest(tf.test.TestCase):

    def test_to_8bit_spreads_fewer_levels(self):
        levels = np.array([0, 1, 16, 31], np.uint8)
        self.assertAllEqual(images.to_8bit(levels, 32), [0, 8, 132, 255])
        eight_bit = np.array([0, 7, 255], np.uint8)
        self.assertAllEqual(images.to_8bit(eight_bit), eight_bit)

    def test_grid_tiles_row_by_row(self):
        batch = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) + 1
        grid = images.image_grid(batch, columns=2)
        self.assertAllEqual(grid[..., 0], [[1, 2], [3, 4], [5, 0]])

    def test_an_empty_or_unbatched_input_is_refused(self):
        for shape in ([0, 2, 2, 3], [2, 2, 3]):
            with self.assertRaisesRegex(
                    ValueError, r'^image_grid needs a non-empty \[N, H, W, '
                    rf'C\] batch; got shape \({", ".join(map(str, shape))}'
                    r'\)\.$'):
                images.image_grid(np.zeros(shape, np.uint8))

    def test_grid_defaults_to_ceil_sqrt_columns(self):
        # 5 images: ceil(sqrt(5)) = 3 columns, 2 rows; the cell past the
        # last image stays 0.
        batch = np.arange(1, 6, dtype=np.uint8).reshape(5, 1, 1, 1)
        grid = images.image_grid(np.repeat(np.repeat(batch, 2, 1), 3, 2))
        self.assertEqual(grid.shape, (4, 9, 1))
        self.assertAllEqual(grid[::2, ::3, 0], [[1, 2, 3], [4, 5, 0]])

    def test_to_8bit_spreads_any_level_count_below_256(self):
        # 128 levels (7-bit data): round(x * 255 / 127), the top level 255.
        levels = np.arange(128, dtype=np.uint8)
        spread = images.to_8bit(levels, 128)
        self.assertEqual(spread.dtype, np.uint8)
        self.assertAllEqual(spread, np.round(levels * (255.0 / 127.0)))
        self.assertEqual(spread[-1], 255)

    def test_to_8bit_spreads_255_levels(self):
        # Only 256 levels pass unchanged: 255 levels (0..254) still spread
        # by round(x * 255 / 254), the top level to 255.
        levels = np.array([0, 127, 254], np.uint8)
        self.assertAllEqual(images.to_8bit(levels, 255),
                            np.round(levels * (255.0 / 254.0)))
        self.assertEqual(images.to_8bit(levels, 255)[-1], 255)

    def test_grid_has_no_empty_row_when_the_columns_divide_the_count(self):
        # [rows*H, columns*W, C] with rows = ceil(N / columns): 4 images in
        # 2 columns (also the default ceil(sqrt(4))) fill exactly 2 rows.
        batch = np.arange(1, 5, dtype=np.uint8).reshape(4, 1, 1, 1)
        for columns in (2, None):
            grid = images.image_grid(batch, columns=columns)
            self.assertEqual(grid.shape, (2, 2, 1))
            self.assertAllEqual(grid[..., 0], [[1, 2], [3, 4]])
        self.assertEqual(images.image_grid(batch, columns=4).shape,
                         (1, 4, 1))

    def test_grid_keeps_the_images_values_and_type(self):
        # The grid is the images tiled: float images (values in [0, 1], say)
        # keep their values and type, only the empty cells are 0.
        batch = np.array([0.25, 0.5, 1.0], np.float32).reshape(3, 1, 1, 1)
        grid = images.image_grid(batch, columns=2)
        self.assertEqual(grid.dtype, np.float32)
        self.assertAllEqual(grid[..., 0], [[0.25, 0.5], [1.0, 0.0]])

    def test_to_8bit_keeps_values_below_num_bins_within_0_to_255(self):
        # Any pixel value in [0, num_bins), not only an integer level, is
        # spread over [0, 255]: the top of the range is 255, never a value
        # wrapped around past it.
        values = np.array([0.0, 15.5, 31.0, 31.9])
        spread = images.to_8bit(values, 32)
        self.assertEqual(spread.dtype, np.uint8)
        self.assertAllEqual(spread, [0, 128, 255, 255])

    def test_grid_has_the_columns_asked_for_even_past_the_count(self):
        # [rows*H, columns*W, C] for the columns given: more columns than
        # images leave the cells past the last image 0 (the clamp of
        # --columns to the count is `sampling.SampleWriter`'s, not this).
        batch = np.array([1, 2], np.uint8).reshape(2, 1, 1, 1)
        grid = images.image_grid(batch, columns=3)
        self.assertEqual(grid.shape, (1, 3, 1))
        self.assertAllEqual(grid[..., 0], [[1, 2, 0]])

    def test_to_8bit_spreads_more_than_256_levels(self):
        # "Pixel values in [0, num_bins) spread over [0, 255]": data of
        # more than 8 bits (10-bit, 1024 levels) is scaled down to 8 bits,
        # not cut to its low byte; only 256 levels pass unchanged.
        levels = np.array([0, 512, 1023])
        self.assertAllEqual(images.to_8bit(levels, 1024), [0, 128, 255])


class _FakeSampler:
    """Stands in for a `SavedModelSampler`: records the seeds it is given
    and returns `values` (float vectors) or blank uint8 images."""

    def __init__(self, values=None):
        self.values = values
        self.seeds = []

    def sample(self, num, temperature, seed):
        del temperature
        self.seeds.append(seed)
        if self.values is not None:
            return np.array(self.values[:num], np.float32)
        return np.zeros([num, 2, 2, 1], np.uint8)


class DrawBatchesTest(tf.test.TestCase):
    """`draw_batches` alone, on a fake sampler (no export to build)."""

    def test_the_last_batch_index_can_be_drawn(self):
        # Batch indices end at 2^31 - 1 (first_batch is in [0, 2^31)):
        # a run that ends exactly there is drawn, not refused.
        for num, batch_size, first, seeds in (
                (3, 2, 2**31 - 2, [(4, 2**31 - 2), (4, 2**31 - 1)]),
                (1, 1, 2**31 - 1, [(4, 2**31 - 1)])):
            sampler = _FakeSampler()
            try:
                samples = sampling.draw(sampler, num, seed=4,
                                        batch_size=batch_size,
                                        first_batch=first)
            except ValueError as e:
                self.fail(f'batches {first}..2^31 - 1 refused: {e}')
            self.assertEqual(samples.shape, (num, 2, 2, 1))
            self.assertEqual(sampler.seeds, seeds)

    def test_any_non_finite_vector_is_refused(self):
        # The docstring: non-finite vectors raise, naming the batch; one
        # NaN or inf among finite values is as wrong as a batch of them.
        for bad in (np.nan, np.inf, -np.inf):
            with self.subTest(bad=bad):
                sampler = _FakeSampler([[0.0, 1.0], [bad, 2.0]])
                with self.assertRaisesRegex(
                        ValueError, r'^batch 0 \(seed \(0, 0\)\): '
                        'non-finite samples'):
                    sampling.draw(sampler, 2)

    def test_the_largest_float32_temperature_is_a_temperature(self):
        # The docstring: a temperature is any number >= 0 that float32 (the
        # signature's type) holds, float32's largest value included; the
        # model, not the argument check, decides whether it is too hot.
        top = np.finfo(np.float32).max
        for temperature in (float(top), top):
            sampler = _FakeSampler()
            try:
                samples = sampling.draw(sampler, 1, temperature=temperature)
            except ValueError as e:
                self.fail(f'temperature {temperature!r} refused: {e}')
            self.assertEqual(samples.shape, (1, 2, 2, 1))

    def test_a_failed_batch_is_named_by_its_own_index(self):
        # The error names the batch that failed, counted from first_batch,
        # with its seed: the third batch drawn from batch 2 is batch 4.
        class _NaNInBatch4(_FakeSampler):

            def sample(self, num, temperature, seed):
                samples = super().sample(num, temperature, seed)
                if seed[1] == 4:
                    samples[1, 0] = np.nan
                return samples

        sampler = _NaNInBatch4([[0.0, 1.0], [2.0, 3.0]])
        with self.assertRaisesRegex(ValueError, r'^batch 4 \(seed \(7, 4\)\): '
                                    'non-finite samples'):
            sampling.draw(sampler, 6, seed=7, batch_size=2, first_batch=2)
        self.assertEqual(sampler.seeds, [(7, 2), (7, 3), (7, 4)])

    def test_a_refusal_of_several_lines_is_named_by_its_first(self):
        # The model's refusal, not TF's framing, names a failed batch: the
        # first line of the reason (TF's comparison asserts go on with the
        # values that differ).
        class _Refusing(_FakeSampler):

            def sample(self, num, temperature, seed):
                raise tf.errors.InvalidArgumentError(
                    None, None, 'Graph execution error:\n\nDetected at node '
                    'x defined at (most recent call last):\n<stack traces '
                    'unavailable>\nCondition x == y did not hold.\nIndices '
                    'of first 1 different values:\n[[0]]\n\t [[{{node x}}]] '
                    '[Op:__inference_signature_wrapper_1]')

        with self.assertRaisesRegex(ValueError, r'^batch 0 \(seed \(0, 0\)\): '
                                    r'Condition x == y did not hold\.$'):
            sampling.draw(_Refusing(), 1)

    def test_non_finite_vectors_of_any_float_type_are_refused(self):
        # The docstring: non-finite vectors raise, naming the batch, also
        # from a float64 (or float16) model.
        class _Typed(_FakeSampler):

            def __init__(self, values, dtype):
                super().__init__(values)
                self.dtype = dtype

            def sample(self, num, temperature, seed):
                return super().sample(num, temperature, seed).astype(
                    self.dtype)

        for dtype in (np.float64, np.float16):
            with self.subTest(dtype=dtype.__name__):
                with self.assertRaisesRegex(
                        ValueError, r'^batch 0 \(seed \(0, 0\)\): '
                        'non-finite samples'):
                    sampling.draw(_Typed([[0.0, np.nan]], dtype), 1)

    def test_a_first_batch_that_is_not_an_integer_is_refused(self):
        # first_batch is a batch index, an integer >= 0: True is not batch
        # 1, and 1.0 is not an index either.
        for bad in (True, 1.0, np.float64(2.0)):
            sampler = _FakeSampler()
            with self.assertRaisesRegex(ValueError, 'first_batch must be an '
                                        r'integer in \[0, 2\^31\)'):
                sampling.draw(sampler, 1, first_batch=bad)
            self.assertEqual(sampler.seeds, [])

    def test_an_integer_temperature_is_a_temperature(self):
        # The docstring: a temperature is a number >= 0 (0 maps the mode,
        # 1 is the model); an int is one as much as a float.
        for temperature in (0, 1, 2, np.int64(1)):
            try:
                samples = sampling.draw(_FakeSampler(), 1,
                                        temperature=temperature)
            except ValueError as e:
                self.fail(f'temperature {temperature!r} refused: {e}')
            self.assertEqual(samples.shape, (1, 2, 2, 1))

    def test_a_first_batch_past_int32_is_named_as_out_of_range(self):
        # The docstring: first_batch is a batch index in [0, 2^31); 2^31
        # itself is refused as a first_batch outside that range, before any
        # batch is drawn, not as a run that ends past the last index.
        sampler = _FakeSampler()
        with self.assertRaisesRegex(
                ValueError, r'^first_batch must be an integer in '
                r'\[0, 2\^31\); got 2147483648\.$'):
            sampling.draw(sampler, 1, first_batch=2**31)
        self.assertEqual(sampler.seeds, [])


class SampleTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.image = export_fixtures.image_export()
        cls.vector = export_fixtures.vector_export()
        cls.sampler = sampling.SavedModelSampler(cls.image.path)

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_sample_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _path(self, *names):
        return os.path.join(self.tmp, *names)

    def test_draws_are_the_in_memory_model_s_batch_by_batch(self):
        samples = sampling.draw(self.sampler, 5, temperature=0.7, seed=3,
                                batch_size=2)
        self.assertEqual(samples.shape, (5, 8, 8, 3))
        self.assertEqual(samples.dtype, np.uint8)
        # Batch b is the model's draw from seed (3, b): equal pixels, up to
        # a float32 rounding that moves a value across a level boundary.
        expected = np.concatenate([
            self.image.model.sample(n, temperature=0.7,
                                    seed=tf.constant([3, b])).numpy()
            for b, n in enumerate((2, 2, 1))])
        difference = np.abs(samples.astype(int) - expected.astype(int))
        self.assertLessEqual(difference.max(), 1)
        self.assertGreater(np.mean(difference == 0), 0.99)
        self.assertAllEqual(samples, sampling.draw(
            self.sampler, 5, temperature=0.7, seed=3, batch_size=2))
        self.assertNotAllEqual(samples, sampling.draw(
            self.sampler, 5, temperature=0.7, seed=4, batch_size=2))
        # More samples only add batches; --first_batch skips some.
        self.assertAllEqual(samples[:3], sampling.draw(
            self.sampler, 3, temperature=0.7, seed=3, batch_size=2))
        self.assertAllEqual(samples[2:], sampling.draw(
            self.sampler, 3, temperature=0.7, seed=3, batch_size=2,
            first_batch=1))
        # Temperature 0 maps the latent's mode: the same for every seed.
        mode = sampling.draw(self.sampler, 2, temperature=0.0, seed=1)
        self.assertAllEqual(mode[0], mode[1])
        for bad in (dict(num=0), dict(num=2, batch_size=0),
                    dict(num=2, temperature=-1.0),
                    dict(num=2, temperature=float('nan')),
                    # Finite, but not in float32 (the signature's type).
                    dict(num=2, temperature=1e39),
                    dict(num=2, temperature=10**400),
                    dict(num=2, seed=2**31), dict(num=2**31),
                    dict(num=2, first_batch=-1)):
            # Refused, without NumPy's overflow warning on the way.
            with self.assertRaises(ValueError), warnings.catch_warnings():
                warnings.simplefilter('error', RuntimeWarning)
                sampling.draw(self.sampler, **bad)
        # Batch indices past int32 are found before any batch is drawn.
        drawn = []
        with self.assertRaisesRegex(ValueError, 'end at batch 2147483648'):
            for batch in sampling.draw_batches(
                    self.sampler, 4, batch_size=1, first_batch=2**31 - 3):
                drawn.append(batch)
        self.assertEmpty(drawn)

    def test_a_failed_batch_is_named_with_its_reason(self):
        # Far too hot: the image model's flow overflows, and the error
        # keeps the model's reason, not TF's "Graph execution error:".
        with self.assertRaisesRegex(
                ValueError, r'^batch 1 \(seed \(0, 1\)\): VFlow\.sample: the '
                'flow gave non-finite values'):
            sampling.draw(self.sampler, 2, temperature=3e38, first_batch=1)
        # Vectors have no such check in the model: drawn, then refused.
        vectors = sampling.SavedModelSampler(self.vector.path)
        self.assertTrue(np.all(np.isfinite(sampling.draw(vectors, 4))))
        with self.assertRaisesRegex(
                ValueError, r'^batch 0 \(seed \(0, 0\)\): non-finite '
                r'samples \(temperature 1e\+30'):
            sampling.draw(vectors, 4, temperature=1e30)

    def test_outputs_hold_the_samples(self):
        samples = sampling.draw(self.sampler, 5, seed=1)
        info = self.sampler.metadata
        grid = self._path('grid.png')
        self.assertEqual(sampling.output_kind(grid, info), 'grid')
        self.assertEqual(sampling.write_samples(grid, 'grid', samples,
                                                columns=2), 5)
        decoded = tf.io.decode_png(tf.io.read_file(grid)).numpy()
        self.assertAllEqual(decoded, images.image_grid(samples, 2))
        # At most as many columns as samples.
        sampling.write_samples(grid, 'grid', samples, columns=9)
        self.assertEqual(tf.io.decode_png(tf.io.read_file(grid)).shape,
                         (8, 40, 3))
        array = self._path('s.npy')
        self.assertEqual(sampling.output_kind(array, info), 'array')
        sampling.write_samples(array, 'array', samples)
        self.assertAllEqual(np.load(array), samples)
        # A directory behind a URL (file:// takes gs://'s tf.io.gfile path),
        # made by the write: one PNG per sample, 5-level pixels spread.
        folder = 'file://' + self._path('new', 'pngs')
        self.assertEqual(sampling.output_kind(folder, info), 'directory')
        few_levels = samples % 5
        self.assertEqual(sampling.write_samples(folder, 'directory',
                                                few_levels, num_bins=5), 5)
        names = sorted(os.listdir(self._path('new', 'pngs')))
        self.assertEqual(names, [f'sample_{i:06d}.png' for i in range(5)])
        # Nothing else beside it (the staging directory was renamed).
        self.assertEqual(os.listdir(self._path('new')), ['pngs'])
        for i, name in enumerate(names):
            decoded = tf.io.decode_png(tf.io.read_file(
                self._path('new', 'pngs', name))).numpy()
            self.assertAllEqual(decoded, images.to_8bit(few_levels[i], 5))
        self.assertEqual(decoded.max(), 255)
        # Batch after batch, the files go on counting (sample_000002 is the
        # second batch's first sample), and progress counts every sample.
        progress = []
        folder = self._path('batches')
        with sampling.SampleWriter(folder, 'directory') as writer:
            for batch in sampling.draw_batches(
                    self.sampler, 5, seed=1, batch_size=2,
                    progress=lambda done, num: progress.append((done, num))):
                writer.add(batch)
        self.assertEqual(progress, [(2, 5), (4, 5), (5, 5)])
        names = sorted(os.listdir(folder))
        self.assertEqual(names, [f'sample_{i:06d}.png' for i in range(5)])
        decoded = np.stack([tf.io.decode_png(tf.io.read_file(
            os.path.join(folder, name))).numpy() for name in names])
        self.assertAllEqual(decoded, sampling.draw(self.sampler, 5, seed=1,
                                                   batch_size=2))
        # Extensions in capitals name the same outputs.
        self.assertEqual(sampling.output_kind(self._path('GRID.PNG'), info),
                         'grid')
        self.assertEqual(sampling.output_kind(self._path('S.NPY'), info),
                         'array')

    def test_bad_outputs_are_refused_before_sampling(self):
        info = self.sampler.metadata
        os.makedirs(self._path('full'))
        open(self._path('full', 'x.png'), 'w').close()
        open(self._path('file'), 'w').close()
        os.makedirs(self._path('dir.png'))
        for path, message in (
                ('s.jpg', 'unknown output; name a .png'),
                (self._path('full'), 'holds files already'),
                (self._path('file'), 'a file, not a directory'),
                (self._path('file') + '/', 'a file, not a directory'),
                (self._path('dir.png'), 'a directory; name a file'),
                (self._path('no', 'such', 's.png'), 'no directory')):
            with self.assertRaisesRegex(ValueError, message):
                sampling.output_kind(path, info)
        # A grid or a directory of PNGs is no output for vectors.
        for path in ('v.png', self._path('pngs'), self._path('out') + '/'):
            with self.assertRaisesRegex(ValueError, 'vectors of 2 values, '
                                        r'not images; name a \.npy file'):
                sampling.output_kind(path, {'kind': 'vector',
                                            'data_shape': [2]})
        for path, message in (
                ('-', 'not to stdout'),
                (self._path('no', 'dir'), 'no directory'),
                ('foo://bucket/s.png', 'cannot reach it')):
            with self.assertRaisesRegex(ValueError, message):
                sampling.output_kind(path, info)
        # A trailing slash names a directory, whatever the name; so does an
        # existing one's name with a dot in it.
        self.assertEqual(sampling.output_kind(self._path('s.png') + '/',
                                              info), 'directory')
        os.makedirs(self._path('runs.v2'))
        self.assertEqual(sampling.output_kind(self._path('runs.v2'), info),
                         'directory')
        # The working directory or its parent, and a link to a directory,
        # would be refused only at the end, once every sample was drawn.
        os.makedirs(self._path('empty'))
        os.symlink(self._path('empty'), self._path('link'))
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self._path('empty'))
        for path, message in (('.', 'not as . or ..'),
                              ('./', 'not as . or ..'),
                              ('..', 'not as . or ..'),
                              (self._path('link'), 'a symbolic link'),
                              (self._path('link') + '/', 'a symbolic link')):
            with self.assertRaisesRegex(ValueError, message):
                sampling.output_kind(path, info)
        # `dir/.` is that directory.
        self.assertEqual(sampling.output_kind(self._path('runs.v2', '.'),
                                              info), 'directory')
        samples = sampling.draw(self.sampler, 2, seed=1)
        self.assertEqual(sampling.write_samples(
            self._path('runs.v2', '.'), 'directory', samples), 2)
        self.assertLen(os.listdir(self._path('runs.v2')), 2)

    def test_the_writers_never_remove_files_in_the_way(self):
        # The writers are public: without `output_kind`'s check first, a
        # directory output must still not replace a directory that holds
        # files (the user's), nor the working directory ('./').
        samples = sampling.draw(self.sampler, 2, seed=1)
        full = self._path('full')
        os.makedirs(os.path.join(full, 'sub'))
        with open(os.path.join(full, 'notes.txt'), 'w') as f:
            f.write('kept')
        with open(self._path('file'), 'w') as f:
            f.write('kept')
        cwd = os.getcwd()
        os.chdir(full)
        self.addCleanup(os.chdir, cwd)
        for path in (full, full + '/', './', '.', self._path('file')):
            with self.assertRaisesRegex(ValueError, 'a file or a directory '
                                        'that holds files is there'):
                sampling.write_samples(path, 'directory', samples)
        # Files that appear while the samples are written stay; the samples
        # go.
        late = self._path('late')
        with self.assertRaisesRegex(FileExistsError, 'holds files'):
            with sampling.SampleWriter(late, 'directory') as writer:
                writer.add(samples)
                os.makedirs(late)
                with open(os.path.join(late, 'notes.txt'), 'w') as f:
                    f.write('kept')
        self.assertEqual(sorted(os.listdir(full)), ['notes.txt', 'sub'])
        self.assertEqual(os.listdir(late), ['notes.txt'])
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         ['file', 'full', 'late'])
        # An empty directory is filled.
        empty = self._path('empty')
        os.makedirs(empty)
        self.assertEqual(sampling.write_samples(empty, 'directory', samples),
                         2)
        self.assertLen(os.listdir(empty), 2)

    def test_writer_misuse_is_named(self):
        samples = sampling.draw(self.sampler, 2, seed=1)
        for kwargs, message in (
                (dict(kind='png'), "kind must be 'grid', 'array' or "
                                   "'directory'; got 'png'"),
                (dict(kind='grid', columns=-1),
                 'columns must be an integer >= 1; got -1'),
                (dict(kind='grid', num_bins=1),
                 'num_bins must be an integer >= 2; got 1')):
            with self.assertRaisesRegex(ValueError, message):
                sampling.SampleWriter(self._path('s.png'), **kwargs)
        with self.assertRaisesRegex(ValueError, 'no samples to write'):
            with sampling.SampleWriter(self._path('s.png'), 'grid'):
                pass
        with self.assertRaisesRegex(RuntimeError, 'inside a `with` block'):
            sampling.SampleWriter(self._path('d'), 'directory').add(samples)
        self.assertEqual(os.listdir(self.tmp), [])

    def test_an_error_while_writing_leaves_nothing(self):
        samples = sampling.draw(self.sampler, 3, seed=1)
        for kind, name in (('directory', 'pngs'), ('array', 's.npy'),
                           ('grid', 's.png')):
            with self.assertRaisesRegex(RuntimeError, 'stopped'):
                with sampling.SampleWriter(self._path(name), kind) as writer:
                    writer.add(samples)
                    raise RuntimeError('stopped')
        self.assertEqual(os.listdir(self.tmp), [])

    def test_the_command_line(self):
        grid = self._path('grid.png')
        run = _run_sample(f'--model={self.image.path}', f'--output={grid}',
                          '--num=6', '--columns=2', '--temperature=0.8',
                          '--batch_size=4')
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertRegex(run.stdout, r'^6 samples \(8x8x3, uint8, temperature '
                                     r'0\.8, seed 0\) in [0-9.]+ s: wrote '
                                     f'{grid}\n$')
        # 2 columns, not the default ceil(sqrt(6)) = 3.
        self.assertEqual(tf.io.decode_png(tf.io.read_file(grid)).shape,
                         (24, 16, 3))
        vectors = self._path('v.npy')
        settings = ('--batch_size=3', '--seed=5', '--temperature=0.5')
        run = _run_sample(f'--model={self.vector.path}',
                          f'--output={vectors}', '--num=7', *settings)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn('temperature 0.5, seed 5', run.stdout)
        drawn = np.load(vectors)
        self.assertEqual(drawn.shape, (7, 2))
        self.assertTrue(np.all(np.isfinite(drawn)))
        # The seed and temperature reach the sampler.
        self.assertAllClose(drawn, sampling.draw(
            sampling.SavedModelSampler(self.vector.path), 7,
            temperature=0.5, seed=5, batch_size=3), atol=1e-6, rtol=0)
        # --first_batch=1 starts at the second batch of the same stream.
        later = self._path('later.npy')
        run = _run_sample(f'--model={self.vector.path}', f'--output={later}',
                          '--num=3', '--first_batch=1', *settings)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertAllClose(np.load(later), drawn[3:6])
        os.remove(later)
        # One line for a refused setting, before any sampling.
        run = _run_sample(f'--model={self.vector.path}',
                          f'--output={self._path("v.png")}')
        self.assertEqual(run.returncode, 2)
        self.assertEqual(run.stderr.splitlines()[-1],
                         f'sample.py: error: {self._path("v.png")}: the '
                         'model draws vectors of 2 values, not images; name '
                         'a .npy file.')
        self.assertEqual(sorted(os.listdir(self.tmp)), ['grid.png', 'v.npy'])
        # SIGTERM (as a scheduler stops a job) while a directory fills: one
        # line, and neither the directory nor its staging copy is left.
        folder = self._path('many')
        proc = subprocess.Popen(
            [sys.executable, SAMPLE, f'--model={self.image.path}',
             f'--output={folder}', '--num=1000000', '--batch_size=16'],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while not any(name.startswith('.many.staging-')
                      for name in os.listdir(self.tmp)):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                self.fail('no staging directory: ' + proc.communicate()[1])
            time.sleep(0.2)
        time.sleep(1.0)  # Some PNGs written.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 130, err)
        self.assertEqual(err.splitlines()[-1],
                         f'sample.py: interrupted; nothing written to '
                         f'{folder}.')
        self.assertEqual(sorted(os.listdir(self.tmp)), ['grid.png', 'v.npy'])

    def test_a_signal_whose_raise_c_code_lost_still_interrupts(self):
        # The handler may run in C's callback (a TF finalizer), which drops
        # its raise or turns it into a SystemError: the run still stops at
        # the next batch, one line, nothing written, nothing else printed.
        for case in ('lost', 'turned_into_an_error'):
            with self.subTest(case):
                array = self._path('v.npy')
                run = subprocess.run(
                    [sys.executable,
                     *lost_signals.python_args_sending_a_sigint(
                         'vflow_tfp.sampling:SampleWriter.add', case),
                     SAMPLE, f'--model={self.vector.path}',
                     f'--output={array}', '--num=40', '--batch_size=2'],
                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
                    capture_output=True, text=True, timeout=300)
                self.assertEqual(run.returncode, 130, run.stderr)
                self.assertTrue(run.stderr.endswith(
                    f'sample.py: interrupted; nothing written to {array}.\n'),
                    run.stderr)
                if case == 'lost':
                    self.assertIn('(a SIGINT lost)', run.stderr)
                    self.assertNotIn('Exception ignored', run.stderr)
                self.assertNotIn('Traceback', run.stderr)
                self.assertEqual(os.listdir(self.tmp), [])

    def test_a_signal_while_the_output_moves_into_place_keeps_it(self):
        # SIGINT right after the array's rename into place: the signal waits
        # for the move to end (nothing raises there, so no raise can be
        # lost either), and the output, whole, is reported as written, not
        # as "nothing written".
        array = self._path('v.npy')
        run = subprocess.run(
            [sys.executable, *lost_signals.python_args_sending_a_sigint(
                'vflow_tfp.file_io:replace', 'raised'),
             SAMPLE, f'--model={self.vector.path}', f'--output={array}',
             '--num=6', '--batch_size=2'],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
            capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertNotIn('Traceback', run.stderr)
        self.assertRegex(run.stdout, r'^6 samples .*: wrote ' +
                         re.escape(array))
        self.assertEqual(np.load(array).shape[0], 6)

    def test_the_command_line_spreads_a_model_s_fewer_levels(self):
        # A 32-level model (5-bit data): the .npy holds its levels, the PNG
        # the same draws spread over 0..255 as the export's num_bins says.
        model = models.VFlow(tfp.bijectors.Identity(), (2, 2, 3),
                             num_bins=32,
                             rng=tf.random.Generator.from_seed(1))
        path = export.export_model(model, self._path('levels32'))
        grid, array = self._path('s.png'), self._path('s.npy')
        for output in (grid, array):
            run = _run_sample(f'--model={path}', f'--output={output}',
                              '--num=4', '--seed=3')
            self.assertEqual(run.returncode, 0, run.stderr)
        levels = np.load(array)
        self.assertEqual(levels.dtype, np.uint8)
        self.assertLess(levels.max(), 32)
        self.assertGreater(levels.max(), 0)
        decoded = tf.io.decode_png(tf.io.read_file(grid)).numpy()
        self.assertAllEqual(decoded, images.image_grid(
            images.to_8bit(levels, 32)))

    def test_the_command_line_refuses_stray_arguments_and_columns(self):
        # A stray word (a forgotten --, say `--num 8`) and --columns for an
        # output that is not a grid are refused, one line, nothing written.
        array = self._path('v.npy')
        # A temperature that is not finite, which absl's bound lets
        # through, is refused too.
        for extra, message in (
                (['8'], "unexpected arguments ['8']"),
                (['--columns=2'], '--columns applies to a .png grid.'),
                (['--temperature=inf'], '--temperature must be finite; got '
                                        'inf.'),
                (['--temperature=nan'], '--temperature must be finite; got '
                                        'nan.')):
            run = _run_sample(f'--model={self.vector.path}',
                              f'--output={array}', '--num=2', *extra)
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertEqual(run.stderr.splitlines()[-1],
                             f'sample.py: error: {message}')
        self.assertEqual(os.listdir(self.tmp), [])

    def test_the_command_line_reports_one_sample_as_one(self):
        # The summary line counts what was written: one sample is "1
        # sample", and a directory of one holds "1 file".
        array, folder = self._path('one.npy'), self._path('one')
        run = _run_sample(f'--model={self.vector.path}', f'--output={array}',
                          '--num=1')
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertRegex(run.stdout, r'^1 sample \(2, float32, temperature 1, '
                                     r'seed 0\) in [0-9.]+ s: wrote '
                                     + re.escape(array) + '\n$')
        run = _run_sample(f'--model={self.image.path}', f'--output={folder}',
                          '--num=1')
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertRegex(run.stdout, r'^1 sample \(8x8x3, uint8, .*: wrote '
                                     r'1 file in ' + re.escape(folder) + '\n$')
        self.assertEqual(os.listdir(folder), ['sample_000000.png'])

    def test_bad_or_missing_flags_are_refused_in_one_line(self):
        # A bad or out-of-range flag, like a missing --model or --output,
        # stops the run with one line on stderr and exit code 2. Each
        # flag's range (--seed and --first_batch in [0, 2^31),
        # --temperature >= 0, --columns >= 1) is the flag's own, refused by
        # name before TensorFlow starts.
        array = self._path('v.npy')
        model_and_output = [f'--model={self.vector.path}',
                            f'--output={array}']
        out_of_range = [
            (model_and_output + ['--num=2', flag], f'flag {flag}: ')
            for flag in ('--seed=-1', '--seed=2147483648', '--temperature=-1',
                         '--columns=0', '--first_batch=2147483648')]
        for args, message in [
                (model_and_output + ['--num=0'], 'flag --num=0: '),
                (model_and_output + ['--nmu=3'],
                 'Unknown command line flag \'nmu\''),
                ([f'--output={array}'], '--model is required (an exported '
                                        'SavedModel directory).'),
                ([f'--model={self.vector.path}'], '--output is required: '
                                                  'NAME.png, NAME.npy or a '
                                                  'directory.'),
                *out_of_range]:
            with self.subTest(args[-1]):
                run = _run_sample(*args)
                self.assertEqual(run.returncode, 2, run.stderr)
                self.assertLen(run.stderr.splitlines(), 1, run.stderr)
                self.assertStartsWith(run.stderr,
                                      f'sample.py: error: {message}')
        self.assertEqual(os.listdir(self.tmp), [])

    def test_progress_is_shown_on_a_terminal_only(self):
        # --progress (the default) counts the samples on stderr when it is a
        # terminal, the last count ending its line; on a pipe it shows
        # nothing.
        array = self._path('v.npy')
        args = (SAMPLE, f'--model={self.vector.path}', f'--output={array}',
                '--num=6', '--batch_size=4')
        code, shown = _run_on_a_terminal(*args)
        self.assertEqual(code, 0)
        self.assertRegex(shown, r'\r4/6 samples, [0-9.]+ samples/s'
                                r'\r6/6 samples, [0-9.]+ samples/s\r?\n$')
        os.remove(array)
        run = _run_sample(*args[1:])
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertNotIn('samples/s', run.stderr)

    def test_noprogress_shows_no_progress_on_a_terminal(self):
        # --progress shows progress only if set: --noprogress shows none,
        # even on a terminal.
        array = self._path('v.npy')
        code, shown = _run_on_a_terminal(
            SAMPLE, f'--model={self.vector.path}', f'--output={array}',
            '--num=6', '--batch_size=4', '--noprogress')
        self.assertEqual(code, 0, shown)
        self.assertNotIn('samples/s', shown)
        self.assertEqual(np.load(array).shape, (6, 2))

    def test_columns_are_refused_for_a_directory_too(self):
        # --columns applies to a .png grid: a directory of PNGs (one per
        # sample) has no columns, and is refused like an array is.
        folder = self._path('pngs')
        run = _run_sample(f'--model={self.image.path}', f'--output={folder}',
                          '--num=2', '--columns=2')
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertEqual(run.stderr.splitlines()[-1],
                         'sample.py: error: --columns applies to a .png '
                         'grid.')
        self.assertEqual(os.listdir(self.tmp), [])

    def test_an_output_that_cannot_be_written_is_refused_in_one_line(self):
        # A failed write stops the run like any refusal: one line naming
        # the output and, in a few words, the reason; exit code 2 and
        # nothing left behind. Locally (a name too long for the file
        # system) and behind a URL (a directory that does not exist, which
        # TF's file system, not Python's, finds).
        local = self._path('a' * 300 + '.npy')
        url = 'file://' + self._path('no', 'such', 'v.npy')
        for output, line in (
                (local, f'sample.py: error: {local}: cannot write it '
                        f'({os.strerror(errno.ENAMETOOLONG)}).'),
                (url, f'sample.py: error: {url}: cannot write it '
                      f'({os.strerror(errno.ENOENT)}).')):
            with self.subTest(output[:40]):
                run = _run_sample(f'--model={self.vector.path}',
                                  f'--output={output}', '--num=2')
                self.assertEqual(run.returncode, 2, run.stderr)
                self.assertNotIn('Traceback', run.stderr)
                self.assertStartsWith(run.stderr.splitlines()[-1], line)
        self.assertEqual(os.listdir(self.tmp), [])


class SampleWriterWithoutAModelTest(tf.test.TestCase):
    """`SampleWriter` on its own, with made-up samples."""

    def test_complete_only_when_the_block_ends_normally(self):
        # `complete` is true once the `with` block has ended normally and
        # the output is under its name; after an error inside it, it stays
        # false and nothing is there.
        tmp = tempfile.mkdtemp(prefix='vflow_tfp_sample_')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        samples = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
        for kind, name in (('array', 's.npy'), ('grid', 's.png'),
                           ('directory', 'pngs')):
            with self.subTest(kind):
                path = os.path.join(tmp, name)
                writer = sampling.SampleWriter(path, kind)
                self.assertFalse(writer.complete)
                with self.assertRaisesRegex(RuntimeError, 'stopped'):
                    with writer:
                        writer.add(samples)
                        raise RuntimeError('stopped')
                self.assertFalse(writer.complete)
                self.assertFalse(os.path.exists(path))
                writer = sampling.SampleWriter(path, kind)
                with writer:
                    writer.add(samples)
                self.assertTrue(writer.complete)
                self.assertTrue(os.path.exists(path))

    def _tmp(self):
        tmp = tempfile.mkdtemp(prefix='vflow_tfp_sample_')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        return tmp

    def test_a_grid_of_zero_columns_is_refused(self):
        # `columns` is a number of columns >= 1 or None (the default,
        # ceil(sqrt(N))): 0 is refused by name like -1, not taken as the
        # default.
        with self.assertRaisesRegex(
                ValueError, r'^columns must be an integer >= 1; got 0\.$'):
            sampling.SampleWriter(os.path.join(self._tmp(), 's.png'), 'grid',
                                  columns=0)

    def test_an_output_that_cannot_be_written_is_a_value_error(self):
        # write_samples: "ValueError: if the output cannot be written", also
        # for a URL, whose file TF's file system (not Python's) fails to
        # create: here in a directory that does not exist. The message
        # names the output, not the temporary file written beside it.
        url = 'file://' + os.path.join(self._tmp(), 'no', 'such', 's.npy')
        samples = np.zeros([2, 2, 2, 1], np.uint8)
        with self.assertRaises(Exception) as caught:
            sampling.write_samples(url, 'array', samples)
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception),
                         rf'^{re.escape(url)}: cannot write it '
                         rf'\({os.strerror(errno.ENOENT)}\)\.$')

    def test_a_file_named_as_a_directory_is_refused_when_the_block_starts(
            self):
        # A directory output must be new or empty: a file of the name, even
        # named with a trailing slash, is refused when the block starts
        # (ValueError, before any sample is drawn), and stays as it was.
        tmp = self._tmp()
        path = os.path.join(tmp, 'file')
        with open(path, 'w') as f:
            f.write('kept')
        entered = []
        with self.assertRaises(Exception) as caught:
            with sampling.SampleWriter(path + '/', 'directory') as writer:
                entered.append(True)
                writer.add(np.zeros([2, 2, 2, 1], np.uint8))
        self.assertEqual(entered, [])
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception), 'a file or a directory that '
                         'holds files is there')
        self.assertEqual(os.listdir(tmp), ['file'])
        with open(path) as f:
            self.assertEqual(f.read(), 'kept')


class OutputKindWithoutAModelTest(tf.test.TestCase):
    """`output_kind` with made-up metadata (no export to build)."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_sample_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_a_link_to_a_file_names_a_file_to_replace(self):
        # A file of the name is replaced, a symbolic link to one too: only
        # a link to a directory is refused (its staging directory would go
        # beside the link, not the directory).
        tmp = self.tmp
        for name, kind in (('s.npy', 'array'), ('s.png', 'grid')):
            target = os.path.join(tmp, 'target' + name)
            open(target, 'w').close()
            link = os.path.join(tmp, name)
            os.symlink(target, link)
            try:
                got = sampling.output_kind(link, {'kind': 'image'})
            except ValueError as e:
                self.fail(f'a link to a file refused: {e}')
            self.assertEqual(got, kind)

    def test_a_url_s_kind_is_not_read_from_a_local_directory(self):
        # A URL names a path of TF's file system, not a local one: a local
        # directory spelled like it (relative to the working directory)
        # does not make it a directory output; its extension, unknown
        # here, is refused.
        tmp = self.tmp
        url = 'file://' + os.path.join(tmp, 'out', 'runs.v2')
        os.makedirs(os.path.join(tmp, 'file:' + os.path.join(tmp, 'out',
                                                             'runs.v2')))
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(tmp)
        with self.assertRaisesRegex(ValueError, 'unknown output; name a '
                                    r'\.png'):
            sampling.output_kind(url, {'kind': 'image'})


class _RefusingSampler(_FakeSampler):
    """A sampler whose model refuses every batch with TF's `message`."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def sample(self, num, temperature, seed):
        raise tf.errors.InvalidArgumentError(None, None, self.message)


class FailedBatchAndWriterDetailsTest(tf.test.TestCase):
    """How a failed batch is named, and when a writer reports completion
    (fake samplers and made-up samples: no export to build)."""

    def test_a_refusal_with_a_stack_trace_is_named_by_its_reason(self):
        # `draw_batches`: a failed batch is named with the model's own
        # refusal. TF's message puts the stack of the node before it (File
        # lines, each followed by an empty line); those are framing, not
        # the reason.
        sampler = _RefusingSampler(
            'Graph execution error:\n\nDetected at node assert_x/Assert '
            'defined at (most recent call last):\n  File "run.py", line 7, '
            'in <module>\n\n  File "flow.py", line 4, in sample\n\n'
            'assertion failed: [VFlow.sample: the flow gave non-finite '
            'values]\n\t [[{{node assert_x/Assert}}]] '
            '[Op:__inference_signature_wrapper_1]')
        with self.assertRaisesRegex(
                ValueError, r'^batch 2 \(seed \(5, 2\)\): assertion failed: '
                r'\[VFlow\.sample: the flow gave non-finite values\]$'):
            sampling.draw(sampler, 1, seed=5, first_batch=2)

    def test_a_refusal_without_a_reason_is_still_named_in_one_line(self):
        # A failed batch is named, not TF's framing repeated: with nothing
        # but framing in TF's message, the error's type stands for the
        # reason, on the one line that names the batch.
        sampler = _RefusingSampler(
            'Graph execution error:\n\nDetected at node x defined at (most '
            'recent call last):\n<stack traces unavailable>\n')
        with self.assertRaisesRegex(
                ValueError, r'^batch 0 \(seed \(0, 0\)\): '
                r'InvalidArgumentError$'):
            sampling.draw(sampler, 1)

    def test_a_bool_is_not_a_temperature(self):
        # A temperature is a number >= 0; as for the other arguments (a
        # bool is no first_batch, count or seed), True is not temperature
        # 1, and nothing is drawn.
        for bad in (True, False):
            sampler = _FakeSampler()
            with self.assertRaisesRegex(ValueError, r'^temperature must be '
                                        'a number >= 0'):
                sampling.draw(sampler, 1, temperature=bad)
            self.assertEqual(sampler.seeds, [])

    def test_not_complete_when_files_appear_in_the_directory(self):
        # `SampleWriter`: files that appear in a directory output while it
        # is written stay, the samples are dropped (`FileExistsError` at
        # the end of the block), and `complete` (the output is under its
        # name) stays false.
        tmp = tempfile.mkdtemp(prefix='vflow_tfp_sample_')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        path = os.path.join(tmp, 'pngs')
        writer = sampling.SampleWriter(path, 'directory')
        with self.assertRaises(FileExistsError):
            with writer:
                writer.add(np.zeros([2, 2, 2, 1], np.uint8))
                os.makedirs(path)
                open(os.path.join(path, 'notes.txt'), 'w').close()
        self.assertFalse(writer.complete)
        self.assertEqual(os.listdir(path), ['notes.txt'])


if __name__ == '__main__':
    tf.test.main()
