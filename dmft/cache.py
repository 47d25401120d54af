"""A folder of finished computations, keyed by what produced them.

Long sweeps store each finished point as one ``.npz`` file named by a hash of its settings and
of the library's code, so an interrupted sweep resumes where it stopped and a change to the
code never serves stale numbers. Files are written to a temporary name in the same folder and
renamed into place, so a killed process leaves the old file or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile
import warnings
import zipfile

import numpy as np

_META = "__meta__"


def code_version() -> str:
    """The library's version and a digest of its Python sources (changes with any edit)."""
    from dmft import __version__

    root = pathlib.Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def array_digest(*arrays) -> str:
    """A digest of arrays' dtypes, shapes and bytes (for keying data sets)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def make_key(payload: dict) -> str:
    """A stable hash of a JSON-serialisable dict (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (its folder created) to write to; on success it
    is renamed over ``path``, on any error removed. A reader sees the old file or the new one,
    never a partial one."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npz(path, arrays: dict, meta: dict | None = None) -> None:
    """Write ``arrays`` (and ``meta`` as JSON) to ``path`` atomically: a temporary file in the
    same folder, flushed to disk, then renamed over the target."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if _META in payload:
        raise ValueError(f"array name {_META!r} is reserved")
    payload[_META] = np.asarray(json.dumps(meta or {}, default=repr))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())


def read_npz(path) -> tuple[dict, dict]:
    """Read a file written by ``write_npz``: ``(arrays, meta)``. Raises ``OSError`` or
    ``ValueError`` for a missing, truncated or corrupted file."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, KeyError) as err:
        raise ValueError(f"{path} is truncated or corrupted ({err})") from err
    if _META not in arrays:
        raise ValueError(f"{path} has no metadata; it was not written by dmft")
    meta = json.loads(str(arrays.pop(_META)))
    return arrays, meta


class Cache:
    """Finished points under ``folder``, one file per key. ``folder=None`` keeps nothing."""

    def __init__(self, folder=None):
        self.folder = None if folder is None else pathlib.Path(folder)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> pathlib.Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str):
        """``(arrays, meta)`` for ``key``, or None if absent. An unreadable file (truncated by
        something other than this library) is reported, ignored and later overwritten."""
        if self.folder is None or not self.path(key).exists():
            self.misses += 1
            return None
        try:
            out = read_npz(self.path(key))
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable cache entry: {err}", stacklevel=2)
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, arrays: dict, meta: dict | None = None) -> None:
        if self.folder is not None:
            write_npz(self.path(key), arrays, meta)
