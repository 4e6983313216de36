"""One holder at a time for a folder on the storage (local, NFS or a bucket), and the conditional writes it is made of.

A lock file names its holder (host, PID, start time, command, last heartbeat). Used for one sweep per storage/name (two
sweeps with the same --storage/--name would share one Tune experiment and one Optuna study, and the second would
overwrite the first's tables) and for MVT's MGN stage (one MGN trained per key, by whichever trial gets there first,
on any node). Written by hand because neither Ray Tune nor pyarrow.fs has such a guard.

- Taking a free lock is an atomic create (`create_exclusive`: O_EXCL on a local or NFS folder, a conditional PUT
  with `If-None-Match: *` on S3): exactly one of several processes on any nodes gets it.
- A lock left by a process that is gone is taken over, with a message: at once when its holder ran on this host and
  its PID is dead (a killed driver restarted on the head), otherwise once its holder has not renewed its heartbeat
  for STALE_S (a node lost with it). The takeover overwrites the stale holder only if the lock is still the version
  read (`replace_if`: `If-Match` on S3's ETag; a flock-guarded compare-and-rename on a folder), so of several
  waiters that all saw the same stale holder exactly one takes it (a read-remove-create gave two holders).
- A store that does not honour conditional writes (MinIO before August 2024, several test servers) cannot hold a
  lock: it is found out once per bucket (`conditional_writes`), and the lock refuses in one line, naming the way
  out: `--lock-dir`, a local or NFS folder that holds the locks instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

from ferlab import storage

LOCK_FILE = ".ferlab.lock"
HEARTBEAT_S = 20.0  # how often a holder renews its lock
STALE_S = 120.0  # a lock not renewed for this long (its holder's node is gone) is taken over
POLL_S = 2.0  # how often a waiter looks again


class Locked(RuntimeError):
    pass


def create_exclusive(uri, data: bytes) -> bool:
    """Create the file only if it does not exist, atomically; True when this call created it. Locally (and on NFS)
    an O_EXCL create; on S3 a conditional PUT (`If-None-Match: *`, supported by AWS S3, MinIO and other S3-compatible
    stores). pyarrow.fs has no conditional write, so S3's is made with boto3, the AWS client pyarrow's own S3 support
    stands beside."""
    if not storage.is_remote(uri):
        path = storage.normalize(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    parsed = urlparse(str(uri))
    if parsed.scheme != "s3":
        raise storage.StorageError(f"{uri}: no atomic create on {parsed.scheme}:// storage (ferlab's locks need "
                                   f"one: use a local or NFS folder, or s3://)")
    import botocore.exceptions

    try:
        storage.s3_client().put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data, IfNoneMatch="*")
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


def read_versioned(uri) -> tuple[bytes, str]:
    """(content, version) of a file: the version changes with every write (S3: the object's ETag; a local file: its
    inode, size and modification time). What replace_if compares."""
    if not storage.is_remote(uri):
        path = storage.normalize(uri)
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return f.read(), f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
    import botocore.exceptions

    parsed = urlparse(str(uri))
    try:
        r = storage.s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from None
        raise
    return r["Body"].read(), r["ETag"]


def replace_if(uri, data: bytes, version: str) -> bool:
    """Overwrite the file only if it is still at `version` (read_versioned), atomically; True when this call replaced
    it. Of several callers holding the same version, exactly one succeeds. S3: a conditional PUT (`If-Match` on the
    ETag). Locally (and on NFS): under an exclusive flock of a sidecar file, compare the version and rename a new
    file over it."""
    if not storage.is_remote(uri):
        import fcntl

        path = storage.normalize(uri)
        with open(path + ".takeover", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            try:
                if read_versioned(path)[1] != version:
                    return False
            except FileNotFoundError:
                return False
            tmp = f"{path}.{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return True
    parsed = urlparse(str(uri))
    if parsed.scheme != "s3":
        raise storage.StorageError(f"{uri}: no conditional write on {parsed.scheme}:// storage")
    import botocore.exceptions

    try:
        storage.s3_client().put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data, IfMatch=version)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                       "NoSuchKey", "404"):
            return False
        raise
    return True


@functools.lru_cache(maxsize=32)
def conditional_writes(bucket_uri: str) -> str:
    """"" when the store behind `bucket_uri` (s3://BUCKET) honours conditional writes, else why not; asked once per
    bucket and process. A probe object is created twice with `If-None-Match: *` (the second must fail) and
    overwritten once with `If-Match` on a wrong ETag (must fail), then deleted. AWS S3 (since 2024) and MinIO
    (since August 2024) honour both; older MinIO and several test servers accept each PUT and overwrite."""
    parsed = urlparse(bucket_uri)
    if parsed.scheme != "s3":
        return "" if not storage.is_remote(bucket_uri) else f"ferlab knows no conditional write on {parsed.scheme}://"
    key = f".ferlab-probe/{uuid.uuid4().hex}"
    probe = f"s3://{parsed.netloc}/{key}"
    try:
        if not create_exclusive(probe, b"1"):
            return "a new probe object already existed"
        if create_exclusive(probe, b"2"):
            return "it accepted a second create of one key (If-None-Match: * ignored)"
        if replace_if(probe, b"3", '"00000000000000000000000000000000"'):
            return "it accepted an overwrite whose ETag did not match (If-Match ignored)"
        return ""
    finally:
        with contextlib.suppress(Exception):
            storage.s3_client().delete_object(Bucket=parsed.netloc, Key=key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """`with FolderLock(folder, "sweep"):` holds `folder/.ferlab.lock` for the block; raises Locked if another live
    process holds it (or the store cannot hold a lock), or with `wait=True` waits until it can take it. `lock_dir`:
    a local or NFS folder that holds the lock instead of `folder` (for a store without conditional writes)."""

    def __init__(self, folder: str, what: str, wait: bool = False, lock_dir: str | None = None):
        self.folder, self.what, self.wait = storage.normalize(folder), what, wait
        if lock_dir:  # one file per locked folder, named after it
            import hashlib

            digest = hashlib.sha256(self.folder.encode()).hexdigest()[:16]
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.folder)[-80:]
            self.path = storage.join(storage.normalize(lock_dir), f"{name}-{digest}{LOCK_FILE}")
        else:
            self.path = storage.join(self.folder, LOCK_FILE)
        self._stop = threading.Event()
        self._held = False
        self._token = uuid.uuid4().hex  # this holder's own: every lock file differs, and so does its version

    def __enter__(self):
        self._refuse_a_store_that_cannot_lock()
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:300], "heartbeat": time.time(), "token": self._token}
        while True:
            if create_exclusive(self.path, json.dumps(me).encode()):
                return self._hold(me)
            holder, version = self._holder()
            if version is None:
                continue  # released between the create and the read: try again
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                return self  # this process holds it already (the same folder twice): nothing to release
            stale = self._stale(holder, me["host"])
            if stale:
                # one taker only: the overwrite succeeds only while the lock is still the stale holder's version
                if replace_if(self.path, json.dumps(me).encode(), version):
                    print(f"{self.what}: took over the stale lock {self.path} of PID {holder.get('pid')} on "
                          f"{holder.get('host')} ({stale}; started {holder.get('started')})", flush=True)
                    return self._hold(me)
                continue  # another waiter took it first: look again
            if not self.wait:
                raise Locked(f"{self.folder} is in use by another {self.what}: PID {holder.get('pid')} on "
                             f"{holder.get('host')} since {holder.get('started')} ({holder.get('command')!r}); wait "
                             f"for it, use another --name, or remove {self.path} if that process is gone")
            time.sleep(POLL_S)

    def _refuse_a_store_that_cannot_lock(self) -> None:
        if not storage.is_remote(self.path):
            return
        parsed = urlparse(self.path)
        why = conditional_writes(f"{parsed.scheme}://{parsed.netloc}")
        if why:
            raise Locked(f"{parsed.scheme}://{parsed.netloc} ({os.environ.get('AWS_ENDPOINT_URL') or 'AWS'}) cannot "
                         f"hold ferlab's locks: {why}; two sweeps of one --name would share one experiment. Hold the "
                         f"locks in a folder every node shares: --lock-dir DIR (local or NFS), or use a store that "
                         f"honours conditional writes (AWS S3, MinIO since August 2024)")

    def _hold(self, me: dict):
        self._held = True
        threading.Thread(target=self._renew, args=(me,), daemon=True).start()
        return self

    @staticmethod
    def _stale(holder: dict, host: str) -> str:
        """Why the holder is gone, or "" while it may still run."""
        if holder.get("host") == host and not _alive(int(holder.get("pid", -1))):
            return "no longer running"
        beat = holder.get("heartbeat")
        if beat is not None and time.time() - beat > STALE_S:
            return f"no heartbeat for {time.time() - beat:.0f} s"
        return ""

    def _holder(self) -> tuple[dict, str | None]:
        """(the holder the lock file names, its version); version None when there is no lock file."""
        try:
            data, version = read_versioned(self.path)
        except FileNotFoundError:
            return {}, None
        try:
            return json.loads(data), version
        except ValueError:  # half-written by a process that died: stale
            return {"pid": -1, "host": socket.gethostname()}, version

    def _renew(self, me: dict) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder, version = self._holder()
                if holder.get("token") == self._token:  # still ours: renewed only if nobody took it in between
                    replace_if(self.path, json.dumps(me | {"heartbeat": time.time()}).encode(), version)
            except Exception as e:  # noqa: BLE001: a store that did not answer this once; the next beat tries again
                print(f"{self.what}: could not renew {self.path} ({str(e)[:200]})", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        self._stop.set()
        if self._held and self._holder()[0].get("token") == self._token:
            storage.remove(self.path)
        return False
