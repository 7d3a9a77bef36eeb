"""Files of runs and exports, on local disks or behind URLs.

A local path goes through Python's file functions. A URL (`gs://bucket/run`,
or any scheme that `tf.io.gfile` serves, such as `file://`) goes through
`tf.io.gfile`, so that a run writes its checkpoints, results and export
straight to a bucket. Python's `open` would instead create a local directory
named `gs:`.

Writes are atomic where the file system allows: a file is written beside its
destination and renamed onto it. Object stores such as GCS have no atomic
rename of directories; there a directory is copied object by object, and a
reader may briefly see part of it.
"""

import contextlib
import errno
import fcntl
import glob as glob_lib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid

import tensorflow as tf

__all__ = ['DirectoryInUse', 'absolute', 'atomic_write', 'check_reachable',
           'exists', 'finite_or_none', 'glob', 'is_remote', 'is_url', 'isdir',
           'join', 'listdir', 'lock_directory', 'mtime', 'read_bytes',
           'read_json', 'reason', 'replace', 'staged_directory']


def is_url(path):
    """Whether `path` names a file system by scheme (`gs://...`)."""
    return '://' in os.fspath(path)


def is_remote(path):
    """Whether each look at `path` is a request (a URL but `file://`)."""
    path = os.fspath(path)
    return is_url(path) and not path.lower().startswith('file://')


