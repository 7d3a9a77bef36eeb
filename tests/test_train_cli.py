"""bin/train.py end to end: flagfiles, a hard kill and resume, multi-worker,
and one-line errors for bad flags."""

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from unittest import mock

import numpy as np
import tensorflow as tf

from vflow_tfp import training
from vflow_tfp.training import config as config_lib

import cli_helpers
import lost_signals

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN = os.path.join(ROOT, 'bin', 'train.py')
WORKER = os.path.join(HERE, 'multiworker_worker.py')


def _failing_downloads(error):
    """A `python -c` script: runs the script its first argument names, with
    TFDS's download_and_prepare raising `error` (an expression)."""
    return ('import runpy, sys\n'
            'import tensorflow_datasets as tfds\n'
            'def download_and_prepare(self, *args, **kwargs):\n'
            f'    raise {error}\n'
            'tfds.core.DatasetBuilder.download_and_prepare = '
            'download_and_prepare\n'
            'sys.argv[0] = sys.argv[1]; del sys.argv[1]\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")\n')


# Fails loudly if a command prepares the data: it must stop before that.
_NO_DOWNLOADS = _failing_downloads('AssertionError("the data were prepared")')


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
    env.pop('TF_CONFIG', None)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env.update(extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _checkpoint_step(checkpoint_dir):
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    return None if latest is None else int(latest.rsplit('-', 1)[1]), latest


def _ema_checksum(checkpoint_path):
    reader = tf.train.load_checkpoint(checkpoint_path)
    keys = [k for k, _ in tf.train.list_variables(checkpoint_path)
            if k.startswith('ema/shadows/') and k.endswith('VARIABLE_VALUE')]
    return float(sum(np.sum(reader.get_tensor(k).astype(np.float64))
                     for k in keys)), len(keys)


class _RunDirectory:
    """A fresh temporary directory per test (`self.tmp`) and the CLI's
    runner; a mixin, so that the classes below are separate pytest-xdist
    scopes (each starts several TF processes; see pytest.ini)."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='vflow_tfp_cli_')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _run_train(self, *args):
        return subprocess.run([sys.executable, TRAIN, *args], env=_env(),
                              capture_output=True, text=True, timeout=300)

    def _small_cifar_command(self, out, steps):
        # The paper's own flagfile, with overrides after it that shrink the
        # model (without attention, which only adds tracing time to each
        # process), the data (8x8 photo patches, tiny_vflow's own size;
        # 32x32 images cost a minute more per process) and the run (absl:
        # later flags win).
        return [sys.executable, TRAIN,
                f'--flagfile={os.path.join(ROOT, "configs", "cifar.flags")}',
                '--preset=tiny_vflow', '--set=attention=False',
                '--dataset=photo_patches/8x8',
                f'--train_steps={steps}',
                '--global_batch_size=8', '--init_batch_size=16',
                '--checkpoint_every=2', '--eval_every=1000', '--log_every=1',
                '--eval_batches=2', '--iw_samples=0', '--num_samples=4',
                '--dropout=0.0', '--warmup_steps=4', f'--output_dir={out}',
                '--noexport', '--alsologtostderr']

    def _assert_one_line_error(self, run, pattern):
        self.assertNotEqual(run.returncode, 0)
        self.assertRegex(run.stderr, pattern)
        self.assertNotIn('Traceback', run.stderr)


class HardKillTest(_RunDirectory, tf.test.TestCase):

    def _wait_for_checkpoint(self, proc, ckpt_dir, min_step):
        """Returns once the running `proc` has saved a checkpoint at
        `min_step` or later (fails after 7 minutes or if it ends)."""
        deadline = time.time() + 420
        while time.time() < deadline:
            step, _ = _checkpoint_step(ckpt_dir) if os.path.isdir(
                ckpt_dir) else (None, None)
            if step is not None and step >= min_step:
                return
            if proc.poll() is not None:
                self.fail('training exited early:\n' + proc.stderr.read())
            time.sleep(0.2)
        self.fail(f'no checkpoint at step >= {min_step} in time')

    def _signal_after_checkpoint(self, out, min_step, sig):
        """Runs (or resumes) the small command in `out`, sends `sig` once a
        checkpoint at `min_step` or later exists; (status, stdout, stderr).
        """
        proc = subprocess.Popen(self._small_cifar_command(out, 400),
                                env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            self._wait_for_checkpoint(
                proc, os.path.join(out, 'checkpoints'), min_step)
            proc.send_signal(sig)
            out_text, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        return proc.returncode, out_text, err

    def test_a_signal_saves_and_exits_as_stopped(self):
        # A stopped run is saved but not finished: its exit status is not 0
        # (a scheduler would take it for done), but 128 + the signal.
        out = os.path.join(self.tmp, 'run')
        ckpt_dir = os.path.join(out, 'checkpoints')
        code, out_text, err = self._signal_after_checkpoint(
            out, 2, signal.SIGTERM)
        self.assertEqual(code, 128 + signal.SIGTERM, err[-3000:])
        stopped = re.search(r'Stopped by a signal .* at step (\d+);', err)
        self.assertIsNotNone(stopped, err[-3000:])
        self.assertEqual(_checkpoint_step(ckpt_dir)[0], int(stopped[1]))
        self.assertTrue(err.endswith('stopped by SIGTERM before the end; '
                                     'rerun the same command to resume.\n'),
                        err[-300:])
        self.assertRegex(out_text, rf'^step {stopped[1]}: train_bpd ')
        # Resumed, then stopped by Ctrl-C: the status says which signal.
        code, _, err = self._signal_after_checkpoint(
            out, int(stopped[1]) + 2, signal.SIGINT)
        self.assertEqual(code, 128 + signal.SIGINT, err[-3000:])
        self.assertTrue(err.endswith('stopped by SIGINT before the end; '
                                     'rerun the same command to resume.\n'),
                        err[-300:])

    def test_a_signal_before_the_first_save_leaves_no_trace(self):
        # Before the trainer exists (data set-up) and during its init: one
        # line, 128 + the signal, and the directories the command made are
        # gone again (lock file included), as after a refused command. Also
        # when C lost the handler's raise or turned it into another error:
        # the signal still ends the set-up.
        for case, sig, ready in [
                ('SIGINT', signal.SIGINT, 'run'),
                ('SIGTERM', signal.SIGTERM, os.path.join('run', '.lock')),
                ('lost', signal.SIGINT, None),
                ('turned_into_an_error', signal.SIGINT, None)]:
            with self.subTest(case):
                new = os.path.join(self.tmp, f'new_{case}')
                command = [a for a in self._small_cifar_command(
                    os.path.join(new, 'run'), 400) if a != '--alsologtostderr']
                if ready is None:  # the command sends it itself
                    command[1:1] = (
                        lost_signals.python_args_sending_a_sigint(
                            'vflow_tfp.training:training_inputs', case))
                proc = subprocess.Popen(command, env=_env(),
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
                try:
                    deadline = time.time() + 300
                    while ready and not os.path.exists(
                            os.path.join(new, ready)):
                        self.assertIsNone(proc.poll(), 'ended early')
                        self.assertLess(time.time(), deadline)
                        time.sleep(0.02)
                    if ready:
                        proc.send_signal(sig)
                    _, err = proc.communicate(timeout=120)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                self.assertEqual(proc.returncode, 128 + sig, err[-3000:])
                self.assertTrue(err.endswith(
                    f'train.py: interrupted by {sig.name}; nothing was '
                    'saved.\n'), err[-3000:])
                if case == 'lost':
                    self.assertIn('(a SIGINT lost)', err)
                    self.assertNotIn('Exception ignored', err)
                self.assertNotIn('Traceback', err)
                self.assertFalse(os.path.exists(new))

    def test_hard_kill_then_resume_exactly(self):
        out = os.path.join(self.tmp, 'run')
        ckpt_dir = os.path.join(out, 'checkpoints')
        # Under TF's op determinism (what a repeatable GPU run needs, see
        # the README), which refuses ops that cannot honour it: both runs
        # must get through.
        env = _env(TF_DETERMINISTIC_OPS='1')
        proc = subprocess.Popen(self._small_cifar_command(out, 400),
                                env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            self._wait_for_checkpoint(proc, ckpt_dir, 6)
            proc.send_signal(signal.SIGKILL)  # no chance to clean up
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        step, latest = _checkpoint_step(ckpt_dir)
        self.assertGreaterEqual(step, 6)
        checksum, num_shadows = _ema_checksum(latest)
        self.assertGreater(num_shadows, 10)

        # Rerun the same command to a slightly later step: it must resume.
        final = step + 3
        run = subprocess.run(self._small_cifar_command(out, final),
                             env=env, capture_output=True, text=True,
                             timeout=600)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        match = re.search(r'Resumed from (\S+) at step (\d+) \(learning rate '
                          r'(\S+), EMA checksum (\S+)\)', run.stderr)
        self.assertIsNotNone(match, run.stderr[-3000:])
        self.assertEqual(match.group(1), latest)
        self.assertEqual(int(match.group(2)), step)
        # The learning rate of step `step` under cifar.flags' schedule.
        expected_lr = 1.2e-3 * min(step / 4, 1.0)
        self.assertAllClose(float(match.group(3)), expected_lr, rtol=1e-5)
        self.assertAllClose(float(match.group(4)), checksum, rtol=1e-6)
        with open(os.path.join(out, 'results.json')) as f:
            results = json.load(f)
        self.assertEqual(results['step'], final)
        self.assertTrue(results['latest_checkpoint'].endswith(f'-{final}'))
        self.assertTrue(os.path.exists(os.path.join(out, 'samples.png')))
        self.assertFalse(os.path.exists(os.path.join(out, 'saved_model')))
        for key in ('train_bpd', 'test_bpd', 'wall_time',
                    'images_per_second'):
            self.assertTrue(np.isfinite(results[key]), key)


class DeterminismTest(_RunDirectory, tf.test.TestCase):

    def test_runs_under_op_determinism_are_identical(self):
        # TF_DETERMINISTIC_OPS=1 fixes each kernel; bin/train.py runs TF's
        # independent ops on one thread as well, since the order of a
        # gradient's AddN otherwise varies (without it, two such runs
        # differed in about 790 of 1045 tensors, by rounding).
        checkpoints = []
        for name in ('a', 'b'):
            out = os.path.join(self.tmp, name)
            run = subprocess.run(
                self._small_cifar_command(out, 20) + [
                    '--checkpoint_every=20', '--num_samples=0',
                    '--num_bits=5'],
                env=_env(TF_DETERMINISTIC_OPS='1'), capture_output=True,
                text=True, timeout=600)
            self.assertEqual(run.returncode, 0, run.stderr[-3000:])
            self.assertNotIn('differ by rounding', run.stderr)
            step, latest = _checkpoint_step(os.path.join(out, 'checkpoints'))
            self.assertEqual(step, 20)
            checkpoints.append(tf.train.load_checkpoint(latest))
            # --num_bits=5 (5-bit data, as Glow's CelebA-HQ) builds the
            # model for its 32 levels, and the run records it.
            with open(os.path.join(out, 'results.json')) as f:
                config = json.load(f)['config']
            self.assertEqual(config['preset_overrides']['num_bins'], 32)
        names = sorted(checkpoints[0].get_variable_to_shape_map())
        self.assertEqual(
            names, sorted(checkpoints[1].get_variable_to_shape_map()))
        self.assertGreater(len(names), 500)
        differ = [n for n in names
                  if not np.array_equal(checkpoints[0].get_tensor(n),
                                        checkpoints[1].get_tensor(n))]
        self.assertEqual(differ, [])


class MultiWorkerTest(_RunDirectory, tf.test.TestCase):

    def _run_workers(self, output_dirs, train_steps, sigterm_after=(0, 0)):
        """Runs one worker process per output directory; their exit codes,
        stderr and dumps (None for a failed worker). Worker i trains to
        `train_steps` (or `train_steps[i]`) and sends itself SIGTERM after
        `sigterm_after[i]` steps (0: never). Their temporary files go to
        `self.worker_tmp`."""
        if not isinstance(train_steps, (list, tuple)):
            train_steps = [train_steps] * len(output_dirs)
        self.worker_tmp = os.path.join(self.tmp, 'worker_tmp')
        os.makedirs(self.worker_tmp, exist_ok=True)
        ports = [_free_port() for _ in output_dirs]
        cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
        procs, dumps = [], []
        for index, output_dir in enumerate(output_dirs):
            tf_config = json.dumps({'cluster': cluster,
                                    'task': {'type': 'worker',
                                             'index': index}})
            dumps.append(os.path.join(self.tmp, f'worker{index}.npz'))
            if os.path.exists(dumps[-1]):
                os.remove(dumps[-1])
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, output_dir, dumps[-1],
                 str(train_steps[index]), str(sigterm_after[index])],
                env=_env(TF_CONFIG=tf_config, TMPDIR=self.worker_tmp),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True))
        outcomes = []
        try:
            for proc, dump in zip(procs, dumps):
                _, err = proc.communicate(timeout=300)
                outcomes.append((proc.returncode, err, np.load(dump)
                                 if proc.returncode == 0 else None))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        return outcomes

    def _assert_workers_agree(self, outcomes, step, start):
        for code, err, _ in outcomes:
            self.assertEqual(code, 0, err[-3000:])
        dumps = [dump for _, _, dump in outcomes]
        for dump in dumps:
            self.assertEqual(int(dump['step']), step)
            self.assertEqual(str(dump['start']), start)
        self.assertEqual(sorted(dumps[0].files), sorted(dumps[1].files))
        for key in dumps[0].files:
            if key not in ('step', 'start', 'latest_checkpoint'):
                self.assertAllClose(dumps[0][key], dumps[1][key], atol=1e-6,
                                    msg=key)

    def _scratch_left(self):
        """The workers' scratch checkpoint directories still in their
        temporary directory. Only these: TF's autograph leaves the
        `__pycache__` of its generated modules there too, unless Python
        writes no bytecode (`PYTHONDONTWRITEBYTECODE`, which Bazel's test
        environment does not pass on)."""
        return [name for name in os.listdir(self.worker_tmp)
                if name.startswith('vflow_tfp_worker')]

    def test_two_workers_stop_agree_and_resume_together(self):
        out = os.path.join(self.tmp, 'mw')
        # Worker 1 alone is preempted (SIGTERM after its third step): both
        # workers stop after the same step, with one collective checkpoint,
        # instead of worker 0 waiting forever in the next all-reduce.
        outcomes = self._run_workers([out, out], 9, sigterm_after=(0, 3))
        stopped = int(outcomes[0][2]['step']) if outcomes[0][0] == 0 else -1
        self.assertBetween(stopped, 4, 8)
        self._assert_workers_agree(outcomes, stopped, 'initialized')
        # Only the chief (worker 0) keeps checkpoints and results.
        self.assertTrue(os.path.exists(os.path.join(out, 'results.json')))
        self.assertEqual(_checkpoint_step(os.path.join(out, 'checkpoints'))[0],
                         stopped)
        # The rerun: every worker resumes from the chief's checkpoint at the
        # stopped step (none initialises anew), and they still agree, also
        # on the evaluation: one pass over the 1,000 test points in shards
        # of 500 (the last batches partial), and the bound's 40 points
        # rounded up to 3 global batches of 16.
        outcomes = self._run_workers([out, out], 9)
        self._assert_workers_agree(outcomes, 9, 'restored')
        for _, _, dump in outcomes:
            self.assertEqual(int(dump['test_images']), 1000)
            self.assertEqual(int(dump['iw_images']), 48)
            self.assertTrue(np.isfinite(dump['test_bpd_iw']))
            # Every worker names the chief's checkpoint, not its scratch
            # copy, which is gone.
            self.assertEqual(str(dump['latest_checkpoint']),
                             os.path.join(out, 'checkpoints', 'ckpt-9'))
        self.assertEqual(self._scratch_left(), [])
        self.assertEqual(_checkpoint_step(os.path.join(out, 'checkpoints'))[0],
                         9)
        # Workers that cannot see the same checkpoints (here: worker 1 is
        # given another output_dir) stop with one clear error, not a hang.
        other = os.path.join(self.tmp, 'not_shared')
        for code, err, _ in self._run_workers([out, other], 12):
            self.assertNotEqual(code, 0)
            self.assertIn('The workers found different checkpoints', err)
        # The refused worker 1 leaves no scratch checkpoint directory.
        self.assertEqual(self._scratch_left(), [])
        # Workers started with other settings (here train_steps) are
        # refused before any step, not by a collective's shape mismatch.
        for code, err, _ in self._run_workers([out, out], [12, 15]):
            self.assertNotEqual(code, 0)
            self.assertIn('The workers were started with different '
                          'settings', err)
        self.assertEqual(_checkpoint_step(os.path.join(out, 'checkpoints'))[0],
                         9)


def _with_train_module(body, args, names):
    """Runs `body` in a new Python process that has loaded bin/train.py as
    `train` (its flags defined; TF not started), with `args` its command
    line and `defaults` the flag defaults of those of `names` that are
    flags. Returns the JSON that `body` prints last."""
    script = (
        'import dataclasses, importlib.util, json, sys\n'
        f'spec = importlib.util.spec_from_file_location("t", {TRAIN!r})\n'
        'train = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(train)\n'
        'args = sys.argv[1:]\n'
        'defaults = {k: train.FLAGS[k].default for k in json.loads('
        'sys.stdin.read()) if k in train.FLAGS}\n' + body)
    run = subprocess.run([sys.executable, '-c', script, *args],
                         input=json.dumps(names), env=_env(),
                         capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


class CliErrorTest(_RunDirectory, tf.test.TestCase):

    def test_every_setting_flag_reaches_the_config(self):
        # Each flag of a TrainConfig setting, set off its default, is the
        # config's (and so results.json's) setting: none dropped or crossed.
        values = dict(
            global_batch_size=32, train_steps=123, max_lr=1.5e-3,
            warmup_steps=7, hold_until=9, lr_decay=0.99, min_lr=1e-5,
            adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6,
            clip_norm=50.0, ema_decay=0.9, init_batch_size=48,
            checkpoint_every=11, keep_checkpoints=4, eval_every=13,
            eval_batches=2, log_every=5, num_samples=4,
            inverse_check_images=3, iw_samples=6, iw_images=12, seed=17,
            validation_size=10,
            jit_compile=True, export=False)
        args = [f'--{k}={v}' for k, v in values.items()] + [
            '--preset=checkerboard_glow_3', '--dataset=checkerboard',
            f'--output_dir={self.tmp}']
        config, defaults = _with_train_module(
            'train.FLAGS(["train.py"] + args)\n'
            'config, _ = train._checked_config()\n'
            'print(json.dumps([dataclasses.asdict(config), defaults]))\n',
            args, list(values))
        for key, value in values.items():
            self.assertNotEqual(defaults[key], value, key)
            self.assertEqual(config[key], value, key)
        self.assertEqual((config['preset'], config['dataset']),
                         ('checkerboard_glow_3', 'checkerboard'))

    def test_every_preset_flag_reaches_the_overrides(self):
        # --filters, --blocks, --components and --dropout override the
        # preset's settings, as --set does: none dropped or crossed.
        args = ['--preset=tiny_vflow', '--filters=24', '--blocks=3',
                '--components=5', '--dropout=0.25', '--set=attention=False',
                f'--output_dir={self.tmp}']
        overrides = _with_train_module(
            'train.FLAGS(["train.py"] + args)\n'
            '_, overrides = train._checked_config()\n'
            'print(json.dumps(overrides))\n', args, [])
        self.assertEqual(overrides, dict(filters=24, blocks=3, components=5,
                                         dropout=0.25, attention=False))

    def test_config_defaults_are_the_flags_defaults(self):
        # TrainConfig's docstring: its defaults are those of bin/train.py's
        # flags, but for train_steps and eval_every (short runs from
        # Python) and dataset (a name only). A run configured from Python
        # would otherwise differ from the same run on the command line.
        fields = {f.name: f.default
                  for f in dataclasses.fields(config_lib.TrainConfig)
                  if f.default is not dataclasses.MISSING}
        flag_defaults = _with_train_module(
            'print(json.dumps(defaults))\n', (), list(fields))
        # Only iw_chunk_size has no flag (the docstring says so).
        self.assertEqual(set(fields) - set(flag_defaults), {'iw_chunk_size'})
        for name, default in flag_defaults.items():
            if name in ('train_steps', 'eval_every', 'dataset'):
                continue
            self.assertEqual(fields[name], default, name)

    def test_bad_flagfile_line(self):
        flagfile = os.path.join(self.tmp, 'bad.flags')
        with open(flagfile, 'w') as f:
            f.write('--preset=tiny_vflow\n--global_batch_size 64\n')
        run = self._run_train(f'--flagfile={flagfile}',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r'Unknown command line flag '
                                         r"'global_batch_size 64'")

    def test_missing_flagfile(self):
        run = self._run_train('--flagfile=/nonexistent/x.flags',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r'/nonexistent/x\.flags')

    def test_bad_settings_are_refused_before_tensorflow_starts(self):
        # TF's start takes seconds and logs lines of its own: a misspelt
        # preset or a bad number is refused without it.
        report = (
            'import atexit, runpy, sys\n'
            'atexit.register(lambda: print("TensorFlow imported:", '
            '"tensorflow" in sys.modules, file=sys.stderr))\n'
            'sys.argv[0] = sys.argv[1]; del sys.argv[1]\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")\n')
        out = os.path.join(self.tmp, 'run')

        def run(*args):
            return subprocess.run(
                [sys.executable, '-c', report, TRAIN, f'--output_dir={out}',
                 *args],
                env=_env(), capture_output=True, text=True, timeout=300)

        for args, error in (
                (['--preset=vflow_cifar11'], "unknown preset 'vflow_cifar11'"),
                (['--preset=tiny_vflow', '--global_batch_size=0'],
                 'global_batch_size must be positive; got 0.'),
                (['--preset=tiny_vflow', '--max_lr=nan'],
                 'max_lr must be a finite number; got nan.'),
                (['--preset=tiny_vflow', '--seed=-1'],
                 r'seed must be in \[0, 2\*\*31\); got -1.'),
                (['--preset=tiny_vflow', f'--seed={2**31}'],
                 r'seed must be in \[0, 2\*\*31\); got 2147483648\.$'),
                (['--preset=tiny_vflow', '--set=seed=3'],
                 'seed is not a preset override here'),
                (['--preset=tiny_vflow', '--set=dropout'],
                 "--set expects name=value; got 'dropout'."),
                (['--preset=tiny_vflow', '--dropout=0.1', '--set=dropout=0.2'],
                 r'--set=dropout=0\.2 contradicts --dropout=0\.1'),
                (['--preset=tiny_vflow', '--min_lr=1', '--max_lr=1e-3'],
                 r'min_lr \(1\.0\) must not exceed max_lr \(0\.001\)\.'),
                (['--preset=tiny_vflow', '--num_bits=9'],
                 r'flag --num_bits=9: 9 is not an integer in the range '
                 r'\[1, 8\]'),
                (['--preset=tiny_vflow', '--train_steps=ten'],
                 r"flag --train_steps=ten: invalid literal for int\(\)")):
            with self.subTest(args=args):
                result = run(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(
                    result.stderr.splitlines(),
                    [result.stderr.splitlines()[0],
                     'TensorFlow imported: False'], result.stderr)
                self.assertRegex(result.stderr.splitlines()[0],
                                 '^train\\.py: error: ' + error)
        # The names of a preset's settings are its code's: TF starts first.
        result = run('--preset=tiny_vflow', '--set=levels=3')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertRegex(result.stderr, r"has no setting\(s\) \['levels'\]")
        self.assertTrue(result.stderr.endswith('TensorFlow imported: True\n'),
                        result.stderr)
        self.assertFalse(os.path.exists(out))

    def test_unknown_preset(self):
        run = self._run_train('--preset=vflow_cifar11',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r"error: unknown preset "
                                         r"'vflow_cifar11'")

    def test_negative_batch_size(self):
        run = self._run_train('--preset=tiny_vflow', '--global_batch_size=-8',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r'global_batch_size must be '
                                         r'positive; got -8')

    def test_bad_init_batch_size_and_seed_name_their_flag(self):
        # Validated before the inputs draw the init batch, whose code would
        # otherwise name its own arguments (num_samples, batch_size).
        checkerboard = ('--preset=checkerboard_glow_3',
                        '--dataset=checkerboard', f'--output_dir={self.tmp}')
        run = self._run_train(*checkerboard, '--init_batch_size=-3')
        self._assert_one_line_error(
            run, r'train\.py: error: init_batch_size must be positive; got -3')
        run = self._run_train(*checkerboard, '--seed=-1')
        self._assert_one_line_error(
            run, r'train\.py: error: seed must be in \[0, 2\*\*31\); got -1')
        run = self._run_train('--preset=tiny_vflow',
                              '--dataset=photo_patches/8x8',
                              '--init_batch_size=0',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r'train\.py: error: init_batch_size must be positive; got 0')

    def test_non_finite_training_is_one_line(self):
        # A rate of 1e30 sends the weights to ~1e30 in one step; the next
        # loss is not finite.
        out = os.path.join(self.tmp, 'nan')
        run = self._run_train(
            '--preset=checkerboard_glow_3', '--dataset=checkerboard',
            '--global_batch_size=64', '--train_steps=3', '--log_every=1',
            '--warmup_steps=0', '--hold_until=0', '--lr_decay=1',
            '--min_lr=0', '--max_lr=1e30', '--num_samples=0', '--noexport',
            f'--output_dir={out}')
        self._assert_one_line_error(
            run, r'train\.py: error: Non-finite .*; the last good checkpoint '
                 r'is .*ckpt-0\.')
        self.assertIn('last good checkpoint',
                      run.stderr.strip().splitlines()[-1])

    def test_dataset_that_cannot_be_prepared(self):
        # No network: TFDS's download fails inside bin/train.py (patched
        # here to fail at once), and the run ends with one line naming the
        # data set, its directory and the cause.
        offline = _failing_downloads('ConnectionError("no network here")')
        data_dir = os.path.join(self.tmp, 'tfds')
        run = subprocess.run(
            [sys.executable, '-c', offline, TRAIN, '--preset=tiny_vflow',
             '--dataset=cifar10', f'--data_dir={data_dir}',
             f'--output_dir={os.path.join(self.tmp, "run")}'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self._assert_one_line_error(
            run, r"train\.py: error: Could not prepare TFDS dataset "
                 r"'cifar10/[0-9.]+' in .*tfds.*ConnectionError: no network "
                 r"here.*tfds build")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'run',
                                                     'results.json')))

    def test_an_image_size_the_preset_cannot_take_before_the_data(self):
        # MNIST's 28x28x1 from the TFDS metadata, before anything is
        # downloaded (download_and_prepare patched to fail loudly, as in
        # the test above: the run must not get that far).
        data_dir = os.path.join(self.tmp, 'tfds')
        out = os.path.join(self.tmp, 'run')

        def run(*args, **env):
            return subprocess.run(
                [sys.executable, '-c', _NO_DOWNLOADS, TRAIN, '--dataset=mnist',
                 f'--data_dir={data_dir}', f'--output_dir={out}', *args],
                env=_env(**env), capture_output=True, text=True, timeout=300)

        self.assertEqual(run('--preset=glow_cifar10').stderr.splitlines()[-1],
                         "train.py: error: preset 'glow_cifar10' cannot take "
                         'the 28x28x1 images of mnist: levels=3 squeezes the '
                         'image 3 times, so its height and width must be '
                         'multiples of 8; got image_shape=(28, 28, 1).')
        # A setting the preset refuses whatever the size is named as such.
        self.assertEqual(
            run('--preset=glow_cifar10',
                '--set=levels=0').stderr.splitlines()[-1],
            "train.py: error: preset 'glow_cifar10' cannot be built with "
            "{'levels': 0}: levels must be an integer >= 1; got 0.")
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(os.path.join(data_dir, 'mnist')))
        # A preset that takes the size goes on to the data, also under op
        # determinism (which refuses unseeded random initialisers).
        self._assert_one_line_error(
            run('--preset=tiny_vflow', TF_DETERMINISTIC_OPS='1'),
            'the data were prepared')

    def test_every_script_refuses_a_bad_flag_in_one_line(self):
        # absl's own parser would print two lines and exit with 1; a bad
        # flag is a bad setting like any other (one line, exit code 2).
        for script, args, message in (
                ('train', ['--preset=tiny_vflow', '--learning_rat=3',
                           f'--output_dir={self.tmp}'],
                 "Unknown command line flag 'learning_rat'"),
                ('train', ['--preset=tiny_vflow'],
                 'flag --output_dir=None: Flag --output_dir must have a '
                 'value other than None.'),
                ('sample', ['--model=m', '--output=s.png', '--num=0'],
                 'flag --num=0: 0 is not an integer in the range '
                 '[1, 2147483647]'),
                ('score', ['--model=m', '--batch_size=x', 'a.npy'],
                 "flag --batch_size=x: invalid literal for int() with base "
                 "10: 'x'"),
                ('export', ['--run_dir=r', '--serving_num_samples=0'],
                 'flag --serving_num_samples=0: 0 is not an integer in the '
                 'range [1, 2147483647]')):
            run = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bin', f'{script}.py'),
                 *args], env=_env(), capture_output=True, text=True,
                timeout=300)
            self.assertEqual((run.returncode, run.stderr),
                             (2, f'{script}.py: error: {message}\n'))

    def test_unknown_flag_and_bad_value(self):
        run = self._run_train('--preset=tiny_vflow', '--learning_rat=3',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r"Unknown command line flag "
                                         r"'learning_rat'")
        run = self._run_train('--preset=tiny_vflow', '--train_steps=ten',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(run, r'train_steps')
        # A value given to a bool flag after a space is a stray word: the
        # run is refused before it starts, not run without it.
        stray = os.path.join(self.tmp, 'stray')
        run = self._run_train('--preset=checkerboard_glow_3',
                              '--dataset=checkerboard', '--train_steps=1',
                              '--noexport', 'false', f'--output_dir={stray}')
        self.assertEqual(run.returncode, 2, run.stderr[-3000:])
        self._assert_one_line_error(
            run, r"train\.py: error: unexpected arguments \['false'\]")
        self.assertFalse(os.path.exists(stray))
        # A --set value of the wrong type fails inside the preset's code.
        run = self._run_train('--preset=checkerboard_glow_3',
                              '--dataset=checkerboard', '--set=hidden_units=5',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r"train\.py: error: preset 'checkerboard_glow_3' cannot be "
                 r"built with \{'hidden_units': 5\}: hidden_units must be a "
                 r"sequence of integers >= 1; got 5\.")
        # A setting given twice with two values: neither silently wins.
        run = self._run_train('--preset=tiny_vflow', '--dropout=0.1',
                              '--set=dropout=0.2', f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r'train\.py: error: --set=dropout=0\.2 contradicts '
                 r'--dropout=0\.1; give each setting once\.')
        # A --set that changes the model's variables is refused when resuming,
        # and the error stays the last line (no TF warnings listing every
        # unmatched checkpoint value after it).
        run_dir = os.path.join(self.tmp, 'resumed')
        args = ('--preset=checkerboard_glow_3', '--dataset=checkerboard',
                '--train_steps=2', '--noexport', f'--output_dir={run_dir}')
        self.assertEqual(self._run_train(*args).returncode, 0)
        run = self._run_train(*args, '--set=hidden_units=[10,10]')
        self._assert_one_line_error(run, r'is not a checkpoint of preset')
        self.assertIn('Use another output directory.',
                      run.stderr.strip().splitlines()[-1])
        # Nothing to hold out from a stream of fresh points: the run would
        # have evaluated the test set under the name "validation".
        run = self._run_train('--preset=checkerboard_glow_3',
                              '--dataset=checkerboard',
                              '--validation_size=100',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r"train\.py: error: validation_size applies to image "
                 r"datasets; the checkerboard trains on fresh points")

    def test_bad_output_dir_is_one_line_before_strategy_and_data(self):
        # multi_worker without TF_CONFIG and an unknown data set would each
        # fail on their own: the output directory is checked before both.
        a_file = os.path.join(self.tmp, 'a_file')
        with open(a_file, 'w') as f:
            f.write('not a directory')
        late = ('--preset=tiny_vflow', '--strategy=multi_worker',
                '--dataset=no_such_dataset')
        for output_dir, pattern in (
                (a_file, r"output_dir must be a directory; got '.*a_file', "
                         r'which is a file\.'),
                ('/proc/nope/run', r'output_dir must be a directory that can '
                                   r"be created; got '/proc/nope/run' "
                                   r'\(No such file or directory: '),
                ('', r"output_dir must name a directory; got ''\.")):
            run = self._run_train(*late, f'--output_dir={output_dir}')
            self.assertEqual(run.returncode, 2, run.stderr[-3000:])
            self._assert_one_line_error(run, r'train\.py: error: ' + pattern)
            self.assertRegex(run.stderr.strip().splitlines()[-1],
                             r'^train\.py: error: ' + pattern)
        self.assertFalse(os.path.exists('/proc/nope'))
        # Other bad settings are refused before the directory is made.
        new_dir = os.path.join(self.tmp, 'new')
        run = self._run_train('--preset=tiny_vflow', '--clip_norm=nan',
                              f'--output_dir={new_dir}')
        self._assert_one_line_error(
            run, r'train\.py: error: clip_norm must be a finite number; got '
                 r'nan\.')
        self.assertFalse(os.path.exists(new_dir))
        # Settings refused only by the data or the preset's build come after
        # the directory is made: it goes again, with the parents it needed,
        # while an existing one stays, as empty as it was (the last case is
        # refused after the trainer is built, which used to leave summaries/).
        new_dir = os.path.join(self.tmp, 'new', 'run')
        kept = os.path.join(self.tmp, 'kept')
        os.makedirs(kept)
        for output_dir in (new_dir, kept):
            for dataset, pattern in (
                    ('photo_patches/12x12', r'photo_patches'),
                    ('photo_patches/8x8 --dropout=1.5', r'dropout'),
                    ('checkerboard', r"the model of preset 'tiny_vflow' "
                                     r'takes data of shape \[8, 8, 3\]; '
                                     r'init_batch holds examples of shape '
                                     r'\[2\]\.')):
                run = self._run_train('--preset=tiny_vflow',
                                      *f'--dataset={dataset}'.split(),
                                      f'--output_dir={output_dir}')
                self._assert_one_line_error(
                    run, r'train\.py: error: .*' + pattern)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'new')))
        self.assertEqual(os.listdir(kept), [])

    def test_num_bits_and_a_contradicting_num_bins(self):
        run = self._run_train('--preset=tiny_vflow',
                              '--dataset=photo_patches/8x8', '--num_bits=5',
                              '--set=num_bins=256', f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r'train\.py: error: --set=num_bins=256 contradicts '
                 r'--num_bits=5 \(32 levels\); set --num_bits alone\.')
        run = self._run_train('--preset=tiny_vflow', '--dataset=checkerboard',
                              '--num_bits=5', f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r'train\.py: error: num_bits applies to image datasets')

    def test_bad_step_group_settings_name_the_setting(self):
        base = ('--preset=tiny_vflow', '--dataset=photo_patches/8x8',
                '--global_batch_size=8', '--init_batch_size=8',
                f'--output_dir={self.tmp}')
        for flag, pattern in (
                ('--filters=0', r"\{'filters': 0\}: filters must be an "
                                r'integer >= 1; got 0\.'),
                ('--blocks=-1', r"\{'blocks': -1\}: blocks must be an "
                                r'integer >= 0; got -1\.'),
                ('--set=filters=abc', r"\{'filters': 'abc'\}: filters must "
                                      r"be an integer >= 1; got 'abc'\.")):
            run = self._run_train(*base, flag)
            self._assert_one_line_error(
                run, r"train\.py: error: preset 'tiny_vflow' cannot be built "
                     r'with ' + pattern)
            self.assertNotIn('StepGroup', run.stderr)

    def test_export_dir_that_cannot_be_created_is_one_line(self):
        run_dir = os.path.join(self.tmp, 'run')
        run = self._run_train('--preset=checkerboard_glow_3',
                              '--dataset=checkerboard', '--train_steps=1',
                              '--noexport', f'--output_dir={run_dir}')
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        a_file = os.path.join(self.tmp, 'a_file')
        with open(a_file, 'w') as f:
            f.write('x')
        for export_dir in ('/proc/nope/sm', os.path.join(a_file, 'sm')):
            run = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'bin', 'export.py'),
                 f'--run_dir={run_dir}', f'--export_dir={export_dir}'],
                env=_env(), capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 2, run.stderr[-3000:])
            self._assert_one_line_error(
                run, r'^export\.py: error: --export_dir must be in a '
                     r'directory that exists or can be created; got '
                     + re.escape(repr(export_dir)) + r' \(.*\)\.\n$')
        # A command refused after that check (here for its checkpoint)
        # leaves none of the directories the export would have needed.
        new_parent = os.path.join(self.tmp, 'new')
        run = subprocess.run(
            [sys.executable, os.path.join(ROOT, 'bin', 'export.py'),
             f'--run_dir={run_dir}', '--checkpoint=' + os.path.join(
                 run_dir, 'checkpoints', 'ckpt-99'),
             f'--export_dir={os.path.join(new_parent, "a", "sm")}'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self._assert_one_line_error(run, r'export\.py: error: .*ckpt-99: '
                                         r'no such checkpoint')
        self.assertFalse(os.path.exists(new_parent))


class PresetSettingsCliTest(_RunDirectory, tf.test.TestCase):
    """How --set and the preset flags combine, and the settings checked
    against the data."""

    def _overrides(self, *args):
        return _with_train_module(
            'train.FLAGS(["train.py"] + args)\n'
            '_, overrides = train._checked_config()\n'
            'print(json.dumps(overrides))\n',
            ['--preset=tiny_vflow', *args, f'--output_dir={self.tmp}'], [])

    def test_a_setting_given_twice_alike_is_taken_and_otherwise_refused(self):
        # Only two different values contradict each other (whichever came
        # last would win silently); the same value twice is that value. A
        # --set value that is no Python literal is its text, for the
        # preset's own check to name.
        self.assertEqual(self._overrides('--dropout=0.1', '--set=dropout=0.1',
                                         '--set=filters=abc',
                                         '--set=attention=a b'),
                         dict(dropout=0.1, filters='abc', attention='a b'))
        for args, message in (
                (['--set=dropout=0.1', '--set=dropout=0.2'],
                 '--set=dropout=0.2 contradicts --set=dropout=0.1; give each '
                 'setting once.'),
                (['--set==3'], "--set expects name=value; got '=3'.")):
            run = self._run_train('--preset=tiny_vflow', *args,
                                  f'--output_dir={self.tmp}')
            self.assertEqual((run.returncode, run.stderr),
                             (2, f'train.py: error: {message}\n'))

    def test_settings_that_agree_with_the_data_go_on(self):
        # --set=num_bins equal to --num_bits's 2^num_bits levels, and a
        # --set=image_shape equal to the data's, agree with the data: the
        # command goes past those checks (here to a --dropout the preset's
        # build refuses, or to the download of MNIST, patched to fail).
        run = self._run_train('--preset=tiny_vflow',
                              '--dataset=photo_patches/8x8', '--num_bits=5',
                              '--set=num_bins=32', '--dropout=1.5',
                              f'--output_dir={self.tmp}')
        self._assert_one_line_error(
            run, r"train\.py: error: preset 'tiny_vflow' cannot be built "
                 r"with \{'dropout': 1\.5, 'num_bins': 32\}: .*dropout")
        run = subprocess.run(
            [sys.executable, '-c', _NO_DOWNLOADS, TRAIN, '--preset=tiny_vflow',
             '--dataset=mnist', '--set=image_shape=(28, 28, 1)',
             f'--data_dir={os.path.join(self.tmp, "tfds")}',
             f'--output_dir={os.path.join(self.tmp, "run")}'],
            env=_env(), capture_output=True, text=True, timeout=300)
        self._assert_one_line_error(run, 'the data were prepared')

    def test_a_preset_flag_given_as_zero_overrides_the_preset(self):
        # A flag given is an override also at zero: --dropout=0 turns off
        # vflow_cifar10's dropout of 0.2 (and --filters=0 is the preset's
        # to refuse); only a flag left out keeps the preset's value.
        self.assertEqual(self._overrides('--preset=vflow_cifar10',
                                         '--dropout=0', '--filters=0'),
                         dict(dropout=0.0, filters=0))


class InProcessCliTest(_RunDirectory, tf.test.TestCase):
    """bin/train.py run in this process (tests/cli_helpers.py, no TF
    start-up per command): its last line, the settings it derives from the
    flags, and errors off the common path."""

    _SMALL = ('--preset=checkerboard_glow_3', '--dataset=checkerboard',
              '--strategy=one_device', '--noexport', '--num_samples=0',
              '--global_batch_size=8', '--init_batch_size=8',
              '--eval_batches=1', '--inverse_check_images=0')

    def _run(self, *args):
        """(exit code, stdout, stderr) of `bin/train.py ARGS` run here. The
        signal handlers and unraisable hook the command installs, and the
        TF logger level an error sets, are restored afterwards."""
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        handlers = [signal.getsignal(sig) for sig in signals]
        hook = sys.unraisablehook
        tf_logger = logging.getLogger('tensorflow')
        level = tf_logger.level
        try:
            return cli_helpers.run_script('train', *args)
        finally:
            for sig, handler in zip(signals, handlers):
                signal.signal(sig, handler)
            sys.unraisablehook = hook
            tf_logger.setLevel(level)

    def _trainer_arguments(self, *args):
        """The arguments bin/train.py builds a trainer from (that trainer
        refused at once): `(config, strategy, train_input_fn,
        eval_input_fn, init_batch)` for each trainer."""
        calls = []

        def refused_trainer(*trainer_args):
            calls.append(trainer_args)
            raise ValueError('refused here')

        with mock.patch.object(training, 'Trainer', refused_trainer):
            code, _, err = self._run(*args)
        self.assertEqual(code, 2, err)
        return calls

    def _configs_given_to_the_trainer(self, *args):
        """The `TrainConfig`s bin/train.py builds a trainer from (that
        trainer refused at once): the preset overrides it derives."""
        return [call[0] for call in self._trainer_arguments(*args)]

    def test_the_last_line_sums_up_the_run(self):
        # The README's quickstart: `step 1200: train_bpd 2.9980, test_bpd
        # 3.9292, test_bpd_iw 3.8423; results in runs/quickstart/
        # results.json` on stdout, the figures those of results.json.
        out = os.path.join(self.tmp, 'run')
        code, stdout, err = self._run(
            *self._SMALL, '--train_steps=2', '--log_every=1',
            '--eval_every=1', '--iw_samples=2', '--iw_images=8',
            f'--output_dir={out}')
        self.assertEqual(code, 0, err)
        results_path = os.path.join(out, 'results.json')
        with open(results_path) as f:
            results = json.load(f)
        self.assertEqual(
            stdout,
            f'step 2: train_bpd {results["train_bpd"]:.4f}, test_bpd '
            f'{results["test_bpd"]:.4f}, test_bpd_iw '
            f'{results["test_bpd_iw"]:.4f}; results in {results_path}\n')

    def test_a_full_disk_names_the_checkpoint_to_resume_from(self):
        # "no space left on the device ...; rerun the same command to resume
        # from" the latest checkpoint (ckpt-0: the initialisation's).
        out = os.path.join(self.tmp, 'full')
        full = OSError(errno.ENOSPC, 'No space left on device')
        with mock.patch.object(training.Trainer, 'train', side_effect=full):
            code, _, err = self._run(*self._SMALL, f'--output_dir={out}')
        self.assertEqual(
            (code, err),
            (2, f'train.py: error: no space left on the device of {out}; '
                'make room and rerun the same command to resume from '
                f'{os.path.join(out, "checkpoints", "ckpt-0")}.\n'))
        # Another OSError is not reported as a full disk.
        denied = PermissionError(errno.EACCES, 'Permission denied')
        with mock.patch.object(training.Trainer, 'train',
                               side_effect=denied):
            with self.assertRaises(PermissionError):
                self._run(*self._SMALL,
                          f'--output_dir={os.path.join(self.tmp, "denied")}')

    def test_num_bits_builds_the_preset_for_its_levels(self):
        # --num_bits: "build the preset for 2^num_bits levels" (8 bits: the
        # preset's own 256), and the model takes the data's image shape.
        for bits in (1, 7, 8):
            with self.subTest(bits=bits):
                config, = self._configs_given_to_the_trainer(
                    '--preset=tiny_vflow', '--dataset=photo_patches/8x8',
                    f'--num_bits={bits}',
                    f'--output_dir={os.path.join(self.tmp, str(bits))}')
                overrides = config.preset_overrides
                self.assertEqual(overrides.get('num_bins', 256), 2**bits)
                self.assertEqual(tuple(overrides['image_shape']), (8, 8, 3))

    def test_a_refused_model_without_settings_names_none(self):
        # `_fail_to_build` names the user's preset settings the refusal
        # came from; with none given, the library's line is the whole one.
        code, _, err = self._run(
            '--preset=checkerboard_glow_3', '--dataset=photo_patches/8x8',
            '--strategy=one_device', f'--output_dir={self.tmp}')
        self.assertEqual(code, 2, err)
        self.assertRegex(err, r"^train\.py: error: the model of preset "
                              r"'checkerboard_glow_3' takes data of shape "
                              r'\[2\]; [^\n]*\n$')

    def test_a_refusal_once_the_run_is_locked_leaves_no_trace(self):
        # "A refused or interrupted command leaves no trace": also when
        # restore_or_initialize refuses (another model's checkpoints, a
        # non-finite initialisation) after the trainer locked the new run
        # directory; the lock file goes with it, and the parent made for it.
        # RuntimeError: workers that disagree on settings or checkpoints.
        out = os.path.join(self.tmp, 'new', 'run')
        for refusal in (ValueError('refused here'),
                        RuntimeError('refused here')):
            with self.subTest(refusal=type(refusal).__name__):
                with mock.patch.object(training.Trainer,
                                       'restore_or_initialize',
                                       side_effect=refusal):
                    try:
                        code, _, err = self._run(*self._SMALL,
                                                 f'--output_dir={out}')
                    except Exception as e:  # pylint: disable=broad-except
                        self.fail(f'not one line: {e!r} escaped')
                self.assertEqual((code, err),
                                 (2, 'train.py: error: refused here\n'))
                self.assertEqual(os.listdir(self.tmp), [])

    def test_a_given_inter_op_thread_count_is_kept_under_determinism(self):
        # Under op determinism train.py runs independent ops on one thread,
        # but "`TF_NUM_INTEROP_THREADS`, if set, is kept".
        train = cli_helpers.load_script(TRAIN, 'vflow_tfp_bin_train')
        # pylint: disable-next=protected-access
        fix_op_order = train._fix_op_order_under_determinism
        for threads, calls in (('3', []), (None, [mock.call(1)])):
            with self.subTest(threads=threads):
                setter = mock.Mock()
                fake_tf = types.SimpleNamespace(
                    config=types.SimpleNamespace(
                        threading=types.SimpleNamespace(
                            set_inter_op_parallelism_threads=setter)))
                environ = dict(os.environ)
                environ.pop('TF_NUM_INTEROP_THREADS', None)
                if threads:
                    environ['TF_NUM_INTEROP_THREADS'] = threads
                with mock.patch.dict(os.environ, environ, clear=True), \
                        mock.patch('tensorflow.python.framework.config.'
                                   'is_op_determinism_enabled',
                                   return_value=True):
                    fix_op_order(fake_tf)
                self.assertEqual(setter.call_args_list, calls)

    def test_multi_worker_without_tf_config_is_refused(self):
        # `multi_worker` is "MultiWorkerMirroredStrategy configured by
        # TF_CONFIG": without it the command is refused in one line, and
        # leaves no output directory, rather than train as a lone worker.
        # (The strategy is a mock: this process must not start one.)
        out = os.path.join(self.tmp, 'run')
        environ = dict(os.environ)
        environ.pop('TF_CONFIG', None)
        with mock.patch.dict(os.environ, environ, clear=True), \
                mock.patch.object(tf.distribute,
                                  'MultiWorkerMirroredStrategy') as strategy:
            code, _, err = self._run(*self._SMALL[:2],
                                     '--strategy=multi_worker',
                                     f'--output_dir={out}')
        self.assertEqual(
            (code, err),
            (2, 'train.py: error: --strategy=multi_worker needs the '
                'TF_CONFIG environment variable (cluster and task).\n'))
        strategy.assert_not_called()
        self.assertFalse(os.path.exists(out))

    def test_a_given_image_shape_reaches_the_trainer_unchanged(self):
        # The data add image_shape only where the user gave none: a
        # --set=image_shape is the user's, for the trainer to check against
        # the data (and refuse), never silently replaced by the data's.
        config, = self._configs_given_to_the_trainer(
            '--preset=tiny_vflow', '--dataset=photo_patches/8x8',
            '--set=image_shape=(4, 4, 3)', f'--output_dir={self.tmp}')
        self.assertEqual(tuple(config.preset_overrides['image_shape']),
                         (4, 4, 3))

    def test_init_batch_size_and_seed_reach_the_inputs(self):
        # --init_batch_size: "Examples for the data-dependent
        # initialisation", apart from the training batches; --seed seeds
        # the data as well as the model, so another seed draws another
        # init batch.
        batches = []
        for seed in (1, 2):
            call, = self._trainer_arguments(
                *self._SMALL[:2], '--global_batch_size=8',
                '--init_batch_size=4', f'--seed={seed}',
                f'--output_dir={os.path.join(self.tmp, str(seed))}')
            batches.append(np.asarray(call[4]))
        self.assertEqual([len(batch) for batch in batches], [4, 4])
        self.assertNotAllClose(batches[0], batches[1])


if __name__ == '__main__':
    tf.test.main()
