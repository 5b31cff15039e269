"""Files of a run directory that are either whole or absent: written to a temporary file beside the target,
fsynced, then renamed over it (atomic on POSIX), with the directory fsynced so that the rename survives a
crash. A kill at any moment leaves the previous file intact and at most a `.tmp-*` file behind, which the next
run in the directory removes (`remove_temporaries`)."""
from __future__ import annotations

import glob
import os
import secrets
from typing import List, Optional, Sequence

TEMPORARY_PREFIX = ".tmp-"


def with_path(err: OSError, path: str) -> OSError:
    """The error naming the file it is about (a failed write() says only e.g. 'No space left on device')."""
    if err.filename is not None or err.errno is None:
        return err
    return OSError(err.errno, err.strerror, path)


def replace_atomically(path: str, chunks: Sequence[bytes], keep_previous: Optional[str] = None) -> None:
    """Make `path` hold the concatenated chunks, atomically. keep_previous: rename the file `path` held
    before to this name first (a kill between the two renames leaves the new file as a temporary and the old
    one under keep_previous, never neither)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}-{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)    # the umask's mode, as open() gives
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and os.path.exists(path):
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise with_path(err, path) from err
    except BaseException:
        _remove(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: str, text: str) -> None:
    replace_atomically(path, [text.encode("utf-8")])


def remove_temporaries(directory: str) -> List[str]:
    """Delete the temporary files a killed writer left in `directory` (not its subdirectories); returns them."""
    found = sorted(glob.glob(os.path.join(glob.escape(directory), TEMPORARY_PREFIX + "*")))
    for path in found:
        _remove(path)
    return found


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
