"""Where uploaded files live: a local directory, or an S3-compatible bucket through fsspec so
that workers on other machines read what the API stored.

Keys are made by the server (`datasets/sha256/<hex>`, `models/<model id>/<file>`), never taken
from a user. A stored file becomes visible whole or not at all: the local store writes a
temporary name and renames it; an S3 object appears only when its upload completes.

Every key but a checkpoint's names bytes that never change (a dataset's key is their hash; a
model's files are stored with `put_new`, which refuses to replace a key), so a machine's
cached copy never goes stale. The cache is never trimmed here: a
file in it may be deleted at any time it is not being read (docs/WORKER.md, Several machines).
"""

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Protocol

from app.config import get_settings


class ArtifactStore(Protocol):
    # Whether its files travel to this machine (into the cache): only then is a copy checked.
    remote: bool

    def put(self, key: str, source: Path) -> None: ...

    def put_new(self, key: str, source: Path) -> bool:
        """Store `source` as `key` unless `key` exists: False then, the stored bytes kept."""
        ...

    def get(self, key: str, destination: Path) -> None:
        """Copy `key`, which may change (checkpoints), to `destination`, whole."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_tree(self, prefix: str) -> None:
        """Delete every key under the folder `prefix`, and this machine's cached copies."""
        ...

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        """A readable local file with the content of `key`, which must never change (fetched
        once into the cache; checked against `sha256` when given). FileNotFoundError when
        there is no `key`."""
        ...


class ChecksumMismatch(OSError):
    """A fetched file is not the one recorded: never cached, never served."""


def _check_sha256(path: Path, sha256: str, key: str) -> None:
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: models can be large
    if actual != sha256:
        raise ChecksumMismatch(f"{key}: fetched sha256 {actual}, recorded {sha256}")


def _replace_atomically(
    write: Callable[[Path], object],
    destination: Path,
    publish: Callable[[Path, Path], None] = os.replace,
) -> None:
    """Write through `write(temporary_path)`, then `publish` it as `destination`: by rename,
    or by `os.link`, which refuses (FileExistsError) to replace a file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
    try:
        write(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        publish(partial, destination)
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

    def put_new(self, key: str, source: Path) -> bool:
        if self.exists(key):
            return False
        try:
            _replace_atomically(lambda tmp: shutil.copyfile(source, tmp), self._path(key), os.link)
        except FileExistsError:  # another process stored it meanwhile
            return False
        return True

    def get(self, key: str, destination: Path) -> None:
        _replace_atomically(lambda tmp: shutil.copyfile(self._path(key), tmp), destination)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        # The stored file itself: nothing travelled, so there is nothing to check.
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no {key} in the artifact store")
        return path


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

    def put_new(self, key: str, source: Path) -> bool:
        # A conditional write (If-None-Match: *): AWS S3, MinIO and moto refuse to replace.
        try:
            self.fs.put_file(str(source), self._url(key), mode="create")
        except FileExistsError:
            return False
        return True

    def get(self, key: str, destination: Path) -> None:
        _replace_atomically(lambda tmp: self.fs.get_file(self._url(key), str(tmp)), destination)

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache()  # another machine may have written it since
        return self.fs.exists(self._url(key))

    def delete(self, key: str) -> None:
        with suppress(FileNotFoundError):  # not asked first: a listing cached here may be stale
            self.fs.rm_file(self._url(key))

    def delete_tree(self, prefix: str) -> None:
        self.fs.invalidate_cache()  # another machine may have written under it since
        with suppress(FileNotFoundError):
            self.fs.rm(self._url(prefix.rstrip("/") + "/"), recursive=True)
        shutil.rmtree(self.cache_dir / prefix, ignore_errors=True)

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        # Keys never change once written: a cached copy never goes stale.
        cached = self.cache_dir / key
        if not cached.is_file():

            def fetch(tmp: Path) -> None:
                self.fs.get_file(self._url(key), str(tmp))
                if sha256 is not None:
                    _check_sha256(tmp, sha256, key)

            _replace_atomically(fetch, cached)
        return cached


def make_store(url: str | None, artifact_dir: Path, cache_dir: Path, endpoint: str | None):
    if url is None or url.startswith("file://"):
        return LocalStore(Path(url.removeprefix("file://")) if url else artifact_dir)
    return S3Store(url, cache_dir, endpoint)


@cache
def get_store() -> ArtifactStore:
    s = get_settings()
    return make_store(s.artifact_store_url, s.artifact_dir, s.cache_dir, s.s3_endpoint_url)
