"""Writing benchmark results: JSON written atomically (a temporary file, then a rename)."""

from __future__ import annotations

import json
import os
import tempfile


def write_json(path: str, payload) -> None:
    """Write ``payload`` as indented JSON to ``path``, creating its folder; never half-written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
