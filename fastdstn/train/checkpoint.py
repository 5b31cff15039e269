"""Checkpoint files that are either whole or refused: atomic replacement and a checksum.

Layout: MAGIC (8 bytes) | payload length (8 bytes, little endian) | SHA-256 of the payload (32 bytes) |
payload (torch.save bytes). A write is atomic (fastdstn.train.files: temporary file, fsync, rename, directory
fsync) and may keep the file it replaces under a second name (the trainer's previous.ckpt). A read checks
magic, length and digest before torch.load sees a byte, so a truncated or corrupted file is reported as
damaged and never loaded half.
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

MAGIC = b"FDSTNCK1"
HEADER = struct.Struct("<8sQ32s")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or from another format."""


def save(obj: Any, path: str, keep_previous: Optional[str] = None) -> None:
    """Write `obj` to `path` atomically; keep_previous: keep the checkpoint it replaces under that path."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    header = HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
    replace_atomically(path, [header, payload], keep_previous)


def load(path: str, map_location="cpu") -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: not found")
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        payload = f.read()
    if len(head) < HEADER.size:
        raise CheckpointError(f"checkpoint {path} is damaged: truncated header ({len(head)} of {HEADER.size} bytes)")
    magic, length, digest = HEADER.unpack(head)
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {path} is damaged or not a fastdstn checkpoint (bad magic {magic!r})")
    if len(payload) < length:
        raise CheckpointError(f"checkpoint {path} is damaged: truncated ({len(payload)} of {length} payload bytes)")
    if len(payload) > length:
        raise CheckpointError(f"checkpoint {path} is damaged: {len(payload) - length} bytes after the payload")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged: checksum mismatch (SHA-256 of the payload differs)")
    # weights_only: the payload holds tensors and plain containers only (see rng_state).
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
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
