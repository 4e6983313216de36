"""One storage layer for every file ferlab keeps: a local folder, an NFS mount or an object store (s3://, gs://, any
URI `pyarrow.fs` knows) are one code path, the one Ray Train and Tune use for `storage_path`.

Checkpoints and their histories, MGN files and their metrics, locks, manifests and shards are read and written
through these functions, never with `open` or `os.path` on a storage path: on a cluster the nodes share no disk,
so what one node writes outside the storage no other node can read. This module is the only place that tells a
local path from a URI.

An S3-compatible store is found through the standard variables, as every AWS client does: `AWS_ENDPOINT_URL` (MinIO,
SeaweedFS, a test server; unset for AWS itself), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or an instance
role), `AWS_DEFAULT_REGION`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import threading
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage URI that cannot be used: one line naming the URI and what failed."""


def is_remote(uri) -> bool:
    """A URI with a scheme (s3://, gs://, ...) rather than a path on this machine's file system."""
    return "://" in str(uri)


def normalize(uri) -> str:
    """A local path made absolute (~ expanded); a URI without its trailing slash."""
    uri = str(uri)
    return uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri))


def join(uri, *parts: str) -> str:
    return posixpath.join(str(uri), *parts) if is_remote(uri) else os.path.join(str(uri), *parts)


def dirname(uri) -> str:
    return posixpath.dirname(str(uri).rstrip("/")) if is_remote(uri) else os.path.dirname(str(uri))


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """The URI of a path in a pyarrow file system (what Ray's Checkpoint holds: its `filesystem` and `path`)."""
    return path if fs.type_name == "local" else f"{fs.type_name}://{path}"


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")  # one client per bucket and process
    return fs


def resolve(uri) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path in it) for a local path or a URI."""
    uri = str(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), normalize(uri)
    parsed = urlparse(uri)
    try:
        fs = _filesystem(parsed.scheme, parsed.netloc)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for an unknown scheme or a bad URI
        raise StorageError(f"{uri}: cannot be opened as storage ({_first_line(e)})") from None
    return fs, (parsed.netloc + parsed.path).rstrip("/")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _type(uri) -> pafs.FileType:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type


def exists(uri) -> bool:
    return _type(uri) != pafs.FileType.NotFound


def is_file(uri) -> bool:
    return _type(uri) == pafs.FileType.File


def is_dir(uri) -> bool:
    return _type(uri) == pafs.FileType.Directory


def listdir(uri) -> list[tuple[str, bool]]:
    """(name, is a folder) of each entry of a folder, sorted by name; [] when there is no such folder."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((posixpath.basename(i.path), i.type == pafs.FileType.Directory) for i in infos)


def read_bytes(uri) -> bytes:
    """The whole file; FileNotFoundError naming the URI when there is none."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such file") from None
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{uri}: no such file") from None
        raise


def open_binary(uri) -> io.BytesIO:
    """The file as a seekable in-memory stream (what torch.load and PIL want)."""
    return io.BytesIO(read_bytes(uri))


def write_bytes(uri, data: bytes) -> None:
    """Complete or absent, never half-written: a local file is written beside and renamed; an object store's
    upload becomes visible only when it is whole."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_json(uri):
    return json.loads(read_bytes(uri))


def write_json(uri, obj, indent: int | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=indent, default=str).encode())


def remove(uri) -> None:
    """Delete a file; nothing when it is not there."""
    fs, path = resolve(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def rmtree(uri) -> None:
    """Delete a folder and everything in it; nothing when it is not there."""
    fs, path = resolve(uri)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def makedirs(uri) -> None:
    """A local folder (an object store has no folders: a no-op there)."""
    if not is_remote(uri):
        os.makedirs(normalize(uri), exist_ok=True)


@functools.lru_cache(maxsize=1)
def s3_client():
    import boto3

    return boto3.client("s3")  # the standard variables (AWS_ENDPOINT_URL, keys, region) or an instance role


def upload(local: str, uri) -> None:
    """Copy a local folder's files to a storage folder."""
    fs, path = resolve(uri)
    makedirs(uri)
    pafs.copy_files(local, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


CHECK_S = 15.0  # the longest a storage check waits for an answer


def within(seconds: float, fn, *args):
    """fn(*args), or TimeoutError when it has not returned in `seconds` (a client retrying an endpoint that never
    answers: pyarrow's GCS client waited minutes for Google's metadata server). The call goes on in a daemon thread:
    nothing of it is used."""
    box = {}

    def call():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001: handed back to the caller as it was
            box["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check(uri, what: str, *, must_exist: bool = False) -> str:
    """Validate a storage or data URI before Ray starts; returns it normalised. One line naming the URI and what
    failed: an unknown scheme, an endpoint that does not answer within CHECK_S, a missing bucket, credentials that
    are refused, or (with `must_exist`) nothing there."""
    uri = normalize(uri)
    try:
        t = within(CHECK_S, _type, uri)
    except TimeoutError as e:
        where = os.environ.get("AWS_ENDPOINT_URL") if urlparse(uri).scheme == "s3" else None
        raise StorageError(f"{what} {uri}: {e} from {where or 'its store'} (is it reachable from here, with "
                           f"credentials?)") from None
    except StorageError as e:
        raise StorageError(f"{what} {e}") from None
    except OSError as e:  # unreachable endpoint, missing bucket, access denied: pyarrow says which
        raise StorageError(f"{what} {uri}: {_first_line(e)}") from None
    if is_remote(uri) and t == pafs.FileType.NotFound:
        bucket = urlparse(uri).netloc
        try:
            bucket_type = within(CHECK_S, _type, f"{urlparse(uri).scheme}://{bucket}")
        except (OSError, TimeoutError) as e:
            raise StorageError(f"{what} {uri}: {_first_line(e)}") from None
        if bucket_type == pafs.FileType.NotFound:
            raise StorageError(f"{what} {uri}: no bucket {bucket!r} at this endpoint "
                               f"({os.environ.get('AWS_ENDPOINT_URL') or 'AWS'})")
    if must_exist and t == pafs.FileType.NotFound:
        raise StorageError(f"{what} {uri}: no such file or folder")
    if not is_remote(uri) and not must_exist:
        try:  # the folder will be written: it must be one, or be creatable
            os.makedirs(uri, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{what} {uri}: cannot be created ({e.strerror})") from None
    return uri


def redacted(url: str) -> str:
    """A database URL without its password (for the console, run.json and --dry-run)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: refused before Ray starts (ferlab.tune.sweep)
        return url
