"""SavedModel export: signatures with a `None` batch, the in-memory model's
numbers when loaded in a process without vflow_tfp or TFP, `saved_model_cli`,
input checks inside the signatures, the metadata, and export from training
runs (the trainer's own export at the end under two replicas, `export_run`,
`bin/export.py`)."""

import gc
import glob
import json
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl import logging as absl_logging
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import data
from vflow_tfp import export
from vflow_tfp import models
from vflow_tfp import training
from vflow_tfp.models import presets
from vflow_tfp.training import ema as ema_lib
import cli_helpers
import export_fixtures
import lost_signals
import gpu_kernels
import mirrored_export_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIRRORED_WORKER = os.path.join(HERE, 'mirrored_export_worker.py')
EXPORT = os.path.join(ROOT, 'bin', 'export.py')
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable),
                               'saved_model_cli')

# Runs in a fresh interpreter that cannot import vflow_tfp (nor TFP): loads
# both exports with plain TF and evaluates every signature on fixed seeds.
_RELOAD_SCRIPT = r'''
import sys
sys.modules['vflow_tfp'] = None
sys.modules['tensorflow_probability'] = None
import numpy as np
import tensorflow as tf

image_dir, vector_dir, inputs_path, outputs_path = sys.argv[1:]
try:
    import vflow_tfp
    raise SystemExit('vflow_tfp is importable')
except ImportError:
    pass
inputs = np.load(inputs_path)
image = tf.saved_model.load(image_dir).signatures
vector = tf.saved_model.load(vector_dir).signatures
c = tf.constant
out = {}
for prefix, sig, x in (('image', image, inputs['images']),
                       ('vector', vector, inputs['vectors'])):
    lp = sig['log_prob'](x=c(x), num_samples=c(5), seed=c([1, 2]))
    out[prefix + '_log_prob'] = lp['log_likelihood'].numpy()
    out[prefix + '_log_prob_bpd'] = lp['bits_per_dim'].numpy()
    out[prefix + '_serving'] = sig['serving_default'](
        x=c(x))['log_likelihood'].numpy()
    out[prefix + '_elbo'] = sig['elbo'](x=c(x), seed=c([3, 4]))[
        'elbo'].numpy()
    samples = sig['sample'](num=c(3), temperature=c(0.8), seed=c([5, 6]))
    out[prefix + '_sample'] = samples['images' if prefix == 'image'
                                      else 'samples'].numpy()
out['metadata_json'] = np.array(image['metadata']()['json'].numpy())
np.savez(outputs_path, **out)
'''


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
    env.pop('TF_CONFIG', None)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


def _in_memory(model, x):
    """The numbers `_RELOAD_SCRIPT` computes, from the model in memory."""
    ll = model.log_prob(x, 5, chunk_size=export_fixtures.CHUNK_SIZE,
                        seed=model.example_seeds(x, [1, 2]))
    return {
        'log_prob': ll.numpy(),
        'log_prob_bpd': model.bits_per_dim(ll).numpy(),
        'serving': model.log_prob(
            x, export_fixtures.DEFAULT_NUM_SAMPLES,
            chunk_size=export_fixtures.CHUNK_SIZE,
            seed=model.example_seeds(x, export.SERVING_SEED)).numpy(),
        'elbo': model.elbo(x, seed=model.example_seeds(x, [3, 4])).numpy(),
        'sample': model.sample(3, 0.8, seed=[5, 6]).numpy(),
        'num_dims': model.num_data_dims,
    }


