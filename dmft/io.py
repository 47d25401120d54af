"""Results on disk: ``dmft.save(result, path)`` and ``dmft.load(path)``.

A file is an uncompressed ``.npz``: every array of the result is one member, and one more member
holds JSON metadata — what kind of result it is, the tree of its fields (scalars, strings,
tuples, dicts and nested results inline, arrays by member name), the library, JAX and NumPy
versions, the device, the wall time of the call that produced the result when it is known, its
convergence facts, and SHA-256 digests of every array and of the tree. Writing goes to a
temporary file in the same folder that is renamed into place, so a reader (or a process killed
mid-write) sees the old file or the new one, never a partial one. Reading checks the format
version and the digests, so a truncated or altered file raises ``ValueError`` instead of
returning wrong numbers.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import json
import os
import platform
import zipfile

import numpy as np

from dmft.cache import atomic_path, code_version
from dmft.settings import is_traced

FORMAT = "dmft-result"
FORMAT_VERSION = 1
_META = "__dmft__"

# Result classes a file may hold, by name: (module, class).
KINDS = {
    "Solution": ("dmft.results", "Solution"),
    "SimulationResult": ("dmft.results", "SimulationResult"),
    "ConvergenceStudy": ("dmft.convergence", "ConvergenceStudy"),
    "RateFit": ("dmft.convergence", "RateFit"),
    "JointFit": ("dmft.convergence", "JointFit"),
    "Sweep": ("dmft.transfer", "Sweep"),
    "CoordCheck": ("dmft.coord_check", "CoordCheck"),
    "LazyKernels": ("dmft.lazy", "LazyKernels"),
    "Activation": ("dmft.activations", "Activation"),
}


def _class(kind: str):
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray | np.generic) or type(x).__module__.startswith(
        ("jax", "jaxlib")
    )


class Saveable:
    """Gives a result class ``result.save(path)``, the same as ``dmft.save(result, path)``."""

    def save(self, path) -> None:
        """Write this result to ``path`` (.npz), atomically; ``dmft.load(path)`` reads it back."""
        save(self, path)


class _Encoder:
    """Turns a result into (JSON tree, {member name: array})."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, x, path: str):
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            kind = type(x).__name__
            if kind not in KINDS:
                raise TypeError(f"cannot save a {kind}; dmft.save knows {sorted(KINDS)}")
            fields = {
                f.name: self(getattr(x, f.name), f"{path}{f.name}/") for f in dataclasses.fields(x)
            }
            return {"__result__": kind, "fields": fields}
        if _is_array(x):
            if is_traced(x):
                raise TypeError("cannot save a traced value; call dmft.save outside jit/vmap")
            name = path.rstrip("/") or "array"
            self.arrays[name] = np.asarray(x)
            tag = "__scalar__" if isinstance(x, np.generic) else "__array__"
            return {tag: name}
        if isinstance(x, tuple | list):
            items = [self(v, f"{path}{i}/") for i, v in enumerate(x)]
            return {"__tuple__": items} if isinstance(x, tuple) else items
        if isinstance(x, dict):
            return {
                "__dict__": [
                    [self(k, f"{path}key{i}/"), self(v, f"{path}{i}/")]
                    for i, (k, v) in enumerate(x.items())
                ]
            }
        if callable(x):
            module, name = getattr(x, "__module__", None), getattr(x, "__qualname__", None)
            return {"__callable__": f"{module}:{name}"}
        raise TypeError(f"cannot save {type(x).__name__} at {path.rstrip('/') or 'top level'}")


def _decode(node, arrays, path):
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if isinstance(node, list):
        return [_decode(v, arrays, path) for v in node]
    if "__array__" in node:
        return arrays[node["__array__"]]
    if "__scalar__" in node:
        return arrays[node["__scalar__"]][()]
    if "__tuple__" in node:
        return tuple(_decode(v, arrays, path) for v in node["__tuple__"])
    if "__dict__" in node:
        return {
            _hashable(_decode(k, arrays, path)): _decode(v, arrays, path)
            for k, v in node["__dict__"]
        }
    if "__callable__" in node:
        module, _, name = node["__callable__"].partition(":")
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{path} holds the function {node['__callable__']}, which cannot be imported "
                f"here ({err}); make it importable under that name before loading"
            ) from err
        return obj
    if "__result__" in node:
        kind = node["__result__"]
        if kind not in KINDS:
            raise ValueError(f"{path} holds a {kind!r}, which this version of dmft does not know")
        fields = {k: _decode(v, arrays, path) for k, v in node["fields"].items()}
        cls = _class(kind)
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(fields) - names
        if extra:
            raise ValueError(
                f"{path}: its {kind} has fields {sorted(extra)} that this version of dmft does "
                "not have; load it with the version that wrote it"
            )
        try:
            return cls(**fields)
        except TypeError as err:
            raise ValueError(
                f"{path}: its {kind} does not match this version of dmft ({err})"
            ) from err
    raise ValueError(f"{path}: unrecognised entry in its metadata: {sorted(node)}")


