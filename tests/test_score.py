"""bin/score.py: scoring image files, arrays and tfds splits with an exported
model, JSON and CSV output, and one clear line (exit code 2) for every kind
of bad input.

Most runs call the script's `main` in this process (`cli_helpers`), which
skips an interpreter and TensorFlow start-up per case; one goes through a
real subprocess.
"""

import contextlib
import csv
import io
import json
import math
import logging
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from unittest import mock
import zipfile

from absl import logging as absl_logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_probability as tfp

from vflow_tfp import data
from vflow_tfp import export
from vflow_tfp import models
from vflow_tfp import scoring
import cli_helpers
import export_fixtures
import lost_signals

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCORE = os.path.join(ROOT, 'bin', 'score.py')


def run_score(*args):
    return cli_helpers.run_script('score', *args)


def run_score_to(stdout, *args):
    """`run_score`, printing to `stdout`: (exit code, stderr).

    `cli_helpers.run_script` prints to a `StringIO` by default, which takes
    any text and never closes; this stands in for a strict or closed stream.
    """
    code, _, err = cli_helpers.run_script('score', *args, stdout=stdout)
    return code, err


class _ClosedAfter(io.StringIO):
    """A stdout whose reader goes away after `lines` lines, like `head`."""

    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def write(self, text):
        if self.getvalue().count('\n') >= self.lines:
            raise BrokenPipeError(32, 'Broken pipe')
        return super().write(text)


def _write_png(path, image):
    tf.io.write_file(path, tf.io.encode_png(image))


def _write_bmp(path, pixels, palette=None, os2=False, rgb555=False,
               alpha=False):
    """A BMP of RGB `pixels` [H, W, 3], or of 8-bit indices [H, W] into
    `palette` [256, 3] (TensorFlow has no BMP encoder); `os2`: with OS/2
    1.x's 12-byte header and 3-byte palette entries; `rgb555`: 16 bits per
    pixel, 5 per channel; `alpha`: 32 bits per pixel (BGRA, opaque)."""
    height, width = pixels.shape[:2]
    if alpha:
        opaque = np.full([height, width, 1], 255, np.uint8)
        bits, colours = 32, b''
        rows = np.concatenate([pixels[::-1, :, ::-1], opaque], -1)
    elif rgb555:
        top = pixels.astype(np.uint16) >> 3
        packed = (top[..., 0] << 10) | (top[..., 1] << 5) | top[..., 2]
        bits, colours = 16, b''
        rows = packed[::-1].astype('<u2').view(np.uint8)
    elif palette is None:
        bits, rows, colours = 24, pixels[::-1, :, ::-1], b''
    else:
        bits, rows = 8, pixels[::-1]
        colours = palette[:, ::-1]  # BGR0 entries (BGR on OS/2)
        if not os2:
            colours = np.concatenate(
                [colours, np.zeros([256, 1], np.uint8)], 1)
        colours = colours.tobytes()
    rows = rows.reshape(height, -1).astype(np.uint8)
    pad = b'\0' * (-rows.shape[1] % 4)
    body = b''.join(row.tobytes() + pad for row in rows)
    if os2:
        info = struct.pack('<IHHHH', 12, width, height, 1, bits)
    else:
        info = struct.pack('<IiiHHIIiiII', 40, width, height, 1, bits, 0,
                           len(body), 2835, 2835, 256 if colours else 0, 0)
    offset = 14 + len(info) + len(colours)
    header = struct.pack('<2sIHHI', b'BM', offset + len(body), 0, 0, offset)
    with open(path, 'wb') as f:
        f.write(header + info + colours + body)


@contextlib.contextmanager
def _removed_once_opened(path):
    """`scoring.open_inputs` removes `path` once it has checked the inputs:
    a file gone before scoring reads it again."""
    open_inputs = scoring.open_inputs

    def open_then_remove(*args, **kwargs):
        inputs = open_inputs(*args, **kwargs)
        os.remove(path)
        return inputs

    with mock.patch.object(scoring, 'open_inputs', open_then_remove):
        yield


class ScoreTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.exported = export_fixtures.image_export()
        cls.model_flag = f'--model={cls.exported.path}'

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_score_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _path(self, name):
        return os.path.join(self.tmp, name)

    def _npy(self, name, array):
        path = self._path(name)
        np.save(path, array)
        return path

    def assertRefused(self, args, message):
        """bin/score.py ARGS exits with 2 and exactly `message` on stderr."""
        code, out, err = run_score(*args)
        self.assertEqual(code, 2, err)
        self.assertEqual(err, f'score.py: error: {message}\n')
        self.assertEqual(out, '')

    # -- scoring ----------------------------------------------------------

    def test_json_output_and_training_data_beats_noise(self):
        train = self.exported.train[:16]
        noise = np.random.default_rng(0).integers(
            0, 256, (16, 8, 8, 3)).astype(np.uint8)
        photos = self._path('photos')
        os.makedirs(photos)
        for i in range(3):
            _write_png(os.path.join(photos, f'p{i}.png'), train[i])
        train_npy = self._npy('train.npy', train)
        noise_npz = self._path('noise.npz')
        np.savez(noise_npz, noise=noise)
        inputs = [photos, train_npy, noise_npz,
                  'tfds:photo_patches/8x8:test']
        json_path = self._path('s.json')
        with tfds.testing.mock_data(num_examples=5):
            code, out, err = run_score(self.model_flag, *inputs,
                                       f'--output={json_path}',
                                       '--batch_size=16', '--seed=3')
        self.assertEqual(code, 0, err)
        with open(json_path) as f:
            result = json.load(f)
        sources = [r['source'] for r in result['images']]
        self.assertEqual(sources, (
            [os.path.join(photos, f'p{i}.png') for i in range(3)]
            + [f'{train_npy}[{i}]' for i in range(16)]
            + [f'{noise_npz}:noise[{i}]' for i in range(16)]
            + [f'tfds:photo_patches/8x8:test[{i}]' for i in range(5)]))
        self.assertEqual(result['num_images'], 40)
        self.assertEqual((result['num_samples'], result['seed'],
                          result['batch_size']),
                         (export_fixtures.DEFAULT_NUM_SAMPLES, 3, 16))
        bits = np.array([r['bits_per_dim'] for r in result['images']])
        self.assertAllClose(result['mean_bits_per_dim'], bits.mean())
        self.assertAllClose(result['mean_log_likelihood'], np.mean(
            [r['log_likelihood'] for r in result['images']]))
        self.assertLess(result['mean_log_likelihood'], 0.0)
        self.assertAllEqual(
            scoring.read_image_file(os.path.join(photos, 'p1.png')), train[1])
        train_bpd, noise_bpd = bits[3:19].mean(), bits[19:35].mean()
        print(f'trained patches {train_bpd:.3f} bits/dim, uniform noise '
              f'{noise_bpd:.3f}')
        self.assertLess(train_bpd, noise_bpd - 0.3)
        # Each image's score is the model's bound with its own seed from
        # (3, 0), whichever batch of 16 it was in.
        model = self.exported.model
        first = np.concatenate([train[:3], train[:13]])
        first = model.log_prob(first, export_fixtures.DEFAULT_NUM_SAMPLES,
                               chunk_size=export_fixtures.CHUNK_SIZE,
                               seed=model.example_seeds(first, [3, 0]))
        self.assertAllClose(bits[:16], model.bits_per_dim(first), atol=1e-5)
        # The three PNGs hold train[:3]: equal images, equal scores.
        self.assertAllClose(bits[:3], bits[3:6], atol=1e-9)
        # stdout: header, one line per image, the mean.
        lines = out.splitlines()
        self.assertEqual(lines[0], 'source\tbits_per_dim\tlog_likelihood')
        self.assertLen(lines, 42)
        self.assertEqual(lines[4].split('\t')[0], f'{train_npy}[0]')
        self.assertRegex(lines[-1], r'^mean bits/dim \d+\.\d{4} over 40 '
                                    r'images \(4 importance samples, seed 3')

    def test_vectors_beyond_the_models_float_range(self):
        # float64 values that float32 (the export's input dtype) cannot hold
        # would turn infinite in the middle of scoring: refused up front.
        vector = export_fixtures.vector_export()
        points = data.sample_checkerboard(3, seed=1).astype(np.float64)
        points[2, 1] = 1e39
        path = self._npy('huge.npy', points)
        self.assertRefused([f'--model={vector.path}', path],
                           f'{path}[2]: values beyond the float32 range the '
                           'model reads; vectors must be finite in it.')

    def test_scores_that_are_not_finite(self):
        # A point far outside the data overflows the flow (log-likelihood
        # -inf): the JSON stays strict (null), CSV spells it out, the mean
        # is not finite either, and stderr counts such scores.
        vector = export_fixtures.vector_export()
        points = data.sample_checkerboard(3, seed=1)
        points[1] = [1e30, 0.0]
        path = self._npy('far.npy', points)
        json_path, csv_path = self._path('s.json'), self._path('s.csv')
        for output in (json_path, csv_path):
            code, _, err = run_score(f'--model={vector.path}', path,
                                     '--num_samples=2', f'--output={output}')
            self.assertEqual(code, 0, err)
            self.assertIn('score.py: warning: 1 of 3 vectors have no finite '
                          'score (far outside the data, where the model '
                          'overflows)' + ('; null in the JSON'
                                          if output == json_path else '\n'),
                          err)

        def refuse(token):
            raise ValueError(f'not JSON: {token}')

        with open(json_path) as f:
            document = json.load(f, parse_constant=refuse)
        self.assertEqual(document['num_not_finite'], 1)
        self.assertIsNone(document['mean_bits_per_dim'])
        records = document['images']
        self.assertIsNone(records[1]['log_likelihood'])
        self.assertIsNone(records[1]['bits_per_dim'])
        self.assertTrue(math.isfinite(records[0]['log_likelihood']))
        with open(csv_path, newline='') as f:
            rows = list(csv.DictReader(f))
        self.assertEqual((rows[1]['log_likelihood'], rows[1]['bits_per_dim']),
                         ('-inf', 'inf'))

    def test_vector_model_json_and_csv_agree(self):
        vector = export_fixtures.vector_export()
        points = self._npy('points.npy',
                           data.sample_checkerboard(5, seed=1))
        json_path, csv_path = self._path('s.json'), self._path('s.csv')
        code, out, err = run_score(f'--model={vector.path}', points,
                                   '--num_samples=2', '--batch_size=2',
                                   f'--output={json_path}')
        self.assertEqual(code, 0, err)
        self.assertIn(f'{points}[4]\t', out)
        self.assertIn('over 5 vectors (2 importance samples', out)
        # Another batch size: the same scores (each point has its own noise).
        code, _, err = run_score(f'--model={vector.path}', points,
                                 '--num_samples=2', '--batch_size=5',
                                 f'--output={csv_path}')
        self.assertEqual(code, 0, err)
        with open(json_path) as f:
            records = json.load(f)['images']
        with open(csv_path, newline='') as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r['source'] for r in rows],
                         [f'{points}[{i}]' for i in range(5)])
        self.assertEqual([r['source'] for r in rows],
                         [r['source'] for r in records])
        for key in ('bits_per_dim', 'log_likelihood'):
            self.assertAllClose([float(r[key]) for r in rows],
                                [r[key] for r in records], atol=1e-5,
                                rtol=0)

        bad = data.sample_checkerboard(5, seed=1)
        bad[3, 1] = np.inf
        self.assertRefused(
            [f'--model={vector.path}', self._npy('bad.npy', bad)],
            f'{self._path("bad.npy")}[3]: infinite values; vectors must be '
            'finite.')
        wide = self._npy('wide.npy', np.zeros([4, 3]))
        self.assertRefused(
            [f'--model={vector.path}', wide],
            f'{self._path("wide.npy")}: vectors of 3 values, the model '
            'expects 2.')
        png = self._path('x.png')
        _write_png(png, self.exported.train[0])
        self.assertRefused([f'--model={vector.path}', png],
                           f'{png}: the model scores vectors of 2 values, not '
                           'images; pass .npy or .npz arrays.')

    def test_real_process(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
        env['PYTHONPATH'] = os.pathsep.join(
            [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p])
        bad = self._npy('bad.npy', np.full([2, 8, 8, 3], 256, np.int32))
        run = subprocess.run([sys.executable, SCORE, self.model_flag, bad],
                             env=env, capture_output=True, text=True,
                             timeout=300)
        self.assertEqual(run.returncode, 2)
        self.assertNotIn('Traceback', run.stderr)
        # TensorFlow's start-up chatter aside, one line, the last.
        self.assertEqual(
            run.stderr.splitlines()[-1],
            f'score.py: error: {bad}[0]: value 256 > 255; pixel values must '
            'be integers in [0, 255].')
        self.assertLen([line for line in run.stderr.splitlines()
                        if 'score.py' in line], 1)
        self.assertEqual(run.stdout, '')

    # -- bad inputs: one line, exit code 2 ----------------------------------

    def test_wrong_rank(self):
        path = self._npy('flat.npy', np.zeros([5, 192], np.uint8))
        self.assertRefused(
            [self.model_flag, path],
            f'{path}: array of rank 2 (shape [5, 192]); the model expects '
            'images [N, 8, 8, 3] or one image [8, 8, 3].')

    def test_wrong_height_or_width(self):
        png = self._path('big.png')
        _write_png(png, np.zeros([32, 32, 3], np.uint8))
        self.assertRefused([self.model_flag, png],
                           f'{png}: image is 32x32x3, the model expects '
                           '8x8x3.')
        path = self._npy('tall.npy', np.zeros([4, 16, 8, 3], np.uint8))
        self.assertRefused([self.model_flag, path],
                           f'{path}: images are 16x8x3, the model expects '
                           '8x8x3.')
        self.assertRefused([self.model_flag, 'tfds:photo_patches/16x16'],
                           'tfds:photo_patches/16x16:test: images are '
                           '16x16x3, the model expects 8x8x3.')

    def test_wrong_channels(self):
        path = self._npy('five.npy', np.zeros([2, 8, 8, 5], np.uint8))
        self.assertRefused([self.model_flag, path],
                           f'{path}: images are 8x8x5, the model expects '
                           '8x8x3.')

    def test_grayscale_for_an_rgb_model(self):
        png = self._path('gray.png')
        _write_png(png, np.zeros([8, 8, 1], np.uint8))
        self.assertRefused([self.model_flag, png],
                           f'{png}: image is grayscale (8x8x1), the model '
                           'expects RGB images (8x8x3).')
        rgba = self._path('alpha.png')
        _write_png(rgba, np.zeros([8, 8, 4], np.uint8))
        self.assertRefused([self.model_flag, rgba],
                           f'{rgba}: image is RGBA (8x8x4), the model '
                           'expects RGB images (8x8x3).')
        # An [N, H, W] array: "image is 2x8x8" alone would hide what it
        # most likely holds.
        path = self._npy('gray.npy', np.zeros([2, 8, 8], np.uint8))
        with self.assertRaisesRegex(
                ValueError, re.escape(f'{path}: shape [2, 8, 8] is one 2x8x8 '
                                      'image or 2 grayscale 8x8 images; the '
                                      'model expects 8x8x3 images.')):
            scoring.open_inputs([path], {'data_shape': [8, 8, 3],
                                         'kind': 'image'})

    def test_rgb_for_a_grayscale_model(self):
        metadata = {'data_shape': [8, 8, 1], 'kind': 'image'}
        png = self._path('color.png')
        _write_png(png, np.zeros([8, 8, 3], np.uint8))
        with self.assertRaisesRegex(ValueError, 'image is RGB \\(8x8x3\\), '
                                    'the model expects grayscale images '
                                    '\\(8x8x1\\)'):
            scoring.open_inputs([png], metadata)
        # [N, H, W] arrays are grayscale images for a one-channel model.
        inputs = scoring.open_inputs(
            [self._npy('g.npy', np.zeros([3, 8, 8], np.uint8))], metadata)
        (sources, batch), = inputs.batches(4)
        self.assertEqual(batch.shape, (3, 8, 8, 1))

    def test_running_the_script_leaves_logging_as_it_was(self):
        # score.py quietens absl's INFO records; run in this process it must
        # not take them from the tests that run after it.
        absl_logger = absl_logging.get_absl_logger()
        level = absl_logger.level
        self.addCleanup(absl_logger.setLevel, level)
        absl_logger.setLevel(logging.INFO)
        code, _, _ = run_score(self.model_flag, self._path('missing.npy'))
        self.assertEqual(code, 2)
        self.assertEqual(absl_logger.level, logging.INFO)

    def test_one_path_is_not_a_sequence_of_characters(self):
        metadata = {'data_shape': [8, 8, 1], 'kind': 'image'}
        path = self._npy('one.npy', np.zeros([3, 8, 8], np.uint8))
        for spec in (path, pathlib.Path(path), [pathlib.Path(path)]):
            (sources, batch), = scoring.open_inputs(spec, metadata).batches(4)
            self.assertEqual(batch.shape, (3, 8, 8, 1))

    def test_float_data(self):
        path = self._npy('float.npy',
                         self.exported.train[:2].astype(np.float32))
        self.assertRefused([self.model_flag, path],
                           f'{path}: float32 data; pixel values must be '
                           'integers in [0, 255] (uint8), not floats.')

    def test_data_that_is_not_numbers(self):
        # A boolean mask saved by mistake is not an image of 0s and 1s.
        for array, kind in (
                (self.exported.train[:2] > 127, 'bool'),
                (self.exported.train[:2].astype(np.complex64), 'complex64'),
                (np.full([2, 8, 8, 3], 'a'), '<U1')):
            with self.assertRaisesRegex(ValueError, re.escape(
                    f'mask.npy: {kind} data; expected uint8 pixel values.')):
                scoring.check_array(array, (8, 8, 3), 'mask.npy')
        path = self._npy('mask.npy', self.exported.train[:2] > 127)
        self.assertRefused([self.model_flag, path],
                           f'{path}: bool data; expected uint8 pixel values.')

    def test_negative_values(self):
        pixels = self.exported.train[:3].astype(np.int16)
        pixels[2, 1, 1, 0] = -3
        path = self._npy('negative.npy', pixels)
        self.assertRefused([self.model_flag, path],
                           f'{path}[2]: negative value -3; pixel values '
                           'must be integers in [0, 255].')

    def test_values_above_255(self):
        pixels = self.exported.train[:3].astype(np.int32)
        pixels[1, 0, 0, 2] = 300
        path = self._npy('large.npy', pixels)
        self.assertRefused([self.model_flag, path],
                           f'{path}[1]: value 300 > 255; pixel values must be '
                           'integers in [0, 255].')

    def test_nan(self):
        pixels = self.exported.train[:3].astype(np.float64)
        pixels[0, 3, 3, 1] = np.nan
        path = self._npy('nan.npy', pixels)
        self.assertRefused([self.model_flag, path],
                           f'{path}[0]: NaN values; pixel values must be '
                           'integers in [0, 255].')

    def test_empty_inputs(self):
        self.assertRefused([self.model_flag],
                           'no input given: pass image files, directories, '
                           'globs, .npy/.npz arrays or tfds:NAME[:SPLIT].')
        empty_dir = self._path('empty')
        os.makedirs(empty_dir)
        self.assertRefused([self.model_flag, empty_dir],
                           f'{empty_dir}: no .png, .jpg, .jpeg files in this '
                           'directory.')
        path = self._npy('none.npy', np.zeros([0, 8, 8, 3], np.uint8))
        self.assertRefused([self.model_flag, path],
                           f'{path}: empty array (shape [0, 8, 8, 3]), '
                           'nothing to score.')
        npz = self._path('none.npz')
        np.savez(npz)
        self.assertRefused([self.model_flag, npz],
                           f'{npz}: no arrays in it, nothing to score.')
        pattern = os.path.join(self.tmp, '*.jpeg')
        self.assertRefused([self.model_flag, pattern],
                           f'{pattern}: no file matches this pattern.')
        with tfds.testing.mock_data(num_examples=0):
            self.assertRefused([self.model_flag, 'tfds:photo_patches/8x8'],
                               'tfds:photo_patches/8x8:test: the split has no '
                               'examples, nothing to score.')

    def test_unreadable_or_non_image_files(self):
        photos = self._path('photos')
        os.makedirs(photos)
        _write_png(os.path.join(photos, 'a.png'), self.exported.train[0])
        broken = os.path.join(photos, 'b.png')
        with open(broken, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + b'not really' * 10)
        self.assertRefused([self.model_flag, photos],
                           f'{broken}: not a PNG, JPEG, GIF or BMP image '
                           '(cannot decode it).')
        notes = self._path('notes.txt')
        with open(notes, 'w') as f:
            f.write('hello')
        self.assertRefused([self.model_flag, notes],
                           f'{notes}: not a PNG, JPEG, GIF or BMP image '
                           '(cannot decode it).')
        deep = self._path('deep.png')
        tf.io.write_file(deep, tf.io.encode_png(
            np.zeros([8, 8, 3], np.uint16)))
        self.assertRefused([self.model_flag, deep],
                           f'{deep}: 16-bit PNG; the model scores 8-bit '
                           'images.')
        empty = self._path('empty.jpg')
        open(empty, 'wb').close()
        self.assertRefused([self.model_flag, empty],
                           f'{empty}: empty file, not an image.')
        pickled = self._path('objects.npy')
        np.save(pickled, np.array([{'a': 1}], dtype=object),
                allow_pickle=True)
        code, _, err = run_score(self.model_flag, pickled)
        self.assertEqual(code, 2)
        self.assertRegex(err, f'^score.py: error: {pickled}: cannot read it '
                              r'as an array \(.*\)\.\n$')
        # Text named .npy: NumPy would try it as a pickle and say so.
        fake = self._path('fake.npy')
        with open(fake, 'w') as f:
            f.write('1 2 3\n')
        with self.assertRaisesRegex(ValueError, re.escape(
                f'{fake}: not a NumPy array file (no .npy or .npz signature '
                'at its start).')):
            scoring.open_inputs([fake], {'data_shape': [8, 8, 3],
                                         'kind': 'image'})
        missing = self._path('missing.png')
        self.assertRefused([self.model_flag, missing],
                           f'{missing}: no such file or directory.')
        npz = self._path('two.npz')
        np.savez(npz, a=self.exported.train[:1])
        self.assertRefused([self.model_flag, npz, '--npz_key=b'],
                           f"{npz}: no array 'b'; it has ['a'].")
        # NumPy goes by the content: a name that says otherwise is refused.
        archive_as_npy = self._path('archive.npy')
        shutil.copy(npz, archive_as_npy)
        self.assertRefused([self.model_flag, archive_as_npy],
                           f'{archive_as_npy}: a .npz archive, not a .npy '
                           'array; name it .npz.')
        array_as_npz = self._path('array.npz')
        shutil.copy(self._npy('one.npy', self.exported.train[:1]),
                    array_as_npz)
        self.assertRefused([self.model_flag, array_as_npz],
                           f'{array_as_npz}: a .npy array, not a .npz '
                           'archive; name it .npy.')
        zipped_png = self._path('images.npz')
        with zipfile.ZipFile(zipped_png, 'w') as z:
            z.writestr('a.png', tf.io.encode_png(
                self.exported.train[0]).numpy())
        self.assertRefused([self.model_flag, zipped_png],
                           f'{zipped_png}:a.png: not a NumPy array (a .npz '
                           'holds .npy members).')
        if os.geteuid() != 0:  # root reads anything
            locked = self._path('locked.png')
            _write_png(locked, self.exported.train[0])
            os.chmod(locked, 0)
            self.assertRefused([self.model_flag, locked],
                               f'{locked}: cannot read it (Permission '
                               'denied).')

    def test_not_a_saved_model(self):
        path = self._npy('ok.npy', self.exported.train[:1])
        self.assertRefused([path], '--model is required (an exported '
                           'SavedModel directory).')
        self.assertRefused([f'--model={self.tmp}', path],
                           f'{self.tmp}: not a SavedModel directory (no '
                           'saved_model.pb).')
        missing = self._path('nowhere')
        self.assertRefused([f'--model={missing}', path],
                           f'{missing}: not a SavedModel directory (no such '
                           'directory).')
        other = self._path('other')
        module = tf.Module()
        module.v = tf.Variable(1.0)
        tf.saved_model.save(module, other)
        self.assertRefused([f'--model={other}', path],
                           f'{other}: not a vflow_tfp scoring SavedModel '
                           '(cannot read assets/metadata.json: No such file '
                           'or directory).')

    def test_bad_output_and_tfds_names(self):
        path = self._npy('ok.npy', self.exported.train[:1])
        self.assertRefused([self.model_flag, path, '--output=scores.txt'],
                           'scores.txt: unknown output format; use a .json '
                           'or .csv file name.')
        # A directory of that name: refused before scoring, not by a
        # traceback after it.
        folder = self._path('scores.json')
        os.makedirs(folder)
        self.assertRefused([self.model_flag, path, f'--output={folder}'],
                           f'{folder}: a directory; name a file to write.')
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         ['ok.npy', 'scores.json'])
        self.assertEqual(os.listdir(folder), [])
        nowhere = self._path('no/such/dir/scores.json')
        self.assertRefused([self.model_flag, path, f'--output={nowhere}'],
                           f'{nowhere}: no directory '
                           f'{os.path.dirname(nowhere)} to write it to.')
        # A directory that cannot take a file, whatever its permission bits
        # say (the tests may run as root).
        code, out, err = run_score(self.model_flag, path,
                                   '--output=/proc/scores.json')
        self.assertEqual((code, out), (2, ''), err)
        self.assertRegex(err, r'^score\.py: error: /proc/scores\.json: '
                              r'cannot write in /proc \(.+\)\.\n$')
        # Relative names: the output is written in the working directory,
        # and the results name the model by its absolute path, which holds
        # from anywhere.
        cwd = os.getcwd()
        os.chdir(self.tmp)
        self.addCleanup(os.chdir, cwd)
        code, _, err = run_score(
            f'--model={os.path.relpath(self.exported.path)}', 'ok.npy',
            '--output=s.json')
        self.assertEqual(code, 0, err)
        with open('s.json') as f:
            self.assertEqual(json.load(f)['model'], self.exported.path)
        os.chdir(cwd)
        code, _, err = run_score(self.model_flag, 'tfds:no_such_dataset')
        self.assertEqual(code, 2)
        self.assertRegex(err, "^score.py: error: tfds:no_such_dataset:test: "
                              "Unknown dataset 'no_such_dataset'.*\n$")
        self.assertRefused([self.model_flag,
                            'tfds:photo_patches/8x8:validation'],
                           "tfds:photo_patches/8x8:validation: "
                           "'photo_patches/8x8' has no validation split of "
                           "its own; score tfds:photo_patches/8x8:test "
                           "instead.")

    def test_model_inputs_and_output_behind_urls(self):
        # `file://` URLs take the tf.io.gfile path that `gs://` takes.
        train = self.exported.train[:5]
        photos = self._path('photos')
        os.makedirs(os.path.join(photos, 'sub'))
        # Named like an image, skipped as in a local directory (a glob that
        # matches it finds a directory without images).
        os.makedirs(os.path.join(photos, 'sub.png'))
        for i in range(3):
            _write_png(os.path.join(photos, f'p{i}.png'), train[i])
        npy = self._npy('a.npy', train[3:4])
        npz = self._path('b.npz')
        np.savez(npz, x=train[4:5])
        local = [photos, npy, npz]

        def url(path):
            return 'file://' + path

        model = url(self.exported.path)
        csv_url = url(self._path('out/new/s.csv'))  # its directory is made
        code, out, err = run_score(f'--model={model}', url(photos),
                                   url(npy), url(npz), f'--output={csv_url}')
        self.assertEqual(code, 0, err)
        code, local_out, err = run_score(self.model_flag, *local)
        self.assertEqual(code, 0, err)
        lines, local_lines = out.splitlines(), local_out.splitlines()
        self.assertLen(lines, 7)
        # The header and the same scores, each named by the URL it was read
        # from (the summary line's time differs).
        self.assertEqual(lines[:6], [line.replace(self.tmp, url(self.tmp))
                                     for line in local_lines[:6]])
        with open(self._path('out/new/s.csv'), newline='') as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0], ['source', 'bits_per_dim',
                                   'log_likelihood'])
        self.assertEqual([r[0] for r in rows[1:]],
                         [url(os.path.join(photos, f'p{i}.png'))
                          for i in range(3)]
                         + [url(npy) + '[0]', url(npz) + ':x[0]'])
        # A glob in a URL matches within one level.
        json_path = self._path('s.json')
        code, _, err = run_score(f'--model={model}',
                                 url(os.path.join(photos, 'p[12].png')),
                                 f'--output={url(json_path)}')
        self.assertEqual(code, 0, err)
        with open(json_path) as f:
            document = json.load(f)
        self.assertEqual(document['model'], model)
        self.assertEqual([r['source'] for r in document['images']],
                         [url(os.path.join(photos, f'p{i}.png'))
                          for i in (1, 2)])
        pattern = url(os.path.join(photos, 's*.png'))
        self.assertRefused([self.model_flag, pattern],
                           f'{pattern}: the pattern matches only '
                           'directories without images.')
        pattern = url(self.tmp + '/**/*.png')
        self.assertRefused([self.model_flag, pattern],
                           f'{pattern}: ** (any depth of directories) is '
                           'for local paths; in a URL each * matches within '
                           'one level (e.g. gs://bucket/images/*/*.png).')
        missing = url(self._path('none.png'))
        self.assertRefused([self.model_flag, missing],
                           f'{missing}: no such file or directory.')
        # A refused run makes no directory for its output.
        self.assertRefused([self.model_flag, missing,
                            f'--output={url(self._path("made/s.json"))}'],
                           f'{missing}: no such file or directory.')
        self.assertFalse(os.path.exists(self._path('made')))
        self.assertRefused([self.model_flag, npy, '--output=foo://b/s.json'],
                           "foo://b/s.json: cannot reach it (File system "
                           "scheme 'foo' not implemented (file: "
                           "'foo://b/s.json')).")

    def test_unknown_tfds_split_is_named_as_a_split(self):
        # Not "Unknown dataset 'photo_patches/8x8:nosplit'" with ":test"
        # appended to the label.
        self.assertRefused(
            [self.model_flag, 'tfds:photo_patches/8x8:nosplit'],
            "tfds:photo_patches/8x8:nosplit: unknown split 'nosplit'; "
            'expected tfds:NAME[:SPLIT] with SPLIT one of train, '
            'validation, test, optionally sliced (e.g. test[:100]).')
        # A sliced combination: the split is all of it, not the text after
        # the slice's colon.
        with self.assertRaisesRegex(ValueError, re.escape(
                "tfds:photo_patches/8x8:train+test[:2]: unknown split "
                "'train+test[:2]'; expected")):
            scoring.open_inputs(['tfds:photo_patches/8x8:train+test[:2]'],
                                {'data_shape': [8, 8, 3], 'kind': 'image'})
        # A version after the name still reads the default split.
        sources, _ = next(iter(scoring.open_inputs(
            ['tfds:photo_patches/8x8:1.0.0'], {'data_shape': [8, 8, 3],
                                               'kind': 'image'}).batches(1)))
        self.assertEqual(list(sources),
                         ['tfds:photo_patches/8x8:1.0.0:test[0]'])

    # -- output: files, pipes, names --------------------------------------

    def test_output_file_is_written_before_a_closed_stdout(self):
        # `score.py ... --output=s.json | head -2`: the file comes first and
        # the closed pipe ends the printing quietly.
        path = self._npy('five.npy', self.exported.train[:5])
        json_path = self._path('s.json')
        stdout = _ClosedAfter(2)
        code, err = run_score_to(stdout, self.model_flag, path,
                                 f'--output={json_path}')
        self.assertEqual(code, 0, err)
        self.assertEqual(err, f'wrote {json_path}\n')
        self.assertLen(stdout.getvalue().splitlines(), 2)
        with open(json_path) as f:
            self.assertEqual(json.load(f)['num_images'], 5)

    def test_closed_stdout_in_a_real_process(self):
        # Python flushes stdout again at exit: without care, a second
        # BrokenPipeError there.
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
        env['PYTHONPATH'] = os.pathsep.join(
            [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p])
        path = self._npy('two.npy', self.exported.train[:2])
        csv_path = self._path('s.csv')
        with subprocess.Popen(
                [sys.executable, SCORE, self.model_flag, path,
                 f'--output={csv_path}'], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True) as run:
            run.stdout.close()  # Before the script prints anything.
            err = run.stderr.read()
            code = run.wait(timeout=300)
        self.assertEqual(code, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertNotIn('Exception ignored', err)
        self.assertEqual(err.splitlines()[-1], f'wrote {csv_path}')
        with open(csv_path, newline='') as f:
            self.assertLen(list(csv.DictReader(f)), 2)

    def test_file_names_that_are_not_utf8(self):
        # On Linux a file name is bytes; Python gives the bytes that are not
        # UTF-8 as surrogate escapes ('\udce9').
        photos = self._path('photos')
        os.makedirs(photos)
        latin1 = os.path.join(photos, os.fsdecode(b'latin1_\xe9.png'))
        accented = os.path.join(photos, 'caf\xe9.png')
        tabbed = os.path.join(photos, 'tab\there.png')
        for path, image in [(latin1, self.exported.train[0]),
                            (accented, self.exported.train[1]),
                            (tabbed, self.exported.train[2])]:
            with open(path, 'wb') as f:  # TF takes no surrogates in names.
                f.write(tf.io.encode_png(image).numpy())
        # Hidden files (macOS's `._x.png` companions) are left out, as a
        # glob's `*` leaves them out.
        with open(os.path.join(photos, '._cafe.png'), 'wb') as f:
            f.write(b'\x00\x05\x16\x07 not an image')
        csv_path, json_path = self._path('s.csv'), self._path('s.json')
        stdout = io.TextIOWrapper(io.BytesIO(), encoding='utf-8',
                                  errors='strict')
        code, err = run_score_to(stdout, self.model_flag, photos,
                                 f'--output={csv_path}')
        self.assertEqual(code, 0, err)
        stdout.flush()
        printed = stdout.buffer.getvalue().decode('utf-8').splitlines()
        self.assertEqual([line.split('\t')[0] for line in printed[1:4]],
                         [accented, f'{photos}/latin1_\\udce9.png',
                          f'{photos}/tab\\there.png'])
        self.assertLen(printed, 5)  # header, three images, mean
        # The CSV holds the names' bytes: they name the files again.
        with open(csv_path, 'rb') as f:
            self.assertIn(os.fsencode(latin1) + b',', f.read())
        with open(csv_path, newline='', encoding='utf-8',
                  errors='surrogateescape') as f:
            sources = [row['source'] for row in csv.DictReader(f)]
        self.assertEqual(sources, [accented, latin1, tabbed])
        self.assertTrue(all(os.path.isfile(s) for s in sources))
        code, _, err = run_score(self.model_flag, photos,
                                 f'--output={json_path}')
        self.assertEqual(code, 0, err)
        with open(json_path) as f:
            self.assertIn('latin1_\\udce9.png', f.read())
        with open(json_path) as f:
            self.assertEqual([r['source'] for r in json.load(f)['images']],
                             [accented, latin1, tabbed])

    def test_a_failed_write_keeps_the_previous_results(self):
        records = [{'source': 'a.png', 'bits_per_dim': 3.141592653589793,
                    'log_likelihood': -1234.5678901234567}]
        results = {'images': records}
        for name in ('s.json', 's.csv'):
            path = self._path(name)
            with open(path, 'w') as f:
                f.write('previous\n')
            # The disk fills up as the new file is moved into place.
            full = OSError(28, 'No space left on device')
            with mock.patch.object(scoring.file_io, 'replace',
                                   side_effect=full):
                with self.assertRaisesRegex(
                        ValueError, f'{re.escape(path)}: cannot write it '
                        r'\(.*No space left on device'):
                    scoring.write_results(path, results)
            with open(path) as f:
                self.assertEqual(f.read(), 'previous\n')
            scoring.write_results(path, results)
        # Both hold the floats at full precision: each reads back exactly.
        with open(self._path('s.json')) as f:
            self.assertEqual(json.load(f)['images'], records)
        with open(self._path('s.csv'), newline='') as f:
            (row,) = list(csv.DictReader(f))
        self.assertEqual([float(row['bits_per_dim']),
                          float(row['log_likelihood'])],
                         [records[0]['bits_per_dim'],
                          records[0]['log_likelihood']])
        # No temporary file is left beside them.
        self.assertCountEqual(os.listdir(self.tmp), ['s.json', 's.csv'])
        # bin/score.py prints the scores, then fails with one line: a run
        # whose file was not written does not end as if it had been.
        images = self._npy('two.npy', self.exported.train[:2])
        json_path = self._path('new.json')
        full = OSError(28, 'No space left on device')
        with mock.patch.object(scoring.file_io, 'replace', side_effect=full):
            code, out, err = run_score(self.model_flag, images,
                                       f'--output={json_path}')
        self.assertEqual(code, 2, err)
        self.assertEqual(err, f'score.py: error: {json_path}: cannot write '
                              'it (No space left on device).\n')
        self.assertLen(out.splitlines(), 4)  # header, two scores, the mean
        self.assertFalse(os.path.exists(json_path))

    # -- inputs that change, palettes, globs, links, slices ---------------

    def test_image_file_gone_or_changed_after_the_check(self):
        photos = self._path('photos')
        os.makedirs(photos)
        paths = [os.path.join(photos, f'p{i}.png') for i in range(3)]
        for path, image in zip(paths, self.exported.train):
            _write_png(path, image)
        metadata = export.load_metadata(self.exported.path)
        scorer = scoring.SavedModelScorer(self.exported.path)
        inputs = scoring.open_inputs([photos], metadata)
        _write_png(paths[1], np.zeros([16, 16, 3], np.uint8))
        with self.assertRaisesRegex(ValueError, re.escape(
                f'{paths[1]}: image is 16x16x3, the model expects 8x8x3.')):
            scoring.score(scorer, inputs, num_samples=2, batch_size=4)
        # bin/score.py: one line, exit code 2, no traceback.
        _write_png(paths[1], self.exported.train[1])
        with _removed_once_opened(paths[2]):
            self.assertRefused([self.model_flag, photos],
                               f'{paths[2]}: cannot read it (No such file '
                               'or directory).')

    def test_palette_bmp(self):
        # TensorFlow decodes an 8-bit BMP to its palette indices: refused,
        # not scored as the wrong pixels.
        image = self.exported.train[0]
        colours, indices = np.unique(image.reshape(-1, 3), axis=0,
                                     return_inverse=True)
        palette = np.zeros([256, 3], np.uint8)
        palette[:len(colours)] = colours
        bmp = self._path('palette.bmp')
        _write_bmp(bmp, indices.reshape(8, 8), palette)
        self.assertRefused([self.model_flag, bmp],
                           f'{bmp}: 8-bit palette BMP, which TensorFlow '
                           'decodes to palette indices, not colours; convert '
                           'it to PNG.')
        rgb = self._path('rgb.bmp')
        _write_bmp(rgb, image)
        self.assertAllEqual(scoring.read_image_file(rgb), image)
        rgba = self._path('rgba.bmp')
        _write_bmp(rgba, image, alpha=True)
        self.assertAllEqual(scoring.read_image_file(rgba)[..., :3], image)

    def test_animated_gif(self):
        # Every frame is decoded: a GIF of one image scores it, one of
        # several is refused rather than scored by its first frame alone.
        from PIL import Image  # pylint: disable=import-outside-toplevel
        image = self.exported.train[0]
        colours, indices = np.unique(image.reshape(-1, 3), axis=0,
                                     return_inverse=True)
        frames = []
        for shift in (0, 1):
            frame = Image.fromarray(
                ((indices + shift) % len(colours)).reshape(8, 8).astype(
                    np.uint8), 'P')
            frame.putpalette(colours.reshape(-1).tolist())
            frames.append(frame)
        still = self._path('still.gif')
        frames[0].save(still)
        self.assertAllEqual(scoring.read_image_file(still), image)
        animated = self._path('animated.gif')
        frames[0].save(animated, save_all=True, append_images=frames[1:])
        self.assertRefused([self.model_flag, animated],
                           f'{animated}: an animated GIF of 2 frames; save '
                           'each frame as an image file (or stack them in a '
                           '.npy array) to score them.')

    def test_an_interrupt_is_one_line(self):
        # SIGINT between batches (also one whose raise C code loses or
        # turns into an error): exit 130, one line, no traceback, no file.
        images = self._npy('few.npy', self.exported.train[:4])
        output = self._path('scores.json')
        for case in ('raised', 'lost', 'turned_into_an_error'):
            with self.subTest(case):
                run = subprocess.run(
                    [sys.executable,
                     *lost_signals.python_args_sending_a_sigint(
                         'vflow_tfp.scoring:SavedModelScorer.log_prob', case),
                     SCORE, self.model_flag, images, '--batch_size=2',
                     '--num_samples=2', f'--output={output}'],
                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
                    capture_output=True, text=True, timeout=300)
                self.assertEqual(run.returncode, 130, run.stderr)
                self.assertTrue(run.stderr.endswith(
                    f'score.py: interrupted; nothing written to {output}.\n'),
                    run.stderr)
                self.assertNotIn('Traceback', run.stderr)
                if case == 'lost':
                    self.assertIn('(a SIGINT lost)', run.stderr)
                self.assertEqual(run.stdout, '')
                self.assertFalse(os.path.exists(output))

    def test_animated_png(self):
        # TensorFlow's PNG decoder reads an APNG's first frame only.
        from PIL import Image  # pylint: disable=import-outside-toplevel
        frames = [Image.fromarray(image) for image in self.exported.train[:3]]
        animated = self._path('animated.png')
        frames[0].save(animated, save_all=True, append_images=frames[1:])
        with self.assertRaisesWithLiteralMatch(
                ValueError, f'{animated}: an animated PNG of 3 frames; save '
                'each frame as an image file (or stack them in a .npy '
                'array) to score them.'):
            scoring.read_image_file(animated)
        still = self._path('still.png')
        frames[0].save(still, save_all=True)  # an acTL of one frame, if any
        self.assertAllEqual(scoring.read_image_file(still),
                            self.exported.train[0])

    def test_16_bit_bmp(self):
        # TensorFlow cannot decode it: named as such, not as "not an image".
        path = self._path('rgb555.bmp')
        _write_bmp(path, self.exported.train[0], rgb555=True)
        with self.assertRaisesWithLiteralMatch(
                ValueError, f'{path}: 16-bit BMP, which TensorFlow cannot '
                'decode (it reads 24- and 32-bit BMPs); convert it to PNG.'):
            scoring.read_image_file(path)

    def test_bmp_of_fewer_than_8_bits(self):
        # TensorFlow cannot decode a 1-bit BMP (no colour channel): named
        # as such, not as a palette BMP it decodes to indices.
        from PIL import Image  # pylint: disable=import-outside-toplevel
        path = self._path('one_bit.bmp')
        Image.fromarray(np.eye(4, dtype=bool)).save(path)
        with self.assertRaisesWithLiteralMatch(
                ValueError, f'{path}: 1-bit BMP, which TensorFlow cannot '
                'decode (it reads 24- and 32-bit BMPs); convert it to PNG.'):
            scoring.read_image_file(path)

    def test_a_directory_warns_of_readable_files_it_leaves_out(self):
        # Only its PNG and JPEG files are scored; GIFs, BMPs, WebPs and
        # arrays would be scored if named, so they are counted in a warning
        # (other files, such as notes, are not).
        pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        _write_png(self._path('a.png'), pixels)
        for name in ('b.GIF', 'c.bmp', 'd.bmp', 'e.npy', 'notes.txt',
                     '.f.bmp'):
            with open(self._path(name), 'wb') as f:
                f.write(b'not read')
        with self.assertLogs('absl', 'WARNING') as logs:
            inputs = scoring.open_inputs(
                [self.tmp], {'data_shape': [2, 2, 3], 'kind': 'image'})
        self.assertEqual(inputs.num_examples, 1)
        self.assertEqual(
            [record.getMessage() for record in logs.records],
            [f'{self.tmp}: left out 2 .bmp files, 1 .gif file, 1 .npy file '
             '(a directory gives its .png, .jpg, .jpeg files; name the '
             'others, or match them with a glob, to score them).'])

    def _sources(self, specs, metadata=None):
        metadata = metadata or export.load_metadata(self.exported.path)
        inputs = scoring.open_inputs(specs, metadata)
        return [s for sources, _ in inputs.batches(100) for s in sources]

    def test_recursive_globs_and_broken_links(self):
        top = self._path('top')
        os.makedirs(os.path.join(top, 'sub', 'deeper'))
        names = ['a.png', 'sub/b.png', 'sub/deeper/c.png']
        for name, image in zip(names, self.exported.train):
            _write_png(os.path.join(top, name), image)
        self.assertEqual(self._sources([os.path.join(top, '**', '*.png')]),
                         [os.path.join(top, name) for name in names])
        # `top/**` matches the directories as well as the files below them:
        # each image still counts once, and `only_dirs` (no image of its
        # own) adds nothing instead of being refused.
        os.makedirs(os.path.join(top, 'only_dirs', 'empty'))
        self.assertEqual(self._sources([os.path.join(top, '**')]),
                         [os.path.join(top, name) for name in names])
        self.assertEqual(self._sources([os.path.join(top, 's*')]),
                         [os.path.join(top, 'sub', 'b.png')])
        self.assertRefused(
            [self.model_flag, os.path.join(top, 'only_*')],
            f'{os.path.join(top, "only_*")}: the pattern matches only '
            'directories without images.')
        # A broken link in a directory is refused by name, as when named.
        dangling = os.path.join(top, 'dangling.png')
        os.symlink(os.path.join(top, 'missing.png'), dangling)
        message = (f'{dangling}: cannot read it (a broken symbolic link to '
                   f'{os.path.join(top, "missing.png")}).')
        self.assertRefused([self.model_flag, top], message)
        self.assertRefused([self.model_flag, dangling], message)

    def test_input_names_and_outputs_as_documented(self):
        metadata = export.load_metadata(self.exported.path)
        # A directory gives its images whatever the case of the extension,
        # and a glob's matches come in the order of their paths, images in
        # a matched directory included.
        top = self._path('top')
        os.makedirs(os.path.join(top, 'a'))
        for name, image in zip(('a/x.png', 'b.png', 'C.PNG', 'd.JPG'),
                               self.exported.train):
            if name.endswith('JPG'):
                tf.io.write_file(os.path.join(top, name),
                                 tf.io.encode_jpeg(image))
            else:
                _write_png(os.path.join(top, name), image)
        self.assertEqual(self._sources([top]),
                         [os.path.join(top, n) for n in ('C.PNG', 'b.png',
                                                         'd.JPG')])
        self.assertEqual(self._sources([os.path.join(top, '[ab]*')]),
                         [os.path.join(top, n) for n in ('a/x.png', 'b.png')])
        # `npz_key` scores that array of a .npz alone.
        npz = self._path('two.npz')
        np.savez(npz, a=self.exported.train[:2], b=self.exported.train[2:5])
        sources = [s for sources, _ in scoring.open_inputs(
            [npz], metadata, npz_key='a').batches(100) for s in sources]
        self.assertEqual(sources, [f'{npz}:a[0]', f'{npz}:a[1]'])
        # Output formats by extension, in either case.
        for name, fmt in (('S.JSON', 'json'), ('s.Csv', 'csv')):
            self.assertEqual(scoring.output_format(self._path(name)), fmt)
        # CSV keeps every digit of the scores: they read back exactly.
        records = [{'source': 'x', 'bits_per_dim': 1.2345678901234567,
                    'log_likelihood': -1234.5678901234567},
                   {'source': 'y', 'bits_per_dim': 3.0000000000000004,
                    'log_likelihood': -9.87654321e-7}]
        csv_path = self._path('exact.csv')
        scoring.write_results(csv_path, scoring.summarize(
            records, 'm', 2, 0, 64))
        with open(csv_path, newline='') as f:
            rows = list(csv.DictReader(f))
        for row, record in zip(rows, records):
            for key in ('bits_per_dim', 'log_likelihood'):
                self.assertEqual(float(row[key]), record[key])
        # Vectors beyond float32 are refused on either side of zero.
        vector = export_fixtures.vector_export()
        for huge in (1e39, -1e39):
            points = data.sample_checkerboard(3, seed=1).astype(np.float64)
            points[1, 0] = huge
            path = self._npy('huge.npy', points)
            with self.assertRaisesRegex(ValueError, re.escape(
                    f'{path}[1]: values beyond the float32 range')):
                inputs = scoring.open_inputs(
                    [path], export.load_metadata(vector.path))
                list(inputs.batches(10))

    def test_tfds_split_slices(self):
        with tfds.testing.mock_data(num_examples=5):
            whole = scoring.open_inputs(
                ['tfds:photo_patches/8x8:test'],
                export.load_metadata(self.exported.path))
            (_, images), = whole.batches(10)
            metadata = export.load_metadata(self.exported.path)
            sliced = scoring.open_inputs(['tfds:photo_patches/8x8:test[1:3]'],
                                         metadata)
            self.assertEqual(sliced.num_examples, 2)
            (sources, batch), = sliced.batches(10)
            # Named by their index in the whole split.
            self.assertEqual(sources, ['tfds:photo_patches/8x8:test[1]',
                                       'tfds:photo_patches/8x8:test[2]'])
            self.assertAllEqual(batch, images[1:3])
            self.assertEqual(
                self._sources(['tfds:photo_patches/8x8:train[-2:]']),
                ['tfds:photo_patches/8x8:train[3]',
                 'tfds:photo_patches/8x8:train[4]'])
            self.assertRefused([self.model_flag,
                                'tfds:photo_patches/8x8:test[:10%]'],
                               'tfds:photo_patches/8x8:test[:10%]: '
                               'unsupported slice [:10%]; use integer bounds, '
                               'e.g. test[:100], test[100:200] or test[-50:].')
            for empty in ('test[7:]', 'test[3:1]'):
                self.assertRefused([self.model_flag,
                                    f'tfds:photo_patches/8x8:{empty}'],
                                   f'tfds:photo_patches/8x8:{empty}: the '
                                   'slice has no examples, nothing to score.')

    def test_noise_does_not_depend_on_the_batch_size(self):
        # Each image's noise comes from its content and the seed: other
        # batch sizes change the float32 rounding only (about 1e-6
        # bits/dim; other noise would change scores by far more), and the
        # same batch size gives the same scores bit for bit.
        metadata = export.load_metadata(self.exported.path)
        scorer = scoring.SavedModelScorer(self.exported.path)
        path = self._npy('seven.npy', self.exported.train[:7])

        def bits(batch_size, seed=0):
            records = scoring.score(
                scorer, scoring.open_inputs([path], metadata),
                num_samples=2, seed=seed, batch_size=batch_size)
            # Each score stays paired with its own image across batches.
            self.assertEqual([r['source'] for r in records],
                             [f'{path}[{i}]' for i in range(7)])
            return np.array([r['bits_per_dim'] for r in records])

        by_seven = bits(7)
        for batch_size in (1, 3):
            self.assertAllClose(bits(batch_size), by_seven, atol=1e-5,
                                rtol=0)
        self.assertAllEqual(bits(3), bits(3))
        self.assertGreater(np.abs(bits(7, seed=1) - by_seven).max(), 1e-4)

    def test_batch_size_is_images_per_model_call(self):
        # --batch_size is "Images per model call": 7 images at 3 a call are
        # three calls of 3, 3 and 1. (The scores alone cannot tell: on
        # this model they do not even round differently across batch
        # sizes.)
        path = self._npy('seven.npy', self.exported.train[:7])
        log_prob = scoring.SavedModelScorer.log_prob
        with mock.patch.object(scoring.SavedModelScorer, 'log_prob',
                               autospec=True, side_effect=log_prob) as spy:
            code, out, err = run_score(self.model_flag, '--batch_size=3',
                                       '--num_samples=2', path)
        self.assertEqual(code, 0, err)
        self.assertLen(out.splitlines(), 9)
        self.assertEqual([len(c.args[1]) for c in spy.call_args_list],
                         [3, 3, 1])

    def test_tfds_inputs_come_from_data_dir(self):
        # --data_dir is the tfds data directory of tfds: inputs: the split
        # is read (here: prepared, as photo_patches builds itself) there,
        # not in TFDS's default directory.
        data_dir = self._path('tfds')
        os.makedirs(data_dir)
        code, out, err = run_score(self.model_flag, f'--data_dir={data_dir}',
                                   '--num_samples=1',
                                   'tfds:photo_patches/8x8:test[:2]')
        self.assertEqual(code, 0, err)
        # (TFDS announces the preparation on stdout too.)
        self.assertRegex(out, r'(?m)^tfds:photo_patches/8x8:test\[1\]\t')
        self.assertIn('photo_patches', os.listdir(data_dir))

    def test_seed_0_scores_as_the_serving_signature(self):
        # score()'s docstring: with seed 0 and the export's default sample
        # count an image scores as `serving_default` scores it, so TF
        # Serving clients and bin/score.py agree (the seed is spelled out
        # here, not read from the export module).
        scorer = scoring.SavedModelScorer(self.exported.path)
        images = self.exported.train[:5]
        path = self._npy('five.npy', images)
        metadata = export.load_metadata(self.exported.path)

        def bits(seed):
            records = scoring.score(
                scorer, scoring.open_inputs([path], metadata),
                num_samples=export_fixtures.DEFAULT_NUM_SAMPLES, seed=seed,
                batch_size=5)
            return np.array([r['bits_per_dim'] for r in records])

        served = tf.saved_model.load(self.exported.path).signatures[
            'serving_default'](x=tf.constant(images))['bits_per_dim']
        self.assertAllClose(bits(0), served.numpy(), atol=1e-5, rtol=0)
        self.assertGreater(np.abs(bits(1) - served.numpy()).max(), 1e-4)

    def test_the_scorer_refuses_what_its_cast_would_change(self):
        # SavedModelScorer.log_prob casts to the model's uint8: floats would
        # be truncated and 256 would wrap to 0, scored without an error.
        scorer = scoring.SavedModelScorer(self.exported.path)
        images = self.exported.train[:2]
        as_uint8 = scorer.log_prob(images.astype(np.uint8), 2, (0, 0))
        for same in (images.astype(np.int64), images[0][None]):
            got = scorer.log_prob(same, 2, (0, 0))
            self.assertAllEqual(got[1], as_uint8[1][:len(got[1])])
        for examples, seed, message in (
                (images / 255.0, (0, 0), r'examples: float64 data; pixel '
                                         r'values must be integers'),
                (images.astype(np.int64) + 256, (0, 0),
                 r'examples\[0\]: value \d+ > 255'),
                (images, (2**31, 0), r'seed must be an integer in '
                                     r'\[0, 2\^31\); got 2147483648'),
                (images, 3, 'seed must be two integers; got 3')):
            with self.assertRaisesRegex(ValueError, message):
                scorer.log_prob(examples, 2, seed)

    def test_palette_bmp_with_an_os2_header(self):
        # An OS/2 1.x BMP (a 12-byte BITMAPCOREHEADER) has its bit count at
        # byte 24, not 28 (here palette bytes of 0xff): an 8-bit one is
        # refused as a palette BMP too.
        bmp = self._path('os2.bmp')
        _write_bmp(bmp, np.eye(2, dtype=np.uint8),
                   np.full([256, 3], 255, np.uint8), os2=True)
        with self.assertRaisesRegex(
                ValueError, f'^{bmp}: 8-bit palette BMP, which TensorFlow '
                'decodes to palette indices'):
            scoring.read_image_file(bmp)

    def test_a_directory_s_hidden_files_are_left_out(self):
        # As a glob's `*` leaves them out: macOS's `._a.png` companion
        # (not an image) must not stop a directory's scoring, and a hidden
        # image is not scored.
        pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        _write_png(self._path('a.png'), pixels)
        with open(self._path('._a.png'), 'wb') as f:
            f.write(b'\x00\x05\x16\x07 AppleDouble')
        _write_png(self._path('.hidden.png'), pixels)
        inputs = scoring.open_inputs(
            [self.tmp], {'data_shape': [2, 2, 3], 'kind': 'image'})
        (sources, batch), = inputs.batches(10)
        self.assertEqual(sources, [self._path('a.png')])
        self.assertAllEqual(batch, pixels[np.newaxis])

    def test_flag_bounds(self):
        # absl refuses these while parsing (before anything is loaded): 0
        # importance samples would otherwise fall back to the export's
        # default unnoticed, and a seed past int32 cannot key the
        # stateless noise.
        # Nor do counts past int32, which the signature would wrap
        # (2^32 + 1 samples would be 1).
        images = self._npy('few.npy', self.exported.train[:2])
        for flag in ('--num_samples=0', '--seed=2147483648',
                     '--batch_size=0', '--num_samples=2147483648',
                     '--batch_size=2147483648'):
            code, out, err = run_score(self.model_flag, flag, images)
            self.assertEqual((code, out), (2, ''))
            self.assertRegex(err, rf'^score\.py: error: flag {flag}: .*\n$')
        # So does the API, for the scorer too.
        scorer = scoring.SavedModelScorer(self.exported.path)
        inputs = scoring.open_inputs([images], scorer.metadata)
        for call in (
                lambda: scoring.score(scorer, inputs, num_samples=2**32 + 1),
                lambda: scoring.score(scorer, inputs, num_samples=1,
                                      batch_size=2**31),
                lambda: scorer.log_prob(self.exported.train[:2], 2**32 + 1,
                                        (0, 0))):
            with self.assertRaisesRegex(ValueError, r'must be below 2\^31'):
                call()

    def test_one_image_named_with_a_carriage_return(self):
        # A line break in a name, \r as well as \n, is escaped so the table
        # keeps one line per example; and one image is counted as one.
        name = os.path.join(self.tmp, 'cr\rhere.png')
        _write_png(name, self.exported.train[0])
        code, out, err = run_score(self.model_flag, '--num_samples=2', name)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertLen(lines, 3, out)  # header, the image, the mean
        self.assertEqual(lines[1].split('\t')[0],
                         os.path.join(self.tmp, 'cr\\rhere.png'))
        self.assertRegex(lines[2], r'^mean bits/dim [0-9.]+ over 1 image '
                                   r'\(2 importance samples, seed 0, ')

    def test_the_null_warning_goes_by_the_output_s_extension(self):
        # The format goes by the extension, in either case: an output named
        # .JSON is JSON as .json is, and the warning says its non-finite
        # scores are null there; scores.json.csv is a CSV file, which
        # spells them out, so its warning says nothing of null.
        vector = export_fixtures.vector_export()
        points = data.sample_checkerboard(2, seed=1)
        points[0] = [1e30, 0.0]
        path = self._npy('far.npy', points)
        for name, null in (('S.JSON', '; null in the JSON'),
                           ('scores.json.csv', '')):
            with self.subTest(output=name):
                output = self._path(name)
                code, _, err = run_score(f'--model={vector.path}', path,
                                         '--num_samples=2',
                                         f'--output={output}')
                self.assertEqual(code, 0, err)
                self.assertIn('score.py: warning: 1 of 2 vectors have no '
                              'finite score (far outside the data, where '
                              f'the model overflows){null}\n', err)
                with open(output, newline='') as f:
                    if null:
                        self.assertIsNone(
                            json.load(f)['images'][0]['log_likelihood'])
                    else:
                        self.assertEqual(
                            next(csv.DictReader(f))['log_likelihood'],
                            '-inf')

    def test_the_scorer_refuses_a_seed_that_is_not_two_integers(self):
        # SavedModelScorer.log_prob raises ValueError for "a seed that is
        # not two integers": three of them too, before the signature (whose
        # seed is a pair) is called.
        scorer = scoring.SavedModelScorer(self.exported.path)
        for seed in ((0, 0, 0), (1,)):
            with self.assertRaises((ValueError, TypeError,
                                    tf.errors.OpError)) as caught:
                scorer.log_prob(self.exported.train[:1], 2, seed)
            self.assertIsInstance(caught.exception, ValueError)
            self.assertEqual(str(caught.exception),
                             f'seed must be two integers; got {seed!r}.')

    def test_the_scorer_refuses_vectors_its_cast_would_make_infinite(self):
        # SavedModelScorer.log_prob raises ValueError for the examples
        # check_array refuses: vectors beyond the float32 range the model
        # reads too, which the cast would turn infinite without a word.
        vector = export_fixtures.vector_export()
        scorer = scoring.SavedModelScorer(vector.path)
        points = data.sample_checkerboard(2, seed=1).astype(np.float64)
        self.assertLen(scorer.log_prob(points, 2, (0, 0))[1], 2)
        points[1, 0] = -1e39
        with self.assertRaises((ValueError, tf.errors.OpError)) as caught:
            scorer.log_prob(points, 2, (0, 0))
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception), r'^examples\[1\]: values '
                         'beyond the float32 range the model reads')

    def test_num_samples_sets_the_draws_of_every_score(self):
        # --num_samples: "Importance samples per image" of the bound each
        # line reports; the scores are score()'s with that many draws (same
        # seed and batch size), not the export's default, and the JSON
        # records the count.
        path = self._npy('three.npy', self.exported.train[:3])
        output = self._path('s.json')
        code, _, err = run_score(self.model_flag, '--num_samples=1', path,
                                 f'--output={output}')
        self.assertEqual(code, 0, err)
        with open(output) as f:
            result = json.load(f)
        self.assertEqual(result['num_samples'], 1)
        scorer = scoring.SavedModelScorer(self.exported.path)

        def bits(num_samples):
            return [r['bits_per_dim'] for r in scoring.score(
                scorer, scoring.open_inputs([path], scorer.metadata),
                num_samples=num_samples)]

        one = bits(1)
        self.assertGreater(np.abs(np.subtract(
            one, bits(export_fixtures.DEFAULT_NUM_SAMPLES))).max(), 1e-4)
        self.assertAllClose([r['bits_per_dim'] for r in result['images']],
                            one, atol=1e-6, rtol=0)


