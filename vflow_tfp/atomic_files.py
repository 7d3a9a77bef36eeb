"""Files written beside their destination and moved into place."""

import contextlib
import os

__all__ = ['atomic_write']


@contextlib.contextmanager
def atomic_write(path, mode='w', **open_kwargs):
    """Opens a temporary file beside `path`, moved onto `path` on success.

    Readers never see a partial `path`, and an error (in the `with` body or
    in writing) leaves no temporary file behind. The file comes from a
    plain `open`, not `tempfile`, whose files are private (mode 0600): it
    gets the permissions of any new file, as other users may read it.

    #### Example

    ```python
    with atomic_write('results.json') as f:
        json.dump(results, f)
    ```
    """
    tmp = os.path.join(os.path.dirname(path),
                       f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
