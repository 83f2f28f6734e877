"""Reading and writing checkpoints on local disks and fsspec filesystems (s3://, gs://, memory://, ...):
Lightning's `utilities.cloud_io` (`_load`, `get_filesystem`, `_atomic_save`, `_is_dir`, ...).

fsspec (a torch dependency) is imported when one of these is first called, not with this module.
Local saves go through `fulmen.checkpoint.atomic_save` (temp file, fsync, rename); remote ones
through an fsspec transaction, so that a failed upload leaves no partial object behind.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from fulmen.utilities.imports import module_available
from fulmen.utilities.types import _MAP_LOCATION_TYPE, _PATH

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)


def get_filesystem(path: _PATH, **kwargs: Any) -> AbstractFileSystem:
    """The fsspec filesystem that serves `path` (a local path gives the local filesystem).

    Example:
        >>> type(get_filesystem("/tmp")).__name__
        'LocalFileSystem'
    """
    from fsspec.core import url_to_fs

    fs, _ = url_to_fs(str(path), **kwargs)
    return fs


def _load(path_or_url: IO | _PATH, map_location: _MAP_LOCATION_TYPE = None, weights_only: bool | None = None) -> Any:
    """`torch.load` from a file object, a local path, an fsspec URL, or an http(s) URL (via torch.hub's cache).

    `weights_only=None` takes torch's default, except for http(s) URLs, where it is False as in Lightning:
    pass `weights_only=True` for anything you do not trust.
    """
    if not isinstance(path_or_url, (str, Path)):
        return torch.load(path_or_url, map_location=map_location, weights_only=weights_only)  # type: ignore[arg-type]
    if str(path_or_url).startswith("http"):
        if weights_only is None:
            weights_only = False
            log.debug(f"Loading {path_or_url} with weights_only=False; pass weights_only=True unless you trust it.")
        return torch.hub.load_state_dict_from_url(
            str(path_or_url), map_location=map_location, weights_only=weights_only  # type: ignore[arg-type]
        )
    fs = get_filesystem(path_or_url)
    with fs.open(path_or_url, "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=weights_only)  # type: ignore[arg-type]


def _is_local_file_protocol(path: _PATH) -> bool:
    import fsspec.utils

    return fsspec.utils.get_protocol(str(path)) == "file"


def _atomic_save(checkpoint: dict[str, Any], filepath: _PATH) -> None:
    """`torch.save(checkpoint, filepath)` such that `filepath` is never left half-written, on any filesystem."""
    if _is_local_file_protocol(filepath):
        from fulmen.checkpoint import atomic_save

        atomic_save(checkpoint, str(filepath).removeprefix("file://"))
        return
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    import fsspec.core

    fs, urlpath = fsspec.core.url_to_fs(str(filepath))
    with fs.transaction:  # the object appears when the transaction commits, whole
        if _is_object_storage(fs) and not _is_azure(fs):
            fs.pipe(urlpath, buffer.getvalue())  # multipart upload on S3/GCS
        else:
            with fs.open(urlpath, "wb") as f:
                f.write(buffer.getvalue())


def _is_azure(fs: AbstractFileSystem) -> bool:
    if module_available("adlfs"):
        from adlfs import AzureBlobFileSystem

        return isinstance(fs, AzureBlobFileSystem)
    return False


def _is_object_storage(fs: AbstractFileSystem) -> bool:
    """Whether `fs` is Azure Blob, GCS or S3 (no real directories there)."""
    if _is_azure(fs):
        return True
    for module, name in (("gcsfs", "GCSFileSystem"), ("s3fs", "S3FileSystem")):
        if module_available(module) and isinstance(fs, getattr(__import__(module), name)):
            return True
    return False


def _is_dir(fs: AbstractFileSystem, path: str | Path, strict: bool = False) -> bool:
    """Whether `path` is a directory; on object storage, unless `strict`, any path not taken by a file
    counts (directories there come into being with the first object written under them)."""
    if _is_object_storage(fs):
        return fs.isdir(path) if strict else not fs.isfile(path)
    return fs.isdir(path)


__all__ = ["get_filesystem"]


load = _load  # Lightning 1.x's name (`from pytorch_lightning.utilities.cloud_io import load`)