class _FakeScorer:
    """Anything with SavedModelScorer's `log_prob` (see `score`): scores
    example i of a call as -i bits/dim, and records each call's size."""

    def __init__(self):
        self.calls = []

    def log_prob(self, examples, num_samples, seed):
        del num_samples, seed
        self.calls.append(len(examples))
        bits = -np.arange(len(examples), dtype=np.float64)
        return 2.0 * bits, bits


class ScoreWithoutAModelTest(tf.test.TestCase):
    """`score` and `open_inputs` on their own: no SavedModel to build."""

    METADATA = {'data_shape': [2, 2, 3], 'kind': 'image', 'num_bins': 256}

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_score_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_progress_reports_the_examples_done_so_far(self):
        # `progress(done, total)` after every batch: `done` counts all the
        # examples scored so far, not those of the last batch.
        array = os.path.join(self.tmp, 'five.npy')
        np.save(array, np.zeros([5, 2, 2, 3], np.uint8))
        inputs = scoring.open_inputs([array], self.METADATA)
        reports = []
        scorer = _FakeScorer()
        records = scoring.score(scorer, inputs, num_samples=1, batch_size=2,
                                progress=lambda *r: reports.append(r))
        self.assertEqual(scorer.calls, [2, 2, 1])
        self.assertLen(records, 5)
        self.assertEqual(reports, [(2, 5), (4, 5), (5, 5)])

    def test_array_extensions_in_upper_case(self):
        # Extensions are matched in any case (as for image files and the
        # results file): X.NPY is the same .npy array as x.npy, read
        # whole, not refused as "a .npy array, not a .npz archive".
        pixels = np.arange(36, dtype=np.uint8).reshape(3, 2, 2, 3)
        upper = os.path.join(self.tmp, 'X.NPY')
        with open(upper, 'wb') as f:  # np.save would append '.npy'.
            np.save(f, pixels)
        try:
            inputs = scoring.open_inputs([upper], self.METADATA)
        except ValueError as e:
            self.fail(f'X.NPY refused: {e}')
        self.assertEqual(inputs.num_examples, 3)
        (sources, examples), = inputs.batches(8)
        self.assertEqual(sources, [f'{upper}[{i}]' for i in range(3)])
        self.assertAllEqual(examples, pixels)

    def _arrays(self, **counts):
        """`open_inputs` of one `NAME.npy` of `n` images per `NAME=n`, in
        order; returns `(inputs, paths)`."""
        paths = []
        for name, count in counts.items():
            paths.append(os.path.join(self.tmp, f'{name}.npy'))
            np.save(paths[-1], np.zeros([count, 2, 2, 3], np.uint8))
        return scoring.open_inputs(paths, self.METADATA), paths

    def test_a_batch_takes_examples_across_inputs(self):
        # `batch_size` examples per call, whichever inputs they come from:
        # 3 + 2 examples at 4 a call are calls of 4 and 1, not one call per
        # input's remainder; each record keeps its own example's score.
        inputs, (first, second) = self._arrays(a=3, b=2)
        scorer = _FakeScorer()
        records = scoring.score(scorer, inputs, num_samples=1, batch_size=4)
        self.assertEqual(scorer.calls, [4, 1])
        self.assertEqual([r['source'] for r in records],
                         [f'{first}[{i}]' for i in range(3)]
                         + [f'{second}[{i}]' for i in range(2)])
        self.assertEqual([r['bits_per_dim'] for r in records],
                         [0.0, -1.0, -2.0, -3.0, 0.0])

    def test_a_seed_out_of_range_is_refused_before_scoring(self):
        # `seed`: an int in [0, 2^31), refused (ValueError) by `score`
        # itself, whatever scorer it is given, before any example is scored.
        inputs, _ = self._arrays(a=2)
        for seed in (-1, 2**31, 1.5, True):
            scorer = _FakeScorer()
            with self.assertRaisesRegex(ValueError, r'^seed must be an '
                                        r'integer in \[0, 2\^31\)'):
                scoring.score(scorer, inputs, num_samples=1, seed=seed)
            self.assertEqual(scorer.calls, [])

    def test_csv_columns_and_escaping_as_documented(self):
        # The header `source,bits_per_dim,log_likelihood`, then one row per
        # record in that order; a source with a comma or quotes is quoted
        # and reads back whole.
        records = [{'source': 'a, "b".png', 'bits_per_dim': 1.5,
                    'log_likelihood': -2.25},
                   {'source': 'c.png', 'bits_per_dim': 0.5,
                    'log_likelihood': -0.75}]
        path = os.path.join(self.tmp, 'scores.csv')
        scoring.write_results(path, scoring.summarize(records, 'm', 1, 0, 2))
        with open(path, newline='', encoding='utf-8') as f:
            self.assertEqual(f.readline().rstrip('\r\n'),
                             'source,bits_per_dim,log_likelihood')
            f.seek(0)
            self.assertEqual(list(csv.reader(f)), [
                ['source', 'bits_per_dim', 'log_likelihood'],
                ['a, "b".png', '1.5', '-2.25'], ['c.png', '0.5', '-0.75']])

    def test_progress_total_is_none_for_a_split_that_does_not_say(self):
        # `progress(done, total)`: `total` is `None` when the number of
        # examples is unknown (a TFDS split that does not say), not the
        # count done so far.
        image_dataset = scoring.pipelines.image_dataset

        def unsized(*args, **kwargs):
            # A filter hides the split's size (cardinality unknown).
            return image_dataset(*args, **kwargs).filter(lambda *_: True)

        reports = []
        with tfds.testing.mock_data(num_examples=3), mock.patch.object(
                scoring.pipelines, 'image_dataset', unsized):
            inputs = scoring.open_inputs(
                ['tfds:photo_patches/8x8:test'],
                {'data_shape': [8, 8, 3], 'kind': 'image'})
            self.assertIsNone(inputs.num_examples)
            records = scoring.score(_FakeScorer(), inputs, num_samples=1,
                                    batch_size=2,
                                    progress=lambda *r: reports.append(r))
        self.assertLen(records, 3)
        self.assertEqual(reports, [(2, None), (3, None)])

    def test_nan_names_the_first_example_that_holds_it(self):
        # `check_array`'s one line names the array and its first offending
        # example, here the third: images and vectors alike.
        for data_shape, rule in (((2, 2, 3), 'pixel values must be '
                                  r'integers in \[0, 255\]'),
                                 ((2,), 'vectors must be finite')):
            array = np.zeros((4,) + data_shape, np.float32)
            array[2].flat[1] = array[3].flat[0] = np.nan
            with self.assertRaisesRegex(ValueError, r'^x\.npy\[2\]: NaN '
                                        rf'values; {rule}\.$'):
                scoring.check_array(array, data_shape, 'x.npy')

    def test_one_channel_models_take_arrays_without_the_channel_axis(self):
        # `check_array`: for one-channel models `[N, H, W]` and `[H, W]`
        # too, as `[N, H, W, 1]` (three examples here, not one image).
        pixels = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
        for array, expected in ((pixels, pixels[..., np.newaxis]),
                                (pixels[1], pixels[1:2, ..., np.newaxis])):
            try:
                batch = scoring.check_array(array, (2, 2, 1), 'x.npy')
            except ValueError as e:
                self.fail(f'shape {array.shape} refused: {e}')
            self.assertAllEqual(batch, expected)

    def test_grayscale_with_alpha_is_named_as_such(self):
        # A PNG of grayscale with alpha (two channels) against an RGB model:
        # the one line says what the image holds, as for grayscale or RGBA.
        png = os.path.join(self.tmp, 'gray_alpha.png')
        _write_png(png, np.zeros([2, 2, 2], np.uint8))
        with self.assertRaisesRegex(ValueError, '^' + re.escape(
                f'{png}: image is grayscale with alpha (2x2x2), the model '
                'expects RGB images (2x2x3).') + '$'):
            scoring.open_inputs([png], self.METADATA)

    def test_a_wrong_size_says_image_or_images_as_the_array_holds(self):
        # The one line of a wrong size: one image (`[H, W, C]` or a batch of
        # one) "is", several "are", as README's `image is 32x32x3, the
        # model expects 16x16x3`.
        for shape, what in (([4, 4, 3], 'image is'),
                            ([1, 4, 4, 3], 'image is'),
                            ([2, 4, 4, 3], 'images are')):
            with self.assertRaisesRegex(ValueError, re.escape(
                    f'x.npy: {what} 4x4x3, the model expects 2x2x3.')):
                scoring.check_array(np.zeros(shape, np.uint8), (2, 2, 3),
                                    'x.npy')

    def test_counts_below_one_or_not_integers_are_refused(self):
        # `score`: `num_samples` in [1, 2^31) and `batch_size` examples per
        # call, refused (ValueError) by `score` itself, before any example
        # is scored: 0 (or a bool) is no count of samples or examples.
        inputs, _ = self._arrays(a=3)
        for count in (0, -1, True, 2.0):
            for name in ('num_samples', 'batch_size'):
                scorer = _FakeScorer()
                kwargs = {'num_samples': 1, name: count}
                with self.assertRaisesRegex(
                        ValueError, rf'^{name} must be a positive integer; '
                        rf'got {count!r}\.$'):
                    scoring.score(scorer, inputs, **kwargs)
                self.assertEqual(scorer.calls, [])

    def test_the_largest_float_the_model_reads_is_accepted(self):
        # `check_array` refuses vectors the input dtype "cannot represent
        # (they would become infinite)": float32's largest finite value is
        # representable, so it is scored; the next float64 past it is not.
        largest = float(np.finfo(np.float32).max)
        vectors = np.array([[largest, -largest]], np.float64)
        try:
            batch = scoring.check_array(vectors, (2,), 'x.npy',
                                        input_dtype='float32')
        except ValueError as e:
            self.fail(f'float32\'s largest value refused: {e}')
        self.assertAllEqual(batch, vectors)
        vectors[0, 1] = np.nextafter(-largest, -np.inf)
        with self.assertRaisesRegex(ValueError, r'^x\.npy\[0\]: values '
                                    'beyond the float32 range'):
            scoring.check_array(vectors, (2,), 'x.npy', input_dtype='float32')

    def test_one_image_whose_height_equals_its_channels(self):
        # `check_array` takes one image `[H, W, C]`: a 3x3x3 array for a
        # 3x3x3 model is that image, not "3 grayscale 3x3 images".
        pixels = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
        try:
            batch = scoring.check_array(pixels, (3, 3, 3), 'x.npy')
        except ValueError as e:
            self.fail(f'one 3x3x3 image refused: {e}')
        self.assertAllEqual(batch, pixels[np.newaxis])

    def test_negative_pixels_of_a_narrow_integer_dtype_are_refused(self):
        # "Images must be integers in [0, levels - 1]: uint8 or another
        # integer dtype": an int8 array holds negative values too.
        pixels = np.zeros([2, 2, 2, 3], np.int8)
        pixels[1, 0, 1, 2] = -1
        with self.assertRaisesRegex(
                ValueError, r'^x\.npy\[1\]: negative value -1; pixel values '
                r'must be integers in \[0, 255\]\.$'):
            scoring.check_array(pixels, (2, 2, 3), 'x.npy')

    def test_negative_infinity_in_vectors_is_refused(self):
        # "Vectors must be finite numbers": -inf as well as inf, naming the
        # first example that holds it.
        vectors = np.zeros([3, 2], np.float32)
        vectors[1, 0] = -np.inf
        with self.assertRaisesRegex(ValueError, r'^x\.npy\[1\]: infinite '
                                    r'values; vectors must be finite\.$'):
            scoring.check_array(vectors, (2,), 'x.npy')

    def test_nan_scores_are_counted_as_not_finite(self):
        # `summarize`'s `num_not_finite` counts the scores that are not
        # finite: NaN as well as infinities; JSON writes each as null.
        records = [{'source': f'{i}.png', 'bits_per_dim': b,
                    'log_likelihood': -b} for i, b in
                   enumerate([1.0, math.nan, math.inf])]
        summary = scoring.summarize(records, 'm', 1, 0, 3)
        self.assertEqual(summary['num_not_finite'], 2)
        path = os.path.join(self.tmp, 'scores.json')
        scoring.write_results(path, summary)
        with open(path) as f:
            document = json.load(f)
        self.assertEqual(document['num_not_finite'], 2)
        self.assertEqual([r['bits_per_dim'] for r in document['images']],
                         [1.0, None, None])

    def test_no_records_have_no_mean(self):
        # `summarize` of no records: counts of 0 and means of None (JSON
        # null), not a figure that looks like a score.
        summary = scoring.summarize([], 'm', 1, 0, 3)
        self.assertEqual((summary['num_images'], summary['num_not_finite']),
                         (0, 0))
        self.assertIsNone(summary['mean_bits_per_dim'])
        self.assertIsNone(summary['mean_log_likelihood'])

    def test_wildcard_tfds_versions_read_the_default_split(self):
        # `tfds:NAME[:SPLIT]`: NAME may end in a TFDS version, wildcards
        # (`1.*.*`, `*.*.*`) included, not taken for a mistyped split;
        # without SPLIT the `test` split is read.
        for version in ('1.*.*', '*.*.*'):
            spec = f'tfds:photo_patches/8x8:{version}'
            with tfds.testing.mock_data(num_examples=2):
                try:
                    inputs = scoring.open_inputs(
                        [spec], {'data_shape': [8, 8, 3], 'kind': 'image'})
                except ValueError as e:
                    self.fail(f'{spec} refused: {e}')
                sources = [s for batch, _ in inputs.batches(2)
                           for s in batch]
            self.assertEqual(sources,
                             [f'{spec}:test[0]', f'{spec}:test[1]'])

    def test_a_directory_s_link_to_a_directory_is_left_out(self):
        # A directory gives its image files (a broken link too, to be
        # refused by name): a symbolic link named like an image that leads
        # to a directory is none, and is left out as such a directory is.
        pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        _write_png(os.path.join(self.tmp, 'a.png'), pixels)
        os.makedirs(os.path.join(self.tmp, 'sub'))
        os.symlink(os.path.join(self.tmp, 'sub'),
                   os.path.join(self.tmp, 'link.png'))
        try:
            inputs = scoring.open_inputs([self.tmp], self.METADATA)
        except ValueError as e:
            self.fail(f'the link to a directory is taken for an image: {e}')
        (sources, batch), = inputs.batches(10)
        self.assertEqual(sources, [os.path.join(self.tmp, 'a.png')])
        self.assertAllEqual(batch, pixels[np.newaxis])

    def test_image_files_before_a_tfds_split_come_first(self):
        # `score` returns its records "in input order": image files named
        # before a `tfds:` split are scored before its examples.
        png = os.path.join(self.tmp, 'a.png')
        _write_png(png, np.zeros([8, 8, 3], np.uint8))
        with tfds.testing.mock_data(num_examples=2):
            inputs = scoring.open_inputs(
                [png, 'tfds:photo_patches/8x8:test'],
                {'data_shape': [8, 8, 3], 'kind': 'image'})
            records = scoring.score(_FakeScorer(), inputs, num_samples=1)
        self.assertEqual([r['source'] for r in records],
                         [png, 'tfds:photo_patches/8x8:test[0]',
                          'tfds:photo_patches/8x8:test[1]'])

    def test_an_npz_that_is_not_a_zip_archive_is_named(self):
        # Unreadable inputs are refused with one line (a ValueError) naming
        # them: a .npz with a zip signature but no archive behind it too.
        path = os.path.join(self.tmp, 'broken.npz')
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 not really an archive')
        with self.assertRaises((ValueError, zipfile.BadZipFile)) as caught:
            scoring.open_inputs([path], self.METADATA)
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception), '^' + re.escape(
            f'{path}: cannot read it as a .npz array (') + r'.+\)\.$')

    def test_a_wrong_shape_for_a_model_of_other_channel_counts(self):
        # A shape other than the model's is a ValueError with the expected
        # shape in it, for a model whose channel count has no name (five
        # channels) as for RGB.
        with self.assertRaises((ValueError, KeyError)) as caught:
            scoring.check_array(np.zeros([2, 2, 3], np.uint8), (2, 2, 5),
                                'x.npy')
        self.assertIsInstance(caught.exception, ValueError)
        self.assertEqual(str(caught.exception),
                         'x.npy: image is 2x2x3, the model expects 2x2x5.')

    def test_an_existing_file_named_like_a_glob_is_that_file(self):
        # An input that is a file is scored as that file, even when its
        # name holds glob characters (`[1]` would match `p1.png`).
        pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        literal = os.path.join(self.tmp, 'p[1].png')
        _write_png(literal, pixels)
        _write_png(os.path.join(self.tmp, 'other.png'), pixels)
        try:
            inputs = scoring.open_inputs([literal], self.METADATA)
        except ValueError as e:
            self.fail(f'{literal} refused: {e}')
        (sources, batch), = inputs.batches(10)
        self.assertEqual(sources, [literal])
        self.assertAllEqual(batch, pixels[np.newaxis])

    def test_16_bit_grayscale_png_is_refused(self):
        # 16-bit PNGs are refused (decoding to uint8 would rescale them),
        # grayscale ones for a grayscale model too.
        png = os.path.join(self.tmp, 'deep_gray.png')
        tf.io.write_file(png, tf.io.encode_png(
            np.full([2, 2, 1], 40000, np.uint16)))
        with self.assertRaisesWithLiteralMatch(
                ValueError, f'{png}: 16-bit PNG; the model scores 8-bit '
                'images.'):
            scoring.open_inputs([png], {'data_shape': [2, 2, 1],
                                        'kind': 'image'})

    def test_an_animated_png_of_two_frames_is_refused(self):
        # Animated PNGs are refused rather than scored by their first
        # frame, from two frames up.
        from PIL import Image  # pylint: disable=import-outside-toplevel
        frames = [Image.fromarray(np.full([2, 2, 3], v, np.uint8))
                  for v in (10, 200)]
        animated = os.path.join(self.tmp, 'two.png')
        frames[0].save(animated, save_all=True, append_images=frames[1:])
        with self.assertRaisesWithLiteralMatch(
                ValueError, f'{animated}: an animated PNG of 2 frames; save '
                'each frame as an image file (or stack them in a .npy '
                'array) to score them.'):
            scoring.open_inputs([animated], self.METADATA)

    def test_a_split_that_does_not_say_its_size_cannot_be_sliced(self):
        # A slice needs the split's size (`test[-5:]` counts from its end):
        # a split that does not say it is refused with one line naming the
        # input.
        image_dataset = scoring.pipelines.image_dataset

        def unsized(*args, **kwargs):
            return image_dataset(*args, **kwargs).filter(lambda *_: True)

        spec = 'tfds:photo_patches/8x8:test[1:2]'
        with tfds.testing.mock_data(num_examples=3), mock.patch.object(
                scoring.pipelines, 'image_dataset', unsized):
            with self.assertRaisesWithLiteralMatch(
                    ValueError, f'{spec}: the split does not say how many '
                    'examples it has, so it cannot be sliced.'):
                scoring.open_inputs([spec], {'data_shape': [8, 8, 3],
                                             'kind': 'image'})


