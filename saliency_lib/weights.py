"""Safe weight files: safetensors with a JSON config in the metadata, written atomically.

Nothing here unpickles. ``.pt`` checkpoints (the official guided-diffusion files) are read with
``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import WeightsError

C = TypeVar("C")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Save a flat dict of tensors as safetensors, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata or {}))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights and caches are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (sorted by name): stored in a cache entry's
    metadata and checked on load, so flipped or truncated data is caught even where the file still parses."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def remove_stale_temp_files(folder: str | os.PathLike, max_age_s: float = 3600.0) -> list[Path]:
    """Delete the temporary files that an interrupted atomic write (:func:`save_tensors`) or a writability probe
    left in ``folder`` (``*.tmp``, ``.write-test-*``) once they are older than ``max_age_s`` (a younger one may be
    another process's write in progress); returns what was removed."""
    removed = []
    now = time.time()
    for f in list(Path(folder).glob("*.tmp")) + list(Path(folder).glob(".write-test-*")):
        try:
            if now - f.stat().st_mtime > max_age_s:
                f.unlink()
                removed.append(f)
        except OSError:   # gone meanwhile, or not ours to delete: leave it
            pass
    return removed


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; returns ``(tensors, metadata)``. A corrupt file raises WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        tensors = load_file(str(path))

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(
            f"weights file {str(path)!r} is corrupt or truncated ({e}); expected a complete "
            "safetensors file: delete it and download or re-create it") from e
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Only the metadata of a safetensors file (the tensors are not read)."""

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"weights file {str(path)!r} is missing, corrupt or truncated ({e})") from e


def config_to_metadata(config: Any) -> dict[str, str]:
    """Dataclass config -> safetensors metadata entries (``config_class``, ``config`` as JSON)."""
    return {"config_class": type(config).__name__, "config": json.dumps(dataclasses.asdict(config))}


def config_from_metadata(metadata: Mapping[str, str], cls: type[C]) -> C:
    """Rebuild the dataclass ``cls`` stored by :func:`config_to_metadata`; clear error otherwise."""
    if "config" not in metadata:
        raise WeightsError(f"weights metadata has no 'config' entry; expected one written for {cls.__name__}")
    if metadata.get("config_class") != cls.__name__:
        raise WeightsError(f"weights were saved for config {metadata.get('config_class')!r}, "
                           f"expected {cls.__name__!r}")
    raw = json.loads(metadata["config"])
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise WeightsError(f"config in weights has unknown fields {sorted(unknown)} for {cls.__name__}")
    for f in dataclasses.fields(cls):  # JSON turns tuples into lists
        if f.name in raw and isinstance(raw[f.name], list):
            raw[f.name] = tuple(raw[f.name])
    return cls(**raw)


def check_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError listing missing/unexpected keys and shape mismatches (strict loading)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}"
                        f"{' ...' if len(unexpected) > 20 else ''}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {wrong[:20]}")
    if problems:
        raise WeightsError(f"weights from {source} do not match the model "
                           f"({type(module).__name__}): " + "; ".join(problems)
                           + ". Check that the configuration matches the weights.")


def load_module_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``module`` after :func:`check_state_dict`."""
    check_state_dict(module, state, source)
    module.load_state_dict(dict(state), strict=True)


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pt`` state dict without unpickling code (``weights_only=True``)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt zips / refused globals
        raise WeightsError(f"could not read checkpoint {str(path)!r} as a plain state dict "
                           f"({type(e).__name__}: {e}); the file may be truncated") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {str(path)!r} is not a flat state dict of tensors")
    return state