class ExportTest(gpu_kernels.Assertions, tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.image = export_fixtures.image_export()
        cls.vector = export_fixtures.vector_export()
        cls.images = data.photo_patches(8, 'test', max_patches=6, seed=2)
        cls.vectors = data.sample_checkerboard(6, seed=4)
        cls.loaded = {'image': tf.saved_model.load(cls.image.path),
                      'vector': tf.saved_model.load(cls.vector.path)}
        cls.expected = {'image': _in_memory(cls.image.model, cls.images),
                        'vector': _in_memory(cls.vector.model, cls.vectors)}

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_export_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _assert_matches(self, got, expected, image):
        # Same seeds, same computation; only the float32 rounding of eager
        # ops and the graph's fused kernels differ (~1e-7 relative): equal
        # to 1e-5 bits/dim.
        nats_per_bit = expected['num_dims'] * math.log(2.0)
        for key in ('log_prob', 'serving', 'elbo'):
            self.assertAllClose(got[key] / nats_per_bit,
                                expected[key] / nats_per_bit, atol=1e-5,
                                rtol=0, msg=key)
        self.assertAllClose(got['log_prob_bpd'], expected['log_prob_bpd'],
                            atol=1e-5, rtol=0)
        if image:
            # A rounding difference may move a pixel across a level.
            diff = np.abs(got['sample'].astype(int) - expected['sample'])
            self.assertLessEqual(diff.max(), 1)
            self.assertLess(np.mean(diff > 0), 0.01)
        else:
            self.assertAllClose(got['sample'], expected['sample'], atol=1e-5,
                                rtol=0)

    def test_signatures_have_a_none_batch_and_documented_outputs(self):
        loaded = self.loaded['image']
        self.assertCountEqual(
            loaded.signatures.keys(),
            ['serving_default', 'log_prob', 'elbo', 'sample', 'metadata'])
        log_prob = loaded.signatures['log_prob']
        x_spec = log_prob.structured_input_signature[1]['x']
        self.assertEqual(x_spec.shape.as_list(), [None, 8, 8, 3])
        self.assertEqual(x_spec.dtype, tf.uint8)
        self.assertCountEqual(log_prob.structured_outputs,
                              ['log_likelihood', 'bits_per_dim'])
        for batch in (1, 4):
            out = log_prob(x=tf.constant(self.images[:batch]),
                           num_samples=tf.constant(2),
                           seed=tf.constant([1, 1]))
            self.assertEqual(out['log_likelihood'].shape, [batch])
            self.assertEqual(out['bits_per_dim'].dtype, tf.float64)
        # (The subprocess test runs it; calling it here would only repeat
        # its costly first run.)
        images = loaded.signatures['sample'].structured_outputs['images']
        self.assertEqual(images.shape.as_list(), [None, 8, 8, 3])
        self.assertEqual(images.dtype, tf.uint8)
        vector = self.loaded['vector'].signatures
        self.assertEqual(vector['elbo'].structured_input_signature[1][
            'x'].shape.as_list(), [None, 2])
        # The bound and its bits/dim are float64, as log_prob's are.
        for name, signature in (('image', loaded.signatures['elbo']),
                                ('vector', vector['elbo'])):
            for output in signature.structured_outputs.values():
                self.assertEqual(output.dtype, tf.float64, name)
        self.assertEqual(vector['sample'](
            num=tf.constant(4), temperature=tf.constant(1.0),
            seed=tf.constant([0, 1]))['samples'].shape, [4, 2])

    def test_every_signature_has_gpu_kernels(self):
        # (gpu_kernels.py.) Each signature as a SavedModel user loads it;
        # the per-example seeds hash the data on the host by design.
        for kind, loaded in self.loaded.items():
            for name, signature in loaded.signatures.items():
                with self.subTest(kind=kind, signature=name):
                    self.assertNoHostOps(
                        signature, allowed=[gpu_kernels.FINGERPRINT])

    def test_scores_do_not_depend_on_the_batching(self):
        sig = self.loaded['image'].signatures
        c = tf.constant
        x = self.images

        def bits(images, name='log_prob', seed=(1, 2)):
            if name == 'elbo':
                return sig['elbo'](x=c(images), seed=c(list(seed)))[
                    'bits_per_dim'].numpy()
            return sig[name](x=c(images), num_samples=c(3),
                             seed=c(list(seed)))['bits_per_dim'].numpy()

        for name in ('log_prob', 'elbo'):
            together = bits(x, name)
            alone = np.concatenate([bits(x[i:i + 1], name)
                                    for i in range(len(x))])
            reordered = bits(x[[4, 0, 5, 1]], name)
            # Float32 kernels on other batch sizes: 1e-5 bits/dim.
            self.assertAllClose(alone, together, atol=1e-5, rtol=0, msg=name)
            self.assertAllClose(reordered, together[[4, 0, 5, 1]], atol=1e-5,
                                rtol=0, msg=name)
            other = bits(x, name, seed=(1, 3))
            self.assertGreater(np.abs(other - together).max(), 1e-3,
                               msg=name)
        served = sig['serving_default'](x=c(x))['bits_per_dim'].numpy()
        served_alone = sig['serving_default'](x=c(x[2:3]))[
            'bits_per_dim'].numpy()
        self.assertAllClose(served_alone, served[2:3], atol=1e-5, rtol=0)

    def test_exports_of_other_formats_are_refused(self):
        # The old format with advice; another (a later vflow_tfp's) by name,
        # not read as if it were this one.
        for name, message in (
                ('vflow_tfp.export/1', r'format vflow_tfp.export/1, whose '
                 r'scores depend on the batching; re-export it with '
                 r'bin/export.py'),
                ('vflow_tfp.export/3', r'assets/metadata\.json is not '
                 r'vflow_tfp\.export/2 metadata\.$')):
            other = os.path.join(self.tmp, name.replace('/', '_'))
            shutil.copytree(self.vector.path, other)
            path = os.path.join(other, 'assets', export.METADATA_FILE)
            with open(path) as f:
                info = json.load(f)
            info['format'] = name
            with open(path, 'w') as f:
                json.dump(info, f)
            with self.assertRaisesRegex(ValueError, message):
                export.load_metadata(other)

    def test_metadata_as_asset_and_signature(self):
        info = export.load_metadata(self.image.path)
        self.assertEqual(info['preset'], 'tiny_vflow')
        self.assertEqual(info['dataset'], 'photo_patches/8x8')
        self.assertEqual(info['data_shape'], [8, 8, 3])
        self.assertEqual(info['kind'], 'image')
        self.assertEqual(info['default_num_samples'],
                         export_fixtures.DEFAULT_NUM_SAMPLES)
        self.assertAllClose(info['test_bpd'], self.image.test_bpd)
        self.assertTrue(os.path.isfile(os.path.join(
            self.image.path, 'assets', export.METADATA_FILE)))
        loaded = self.loaded['image']
        tensors = loaded.metadata()
        self.assertEqual(json.loads(tensors['json'].numpy()), info)
        self.assertEqual(tensors['preset'].numpy(), b'tiny_vflow')
        self.assertAllEqual(tensors['data_shape'], [8, 8, 3])
        self.assertAllClose(tensors['test_bpd'], self.image.test_bpd)
        self.assertTrue(np.isnan(tensors['test_bpd_iw'].numpy()))
        # The Asset survives loading too.
        with open(loaded.metadata_file.asset_path.numpy()) as f:
            self.assertEqual(json.load(f), info)

    def test_reload_in_a_process_without_vflow_tfp(self):
        inputs = os.path.join(self.tmp, 'inputs.npz')
        outputs = os.path.join(self.tmp, 'outputs.npz')
        np.savez(inputs, images=self.images, vectors=self.vectors)
        env = _env()
        env['PYTHONPATH'] = ''
        run = subprocess.run(
            [sys.executable, '-c', _RELOAD_SCRIPT, self.image.path,
             self.vector.path, inputs, outputs],
            cwd=self.tmp, env=env, capture_output=True, text=True,
            timeout=600)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        got = np.load(outputs)
        for prefix in ('image', 'vector'):
            image = prefix == 'image'
            values = {key[len(prefix) + 1:]: got[key] for key in got.files
                      if key.startswith(prefix + '_')}
            expected = self.expected[prefix]
            self._assert_matches(values, expected, image)
            diffs = {key: np.max(np.abs(values[key] - expected[key]))
                     for key in ('log_prob', 'log_prob_bpd', 'elbo')}
            print(f'{prefix}: max |loaded - in memory|: log-likelihood '
                  f'{diffs["log_prob"]:.3g} nats ({diffs["log_prob_bpd"]:.3g} '
                  f'bits/dim), ELBO {diffs["elbo"]:.3g} nats')
        self.assertEqual(json.loads(got['metadata_json'].item()),
                         export.load_metadata(self.image.path))

    def test_signatures_refuse_bad_inputs(self):
        # Image and vector signatures share these checks (FlowScorer); the
        # small model's run quickest.
        sig = self.loaded['vector'].signatures
        c = tf.constant
        nan = self.vectors.copy()
        nan[1, 0] = np.nan
        cases = [
            ('at least one example', sig['log_prob'],
             dict(x=c(np.zeros([0, 2], np.float32)), num_samples=c(2),
                  seed=c([1, 2]))),
            ('num_samples must be >= 1', sig['log_prob'],
             dict(x=c(self.vectors), num_samples=c(0), seed=c([1, 2]))),
            ('x must be finite', sig['elbo'], dict(x=c(nan), seed=c([1, 2]))),
            ('num must be >= 1', sig['sample'],
             dict(num=c(0), temperature=c(1.0), seed=c([1, 2]))),
            ('temperature must be >= 0', sig['sample'],
             dict(num=c(1), temperature=c(-0.5), seed=c([1, 2]))),
            ('temperature must be finite', sig['sample'],
             dict(num=c(1), temperature=c(np.nan, tf.float32),
                  seed=c([1, 2]))),
        ]
        for message, fn, kwargs in cases:
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        message):
                fn(**kwargs)
        # Signatures do not check shapes themselves (a wrong size used to
        # fail inside the networks with a reshape error): the model does,
        # for every input, including another rank (a serving client's
        # `[1]` for a scalar, one image without its batch axis).
        shape_error = r'Shape of tensor {} \[{}\] is not compatible with ' \
                      r'expected shape \[{}\]'
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    shape_error.format('x', '3,3', r'\?,2')):
            sig['elbo'](x=c(np.zeros([3, 3], np.float32)), seed=c([1, 2]))
        for kwargs, error in (
                (dict(x=c(self.vectors), num_samples=c([2]), seed=c([1, 2])),
                 shape_error.format('num_samples', '1', '')),
                (dict(x=c(self.vectors), num_samples=c(2), seed=c([1, 2, 3])),
                 shape_error.format('seed', '3', '2'))):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        error):
                sig['log_prob'](**kwargs)
        for kwargs, error in (
                (dict(num=c([1]), temperature=c(1.0), seed=c([1, 2])),
                 shape_error.format('num', '1', '')),
                (dict(num=c(1), temperature=c([1.0]), seed=c([1, 2])),
                 shape_error.format('temperature', '1', ''))):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        error):
                sig['sample'](**kwargs)
        images = self.loaded['image'].signatures
        for name, kwargs in (('serving_default', {}),
                             ('log_prob', dict(num_samples=c(2),
                                               seed=c([1, 2])))):
            for bad, shown in (([2, 16, 16, 3], '2,16,16,3'),
                               ([8, 8, 3], '8,8,3')):
                with self.assertRaisesRegex(
                        tf.errors.InvalidArgumentError,
                        shape_error.format('x', shown, r'\?,8,8,3')):
                    images[name](x=c(np.zeros(bad, np.uint8)), **kwargs)
        # The dtype is part of the signature.
        refused = (TypeError, ValueError, tf.errors.InvalidArgumentError)
        with self.assertRaises(refused):
            sig['elbo'](x=c(self.vectors.astype(np.float64)), seed=c([1, 2]))
        # Temperature 0 is allowed, as in memory: the latent's mode, the
        # same whatever the seed.
        modes = [sig['sample'](num=c(2), temperature=c(0.0),
                               seed=c(seed))['samples'].numpy()
                 for seed in ([1, 2], [5, 6])]
        self.assertAllEqual(modes[0], modes[1])
        self.assertTrue(np.all(np.isfinite(modes[0])))

    def test_saved_model_cli_show_and_run(self):
        if not os.path.exists(SAVED_MODEL_CLI):
            self.skipTest(f'no {SAVED_MODEL_CLI}')
        show = subprocess.run(
            [SAVED_MODEL_CLI, 'show', '--dir', self.image.path, '--all'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self.assertEqual(show.returncode, 0, show.stderr[-3000:])
        for name in ('serving_default', 'log_prob', 'elbo', 'sample',
                     'metadata'):
            self.assertIn(f"signature_def['{name}']", show.stdout)
        self.assertIn('shape: (-1, 8, 8, 3)', show.stdout)
        # `run` goes through a TF1 session; the small vector model keeps it
        # quick.
        x_path = os.path.join(self.tmp, 'x.npy')
        np.save(x_path, self.vectors)
        run = subprocess.run(
            [SAVED_MODEL_CLI, 'run', '--dir', self.vector.path, '--tag_set',
             'serve', '--signature_def', 'log_prob', '--inputs',
             f'x={x_path}', '--input_exprs', 'num_samples=5;seed=[1,2]'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        printed = run.stdout.split('Result for output key log_likelihood:')[
            1]
        values = np.array(printed.replace('[', ' ').replace(']', ' ').split()
                          [:len(self.vectors)], np.float64)
        expected = self.expected['vector']
        # Printed with 8 significant digits.
        self.assertAllClose(values, expected['log_prob'], rtol=1e-6)

    def test_export_dir_must_be_new_empty_or_a_saved_model(self):
        path = os.path.join(self.tmp, 'notes')
        os.makedirs(path)
        with open(os.path.join(path, 'todo.txt'), 'w') as f:
            f.write('keep me')
        with self.assertRaisesRegex(ValueError, 'refusing to overwrite'):
            export.export_model(self.vector.model, path)
        self.assertTrue(os.path.exists(os.path.join(path, 'todo.txt')))
        # A link to an export: replacing either the link or its target
        # would surprise someone, so it is refused before any work.
        link = os.path.join(self.tmp, 'latest')
        os.symlink(self.vector.path, link)
        with self.assertRaisesRegex(ValueError, 'is a symbolic link'):
            export.export_model(self.vector.model, link)
        self.assertTrue(os.path.islink(link))
        self.assertTrue(os.path.isfile(os.path.join(self.vector.path,
                                                    'saved_model.pb')))
        for bad, reason in ((0, 'a positive integer'), (2**31, 'below 2'),
                            (2**32 + 1, 'below 2')):
            with self.assertRaisesRegex(ValueError,
                                        f'default_num_samples must be '
                                        f'{reason}'):
                export.FlowScorer(self.vector.model, default_num_samples=bad)
        # The largest int32 is a count the signatures can hold.
        export.FlowScorer(self.vector.model, default_num_samples=2**31 - 1)
        with self.assertRaisesRegex(ValueError, 'JSON-serialisable'):
            export.FlowScorer(self.vector.model, metadata={'x': object()})
        with self.assertRaisesRegex(ValueError, 'no saved_model.pb'):
            export.load_metadata(path)

    def test_export_to_a_url_replaces_only_a_saved_model(self):
        # file:// takes tf.io.gfile's path, as gs:// does.
        path = os.path.join(self.tmp, 'url_export')
        url = 'file://' + path
        for samples in (3, np.int64(5)):  # NumPy integers are integers
            self.assertEqual(export.export_model(
                self.vector.model, url, default_num_samples=samples), url)
            self.assertEqual(
                export.load_metadata(url)['default_num_samples'], samples)
        self.assertEqual(export.load_metadata(path)['default_num_samples'], 5)
        # No staging directory left beside it.
        self.assertEqual([name for name in os.listdir(self.tmp)
                          if '.staging-' in name], [])
        notes = os.path.join(self.tmp, 'url_notes')
        os.makedirs(notes)
        with open(os.path.join(notes, 'todo.txt'), 'w') as f:
            f.write('keep me')
        with self.assertRaisesRegex(ValueError, 'refusing to overwrite'):
            export.export_model(self.vector.model, 'file://' + notes)
        self.assertEqual(os.listdir(notes), ['todo.txt'])

    def test_export_logs_no_captured_tensor_ids(self):
        # A caller logging at INFO (bin/train.py does) used to get TF's
        # note on the signatures' captured inputs: thousands of characters,
        # through absl's logger as well as TF's.
        self.addCleanup(absl_logging.set_verbosity,
                        absl_logging.get_verbosity())
        absl_logging.set_verbosity(absl_logging.INFO)
        logger = tf.get_logger()
        self.addCleanup(logger.setLevel, logger.level)
        logger.setLevel(logging.INFO)
        with self.assertNoLogs(level='INFO'):  # Any logger.
            export.export_model(self.image.model,
                                os.path.join(self.tmp, 'quiet'))
        self.assertEqual(logger.level, logging.INFO)
        self.assertEqual(absl_logging.get_verbosity(), absl_logging.INFO)

    def test_exports_are_readable_like_any_new_directory(self):
        # Not the 0700 of the private staging directory: other users and
        # serving containers must be able to load an export.
        mask = os.umask(0o022)
        os.umask(mask)
        for path in (self.vector.path, self.image.path):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode),
                             0o777 & ~mask)


class RunExportTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix='vflow_tfp_run_export_')
        # A finished two-replica run, exported at the end by the trainer.
        cls.run_dir = os.path.join(cls.tmp, 'run')
        cls.report_path = os.path.join(cls.tmp, 'report.json')
        cls.worker = subprocess.run(
            [sys.executable, MIRRORED_WORKER, cls.run_dir, cls.report_path],
            env=_env(), capture_output=True, text=True, timeout=600)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.assertEqual(self.worker.returncode, 0,
                         self.worker.stderr[-3000:])

    def test_trainer_exports_ema_weights_at_the_end(self):
        with open(os.path.join(self.run_dir, 'results.json')) as f:
            results = json.load(f)
        path = os.path.join(self.run_dir, 'saved_model')
        self.assertEqual(results['saved_model'], path)
        info = export.load_metadata(path)
        self.assertEqual(info['preset'], 'checkerboard_vflow_3_4')
        self.assertEqual(info['step'], 6)
        self.assertEqual(info['weights'], 'ema')
        self.assertEqual(info['test_bpd'], results['test_bpd'])
        self.assertEqual(info['test_bpd_iw'], results['test_bpd_iw'])
        self.assertEqual(info['default_num_samples'], 4)  # iw_samples
        self.assertEqual(info['chunk_size'], 3)  # iw_chunk_size
        self.assertEqual(info['config']['ema_decay'], 0.5)
        # What the test figures stand on: 2 evaluation batches of 8, and
        # the bound's 8 images.
        self.assertEqual((info['eval_split'], info['test_images'],
                          info['iw_images']), ('test', 16, 8))
        self.assertEqual((results['test_images'], results['iw_images']),
                         (16, 8))
        # The metadata signature, which a serving client reads instead of
        # the asset, says the same.
        tensors = tf.saved_model.load(path).signatures['metadata']()
        self.assertEqual((tensors['dataset'].numpy().decode(),
                          tensors['preset'].numpy().decode(),
                          int(tensors['default_num_samples'])),
                         ('checkerboard', info['preset'], 4))
        self.assertEqual(info['dataset'], 'checkerboard')
        self.assertAllEqual(tensors['data_shape'], info['data_shape'])
        self.assertAllClose([tensors['test_bpd'], tensors['test_bpd_iw']],
                            [info['test_bpd'], info['test_bpd_iw']])
        with open(self.report_path) as f:
            report = json.load(f)
        self.assertEqual(report['replicas'], 2)
        # The loaded ELBO is the in-memory model's with the EMA weights,
        # which (decay 0.5) lag the raw ones.
        self.assertLess(report['max_diff_ema'], 1e-5)
        self.assertGreater(report['max_diff_raw'], 1e-4)

    def test_export_run_of_an_earlier_checkpoint(self):
        early = export.export_run(
            self.run_dir, os.path.join(self.tmp, 'early'),
            checkpoint=os.path.join(self.run_dir, 'checkpoints', 'ckpt-3'),
            default_num_samples=2)
        info = export.load_metadata(early)
        # results.json's test bits/dim belong to step 6, not to this one.
        self.assertEqual((info['step'], info['test_bpd'],
                          info['default_num_samples'], info['chunk_size']),
                         (3, None, 2, 3))
        # A directory names its latest checkpoint: the trainer's export is
        # of that one, so it is kept.
        saved_model = os.path.join(self.run_dir, 'saved_model')
        inode = os.stat(saved_model).st_ino
        checkpoints = os.path.join(self.run_dir, 'checkpoints')
        self.assertEqual(export.export_run(self.run_dir,
                                           checkpoint=checkpoints,
                                           keep_current=True), saved_model)
        self.assertEqual(os.stat(saved_model).st_ino, inode)
        self.assertEqual(export.load_metadata(saved_model)['checkpoint'],
                         tf.train.latest_checkpoint(checkpoints))

    def test_an_interrupted_export_cli_is_one_line(self):
        # SIGINT once the model is built: exit 130, one line, no export left.
        # A signal whose raise C code loses is seen only once the export is
        # whole: that export stands, as if the signal had come later.
        for case in ('raised', 'turned_into_an_error', 'lost'):
            with self.subTest(case):
                target = os.path.join(self.tmp, f'interrupted_{case}')
                run = subprocess.run(
                    [sys.executable,
                     *lost_signals.python_args_sending_a_sigint(
                         'vflow_tfp.models.presets:build', case),
                     EXPORT, f'--run_dir={self.run_dir}',
                     f'--export_dir={target}'],
                    env=_env(), capture_output=True, text=True, timeout=300)
                self.assertNotIn('Traceback', run.stderr)
                if case == 'lost':
                    self.assertEqual(run.returncode, 0, run.stderr)
                    self.assertIn('(a SIGINT lost)', run.stderr)
                    self.assertEqual(export.load_metadata(target)['step'], 6)
                    continue
                self.assertEqual(run.returncode, 130, run.stderr)
                self.assertTrue(run.stderr.endswith(
                    'export.py: interrupted; nothing exported.\n'),
                    run.stderr)
                self.assertFalse(any(name.startswith(f'.interrupted_{case}')
                                     or name == f'interrupted_{case}'
                                     for name in os.listdir(self.tmp)))

    def test_a_checkpoint_from_elsewhere_gets_no_test_figures(self):
        # Another run's checkpoint of the same model (here a copy of the
        # final one) at the same step: the run's test figures were not
        # measured on it, and were written into its metadata.
        elsewhere = os.path.join(self.tmp, 'elsewhere')
        os.makedirs(elsewhere, exist_ok=True)
        for name in glob.glob(os.path.join(self.run_dir, 'checkpoints',
                                           'ckpt-6.*')):
            shutil.copy(name, elsewhere)
        copied = export.load_metadata(export.export_run(
            self.run_dir, os.path.join(self.tmp, 'copied'),
            checkpoint=os.path.join(elsewhere, 'ckpt-6')))
        self.assertEqual((copied['step'], copied['test_bpd'],
                          copied['test_bpd_iw'], copied['test_images']),
                         (6, None, None, None))
        # The run's own checkpoint, named by a relative path, gets them.
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.tmp)
        own = export.load_metadata(export.export_run(
            self.run_dir, os.path.join(self.tmp, 'own'),
            checkpoint=os.path.join('run', 'checkpoints', 'ckpt-6')))
        with open(os.path.join(self.run_dir, 'results.json')) as f:
            self.assertEqual(own['test_bpd'], json.load(f)['test_bpd'])

    def test_export_run_keeps_a_current_export_only(self):
        out = os.path.join(self.tmp, 'kept')
        export.export_run(self.run_dir, out, default_num_samples=2)
        first = os.stat(out).st_ino  # An export replaces the directory.
        export.export_run(self.run_dir, out, default_num_samples=2,
                          keep_current=True)
        self.assertEqual(os.stat(out).st_ino, first)
        # Other settings: exported again.
        export.export_run(self.run_dir, out, default_num_samples=3,
                          keep_current=True)
        second = os.stat(out).st_ino
        self.assertNotEqual(second, first)
        self.assertEqual(export.load_metadata(out)['default_num_samples'], 3)
        # A checkpoint written after the export (a run retrained from
        # scratch in the same directory reuses the name): exported again.
        index = tf.train.latest_checkpoint(
            os.path.join(self.run_dir, 'checkpoints')) + '.index'
        stat = os.stat(index)
        try:
            os.utime(index, (stat.st_atime, time.time() + 60))
            export.export_run(self.run_dir, out, default_num_samples=3,
                              keep_current=True)
        finally:
            os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertNotEqual(os.stat(out).st_ino, second)

    def test_keep_current_exports_again_for_new_metadata(self):
        # The same checkpoint, sample count and chunk size, but results.json
        # now holds other figures (a re-evaluation at the same step): the
        # kept export's metadata would be stale, so it is exported again
        # (the docstring: the same metadata, sample count, chunk size...).
        run = os.path.join(self.tmp, 'refigured_run')
        shutil.copytree(self.run_dir, run)
        out = os.path.join(self.tmp, 'refigured')
        export.export_run(run, out, default_num_samples=2)
        first = os.stat(out).st_ino  # An export replaces the directory.
        results_path = os.path.join(run, 'results.json')
        with open(results_path) as f:
            results = json.load(f)
        new_bpd = results['test_bpd'] + 0.25
        results['test_bpd'] = new_bpd
        with open(results_path, 'w') as f:
            json.dump(results, f)
        export.export_run(run, out, default_num_samples=2, keep_current=True)
        self.assertNotEqual(os.stat(out).st_ino, first,
                            'kept an export with stale metadata')
        self.assertEqual(export.load_metadata(out)['test_bpd'], new_bpd)

    def test_export_run_attaches_only_bits_per_dim_of_its_step(self):
        with open(os.path.join(self.run_dir, 'results.json')) as f:
            results = json.load(f)
        self.assertEqual((results['step'], results['test_bpd_step']), (6, 6))
        # A run stopped at step 6 whose last evaluation was at step 3 (or
        # resumed after an earlier run's final bound): results.json's step is
        # the checkpoint's, but its numbers are older.
        out = os.path.join(self.tmp, 'stale')
        shutil.copytree(self.run_dir, out)
        results.update(test_bpd_step=3, test_bpd_iw=5.0, test_bpd_iw_step=3)
        with open(os.path.join(out, 'results.json'), 'w') as f:
            json.dump(results, f)
        info = export.load_metadata(export.export_run(
            out, os.path.join(self.tmp, 'stale_export'),
            default_num_samples=2))
        self.assertEqual((info['step'], info['test_bpd'],
                          info['test_bpd_iw'], info['test_images'],
                          info['iw_images']), (6, None, None, None, None))

    def test_no_export_when_stopped(self):
        # (bin/train.py --noexport is tested in test_train_cli.)
        out = os.path.join(self.tmp, 'stopped')
        inputs = mirrored_export_worker.run_inputs()
        trainer = training.Trainer(
            mirrored_export_worker.run_config(out),
            tf.distribute.OneDeviceStrategy('/cpu:0'), inputs.train_input_fn,
            inputs.eval_input_fn, inputs.init_batch)
        trainer.request_stop()
        results = trainer.train()
        # Step 1 carries the stop vote; it is read once step 2 is queued.
        self.assertEqual(results['step'], 2)
        self.assertNotIn('saved_model', results)
        self.assertFalse(os.path.exists(os.path.join(out, 'saved_model')))

    def test_export_run_errors(self):
        with self.assertRaisesRegex(ValueError, 'no results.json; expected '
                                    'the --output_dir of a bin/train.py run'):
            export.export_run(self.tmp)
        # A run killed before its first log step has checkpoints but no
        # record of its settings yet.
        unlogged = os.path.join(self.tmp, 'killed_before_its_first_log')
        os.makedirs(os.path.join(unlogged, 'checkpoints'))
        with self.assertRaisesRegex(ValueError, 'no results.json yet, so no '
                                    "record of the run's settings; rerun "
                                    'its training command'):
            export.export_run(unlogged)
        with self.assertRaisesRegex(ValueError, 'no such checkpoint'):
            export.export_run(self.run_dir, checkpoint=os.path.join(
                self.run_dir, 'ckpt-99'))
        # A checkpoint holding none of the model's weights (another
        # program's) restores nothing by itself: refused, not exported
        # with freshly initialised weights.
        other = tf.train.Checkpoint(step=tf.Variable(6)).write(
            os.path.join(self.tmp, 'other', 'ckpt-6'))
        other_export = os.path.join(self.tmp, 'other_export')
        with self.assertRaisesRegex(
                ValueError, re.escape(f'{other} does not hold the weights of '
                                      "preset 'checkerboard_vflow_3_4'")):
            export.export_run(self.run_dir, other_export, checkpoint=other)
        self.assertFalse(os.path.exists(other_export))
        out = os.path.join(self.tmp, 'broken')
        shutil.copytree(self.run_dir, out)
        results_path = os.path.join(out, 'results.json')
        with open(results_path) as f:
            results = json.load(f)
        results['preset'] = 'checkerboard_glow_3'
        with open(results_path, 'w') as f:
            json.dump(results, f)
        # A shape mismatch stops TF's restore part-way. The error alone is
        # reported: no warning of each value left in the checkpoint when the
        # refused model is collected (TF's logger would print ~80 of them).
        with self.assertNoLogs('tensorflow', level='WARNING'):
            with self.assertRaisesRegex(ValueError, 'does not hold the '
                                        "weights of preset "
                                        "'checkerboard_glow_3'.*shape"):
                export.export_run(out)
            gc.collect()
        shutil.rmtree(os.path.join(out, 'checkpoints'))
        with self.assertRaisesRegex(ValueError, 'no checkpoint in'):
            export.export_run(out)

    def test_export_cli(self):
        target = os.path.join(self.tmp, 'exported')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={self.run_dir}', f'--export_dir={target}',
            '--serving_num_samples=3')
        self.assertEqual(code, 0, err)
        info = export.load_metadata(target)
        # The test bits/dim, not the importance-weighted bound's.
        self.assertNotEqual(f'{info["test_bpd"]:.4f}',
                            f'{info["test_bpd_iw"]:.4f}')
        self.assertEqual(out, 'exported checkerboard_vflow_3_4 (step 6, EMA '
                              f'weights, data 2, test bpd '
                              f'{info["test_bpd"]:.4f}) to {target}\n')
        self.assertEqual(info['default_num_samples'], 3)
        # A stray word (a value given to a bool flag after a space) is
        # refused, and nothing is exported.
        stray = os.path.join(self.tmp, 'stray')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={self.run_dir}', f'--export_dir={stray}',
            'extra')
        self.assertEqual((code, out), (2, ''))
        self.assertEqual(err, "export.py: error: unexpected arguments "
                              "['extra']\n")
        self.assertFalse(os.path.exists(stray))
        # A count past int32 (the signature's) is refused while parsing,
        # in one line like any bad setting.
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={self.run_dir}', f'--export_dir={target}',
            '--serving_num_samples=2147483648')
        self.assertEqual((code, out), (2, ''))
        self.assertRegex(err, r'^export\.py: error: flag '
                              r'--serving_num_samples=2147483648: .*\n$')
        missing = os.path.join(self.tmp, 'nothing')
        code, out, err = cli_helpers.run_script('export',
                                                f'--run_dir={missing}')
        self.assertEqual((code, out), (2, ''))
        self.assertEqual(err, f'export.py: error: {missing}: no results.json;'
                              ' expected the --output_dir of a bin/train.py '
                              'run.\n')

    def test_run_metadata_names_the_split_of_its_figures(self):
        # A run with --validation_size evaluated held-out training images:
        # the export says so next to the figures it attaches.
        results = {'preset': 'checkerboard_vflow_3_4', 'step': 6,
                   'test_bpd': 1.5, 'test_bpd_step': 6, 'test_images': 100,
                   'config': {'validation_size': 100}}
        # pylint: disable-next=protected-access
        info = export._run_metadata(results, '/run/checkpoints/ckpt-6', {})
        self.assertEqual((info['eval_split'], info['test_bpd'],
                          info['test_images'], info['step']),
                         ('validation', 1.5, 100, 6))
        results['config'] = {'validation_size': 0}
        # pylint: disable-next=protected-access
        info = export._run_metadata(results, '/run/checkpoints/ckpt-6', {})
        self.assertEqual(info['eval_split'], 'test')
        # Each figure's image count goes with that figure alone: a bound of
        # an earlier step is left out, and its count with it.
        for bpd_step, iw_step in ((6, 3), (3, 6)):
            results.update(test_bpd_step=bpd_step, test_bpd_iw=1.4,
                           test_bpd_iw_step=iw_step, iw_images=40)
            # pylint: disable-next=protected-access
            info = export._run_metadata(results, '/run/checkpoints/ckpt-6', {})
            self.assertEqual(
                (info['test_bpd'], info['test_images'], info['test_bpd_iw'],
                 info['iw_images']),
                (1.5, 100, None, None) if bpd_step == 6
                else (None, None, 1.4, 40))