class FewerLevelsTest(tf.test.TestCase):
    """An image model of 32 levels (5-bit data): a pixel value of 32 or
    more puts the dequantised pixel outside the logit's domain, which would
    score NaN instead of failing."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix='vflow_tfp_levels_')
        model = models.VFlow(tfp.bijectors.Identity(), (2, 2, 3),
                             num_bins=32,
                             rng=tf.random.Generator.from_seed(1))
        cls.path = os.path.join(cls.tmp, 'saved_model')
        export.export_model(model, cls.path)
        cls.metadata = export.load_metadata(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_levels_are_in_the_metadata_and_checked_by_the_signature(self):
        self.assertEqual(self.metadata['num_bins'], 32)
        log_prob = tf.saved_model.load(self.path).signatures['log_prob']
        pixels = np.full([2, 2, 2, 3], 31, np.uint8)
        out = log_prob(x=tf.constant(pixels), num_samples=tf.constant(2),
                       seed=tf.constant([1, 2]))
        self.assertTrue(np.all(np.isfinite(out['bits_per_dim'])))
        pixels[1, 0, 0, 0] = 32
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'pixel values must be below 32'):
            log_prob(x=tf.constant(pixels), num_samples=tf.constant(2),
                     seed=tf.constant([1, 2]))

    def test_inputs_past_the_levels_are_refused_before_scoring(self):
        pixels = np.full([3, 2, 2, 3], 7, np.uint8)
        pixels[2, 1, 0, 1] = 200
        array = os.path.join(self.tmp, 'pixels.npy')
        np.save(array, pixels)
        with self.assertRaisesRegex(
                ValueError, re.escape(f'{array}[2]: value 200 > 31; pixel '
                                      'values must be integers in [0, 31].')):
            scoring.open_inputs([array], self.metadata)
        image = os.path.join(self.tmp, 'bright.png')
        _write_png(image, tf.constant(pixels[2]))
        with self.assertRaisesRegex(ValueError,
                                    re.escape(f'{image}: value 200 > 31')):
            scoring.open_inputs([image], self.metadata)
        with self.assertRaisesRegex(ValueError, 'TFDS images are 8-bit and '
                                    'the model has 32 levels'):
            scoring.open_inputs(['tfds:photo_patches/8x8'], self.metadata)
        # In range: accepted and scored.
        np.save(array, pixels[:2])
        inputs = scoring.open_inputs([array], self.metadata)
        records = scoring.score(scoring.SavedModelScorer(self.path), inputs,
                                num_samples=2)
        self.assertLen(records, 2)
        self.assertTrue(all(np.isfinite(r['bits_per_dim'])
                            for r in records))

    def test_the_scorer_refuses_values_past_the_levels(self):
        # SavedModelScorer.log_prob raises ValueError for the examples
        # check_array refuses, out-of-range pixels of the model's levels
        # too: one line naming the example, not the signature's
        # InvalidArgumentError from inside the model.
        scorer = scoring.SavedModelScorer(self.path)
        pixels = np.full([2, 2, 2, 3], 31, np.uint8)
        self.assertLen(scorer.log_prob(pixels, 2, (0, 0))[1], 2)
        pixels[1, 0, 1, 2] = 32
        with self.assertRaises((ValueError, tf.errors.OpError)) as caught:
            scorer.log_prob(pixels, 2, (0, 0))
        self.assertIsInstance(caught.exception, ValueError)
        self.assertRegex(str(caught.exception),
                         r'^examples\[1\]: value 32 > 31; pixel values must '
                         r'be integers in \[0, 31\]\.$')

    def test_the_first_value_past_the_levels_is_refused_up_front(self):
        # 32 levels: 31 is the largest pixel value; 32 is refused by the
        # up-front check (uint8 and other integer arrays alike), not left
        # to the signature's assertion in the middle of scoring.
        for dtype in (np.uint8, np.int32):
            top = np.full([2, 2, 2, 3], 31, dtype)
            self.assertEqual(scoring.check_array(top, (2, 2, 3), 'x.npy',
                                                 levels=32).shape,
                             (2, 2, 2, 3))
            past = top.copy()
            past[1, 0, 1, 2] = 32
            with self.assertRaisesRegex(
                    ValueError, r'^x\.npy\[1\]: value 32 > 31; pixel values '
                    r'must be integers in \[0, 31\]\.$'):
                scoring.check_array(past, (2, 2, 3), 'x.npy', levels=32)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (where the progress bar shows)."""

    def isatty(self):
        return True


