"""Where uploaded files live: a local directory, or an S3-compatible bucket through fsspec so
that workers on other machines read what the API stored.

Keys are made by the server (`datasets/sha256/<hex>`), never taken from a user. A stored file
becomes visible whole or not at all: the local store writes a temporary name and renames it; an
S3 object appears only when its upload completes.
"""

import os
import shutil
import uuid
from functools import cache
from pathlib import Path
from typing import Protocol

from app.config import get_settings


class ArtifactStore(Protocol):
    # Whether workers on other machines share it: only then do checkpoints travel through it.
    remote: bool

    def put(self, key: str, source: Path) -> None: ...

    def get(self, key: str, destination: Path) -> None:
        """Copy `key`, which may change (checkpoints), to `destination`, whole."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path:
        """A readable local file with the content of `key` (fetched once into the cache)."""
        ...


def _replace_atomically(write, destination: Path) -> None:
    """Write through `write(temporary_path)`, then rename onto `destination`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
    try:
        write(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


class LocalStore:
    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, source: Path) -> None:
        _replace_atomically(lambda tmp: shutil.copyfile(source, tmp), self._path(key))

    def get(self, key: str, destination: Path) -> None:
        _replace_atomically(lambda tmp: shutil.copyfile(self._path(key), tmp), destination)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        return self._path(key)


class S3Store:
    remote = True

    def __init__(self, url: str, cache_dir: Path, endpoint_url: str | None = None) -> None:
        import fsspec

        options = {"client_kwargs": {"endpoint_url": endpoint_url}} if endpoint_url else {}
        self.fs, self.prefix = fsspec.core.url_to_fs(url, **options)
        self.cache_dir = cache_dir

    def _url(self, key: str) -> str:
        return f"{self.prefix.rstrip('/')}/{key}"

    def put(self, key: str, source: Path) -> None:
        self.fs.put_file(str(source), self._url(key))

    def get(self, key: str, destination: Path) -> None:
        _replace_atomically(lambda tmp: self.fs.get_file(self._url(key), str(tmp)), destination)

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache()  # another machine may have written it since
        return self.fs.exists(self._url(key))

    def delete(self, key: str) -> None:
        if self.fs.exists(self._url(key)):
            self.fs.rm_file(self._url(key))

    def local_path(self, key: str) -> Path:
        # Keys are content hashes: a cached copy never goes stale.
        cached = self.cache_dir / key
        if not cached.is_file():
            _replace_atomically(lambda tmp: self.fs.get_file(self._url(key), str(tmp)), cached)
        return cached


def make_store(url: str | None, artifact_dir: Path, cache_dir: Path, endpoint: str | None):
    if url is None or url.startswith("file://"):
        return LocalStore(Path(url.removeprefix("file://")) if url else artifact_dir)
    return S3Store(url, cache_dir, endpoint)


@cache
def get_store() -> ArtifactStore:
    s = get_settings()
    return make_store(s.artifact_store_url, s.artifact_dir, s.cache_dir, s.s3_endpoint_url)
