"""optuna-dashboard on a sweep's study in PostgreSQL, photographed for the docs (docs/img/optuna_dashboard.png).

    python benchmarks/optuna_dashboard_picture.py [--out docs/img/optuna_dashboard.png]

Starts a PostgreSQL server in a temporary folder (Debian's `postgresql`, as the `postgres` user), runs the TransFER
smoke sweep with `--optuna-storage` pointing at it, starts `optuna-dashboard` on the database (127.0.0.1 only) and
photographs the study's page in headless Chromium, then stops both. Needs root (the server runs as `postgres`),
Debian's `chromium` and `postgresql`, and `pip install optuna-dashboard psycopg2-binary`.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rows  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*args) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "docs", "img", "optuna_dashboard.png"), help="the PNG")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    dashboard = shutil.which("optuna-dashboard")
    pg = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not (chromium and dashboard and pg):
        print("optuna_dashboard_picture: error: needs chromium, optuna-dashboard and postgresql", file=sys.stderr)
        return 2
    bindir = os.path.dirname(pg[-1])
    with tempfile.TemporaryDirectory() as work:
        os.chmod(work, 0o777)
        shutil.chown(work, "postgres", "postgres")
        data, port = os.path.join(work, "pg"), free_port()
        as_postgres(f"{bindir}/initdb", "-D", data, "-U", "ferlab", "--auth=trust")
        as_postgres(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(work, "pg.log"), "-w", "-o",
                    f"-p {port} -k {work} -c listen_addresses=127.0.0.1", "start")
        server = None
        try:
            as_postgres(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "ferlab", "optuna")
            url = f"postgresql+psycopg2://ferlab@127.0.0.1:{port}/optuna"
            subprocess.run([sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"), "--smoke",
                            "--storage", os.path.join(work, "ray"), "--results-dir", os.path.join(work, "results"),
                            "--optuna-storage", url], check=True, cwd=REPO)
            web = free_port()
            server = subprocess.Popen([dashboard, url, "--host", "127.0.0.1", "--port", str(web)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(60):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{web}/api/studies", timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            else:
                raise RuntimeError("optuna-dashboard did not answer within 60 s")
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--hide-scrollbars", f"--user-data-dir={os.path.join(work, 'chromium')}",
                            "--virtual-time-budget=15000", "--window-size=1280,900",
                            f"--screenshot={os.path.abspath(args.out)}",
                            f"http://127.0.0.1:{web}/dashboard/studies/1"], check=True, capture_output=True,
                           timeout=180)
        finally:
            if server:
                server.terminate()
            as_postgres(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    print(f"{args.out}: optuna-dashboard on the smoke sweep's study in PostgreSQL, taken at {rows.commit()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
