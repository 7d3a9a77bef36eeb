"""Run files behind URLs: `file://` URLs take the `tf.io.gfile` path that
`gs://` takes, on the local disk."""

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf

from vflow_tfp import file_io


class FileIoTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = tempfile.mkdtemp(dir=self.get_temp_dir())
        self.url = 'file://' + self.directory
        # Python's file functions would make a local "file:" directory here.
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        self.cwd = tempfile.mkdtemp(dir=self.get_temp_dir())
        os.chdir(self.cwd)

    def tearDown(self):
        self.assertEqual(os.listdir(self.cwd), [])
        super().tearDown()

    def test_is_url_and_absolute(self):
        self.assertTrue(file_io.is_url('gs://bucket/run'))
        self.assertFalse(file_io.is_url('runs/a'))
        self.assertEqual(file_io.absolute('gs://bucket/run'),
                         'gs://bucket/run')
        self.assertEqual(file_io.absolute('runs/a'),
                         os.path.join(self.cwd, 'runs', 'a'))

    def test_atomic_write_to_a_url_replaces_the_file(self):
        path = self.url + '/results.json'
        for value in (1, 2):
            with file_io.atomic_write(path) as f:
                json.dump({'value': value}, f)
            self.assertEqual(file_io.read_json(path), {'value': value})
        self.assertEqual(os.listdir(self.directory), ['results.json'])
        with file_io.atomic_write(self.url + '/a.bin', 'wb') as f:
            f.write(b'\x00\xff')
        with open(os.path.join(self.directory, 'a.bin'), 'rb') as f:
            self.assertEqual(f.read(), b'\x00\xff')

    def test_a_failed_write_leaves_the_old_file_alone(self):
        # Through a URL and a local path: while the body runs, readers see
        # the old file (the new one is a temporary named by process), and
        # after a failure the old file stays and no temporary is left.
        for path in (self.url + '/results.json',
                     os.path.join(self.directory, 'results.json')):
            with file_io.atomic_write(path) as f:
                f.write('{"old": true}')
            with self.assertRaisesRegex(RuntimeError, 'body failed'):
                with file_io.atomic_write(path) as f:
                    f.write('{"new"')
                    f.flush()
                    self.assertEqual(file_io.read_json(path), {'old': True})
                    self.assertEqual(
                        sorted(os.listdir(self.directory)),
                        [f'.results.json.{os.getpid()}.tmp', 'results.json'])
                    raise RuntimeError('body failed')
            self.assertEqual(file_io.read_json(path), {'old': True})
            self.assertEqual(os.listdir(self.directory), ['results.json'])

    def test_a_failed_write_names_the_file_asked_for(self):
        # The temporary file beside `path` is atomic_write's own business:
        # a failure to create it (no such directory) or to move it into
        # place (`path` is a directory) is reported, locally and through a
        # URL, as `open` would report it for `path` itself.
        os.mkdir(os.path.join(self.directory, 'taken'))
        for directory in (self.url, self.directory):
            for name, error in (('no/such/a.json', FileNotFoundError),
                                ('taken', OSError)):
                path = directory + '/' + name
                with self.subTest(path):
                    with self.assertRaises(error) as caught:
                        with file_io.atomic_write(path) as f:
                            f.write('{}')
                    self.assertEqual(caught.exception.filename, path)
                    self.assertNotIn('.tmp', str(caught.exception))
                    self.assertEqual(os.listdir(self.directory), ['taken'])

    def test_a_local_file_s_data_are_synced_before_the_move(self):
        # Else a power cut after the rename can leave an empty file under
        # the new name on some file systems.
        path = os.path.join(self.directory, 'results.json')
        events = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            events.append(('fsync', os.fstat(fd).st_size))
            real_fsync(fd)

        def replace(source, destination):
            events.append(('replace', os.path.basename(destination)))
            real_replace(source, destination)

        with mock.patch.object(os, 'fsync', fsync), \
                mock.patch.object(os, 'replace', replace):
            with file_io.atomic_write(path) as f:
                f.write('{"a": 1}')
        self.assertEqual(events, [('fsync', 8), ('replace', 'results.json')])
        self.assertEqual(file_io.read_json(path), {'a': 1})

    def test_a_url_is_written_only_as_utf8_with_the_newlines_given(self):
        with file_io.atomic_write(self.url + '/a.csv', newline='',
                                  encoding='utf-8') as f:
            f.write('é,1\r\n')
        with open(os.path.join(self.directory, 'a.csv'), 'rb') as f:
            self.assertEqual(f.read(), 'é,1\r\n'.encode('utf-8'))
        with self.assertRaisesRegex(ValueError, 'surrogateescape'):
            with file_io.atomic_write(self.url + '/b.csv',
                                      errors='surrogateescape'):
                pass
        self.assertEqual(os.listdir(self.directory), ['a.csv'])

    def test_missing_files_raise_what_open_raises(self):
        for path in (self.url + '/none.json',
                     os.path.join(self.directory, 'none.json')):
            with self.assertRaises(FileNotFoundError):
                file_io.read_json(path)
            with self.assertRaises(FileNotFoundError):
                file_io.mtime(path)

    def test_a_url_s_permission_error_is_open_s(self):
        # A bucket that refuses access raises what `open` raises for an
        # unreadable file (root reads any local file: TF's error is faked).
        denied = tf.errors.PermissionDeniedError(None, None, 'denied')
        with mock.patch.object(tf.io.gfile, 'GFile', side_effect=denied):
            with self.assertRaises(PermissionError):
                file_io.read_bytes(self.url + '/secret.json')
            with self.assertRaises(PermissionError):
                file_io.read_json(self.url + '/secret.json')

    def test_mtime_of_a_url_is_the_file_system_s(self):
        with open(os.path.join(self.directory, 'a'), 'w') as f:
            f.write('a')
        # TF's local file system reports whole seconds.
        self.assertAllClose(file_io.mtime(self.url + '/a'),
                            os.path.getmtime(os.path.join(self.directory,
                                                          'a')), atol=1.0)

    def test_replace_between_urls(self):
        with open(os.path.join(self.directory, 'a'), 'w') as f:
            f.write('a')
        with open(os.path.join(self.directory, 'b'), 'w') as f:
            f.write('b')
        file_io.replace(self.url + '/a', self.url + '/b')
        self.assertEqual(os.listdir(self.directory), ['b'])
        with open(os.path.join(self.directory, 'b')) as f:
            self.assertEqual(f.read(), 'a')

    def test_a_replace_that_cannot_be_done_is_an_os_error(self):
        # As from os.replace, also for a URL: a missing source is
        # FileNotFoundError, and a URL onto a local path (two file systems
        # to TF, even for file://) is OSError with EXDEV, as os.replace
        # from one device to another; the files are left as they were.
        with self.assertRaises(FileNotFoundError):
            file_io.replace(self.url + '/none', self.url + '/b')
        with open(os.path.join(self.directory, 'a'), 'w') as f:
            f.write('a')
        for source, destination in (
                (self.url + '/a', os.path.join(self.directory, 'b')),
                (os.path.join(self.directory, 'a'), self.url + '/b')):
            with self.subTest(source=source):
                with self.assertRaises(OSError) as caught:
                    file_io.replace(source, destination)
                self.assertEqual(caught.exception.errno, errno.EXDEV)
                self.assertEqual((caught.exception.filename,
                                  caught.exception.filename2),
                                 (source, destination))
                self.assertEqual(os.listdir(self.directory), ['a'])

    def test_reading_and_listing_agree_for_paths_and_urls(self):
        os.makedirs(os.path.join(self.directory, 'sub', 'deep'))
        for name in ('a.png', 'b.png', os.path.join('sub', 'c.png'),
                     os.path.join('sub', 'deep', 'd.png')):
            with open(os.path.join(self.directory, name), 'wb') as f:
                f.write(name.encode())
        for root in (self.directory, self.url):
            a = file_io.join(root, 'a.png')
            self.assertEqual(file_io.read_bytes(a), b'a.png')
            self.assertTrue(file_io.exists(a))
            self.assertFalse(file_io.isdir(a))
            self.assertTrue(file_io.isdir(file_io.join(root, 'sub')))
            self.assertFalse(file_io.exists(file_io.join(root, 'none')))
            self.assertFalse(file_io.isdir(file_io.join(root, 'none')))
            self.assertEqual(sorted(file_io.listdir(root)),
                             ['a.png', 'b.png', 'sub'])
            self.assertEqual(file_io.glob(root + '/*/*.png'),
                             [root + '/sub/c.png'])
            self.assertEqual(file_io.glob(root + '/[ab].png'),
                             [root + '/a.png', root + '/b.png'])
            with self.assertRaises(FileNotFoundError):
                file_io.read_bytes(file_io.join(root, 'none'))
            with self.assertRaises(FileNotFoundError):
                file_io.listdir(file_io.join(root, 'none'))
        self.assertEqual(file_io.join(self.url + '/', 'a.png'),
                         self.url + '/a.png')
        # `**` reaches any depth in a local pattern only.
        self.assertEqual(file_io.glob(self.directory + '/**/d.png'),
                         [self.directory + '/sub/deep/d.png'])
        with self.assertRaisesRegex(ValueError, r'\*\* .*local paths'):
            file_io.glob(self.url + '/**/d.png')

    def test_a_local_glob_is_sorted(self):
        # `glob` promises sorted paths; a directory lists its names in the
        # file system's order (a hash on ext4), which with this many names
        # is practically never sorted. Created in reverse to make sure.
        names = [f'img{i:02d}.png' for i in range(40)]
        for name in reversed(names):
            with open(os.path.join(self.directory, name), 'wb'):
                pass
        want = [os.path.join(self.directory, name) for name in names]
        self.assertEqual(file_io.glob(self.directory + '/*.png'), want)
        self.assertEqual(file_io.glob(self.directory + '/**/*.png'), want)

    def test_finite_or_none_reaches_into_tuples(self):
        # Strict JSON has no NaN or Infinity: every float that is not
        # finite becomes None at any depth, tuples included (as lists).
        value = {'a': (1.0, float('nan')),
                 'b': [{'c': (float('inf'), (2, -float('inf')))}],
                 'd': 'text'}
        cleaned = file_io.finite_or_none(value)
        self.assertEqual(cleaned, {'a': [1.0, None],
                                   'b': [{'c': [None, [2, None]]}],
                                   'd': 'text'})
        json.dumps(cleaned, allow_nan=False)  # Raises on NaN or Infinity.

    def test_staging_left_by_a_hard_kill_is_removed_once_stale(self):
        # A SIGKILLed export leaves its hidden staging directory; the next
        # staging of the same name removes it once nothing has been written
        # to it for an hour, and leaves a fresh one (a slow writer) alone,
        # as it does every directory that is not a staging one of that name
        # however old (`.git` beside an output named `git`).
        target = os.path.join(self.directory, 'saved_model')
        stale = os.path.join(self.directory, '.saved_model.staging-killed1')
        fresh = os.path.join(self.directory, '.saved_model.staging-writing')
        writing = os.path.join(self.directory, '.saved_model.staging-file')
        others = [os.path.join(self.directory, name) for name in (
            '.samples.staging-killed1', '.saved_model', '.saved_model-old',
            '.saved_model.v2', '.saved_model.staging-', '.saved_modelx',
            # A staging name with more after it is a user's copy.
            '.saved_model.staging-v1.bak', '.saved_model.staging-v1-x')]
        for path in [stale, fresh, writing] + others:
            os.makedirs(os.path.join(path, 'variables'))
            with open(os.path.join(path, 'variables', 'data'), 'w') as f:
                f.write('x')
        old = time.time() - file_io.STALE_STAGING_SECONDS - 60
        for path in [stale, fresh, writing] + others:
            for root, dirs, files in os.walk(path):
                for item in [root] + [os.path.join(root, n)
                                      for n in dirs + files]:
                    os.utime(item, (old, old))
        # One entry written lately keeps a directory, however old the rest:
        # a subdirectory, or a file still being written.
        now = time.time()
        os.utime(os.path.join(fresh, 'variables'), (now, now))
        os.utime(os.path.join(writing, 'variables', 'data'), (now, now))
        with file_io.staged_directory(target) as staging:
            self.assertTrue(os.path.basename(staging).startswith(
                '.saved_model.staging-'))
            with open(os.path.join(staging, 'saved_model.pb'), 'w') as f:
                f.write('model')
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            sorted([os.path.basename(p) for p in [fresh, writing] + others]
                   + ['saved_model']))

    def test_a_directory_lock_refuses_other_processes_only(self):
        run = os.path.join(self.directory, 'run')
        os.makedirs(run)
        script = ('import sys\nfrom vflow_tfp import file_io\n'
                  'try:\n    file_io.lock_directory(sys.argv[1])\n'
                  'except file_io.DirectoryInUse as e:\n    print(e)\n'
                  '    sys.exit(3)\n'
                  'print("locked", flush=True)\nsys.stdin.read()\n')

        def other_process(wait=False):
            # The package this test imports, wherever it is installed.
            package = os.path.dirname(os.path.dirname(file_io.__file__))
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
                       PYTHONPATH=os.pathsep.join(
                           [package, os.environ.get('PYTHONPATH', '')]))
            proc = subprocess.Popen(
                [sys.executable, '-c', script, run], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=env)
            if wait:
                return proc, proc.stdout.readline()
            out, _ = proc.communicate('', timeout=120)
            return proc.returncode, out

        first = file_io.lock_directory(run)
        # This process shares it, however it spells the directory.
        link = os.path.join(self.directory, 'link')
        os.symlink(run, link)
        self.addCleanup(os.remove, link)  # TF's temp-dir cleanup trips on it
        second = file_io.lock_directory(link)
        for spelling in (run + os.sep, os.path.join(run, '.'),
                         os.path.relpath(run)):
            file_io.lock_directory(spelling).release()
        code, out = other_process()
        self.assertEqual(code, 3)
        self.assertEqual(out, f'{run} is in use by pid {os.getpid()} on '
                              f'{socket.gethostname()}; wait for it to end, '
                              'or use another directory.\n')
        first.release()
        first.release()  # Idempotent: the second share still holds it.
        self.assertEqual(other_process()[0], 3)
        second.release()
        self.assertEqual(other_process(), (0, 'locked\n'))
        # A holder killed outright leaves no stale lock.
        proc, line = other_process(wait=True)
        self.assertEqual(line, 'locked\n')
        with self.assertRaisesRegex(file_io.DirectoryInUse,
                                    f'pid {proc.pid} on'):
            file_io.lock_directory(run)
        # The lock file names its holder alone, not earlier holders too.
        with open(os.path.join(run, file_io.LOCK_FILE)) as f:
            self.assertEqual(f.read(),
                             f'pid {proc.pid} on {socket.gethostname()}\n')
        proc.kill()
        proc.wait(timeout=60)
        file_io.lock_directory(run).release()
        self.assertEqual(os.listdir(run), [file_io.LOCK_FILE])
        # A URL is not locked.
        file_io.lock_directory(self.url).release()

    def test_a_url_glob_is_sorted(self):
        # `glob` promises sorted paths for a URL too; TF's local file system
        # lists a directory in the file system's order.
        names = [f'img{i:02d}.png' for i in range(40)]
        for name in reversed(names):
            open(os.path.join(self.directory, name), 'wb').close()
        self.assertEqual(file_io.glob(self.url + '/*.png'),
                         [self.url + '/' + name for name in names])

    def test_any_double_star_in_a_url_is_refused(self):
        # `**` is refused in a URL wherever it stands, not only as a whole
        # level between slashes: tf.io.gfile would read it as `*`.
        open(os.path.join(self.directory, 'a.png'), 'wb').close()
        for pattern in ('/**', '/**.png', '/a**'):
            with self.assertRaisesRegex(ValueError, r'\*\* .*local paths'):
                file_io.glob(self.url + pattern)

    def test_a_url_s_missing_file_error_names_it_as_open_s_does(self):
        # The error of a URL is the one Python's file functions raise for a
        # path: FileNotFoundError with its errno and the file's name.
        for root in (self.directory, self.url):
            path = file_io.join(root, 'none')
            for read in (file_io.read_bytes, file_io.listdir, file_io.mtime):
                with self.assertRaises(FileNotFoundError) as raised:
                    read(path)
                self.assertEqual(raised.exception.errno, errno.ENOENT)
                self.assertEqual(raised.exception.filename, path)

    def test_a_url_s_json_is_utf8(self):
        # JSON files are UTF-8: a URL reads the same value as a path.
        with open(os.path.join(self.directory, 'a.json'), 'wb') as f:
            f.write('{"name": "caf\u00e9 \u2713"}'.encode('utf-8'))
        for root in (self.directory, self.url):
            self.assertEqual(file_io.read_json(file_io.join(root, 'a.json')),
                             {'name': 'caf\u00e9 \u2713'})

    def test_a_url_refuses_any_other_encoding_or_newline(self):
        # A URL may ask only for UTF-8 and the newlines given: another
        # value of those same arguments is refused, not taken for them.
        for kwargs in (dict(encoding='latin-1'), dict(newline=None),
                       dict(newline='\r\n')):
            with self.assertRaisesRegex(ValueError, 'cannot also use'):
                with file_io.atomic_write(self.url + '/a.csv',
                                          **kwargs) as f:
                    f.write('a')
        self.assertEqual(os.listdir(self.directory), [])

    def test_a_local_file_is_opened_with_the_arguments_given(self):
        # A local file comes from `open` with the caller's arguments.
        path = os.path.join(self.directory, 'a.csv')
        with file_io.atomic_write(path, encoding='latin-1') as f:
            f.write('\u00e9')
        with open(path, 'rb') as f:
            self.assertEqual(f.read(), b'\xe9')

    def test_absolute_keeps_symbolic_links(self):
        # Made absolute, not resolved: a link stays the name it was given.
        link = os.path.join(self.directory, 'link')
        os.symlink(self.cwd, link)
        self.addCleanup(os.remove, link)
        self.assertEqual(file_io.absolute(os.path.join(link, 'a')),
                         os.path.join(link, 'a'))
        self.assertEqual(file_io.absolute(os.path.relpath(link)), link)

    def test_an_unreachable_url_is_named_by_the_first_line_of_tf_s_reason(
            self):
        # One line: TF's reason is its message's first line, the lines
        # after it detail.
        error = tf.errors.UnimplementedError(
            None, None, 'File system scheme not implemented\nat line 3')
        with mock.patch.object(tf.io.gfile, 'exists', side_effect=error):
            with self.assertRaises(ValueError) as raised:
                file_io.check_reachable('foo://bucket/run')
        self.assertEqual(str(raised.exception),
                         'foo://bucket/run: cannot reach it (File system '
                         'scheme not implemented).')

    def test_finite_or_none_takes_numpy_floats_for_floats(self):
        # NumPy's float64 is a float: its NaN and infinities go too.
        cleaned = file_io.finite_or_none(
            {'a': np.float64('nan'), 'b': [np.float64(1.5),
                                           np.float64('-inf')]})
        self.assertEqual(cleaned, {'a': None, 'b': [1.5, None]})
        json.dumps(cleaned, allow_nan=False)  # Raises on NaN or Infinity.

    def test_join_in_the_working_directory(self):
        # An empty directory is the working one, as for `os.path.join`.
        self.assertEqual(file_io.join('', 'a.png'), 'a.png')
        self.assertEqual(file_io.join(self.directory, 'a.png'),
                         os.path.join(self.directory, 'a.png'))

    def test_a_staging_directory_just_made_is_kept_and_any_stale_one_not(
            self):
        # Another process's staging directory that nothing has been written
        # to yet is fresh, not stale; a stale one is removed whatever
        # letters mkdtemp chose for it (underscores included).
        target = os.path.join(self.directory, 'saved_model')
        fresh = os.path.join(self.directory, '.saved_model.staging-new_1')
        stale = os.path.join(self.directory, '.saved_model.staging-old_1')
        os.makedirs(fresh)
        os.makedirs(stale)
        old = time.time() - file_io.STALE_STAGING_SECONDS - 60
        os.utime(stale, (old, old))
        with file_io.staged_directory(target):
            pass
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ['.saved_model.staging-new_1', 'saved_model'])

    def test_a_url_with_a_trailing_slash_is_staged_beside_it(self):
        # `URL/` names the directory URL: staged beside it, not inside it,
        # and moved onto it.
        with file_io.staged_directory(self.url + '/out/') as staging:
            self.assertEqual(file_io.join(self.url, ''),
                             staging[:staging.rindex('/') + 1])
            with tf.io.gfile.GFile(file_io.join(staging, 'a'), 'w') as f:
                f.write('a')
        self.assertEqual(os.listdir(self.directory), ['out'])
        self.assertEqual(os.listdir(os.path.join(self.directory, 'out')),
                         ['a'])

    def test_reason_is_a_few_words_without_the_path(self):
        # What went wrong, for a message that names the path itself.
        with self.assertRaises(OSError) as local:
            open(os.path.join(self.directory, 'none'), 'rb')
        with self.assertRaises(OSError) as remote:
            file_io.listdir(self.url + '/none')
        for raised in (local, remote):
            self.assertEqual(file_io.reason(raised.exception),
                             os.strerror(errno.ENOENT))
        error = tf.errors.NotFoundError(None, None, 'no such object')
        self.assertEqual(file_io.reason(error), 'no such object')

    def test_staging_makes_a_missing_local_parent(self):
        # The parent directory is made if missing.
        target = os.path.join(self.directory, 'new', 'out')
        try:
            with file_io.staged_directory(target) as staging:
                open(os.path.join(staging, 'a'), 'w').close()
        except FileNotFoundError as e:
            self.fail(f'no parent made: {e}')
        self.assertEqual(os.listdir(os.path.join(self.directory, 'new')),
                         ['out'])
        self.assertEqual(os.listdir(target), ['a'])

    def test_staging_without_replace_keeps_a_full_url_directory(self):
        # Without `replace`, a directory that holds files is in the way
        # behind a URL too: FileExistsError, and its files stay.
        os.makedirs(os.path.join(self.directory, 'out'))
        with open(os.path.join(self.directory, 'out', 'notes.txt'), 'w'):
            pass
        with self.assertRaisesRegex(FileExistsError, 'holds files'):
            with file_io.staged_directory(self.url + '/out',
                                          replace=False) as staging:
                with tf.io.gfile.GFile(file_io.join(staging, 'a'), 'w') as f:
                    f.write('a')
        self.assertEqual(os.listdir(os.path.join(self.directory, 'out')),
                         ['notes.txt'])
        self.assertEqual(os.listdir(self.directory), ['out'])

    def test_a_scheme_tf_does_not_serve_is_unreachable_even_if_like_file(
            self):
        # TF's schemes are case-sensitive: `FILE://` is not `file://`, and
        # is found unreachable before any work.
        with self.assertRaisesRegex(ValueError, 'FILE:///x: cannot reach it'):
            file_io.check_reachable('FILE:///x')
        file_io.check_reachable(self.url)

    def test_a_staged_directory_gets_a_mkdir_s_permissions_under_any_umask(
            self):
        # "A local staging directory gets a plain `mkdir`'s permissions":
        # 0777 less the umask in force, whatever the umask (a group-shared
        # run directory's 002 too), not a fixed mode.
        target = os.path.join(self.directory, 'out')
        for mask in (0o002, 0o027):
            previous = os.umask(mask)
            try:
                with file_io.staged_directory(target):
                    pass
            finally:
                os.umask(previous)
            self.assertEqual(stat.S_IMODE(os.stat(target).st_mode),
                             0o777 & ~mask, oct(mask))

    def test_staging_to_a_url_replaces_a_full_directory(self):
        # With `replace` (the default), any directory there is removed
        # first, behind a URL as on a local path: the staged files replace
        # the old ones.
        out = os.path.join(self.directory, 'out')
        for path in (self.url + '/out', out):
            with self.subTest(path):
                shutil.rmtree(out, ignore_errors=True)
                os.mkdir(out)
                with open(os.path.join(out, 'old'), 'w'):
                    pass
                try:
                    with file_io.staged_directory(path) as staging:
                        with tf.io.gfile.GFile(file_io.join(staging, 'new'),
                                               'w') as f:
                            f.write('new')
                except (OSError, tf.errors.OpError) as e:
                    self.fail(f'{path} was not replaced: {e}')
                self.assertEqual(os.listdir(out), ['new'])
                self.assertEqual(os.listdir(self.directory), ['out'])

    def test_a_path_ending_in_a_dot_stages_that_directory(self):
        # `runs/samples/.` names `runs/samples`: it is staged beside it (in
        # `runs`) and moved onto it, as for `runs/samples`.
        runs = os.path.join(self.directory, 'runs')
        for path in (os.path.join(runs, 'samples', '.'),
                     os.path.join(runs, 'samples') + '/./'):
            with self.subTest(path):
                try:
                    with file_io.staged_directory(path) as staging:
                        self.assertEqual(os.path.dirname(staging), runs)
                        with open(os.path.join(staging, 'a'), 'w'):
                            pass
                except OSError as e:
                    self.fail(f'{path} was not staged: {e!r}')
                self.assertEqual(os.listdir(runs), ['samples'])
                self.assertEqual(os.listdir(os.path.join(runs, 'samples')),
                                 ['a'])

    def test_a_link_made_lately_keeps_a_staging_directory(self):
        # A staging directory is stale only with nothing written to it for
        # STALE_STAGING_SECONDS: a symbolic link made in it lately is a
        # write, whatever the age of the file it points to (or if it points
        # to none).
        old = time.time() - file_io.STALE_STAGING_SECONDS - 60
        target = os.path.join(self.directory, 'old_file')
        with open(target, 'w'):
            pass
        os.utime(target, (old, old))
        staging = []
        for name, points_to in (('linked', target),
                                ('dangling', os.path.join(self.directory,
                                                          'none'))):
            path = os.path.join(self.directory, f'.out.staging-{name}')
            os.mkdir(path)
            os.symlink(points_to, os.path.join(path, 'link'))
            os.utime(path, (old, old))
            staging.append(path)
        with file_io.staged_directory(os.path.join(self.directory, 'out')):
            pass
        for path in staging:
            self.assertTrue(os.path.isdir(path), path)


if __name__ == '__main__':
    tf.test.main()
