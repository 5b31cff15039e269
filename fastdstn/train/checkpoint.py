"""Checkpoint files that are either whole or refused, and that `torch.load` reads as they are.

Layout: the bytes of `torch.save` (a zip archive) whose zip comment — the last bytes of the file, after the
end-of-central-directory record — is a trailer: MAGIC (8 bytes) | length of everything before the trailer (8
bytes, little endian) | SHA-256 of those bytes (32 bytes). Zip readers skip a comment, so `torch.load(path)`
(weights_only=True, its default) reads a checkpoint like any torch file; `load` checks magic, length and digest
before torch.load sees a byte, so a truncated or corrupted file is reported as damaged and never loaded half.
The payload holds tensors and plain containers only (see rng_state), which is what weights_only admits. A
write is atomic (fastdstn.train.files: temporary file, fsync, rename, directory fsync) and may keep the file
it replaces under a second name (the trainer's previous.ckpt).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import struct
from typing import Any, Dict, Optional

import numpy as np
import torch

from .files import replace_atomically

MAGIC = b"FDSTNCK2"
TRAILER = struct.Struct("<8sQ32s")
ZIP_START = b"PK\x03\x04"              # a local file header: how every zip archive (and torch.save file) begins
END_OF_DIRECTORY = struct.Struct("<4s16sH")  # signature, the record's fixed fields, comment length
END_SIGNATURE = b"PK\x05\x06"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or from another format."""


def save(obj: Any, path: str, keep_previous: Optional[str] = None) -> None:
    """Write `obj` to `path` atomically; keep_previous: keep the checkpoint it replaces under that path."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    archive = buffer.getvalue()
    signature, fields, comment = END_OF_DIRECTORY.unpack(archive[-END_OF_DIRECTORY.size:])
    if signature != END_SIGNATURE or comment != 0:
        raise RuntimeError(f"torch {torch.__version__} wrote no zip archive ending in an uncommented "
                           f"end-of-central-directory record; fastdstn cannot append its checksum")
    body = archive[:-END_OF_DIRECTORY.size] + END_OF_DIRECTORY.pack(signature, fields, TRAILER.size)
    trailer = TRAILER.pack(MAGIC, len(body), hashlib.sha256(body).digest())
    replace_atomically(path, [body, trailer], keep_previous)


def load(path: str, map_location="cpu") -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: not found")
    with open(path, "rb") as f:
        data = f.read()
    smallest = len(ZIP_START) + END_OF_DIRECTORY.size + TRAILER.size
    if len(data) < smallest:
        raise CheckpointError(f"checkpoint {path} is damaged: truncated ({len(data)} bytes; a checkpoint has "
                              f"{smallest} at least)")
    if not data.startswith(ZIP_START):
        raise CheckpointError(f"checkpoint {path} is damaged or not a fastdstn checkpoint (bad magic "
                              f"{data[:8]!r}; a checkpoint starts as a zip archive does)")
    magic, length, digest = TRAILER.unpack(data[-TRAILER.size:])
    body = memoryview(data)[:-TRAILER.size]
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {path} is damaged: truncated, or not a fastdstn checkpoint (its last "
                              f"{TRAILER.size} bytes are no fastdstn checksum trailer)")
    if len(body) != length:
        change = "truncated" if len(body) < length else "grown"
        raise CheckpointError(f"checkpoint {path} is damaged: {change} ({len(body)} bytes before the checksum "
                              f"trailer, which records {length})")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged: checksum mismatch (SHA-256 of its bytes differs)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:    # a whole file this torch refuses (objects of another version)
        raise CheckpointError(f"checkpoint {path} cannot be read by torch {torch.__version__}: {err}") from err


def rng_state() -> Dict[str, Any]:
    """Every generator a training step draws from, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