def _tree_digest(tree) -> str:
    """SHA-256 of the metadata tree: the scalars, strings and structure a result holds inline."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def _hashable(k):
    return tuple(_hashable(v) for v in k) if isinstance(k, list | tuple) else k


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _device() -> str:
    try:
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', '')} x{jax.device_count()}".strip()
    except Exception:  # metadata only: never fail a save over it
        return "unknown"


def _versions() -> dict:
    out = {"dmft": code_version(), "numpy": np.__version__, "python": platform.python_version()}
    try:
        import jax
        import jaxlib

        out.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    except ImportError:
        pass
    return out


def _facts(result) -> dict:
    """Convergence facts worth reading without loading the arrays (also in the arrays)."""
    facts = {}
    for name in ("status", "method", "memory_estimate"):
        try:
            value = getattr(result, name)
        except Exception:  # a property that cannot be evaluated (e.g. a partial result)
            continue
        if isinstance(value, str | int | float):
            facts[name] = value
    for name in ("converged", "iterations", "diverged_step"):
        value = getattr(result, name, None)
        if value is not None and np.size(value) == 1:
            facts[name] = np.asarray(value).item()
    return facts


def save(result, path) -> None:
    """Write a result to ``path`` (an ``.npz`` file), atomically.

    Every result type of the library can be saved: ``Solution``, ``SimulationResult``,
    ``ConvergenceStudy``, ``RateFit``, ``JointFit``, ``Sweep``,
    ``CoordCheck`` and ``LazyKernels``. Arrays are stored with their dtype and shape
    exactly; ``load`` gives them back as NumPy arrays. The metadata records the settings,
    the library, JAX and NumPy versions, the device, the wall time of the call when known, and
    the convergence facts (``status``, ``converged``, ``iterations``).

    Args:
        result: a result object of this library.
        path: the file to write; folders are created. A missing ``.npz`` suffix is added.

    Raises:
        TypeError: ``result`` is not a result of this library, holds a value that cannot be
            stored, or is traced (inside ``jit``/``vmap``).

    Examples:
        >>> import os, tempfile
        >>> import numpy as np
        >>> import dmft
        >>> sol = dmft.solve_dmft(np.ones((1, 3)), np.ones(1), depth=2,
        ...                       activation="linear", eta0=0.1, steps=3)
        >>> path = os.path.join(tempfile.mkdtemp(), "solution.npz")
        >>> dmft.save(sol, path)
        >>> back = dmft.load(path)
        >>> bool(np.array_equal(back.loss, sol.loss)), back.config["depth"]
        (True, 2)
    """
    kind = type(result).__name__
    if kind not in KINDS:
        raise TypeError(
            f"`result` must be a result of dmft ({', '.join(sorted(KINDS))}), got {kind}"
        )
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    encode = _Encoder()
    tree = encode(result, "")
    arrays = encode.arrays
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "tree": tree,
        "digest": _digest(arrays),
        "tree_digest": _tree_digest(tree),
        "versions": _versions(),
        "device": _device(),
        "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "timings": dict(getattr(result, "timings", None) or getattr(result, "_timings", {}) or {}),
        "facts": _facts(result),
    }
    payload = dict(arrays)
    payload[_META] = np.asarray(json.dumps(meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())


def read_metadata(path) -> dict:
    """The metadata of a saved result (kind, versions, device, timings, facts) without its arrays.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a result written by ``save``, or is damaged.
    """
    return _read(path)[1]


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        KeyError,
        ValueError,
        # zipfile's own refusals of a damaged header: "zip file version …", "compression
        # method …" (NotImplementedError) and "… is encrypted" (RuntimeError)
        NotImplementedError,
        RuntimeError,
    ) as err:
        raise ValueError(f"{path} is truncated or corrupted and cannot be read ({err})") from err
    if _META not in arrays:
        if "__meta__" in arrays:  # a convergence study written before dmft.save existed
            return arrays, {"format": "legacy"}
        raise ValueError(f"{path} was not written by dmft.save (no metadata)")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its metadata is corrupted ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by dmft.save (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}, written by dmft "
            f"{meta.get('versions', {}).get('dmft')}; this dmft ({code_version()}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade dmft to load it"
        )
    if _digest(arrays) != meta.get("digest"):
        raise ValueError(
            f"{path} is corrupted: its arrays do not match the digest recorded when it was saved"
        )
    # files written before the tree had a digest have none; their tree is taken as it is
    if "tree_digest" in meta and _tree_digest(meta.get("tree")) != meta["tree_digest"]:
        raise ValueError(
            f"{path} is corrupted: its metadata does not match the digest recorded when it was "
            "saved"
        )
    return arrays, meta


def load(path):
    """Read a result written by ``save`` (or by ``ConvergenceStudy.save``).

    Returns the same kind of object that was saved, with every field equal to the saved one;
    arrays come back as NumPy arrays of the saved dtype and shape.

    Args:
        path: the ``.npz`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupted (its digest does not match), not written
            by dmft, written by a newer format version, or holds a result this version cannot
            rebuild; the message says which.

    Examples:
        >>> import os, tempfile
        >>> import numpy as np
        >>> import dmft
        >>> lazy = dmft.lazy_kernels(np.ones((1, 3)), depth=4, activation="linear")
        >>> path = os.path.join(tempfile.mkdtemp(), "lazy.npz")
        >>> dmft.save(lazy, path)
        >>> float(dmft.load(path).ntk[0, 0])
        6.8359375
    """
    arrays, meta = _read(path)
    if meta.get("format") == "legacy":
        from dmft.convergence import _load_legacy_study

        return _load_legacy_study(path)
    return _decode(meta["tree"], arrays, os.fspath(path))