class VectorDtypeTest(tf.test.TestCase):

    def test_a_float64_vector_model_scores_float64_inputs(self):
        # Vector signatures take x in the model's dtype (module docstring):
        # a float64 model's scorer takes, and scores exactly as in memory,
        # float64 points (a float32 input would round them).
        model = presets.build('checkerboard_vflow_2_4', seed=0,
                              dtype=tf.float64)
        x = data.sample_checkerboard(16, seed=1).astype(np.float64)
        model.initialize(x, seed=[1, 2])
        scorer = export.FlowScorer(model, chunk_size=2)
        self.assertEqual(scorer.info['input_dtype'], 'float64')
        got = scorer.log_prob(tf.constant(x[:3]), 2, tf.constant([1, 2]))
        want = model.log_prob(x[:3], 2, chunk_size=2,
                              seed=model.example_seeds(x[:3], [1, 2]))
        self.assertAllClose(got['log_likelihood'], want, atol=1e-9, rtol=0)


def _raised(fn, *args, **kwargs):
    """The exception `fn(*args, **kwargs)` raises, or `None`."""
    try:
        fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
        return e
    return None


class ExportChecksTest(tf.test.TestCase):
    """What needs no trained export: `FlowScorer` on a small model, the
    checks of `export_run` on fake run directories (refused before a model
    is built), `load_signature`, and bin/export.py's flags (refused before
    TF starts)."""
    # pylint: disable=protected-access

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_export_checks_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _identity_model(self):
        # No networks and no noise: its export takes about a second.
        return models.VFlow(tfp.bijectors.Identity(), (2,),
                            rng=tf.random.Generator.from_seed(1))

    def test_signatures_use_their_own_sample_count_and_chunk_size(self):
        # serving_default draws `default_num_samples`, log_prob evaluates
        # `chunk_size` draws per pass, as the module docstring's in-memory
        # equivalents (the shared exports use 4 for both).
        model = presets.build('checkerboard_vflow_2_4', seed=0,
                              dtype=tf.float64)
        x = data.sample_checkerboard(16, seed=1).astype(np.float64)
        model.initialize(x, seed=[1, 2])
        x = x[:3]
        scorer = export.FlowScorer(model, default_num_samples=3,
                                   chunk_size=2)

        def in_memory(num_samples, seed):
            return model.log_prob(x, num_samples, chunk_size=2,
                                  seed=model.example_seeds(x, seed))

        self.assertAllClose(
            scorer.serving_default(tf.constant(x))['log_likelihood'],
            in_memory(3, export.SERVING_SEED), atol=1e-9, rtol=0)
        self.assertAllClose(
            scorer.log_prob(tf.constant(x), 5, tf.constant([1, 2]))[
                'log_likelihood'], in_memory(5, [1, 2]), atol=1e-9, rtol=0)

    def test_scorer_refuses_a_bad_chunk_size(self):
        # FlowScorer's docstring: ValueError for a non-positive chunk size
        # (and, as the signatures' int32, one past 2^31).
        for bad, reason in ((0, 'a positive integer'), (-2, 'a positive'),
                            (2.0, 'a positive integer'), (2**31, 'below 2')):
            with self.assertRaisesRegex(ValueError,
                                        f'chunk_size must be {reason}'):
                export.FlowScorer(self._identity_model(), chunk_size=bad)

    def test_run_metadata_of_results_without_figure_steps(self):
        # results.json from before `test_bpd_step` existed: its figures are
        # of its own step, so they go with that step's checkpoint only.
        results = {'preset': 'checkerboard_vflow_3_4', 'step': 6,
                   'test_bpd': 1.5, 'test_images': 100, 'test_bpd_iw': 1.4,
                   'iw_images': 40, 'config': {}}
        figures = ('test_bpd', 'test_images', 'test_bpd_iw', 'iw_images')
        for path, expected in (
                ('/run/checkpoints/ckpt-6', (1.5, 100, 1.4, 40)),
                ('/run/checkpoints/ckpt-3', (None,) * 4)):
            info = export._run_metadata(
                results, path, {})
            self.assertEqual(tuple(info[key] for key in figures), expected,
                             path)

    def test_a_run_dir_named_through_a_link_owns_its_checkpoints(self):
        # export_run gives test figures to a checkpoint in
        # run_dir/checkpoints: the same directory named through a symbolic
        # link (`runs/latest`) is still the run's own, another is not.
        run = os.path.join(self.tmp, 'run')
        os.makedirs(os.path.join(run, 'checkpoints'))
        link = os.path.join(self.tmp, 'latest')
        os.symlink(run, link)
        is_run_checkpoint = export._is_run_checkpoint
        for run_dir, named in ((link, run), (run, link)):
            self.assertTrue(is_run_checkpoint(
                run_dir, os.path.join(named, 'checkpoints', 'ckpt-6')),
                run_dir)
        self.assertFalse(is_run_checkpoint(
            run, os.path.join(self.tmp, 'elsewhere', 'ckpt-6')))

    def test_keep_current_needs_the_same_versions_and_chunk_size(self):
        # export_run's keep_current: the same checkpoint, not rewritten
        # since, with the same metadata, sample count, chunk size and
        # versions. (The export's metadata is FlowScorer's `info`.)
        model = self._identity_model()
        checkpoint = os.path.join(self.tmp, 'ckpt-6')
        with open(checkpoint + '.index', 'w'):
            pass
        metadata = {'preset': 'a_preset', 'step': 6}
        out = os.path.join(self.tmp, 'export')
        os.makedirs(os.path.join(out, 'assets'))

        def is_current(**changes):
            info = dict(export.FlowScorer(model, metadata, 2, 3).info,
                        **changes)
            with open(os.path.join(out, 'assets', export.METADATA_FILE),
                      'w') as f:
                json.dump(info, f)
            pb = os.path.join(out, 'saved_model.pb')
            with open(pb, 'w'):
                pass
            # Written in the checkpoint's clock tick (coarse timestamps):
            # the checkpoint was not rewritten since.
            written = os.stat(checkpoint + '.index').st_mtime_ns
            os.utime(pb, ns=(written, written))
            return export._is_current_export(
                out, checkpoint, metadata, 2, 3)

        self.assertTrue(is_current())
        for key, value in (('vflow_tfp_version', '0.0.1'),
                           ('tensorflow_version', '1.15.0'),
                           ('chunk_size', 4), ('default_num_samples', 3)):
            self.assertFalse(is_current(**{key: value}), key)

    def test_export_run_refuses_bad_runs_before_building(self):
        # export_run's Raises: a results.json it cannot read or without a
        # preset and config, or a --checkpoint directory with no checkpoint,
        # is a ValueError naming the file, before anything is written.
        run = os.path.join(self.tmp, 'run')
        os.makedirs(os.path.join(run, 'checkpoints'))
        results_path = os.path.join(run, 'results.json')
        empty = os.path.join(self.tmp, 'empty')
        os.makedirs(empty)
        for results, kwargs, message in (
                ('{"preset": ', {}, re.escape(results_path) + ': unreadable'),
                ({'config': {}}, {}, 'has no preset or config'),
                ({'preset': 'checkerboard_vflow_3_4'}, {},
                 'has no preset or config'),
                ({'preset': 'checkerboard_vflow_3_4', 'config': {}},
                 {'checkpoint': empty},
                 re.escape(empty) + ': no checkpoint in it')):
            with open(results_path, 'w') as f:
                f.write(results if isinstance(results, str)
                        else json.dumps(results))
            error = _raised(export.export_run, run,
                            os.path.join(self.tmp, 'out'), **kwargs)
            self.assertIsInstance(error, ValueError, message)
            self.assertRegex(str(error), message)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'out')))

    def test_export_to_an_empty_directory(self):
        # export_model's export_dir "must not exist, be empty or hold a
        # SavedModel": an empty one (made ahead, say) is filled.
        out = os.path.join(self.tmp, 'made_ahead')
        os.makedirs(out)
        self.assertIsNone(_raised(export.export_model,
                                  self._identity_model(), out))
        self.assertEqual(export.load_metadata(out)['data_shape'], [2])

    def test_load_signature_refuses_a_missing_name(self):
        out = export.export_model(self._identity_model(),
                                  os.path.join(self.tmp, 'export'))
        metadata, sample = export.load_signature(out, 'sample')
        self.assertEqual(metadata, export.load_metadata(out))
        self.assertEqual(sample(num=tf.constant(3), temperature=tf.constant(
            1.0), seed=tf.constant([1, 2]))['samples'].shape, [3, 2])
        error = _raised(export.load_signature, out, 'score')
        self.assertIsInstance(error, ValueError)
        self.assertRegex(str(error), 'the SavedModel has no score signature')

    def test_export_cli_refuses_bad_flags_in_one_line(self):
        # As every bad setting (exit code 2, one line), before TF starts up.
        for args, message in (
                ([], '--run_dir is required'),
                ([f'--run_dir={self.tmp}', '--serving_num_samples=0'],
                 'flag --serving_num_samples=0: ')):
            run = subprocess.run([sys.executable, EXPORT, *args], env=_env(),
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 2, run.stderr[-3000:])
            self.assertRegex(run.stderr,
                             r'^export\.py: error: ' + message + r'.*\n$')

    def test_export_cli_refuses_a_file_as_export_dir_as_the_export_does(self):
        # A file where the export would go: its directory exists, so the
        # command gets as far as the export, which refuses to overwrite it
        # (export_model's Raises), not a "cannot be created" directory.
        run = os.path.join(self.tmp, 'run')
        model = presets.build('checkerboard_vflow_2_4', seed=0)
        tf.train.Checkpoint(
            model=model, ema=ema_lib.WeightEMA(model.trainable_variables)
        ).save(os.path.join(run, 'checkpoints', 'ckpt'))  # ckpt-1
        with open(os.path.join(run, 'results.json'), 'w') as f:
            json.dump({'preset': 'checkerboard_vflow_2_4', 'step': 1,
                       'config': {'seed': 0}}, f)
        a_file = os.path.join(self.tmp, 'a_file')
        with open(a_file, 'w') as f:
            f.write('keep me')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={run}', f'--export_dir={a_file}')
        self.assertEqual((code, out), (2, ''))
        self.assertEqual(err, f'export.py: error: {a_file} exists and is not '
                              'a SavedModel or an empty directory; refusing '
                              'to overwrite it.\n')

    def test_scorer_refuses_a_bool_count(self):
        # A count is a positive integer, as in scoring and sampling: `True`
        # (say `keep_current` given in the wrong place) is no count of
        # samples or draws, though Python takes it for the integer 1.
        for name in ('default_num_samples', 'chunk_size'):
            with self.assertRaisesRegex(
                    ValueError, f'^{name} must be a positive integer; got '
                    r'True\.$'):
                export.FlowScorer(self._identity_model(), **{name: True})

    def test_image_metadata_holds_its_levels(self):
        # The metadata holds the pixel levels `num_bins` of an image model
        # (module docstring), the usual 256 (8-bit data) as well as fewer;
        # a vector model has none.
        for num_bins in (256, 32):
            model = models.VFlow(tfp.bijectors.Identity(), (2, 2, 3),
                                 num_bins=num_bins,
                                 rng=tf.random.Generator.from_seed(1))
            info = export.FlowScorer(model).info
            self.assertEqual((info['kind'], info.get('num_bins')),
                             ('image', num_bins))
        self.assertNotIn('num_bins',
                         export.FlowScorer(self._identity_model()).info)

    def _fake_run(self, preset, config, **results):
        """A run directory of `preset` with `config` (its overrides): a
        checkpoint ckpt-1 of fresh weights and EMA, and results.json."""
        run = os.path.join(self.tmp, 'run')
        model = presets.build(preset, seed=0,
                              **config.get('preset_overrides', {}))
        tf.train.Checkpoint(
            model=model, ema=ema_lib.WeightEMA(model.trainable_variables)
        ).save(os.path.join(run, 'checkpoints', 'ckpt'))  # ckpt-1
        with open(os.path.join(run, 'results.json'), 'w') as f:
            json.dump(dict(results, preset=preset, step=1, config=config), f)
        return run

    def test_export_cli_of_a_run_without_iw_samples(self):
        # A run trained without the bound (--iw_samples=0, the default)
        # serves 16 samples (export_run: "the run's iw_samples, else 16").
        # bin/export.py's line names the data shape as HxWxC, and a test
        # bits/dim of 0 as a figure, not as an unknown one.
        # (A small image model: its export is quick.)
        overrides = dict(image_shape=[4, 4, 3], filters=4, components=2,
                         attention=False, dequant_blocks=0, context_filters=4)
        run = self._fake_run(
            'tiny_flowpp',
            {'seed': 0, 'iw_samples': 0, 'preset_overrides': overrides},
            test_bpd=0.0, test_bpd_step=1)
        out = os.path.join(self.tmp, 'exported')
        code, stdout, err = cli_helpers.run_script(
            'export', f'--run_dir={run}', f'--export_dir={out}')
        self.assertEqual((code, err), (0, ''))
        self.assertEqual(stdout, 'exported tiny_flowpp (step 1, EMA weights, '
                                 f'data 4x4x3, test bpd 0.0000) to {out}\n')
        self.assertEqual(export.load_metadata(out)['default_num_samples'],
                         export.DEFAULT_NUM_SAMPLES)

    def test_a_checkpoint_of_another_program_is_refused_with_the_reason(self):
        # export_run refuses a checkpoint that does not match the run's
        # model with TF's reason (here: the model's variables it has no
        # values for), not a fragment of the listing that follows it.
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        other = tf.train.Checkpoint(step=tf.Variable(6)).write(
            os.path.join(self.tmp, 'other', 'ckpt-6'))
        error = _raised(export.export_run, run,
                        os.path.join(self.tmp, 'out'), checkpoint=other)
        self.assertIsInstance(error, ValueError)
        self.assertRegex(str(error), re.escape(
            f"{other} does not hold the weights of preset "
            "'checkerboard_vflow_2_4' with overrides {} (") +
            r'.*not bound to checkpointed values.*\)\.$')
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'out')))

    def test_export_cli_stops_at_sigterm_as_at_ctrl_c(self):
        # README: Ctrl-C or SIGTERM stops bin/export.py with one line, exit
        # code 130 and no partial export. (lost_signals' SIGINT, raised once
        # the model is built, sent as a SIGTERM.)
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        target = os.path.join(self.tmp, 'terminated')
        python_args = [arg.replace('signal.SIGINT', 'signal.SIGTERM')
                       for arg in lost_signals.python_args_sending_a_sigint(
                           'vflow_tfp.models.presets:build', 'raised')]
        proc = subprocess.run(
            [sys.executable, *python_args, EXPORT, f'--run_dir={run}',
             f'--export_dir={target}'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 130, proc.stderr[-3000:])
        self.assertTrue(proc.stderr.endswith(
            'export.py: interrupted; nothing exported.\n'), proc.stderr)
        self.assertEqual(os.listdir(self.tmp), ['run'])

    def test_export_cli_leaves_a_url_export_dir_to_the_export(self):
        # README: bin/export.py's --export_dir may be a URL (file:// as
        # gs://): it is no local path, so what the working directory holds
        # (here a file named like its scheme) is no obstacle.
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.tmp)
        with open('file:', 'w') as f:
            f.write('not a directory')
        url = 'file://' + os.path.join(self.tmp, 'url_export')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={run}', f'--export_dir={url}')
        self.assertEqual((code, err), (0, ''))
        self.assertTrue(out.endswith(f' to {url}\n'), out)
        self.assertEqual(export.load_metadata(url)['preset'],
                         'checkerboard_vflow_2_4')

    def test_export_cli_names_the_path_it_cannot_write(self):
        # A directory that exists passes bin/export.py's early check; if
        # the SavedModel cannot be written there (sysfs takes no new
        # directories, even from root) the one-line error names the path
        # that failed, not the run directory.
        parent = '/sys/kernel'
        if not os.path.isdir(parent):
            self.skipTest(f'no {parent}')
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={run}', f'--export_dir={parent}/sm')
        self.assertEqual((code, out), (2, ''))
        self.assertRegex(err, r'^export\.py: error: /sys/kernel/\.sm\.'
                              r'staging-\S+: .+\.\n$')

    def test_scorer_refuses_more_than_256_levels(self):
        # FlowScorer's Raises: an image model of more than 256 levels has
        # no uint8 signatures; 257 is the first such count (256 itself is
        # taken: test_image_metadata_holds_its_levels).
        model = models.VFlow(tfp.bijectors.Identity(), (2, 2, 3),
                             num_bins=257,
                             rng=tf.random.Generator.from_seed(1))
        error = _raised(export.FlowScorer, model)
        self.assertIsInstance(error, ValueError)
        self.assertRegex(str(error), 'images of at most 256 levels; the '
                                     r'model has 257\.$')

    def test_signatures_refuse_infinities_as_well_as_nan(self):
        # Module docstring: non-finite vectors and a temperature that is
        # not finite are errors, not garbage outputs; an infinity as well
        # as the NaN of test_signatures_refuse_bad_inputs (the identity
        # model would pass either through to its outputs).
        scorer = export.FlowScorer(self._identity_model(), chunk_size=2)
        c = tf.constant
        seed = c([1, 2])
        for bad in (np.inf, -np.inf):
            x = c([[0.0, 1.0], [bad, 0.0]], tf.float32)
            for name, call in (
                    ('elbo', lambda x=x: scorer.elbo(x, seed)),
                    ('log_prob', lambda x=x: scorer.log_prob(x, c(2), seed))):
                with self.subTest(signature=name, value=bad):
                    with self.assertRaisesRegex(
                            tf.errors.InvalidArgumentError,
                            'x must be finite'):
                        call()
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    'temperature must be finite'):
            scorer.sample(c(2), c(np.inf, tf.float32), seed)

    def test_metadata_signature_tells_a_zero_from_an_unknown(self):
        # Module docstring: `metadata()` gives `test_bpd` and `test_bpd_iw`,
        # NaN when unknown: a figure of 0 bits/dim is known, and stays 0.
        # The names the export was given none of are empty, not the name
        # of a preset or data set "None".
        tensors = export.FlowScorer(self._identity_model(),
                                    metadata={'test_bpd': 0.0}).metadata()
        self.assertEqual(tensors['test_bpd'].numpy(), 0.0)
        self.assertTrue(np.isnan(tensors['test_bpd_iw'].numpy()))
        self.assertEqual((tensors['preset'].numpy(),
                          tensors['dataset'].numpy()), (b'', b''))

    def test_scorer_takes_its_name(self):
        # FlowScorer's `name`: the module name, 'flow_scorer' by default.
        model = self._identity_model()
        self.assertEqual(export.FlowScorer(model, name='my_scorer').name,
                         'my_scorer')
        self.assertEqual(export.FlowScorer(model).name, 'flow_scorer')

    def test_load_metadata_refuses_json_that_is_no_object(self):
        # load_metadata's Raises: an assets/metadata.json that is not
        # export_model's (here a JSON list, which has no format) is a
        # ValueError saying so.
        out = os.path.join(self.tmp, 'listed')
        os.makedirs(os.path.join(out, 'assets'))
        with open(os.path.join(out, 'saved_model.pb'), 'w'):
            pass
        with open(os.path.join(out, 'assets', export.METADATA_FILE),
                  'w') as f:
            json.dump(['vflow_tfp.export/1'], f)
        error = _raised(export.load_metadata, out)
        self.assertIsInstance(error, ValueError)
        self.assertRegex(str(error), r'assets/metadata\.json is not '
                                     r'vflow_tfp\.export/2 metadata\.$')

    def test_export_run_of_a_run_without_sample_settings(self):
        # A results.json whose config has neither iw_samples nor
        # iw_chunk_size: serving_default's 16 samples (export_run's
        # docstring) and TrainConfig's 16 draws per pass. Kept by
        # keep_current when asked with a NumPy count (a count may be one:
        # FlowScorer), and both calls return the same directory, the one
        # written (an absolute path for a relative export_dir).
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.tmp)
        first = export.export_run(run, 'exported')
        self.assertEqual(first, os.path.join(self.tmp, 'exported'))
        info = export.load_metadata(first)
        self.assertEqual((info['default_num_samples'], info['chunk_size']),
                         (export.DEFAULT_NUM_SAMPLES, 16))
        inode = os.stat(first).st_ino
        try:
            kept = export.export_run(run, 'exported',
                                     default_num_samples=np.int64(16),
                                     keep_current=True)
        except (TypeError, ValueError) as e:
            self.fail(f'a NumPy count refused: {e!r}')
        self.assertEqual(kept, first)
        self.assertEqual(os.stat(first).st_ino, inode)

    def test_export_cli_refuses_an_export_dir_it_cannot_create(self):
        # bin/export.py checks --export_dir before the model is built: one
        # line naming the --export_dir given and the reason, exit code 2.
        a_file = os.path.join(self.tmp, 'a_file')
        with open(a_file, 'w') as f:
            f.write('keep me')
        target = os.path.join(a_file, 'sub', 'sm')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={self.tmp}', f'--export_dir={target}')
        self.assertEqual((code, out), (2, ''))
        self.assertRegex(err, r'^export\.py: error: --export_dir must be in '
                              r'a directory that exists or can be created; '
                              f'got {re.escape(repr(target))} '
                              r'\(Not a directory: .+\)\.\n$')

    def test_a_refused_export_cli_leaves_no_new_directory(self):
        # README: a refused command leaves no new directory behind. The
        # missing parents of --export_dir that the early check made (two
        # levels here) are gone when the run is refused afterwards.
        target = os.path.join(self.tmp, 'new', 'deeper', 'sm')
        missing = os.path.join(self.tmp, 'no_run')
        code, out, err = cli_helpers.run_script(
            'export', f'--run_dir={missing}', f'--export_dir={target}')
        self.assertEqual((code, out), (2, ''))
        self.assertEqual(err, f'export.py: error: {missing}: no results.json;'
                              ' expected the --output_dir of a bin/train.py '
                              'run.\n')
        self.assertEqual(os.listdir(self.tmp), [])

    def test_export_cli_takes_an_empty_run_dir_for_none(self):
        # `--run_dir=` names no run: refused as a missing --run_dir.
        code, out, err = cli_helpers.run_script('export', '--run_dir=')
        self.assertEqual((code, out), (2, ''))
        self.assertRegex(err, r'^export\.py: error: --run_dir is required')

    def test_export_cli_reports_a_storage_error_in_one_line(self):
        # An object store's error through tf.io.gfile (a bucket refusing
        # access) may span lines, with a JSON body: bin/export.py refuses
        # in one line as for every error, the whitespace folded.
        error = tf.errors.PermissionDeniedError(
            None, None, 'gs://bucket/run/results.json; 403 Forbidden\n{\n'
                        '  "error": "denied"\n}')
        with mock.patch.object(export, 'export_run', side_effect=error):
            code, out, err = cli_helpers.run_script(
                'export', '--run_dir=gs://bucket/run')
        self.assertEqual((code, out), (2, ''))
        self.assertEqual(err, 'export.py: error: gs://bucket/run/'
                              'results.json; 403 Forbidden { "error": '
                              '"denied" }\n')

    def test_run_metadata_of_a_step_of_several_digits(self):
        # A checkpoint prefix names its step (`ckpt-800`, the module's
        # example): the metadata's step, and the run's figures of that
        # step go with it.
        results = {'preset': 'checkerboard_vflow_3_4', 'step': 800,
                   'test_bpd': 1.5, 'test_bpd_step': 800, 'test_images': 100,
                   'config': {}}
        # pylint: disable-next=protected-access
        info = export._run_metadata(results, '/run/checkpoints/ckpt-800',
                                    {})
        self.assertEqual((info['step'], info['test_bpd'],
                          info['test_images']), (800, 1.5, 100))

    def test_export_run_refuses_a_config_that_is_no_mapping(self):
        # export_run's Raises: results.json without a config (a list where
        # the settings should be, or a list for the whole document) is a
        # ValueError naming the file, before a model is built.
        run = os.path.join(self.tmp, 'run')
        os.makedirs(os.path.join(run, 'checkpoints'))
        results_path = os.path.join(run, 'results.json')
        for results in ({'preset': 'checkerboard_vflow_3_4', 'config': []},
                        ['checkerboard_vflow_3_4', {}]):
            with open(results_path, 'w') as f:
                json.dump(results, f)
            error = _raised(export.export_run, run)
            self.assertIsInstance(error, ValueError)
            self.assertRegex(str(error), re.escape(results_path) +
                             ' has no preset or config')

    def test_keep_current_knows_a_checkpoint_however_named(self):
        # keep_current keeps the export of the same checkpoint: one named
        # by a relative prefix, then as the run's latest, is the same one.
        # The metadata names it by its absolute path, which holds wherever
        # the export is loaded.
        run = self._fake_run('checkerboard_vflow_2_4', {'seed': 0})
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.tmp)
        out = export.export_run(
            run, 'exported',
            checkpoint=os.path.join('run', 'checkpoints', 'ckpt-1'))
        self.assertEqual(export.load_metadata(out)['checkpoint'],
                         os.path.join(run, 'checkpoints', 'ckpt-1'))
        inode = os.stat(out).st_ino
        export.export_run(run, out, keep_current=True)
        self.assertEqual(os.stat(out).st_ino, inode)
        # Without keep_current (its default False) it is exported again.
        export.export_run(run, out)
        self.assertNotEqual(os.stat(out).st_ino, inode)

    def test_export_run_refuses_an_unreadable_results_json(self):
        # export_run's Raises: a results.json it cannot read (here a
        # directory of that name: permissions do not stop root) is a
        # ValueError naming it, as one that is not JSON is.
        run = os.path.join(self.tmp, 'run')
        results_path = os.path.join(run, 'results.json')
        os.makedirs(results_path)
        os.makedirs(os.path.join(run, 'checkpoints'))
        error = _raised(export.export_run, run)
        self.assertIsInstance(error, ValueError)
        self.assertRegex(str(error), re.escape(results_path) +
                         r': unreadable \(.*Is a directory')


if __name__ == '__main__':
    tf.test.main()