class ScoreOutputStreamsTest(tf.test.TestCase):
    """bin/score.py's progress bar on a terminal, its last lines there, and
    its table on a stdout of another encoding."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_score_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _run_on_a_terminal(self, *args):
        """`run_score` with a terminal for stderr: (code, stdout, stderr)."""
        return cli_helpers.run_script('score', *args, stderr=_Terminal())

    def test_progress_bar_on_a_terminal(self):
        # `--progress`: a bar on stderr, only on a terminal, rewritten after
        # every batch with the examples done of the total, in the model's
        # unit; `--noprogress` shows none.
        vector = export_fixtures.vector_export()
        points = os.path.join(self.tmp, 'points.npy')
        np.save(points, data.sample_checkerboard(5, seed=1))
        args = (f'--model={vector.path}', points, '--num_samples=1',
                '--batch_size=2')
        code, out, err = self._run_on_a_terminal(*args)
        self.assertEqual(code, 0, err)
        self.assertLen(out.splitlines(), 7)
        bars = err.split('\r')[1:]
        self.assertLen(bars, 3, err)
        for bar, done in zip(bars, (2, 4, 5)):
            filled = 30 * done // 5
            self.assertRegex(bar, '^' + re.escape(
                f'[{"#" * filled}{"." * (30 - filled)}] {done}/5 vectors, ')
                + r'[0-9.]+ vectors/s')
        self.assertTrue(err.endswith('\n'), err)
        code, out, err = self._run_on_a_terminal(*args, '--noprogress')
        self.assertEqual((code, err), (0, ''))
        self.assertLen(out.splitlines(), 7)

    def test_an_error_or_interrupt_after_the_bar_is_a_line_of_its_own(self):
        # An image file gone when it is read again, or Ctrl-C between
        # batches, stops the run with one line on stderr: on a terminal the
        # bar's line is ended first. Without --output, an interrupt has
        # no file to name.
        exported = export_fixtures.image_export()
        paths = [os.path.join(self.tmp, f'p{i}.png') for i in range(3)]
        for path, image in zip(paths, exported.train):
            _write_png(path, image)
        args = (f'--model={exported.path}', *paths, '--num_samples=1',
                '--batch_size=1')
        with _removed_once_opened(paths[2]):
            code, out, err = self._run_on_a_terminal(*args)
        self.assertEqual(code, 2, err)
        self.assertEqual(out, '')
        self.assertTrue(err.startswith('\r['), err)
        self.assertTrue(err.endswith(
            f'\nscore.py: error: {paths[2]}: cannot read it (No such file '
            'or directory).\n'), err)
        _write_png(paths[2], exported.train[2])
        log_prob = scoring.SavedModelScorer.log_prob
        calls = []

        def interrupt_the_second_batch(scorer, *args):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return log_prob(scorer, *args)

        with mock.patch.object(scoring.SavedModelScorer, 'log_prob',
                               interrupt_the_second_batch):
            code, out, err = self._run_on_a_terminal(*args)
        self.assertEqual(code, 130, err)
        self.assertEqual(out, '')
        self.assertTrue(err.startswith('\r['), err)
        self.assertTrue(err.endswith('\nscore.py: interrupted.\n'), err)

    def test_inputs_that_yield_no_example_are_one_line(self):
        # A split that does not say how many examples it has passes the
        # checks; if it yields none, the run stops with one line and exit
        # code 2, not with a traceback over a mean of nothing.
        exported = export_fixtures.image_export()
        image_dataset = scoring.pipelines.image_dataset

        def unsized_and_empty(*args, **kwargs):
            return image_dataset(*args, **kwargs).filter(lambda *_: False)

        with tfds.testing.mock_data(num_examples=2), mock.patch.object(
                scoring.pipelines, 'image_dataset', unsized_and_empty):
            try:
                code, out, err = run_score(f'--model={exported.path}',
                                           'tfds:photo_patches/8x8:test')
            except Exception as e:  # pylint: disable=broad-except
                self.fail(f'a traceback instead of one line: {e!r}')
        self.assertEqual((code, out), (2, ''), err)
        self.assertEqual(err, 'score.py: error: the inputs yielded no '
                              'example, nothing was scored.\n')

    def test_names_the_stdout_encoding_lacks_are_escaped(self):
        # A name may hold characters the terminal's encoding lacks: printed
        # with backslash escapes in that encoding, not a UnicodeEncodeError
        # after the whole run.
        exported = export_fixtures.image_export()
        name = os.path.join(self.tmp, 'caf\xe9.png')
        _write_png(name, exported.train[0])
        stdout = io.TextIOWrapper(io.BytesIO(), encoding='ascii',
                                  errors='strict')
        try:
            code, err = run_score_to(stdout, f'--model={exported.path}',
                                     '--num_samples=1', name)
        except UnicodeEncodeError as e:
            self.fail(f'the name broke the table: {e!r}')
        self.assertEqual(code, 0, err)
        stdout.flush()
        lines = stdout.buffer.getvalue().decode('ascii').splitlines()
        self.assertLen(lines, 3)
        self.assertEqual(lines[1].split('\t')[0],
                         os.path.join(self.tmp, 'caf\\xe9.png'))

    def test_an_explicit_verbosity_is_kept(self):
        # score.py quietens absl's INFO records (TFDS's notes on each data
        # set) when --verbosity is not given; given, it is honoured:
        # --verbosity=0 keeps the libraries' INFO records.
        exported = export_fixtures.image_export()
        image_shape = scoring.pipelines.image_shape

        def noted(*args, **kwargs):
            absl_logging.info('a note of the data pipeline')
            return image_shape(*args, **kwargs)

        with tfds.testing.mock_data(num_examples=1), mock.patch.object(
                scoring.pipelines, 'image_shape', noted), self.assertLogs(
                    'absl', 'INFO') as logs:
            code, _, err = run_score(f'--model={exported.path}',
                                     '--verbosity=0', '--num_samples=1',
                                     'tfds:photo_patches/8x8:test')
            absl_logging.warning('end of the run')  # one record at least
        self.assertEqual(code, 0, err)
        self.assertIn('a note of the data pipeline',
                      [record.getMessage() for record in logs.records])


if __name__ == '__main__':
    tf.test.main()
