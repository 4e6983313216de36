"""One holder at a time for a folder on the storage (local, NFS or a bucket): a lock file naming its holder (host,
PID, start time, command, last heartbeat).

Used for one sweep per storage/name (two sweeps with the same --storage/--name would share one Tune experiment and
one Optuna study, and the second would overwrite the first's tables) and for MVT's MGN stage (one MGN trained per
key, by whichever trial gets there first, on any node). Written by hand because neither Ray Tune nor pyarrow.fs has
such a guard. The lock is an atomic create (ferlab.storage.create_exclusive: O_EXCL on a local or NFS folder, a
conditional PUT on S3), so exactly one of several processes on any nodes gets it. A lock left by a process that is
gone is taken over, with a message: at once when its holder ran on this host and its PID is dead (a killed driver
restarted on the head), otherwise once its holder has not renewed its heartbeat for STALE_S (a node lost with it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from ferlab import storage

LOCK_FILE = ".ferlab.lock"
HEARTBEAT_S = 20.0  # how often a holder renews its lock
STALE_S = 120.0  # a lock not renewed for this long (its holder's node is gone) is taken over
POLL_S = 2.0  # how often a waiter looks again


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
    process holds it, or with `wait=True` waits until it can take it."""

    def __init__(self, folder: str, what: str, wait: bool = False):
        self.folder, self.what, self.wait = storage.normalize(folder), what, wait
        self.path = storage.join(self.folder, LOCK_FILE)
        self._stop = threading.Event()
        self._held = False

    def __enter__(self):
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:300], "heartbeat": time.time()}
        while True:
            if storage.create_exclusive(self.path, json.dumps(me).encode()):
                self._held = True
                threading.Thread(target=self._renew, args=(me,), daemon=True).start()
                return self
            holder = self._holder()
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                return self  # this process holds it already (the same folder twice): nothing to release
            stale = self._stale(holder, me["host"])
            if stale:
                print(f"{self.what}: taking over the stale lock {self.path} of PID {holder.get('pid')} on "
                      f"{holder.get('host')} ({stale}; started {holder.get('started')})", flush=True)
                storage.remove(self.path)
                continue
            if not self.wait:
                raise Locked(f"{self.folder} is in use by another {self.what}: PID {holder.get('pid')} on "
                             f"{holder.get('host')} since {holder.get('started')} ({holder.get('command')!r}); wait "
                             f"for it, use another --name, or remove {self.path} if that process is gone")
            time.sleep(POLL_S)

    @staticmethod
    def _stale(holder: dict, host: str) -> str:
        """Why the holder is gone, or "" while it may still run."""
        if holder.get("host") == host and not _alive(int(holder.get("pid", -1))):
            return "no longer running"
        beat = holder.get("heartbeat")
        if beat is not None and time.time() - beat > STALE_S:
            return f"no heartbeat for {time.time() - beat:.0f} s"
        return ""

    def _holder(self) -> dict:
        try:
            return storage.read_json(self.path)
        except (OSError, ValueError):  # half-written by a process that died, or released just now: stale
            return {"pid": -1, "host": socket.gethostname()}

    def _renew(self, me: dict) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self._holder().get("pid") == me["pid"]:
                storage.write_json(self.path, me | {"heartbeat": time.time()})

    def __exit__(self, *exc):
        self._stop.set()
        if self._held and self._holder().get("pid") == os.getpid():
            storage.remove(self.path)
        return False
