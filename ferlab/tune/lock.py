"""One sweep per folder at a time: a lock file naming its holder (host, PID, start time, command).

Two sweeps with the same --storage/--name would share one Tune experiment and one Optuna study, and the second would
overwrite the first's tables; the lock refuses the second with a clear error. A lock left by a process that no longer
runs on this host (a killed driver) is taken over, with a message. Written by hand because Ray Tune has no such
guard; an O_EXCL file create is atomic on local and NFS file systems. Remote storage (s3://) is not locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

LOCK_FILE = ".ferlab.lock"


class Locked(RuntimeError):
    pass


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
    process holds it."""

    def __init__(self, folder: str, what: str):
        self.folder, self.what = folder, what
        self.path = None if "://" in folder else os.path.join(folder, LOCK_FILE)

    def __enter__(self):
        if self.path is None:
            return self
        os.makedirs(self.folder, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:300]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                    self.path = None  # this process holds it already (the same folder twice): nothing to release
                    return self
                if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                    print(f"{self.what}: taking over the stale lock {self.path} of PID {holder.get('pid')} (no longer "
                          f"running; started {holder.get('started')})", flush=True)
                    os.remove(self.path)
                    continue
                raise Locked(f"{self.folder} is in use by another {self.what}: PID {holder.get('pid')} on "
                             f"{holder.get('host')} since {holder.get('started')} ({holder.get('command')!r}); wait "
                             f"for it, use another --name, or remove {self.path} if that process is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise Locked(f"could not take the lock {self.path}")

    def _holder(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"pid": -1, "host": socket.gethostname()}  # half-written by a process that died: stale

    def __exit__(self, *exc):
        if self.path is not None and self._holder().get("pid") == os.getpid():
            os.remove(self.path)
        return False