def absolute(path):
    """`path` made absolute; a URL is absolute already and kept as it is."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def _as_os_error(error, path, message=None):
    """The `OSError` that Python's file functions would raise for `error`.

    `message` replaces TF's message where the error has no errno of its own.
    """
    if isinstance(error, tf.errors.NotFoundError):
        return FileNotFoundError(errno.ENOENT, 'No such file or directory',
                                 path)
    if isinstance(error, tf.errors.PermissionDeniedError):
        return PermissionError(errno.EACCES, 'Permission denied', path)
    return OSError(errno.EIO, message or error.message, path)


def reason(error):
    """What went wrong, in a few words, for an `OSError` or a TF `OpError`."""
    return (getattr(error, 'strerror', None)
            or getattr(error, 'message', None) or str(error))


def read_bytes(path):
    """The contents of file `path`, as bytes.

    Raises:
      OSError: as from `open` (`FileNotFoundError` if there is no file),
        also for a URL.
    """
    if not is_url(path):
        with open(path, 'rb') as f:
            return f.read()
    try:
        with tf.io.gfile.GFile(path, 'rb') as f:
            return f.read()
    except tf.errors.OpError as e:
        raise _as_os_error(e, path) from e


def read_json(path):
    """The JSON value in file `path`.

    Raises:
      OSError: as from `open` (`FileNotFoundError` if there is no file),
        also for a URL.
      ValueError: if the file is not JSON.
    """
    if not is_url(path):
        with open(path) as f:
            return json.load(f)
    return json.loads(read_bytes(path).decode('utf-8'))


def finite_or_none(value):
    """`value` with its NaN and infinite floats replaced by `None`, at any
    depth of dicts, lists and tuples (as lists): what strict JSON can hold
    (`json.dump` would write bare `NaN`/`Infinity` tokens, which JSON
    readers such as jq and JavaScript refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def check_reachable(path):
    """Raises unless TF serves the file system of URL `path` (a local path
    always passes): an unknown scheme is found before any work.

    Raises:
      ValueError: one line naming `path` and TF's reason.
    """
    if not is_url(path):
        return
    try:
        tf.io.gfile.exists(path)
    except tf.errors.OpError as e:
        raise ValueError(f'{path}: cannot reach it '
                         f'({e.message.strip().splitlines()[0]}).') from e


def exists(path):
    """Whether `path` names something; a broken symbolic link counts."""
    if not is_url(path):
        return os.path.lexists(path)
    try:
        return tf.io.gfile.exists(path)
    except tf.errors.OpError:
        return False


def isdir(path):
    """Whether `path` is a directory (for a bucket: a prefix of objects)."""
    if not is_url(path):
        return os.path.isdir(path)
    try:
        return tf.io.gfile.isdir(path)
    except tf.errors.OpError:
        return False


def listdir(path):
    """The names in directory `path` (object stores end directories in `/`).

    Raises:
      OSError: as from `os.listdir`, also for a URL.
    """
    if not is_url(path):
        return os.listdir(path)
    try:
        return tf.io.gfile.listdir(path)
    except tf.errors.OpError as e:
        raise _as_os_error(e, path) from e


def join(path, name):
    """`name` inside directory `path` (a URL keeps its `//`)."""
    if not is_url(path):
        return os.path.join(path, name)
    return path.rstrip('/') + '/' + name


def glob(pattern):
    """The paths that match `pattern`, sorted.

    A local pattern is Python's `glob` with `**` matching any depth of
    directories. A URL's is `tf.io.gfile.glob`'s: each `*` matches within one
    level, so `**` is refused there rather than read differently.

    Raises:
      ValueError: for `**` in a URL.
      OSError: if a URL's file system cannot be listed.
    """
    if not is_url(pattern):
        return sorted(glob_lib.glob(pattern, recursive=True))
    if '**' in pattern:
        raise ValueError(f'{pattern}: ** (any depth of directories) is for '
                         'local paths; in a URL each * matches within one '
                         'level (e.g. gs://bucket/images/*/*.png).')
    try:
        return sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        raise _as_os_error(e, pattern) from e


def replace(source, destination):
    """Renames file `source` onto `destination`, replacing any file there.

    Raises:
      OSError: as from `os.replace` (`FileNotFoundError` if there is no
        `source`), also for a URL. A rename from one file system to another
        (a URL and a local path, or URLs of two schemes) is not a rename
        and raises `OSError` with `errno.EXDEV`, as `os.replace` does from
        one device to another.
    """
    if not (is_url(source) or is_url(destination)):
        os.replace(source, destination)
        return
    try:
        tf.io.gfile.rename(source, destination, overwrite=True)
    except tf.errors.UnimplementedError as e:
        raise OSError(errno.EXDEV, 'Invalid cross-device link', source, None,
                      destination) from e
    except tf.errors.OpError as e:
        raise _as_os_error(e, source) from e


def mtime(path):
    """When file `path` was last modified, in seconds since the epoch.

    Raises:
      OSError: if there is no such file (also for a URL).
    """
    if not is_url(path):
        return os.path.getmtime(path)
    try:
        return tf.io.gfile.stat(path).mtime_nsec / 1e9
    except tf.errors.OpError as e:
        raise _as_os_error(e, path) from e


@contextlib.contextmanager
def atomic_write(path, mode='w', **open_kwargs):
    """Opens a temporary file beside `path`, moved onto `path` on success.

    Readers never see a partial `path`, a local file's data reach the disk
    before the move (so a power cut cannot leave an empty `path`), and an
    error (in the `with` body or in writing) leaves no temporary file
    behind. A local file comes from a
    plain `open`, not `tempfile`, whose files are private (mode 0600): it
    gets the permissions of any new file, as other users may read it.

    A URL's file is a `tf.io.gfile.GFile`, which writes text as UTF-8 with
    the newlines as given: `open_kwargs` may only ask for that
    (`encoding='utf-8'`, `newline=''`).

    Raises:
      OSError: as `open` would for `path` (also for a URL) if the file
        cannot be written or moved into place. The error names `path`, not
        the temporary file, which the caller never asked for.
      ValueError: for `open_kwargs` a URL's file cannot honour.

    #### Example

    ```python
    with atomic_write('results.json') as f:
        json.dump(results, f)
    ```
    """
    path = os.fspath(path)
    url = is_url(path)
    if url:
        unsupported = {key: value for key, value in open_kwargs.items()
                       if (key, value) not in (('encoding', 'utf-8'),
                                               ('newline', ''))}
        if unsupported:
            raise ValueError(f'{path}: a URL is written as UTF-8 with the '
                             f'newlines given; cannot also use '
                             f'{unsupported}.')
    # On the destination's file system (a rename cannot cross them) and
    # named by process, so that two writers do not share it.
    tmp = os.path.join(os.path.dirname(path),
                       f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        try:
            if url:
                with tf.io.gfile.GFile(tmp, mode) as f:
                    yield f
            else:
                with open(tmp, mode, **open_kwargs) as f:
                    yield f
                    # On disk before the rename: after a power cut, some
                    # file systems would otherwise show the new name with
                    # no data.
                    f.flush()
                    os.fsync(f.fileno())
            replace(tmp, path)
        except OSError as e:
            if e.filename != tmp:
                raise  # The body's own error, about another file.
            raise OSError(e.errno, (e.strerror or '').replace(tmp, path),
                          path) from e
        except tf.errors.OpError as e:
            if tmp not in (e.message or ''):
                raise
            raise _as_os_error(e, path, e.message.replace(tmp, path)) from e
    finally:
        if url:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        elif os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A staging directory nothing has been written to for this long belongs to a
# killed process, not to a slow one still writing (a write touches its
# file's mtime).
STALE_STAGING_SECONDS = 3600


def _staging_prefix(name):
    """The hidden prefix of `name`'s staging directories: distinct enough
    that no directory a user made (`.git`, `.name-backup`) looks like one."""
    return f'.{name}.staging-'


def _remove_stale_staging(parent, name):
    now = time.time()
    # mkdtemp's random suffix: letters, digits and underscores.
    pattern = re.compile(re.escape(_staging_prefix(name)) + r'[A-Za-z0-9_]+')
    for entry in os.listdir(parent):
        candidate = os.path.join(parent, entry)
        if not (pattern.fullmatch(entry) and os.path.isdir(candidate)
                and not os.path.islink(candidate)):
            continue
        newest = os.path.getmtime(candidate)
        for root, dirs, files in os.walk(candidate):
            for item in dirs + files:
                try:
                    newest = max(newest, os.lstat(
                        os.path.join(root, item)).st_mtime)
                except OSError:
                    pass
        if now - newest > STALE_STAGING_SECONDS:
            shutil.rmtree(candidate, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(path, replace=True):
    """A new directory beside `path`, moved onto `path` on success.

    Readers never see a partly written `path`: the body fills the yielded
    staging directory, which then replaces `path`. With `replace`, any
    directory there is removed first (callers check that it may be);
    without it, only an empty one is, and a file or a directory that holds
    files raises `FileExistsError` instead of the move (also when it
    appeared while the body ran). An error in the body, an
    interrupt included, removes the staging directory and leaves `path` as
    it was. The parent directory is made if missing.

    A local staging directory gets a plain `mkdir`'s permissions, not
    `tempfile`'s private ones: its contents are read by other users. A hard
    kill (SIGKILL) cannot clean up; local staging directories of `path`
    (`.NAME.staging-*` beside `path = .../NAME`) left that way, with nothing
    written for `STALE_STAGING_SECONDS`, are removed the next time (a
    SavedModel's can take gigabytes); no other directory is touched. On an
    object store the final move copies object by object, so a reader may
    briefly see part of `path` there.

    #### Example

    ```python
    with staged_directory('runs/samples') as staging:
        write_files(staging)
    ```
    """
    path = os.fspath(path).rstrip('/')
    url = is_url(path)
    if not url:
        # `runs/samples/.` is `runs/samples`, whose parent is `runs`.
        path = os.path.normpath(path)
    parent = os.path.dirname(path)
    name = os.path.basename(path)
    if url:
        tf.io.gfile.makedirs(parent)
        # No private directories on an object store, and none needed: the
        # name is random.
        staging = join(parent, f'{_staging_prefix(name)}{uuid.uuid4().hex}')
        tf.io.gfile.makedirs(staging)
    else:
        os.makedirs(parent or '.', exist_ok=True)
        _remove_stale_staging(parent or '.', name)
        staging = tempfile.mkdtemp(prefix=_staging_prefix(name),
                                   dir=parent or '.')
    try:
        yield staging
        if not replace and exists(path) and not (isdir(path)
                                                 and not listdir(path)):
            raise FileExistsError(errno.EEXIST, 'a file or a directory that '
                                  'holds files is in the way', path)
        if url:
            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)
            tf.io.gfile.rename(staging, path)
        else:
            os.chmod(staging, 0o777 & ~_umask())
            if os.path.exists(path):
                shutil.rmtree(path)
            os.replace(staging, path)
    finally:
        try:
            if tf.io.gfile.exists(staging):
                tf.io.gfile.rmtree(staging)
        except tf.errors.OpError:
            pass  # Leftover scratch must not hide the body's own error.


class DirectoryInUse(RuntimeError):
    """Another process holds the lock of a directory (`lock_directory`)."""


# Locks this process holds: real path -> [open lock file, number of holders].
_LOCKS = {}

LOCK_FILE = '.lock'


def lock_directory(path):
    """Locks local directory `path` for this process until `release()`.

    An exclusive `flock` on `path/.lock`, which the system releases when the
    process ends in any way (SIGKILL included), so a lock is never stale.
    Callers in one process share it (a trainer and a later one on the same
    run); another process is refused. The lock file names its holder. A URL
    (an object store has no such lock) is not locked.

    Returns:
      An object with a `release()` method.

    Raises:
      DirectoryInUse: another process holds the lock.
    """
    path = os.fspath(path)
    if is_url(path):
        return _Lock(None)
    key = os.path.realpath(path)
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return _Lock(key)
    # pylint: disable-next=consider-using-with
    lock = open(os.path.join(path, LOCK_FILE), 'a+')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or 'another process'
        lock.close()
        raise DirectoryInUse(
            f'{path} is in use by {holder}; wait for it to end, or use '
            'another directory.') from None
    lock.seek(0)
    lock.truncate()
    lock.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    lock.flush()
    _LOCKS[key] = [lock, 1]
    return _Lock(key)


class _Lock:
    """A holder's share of a `lock_directory` lock."""

    def __init__(self, key):
        self._key = key

    def release(self):
        """Gives up this share; the last one unlocks. Idempotent."""
        key, self._key = self._key, None
        if key is None or key not in _LOCKS:
            return
        entry = _LOCKS[key]
        entry[1] -= 1
        if not entry[1]:
            del _LOCKS[key]
            entry[0].close()  # Closing the file releases the flock.
