"""The report page's picture for the docs (docs/img/report.png): `ferlab report` on a results folder, photographed in
headless Chromium at the site's width, the top of the page.

    python benchmarks/report_picture.py results/real_faces_transfer [--out docs/img/report.png]

The caption beside the picture in the docs names the results folder's command and the commit it was taken at (this
script prints both). Needs Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rows  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", help="a folder an experiment wrote (trials.csv, history.csv, run.json)")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "img", "report.png"), help="the PNG to write")
    p.add_argument("--height", type=int, default=1500, help="how much of the page, in pixels (default 1500)")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("report_picture: error: no chromium on PATH (Debian's `chromium` package)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        page = os.path.join(work, "report")
        subprocess.run([sys.executable, "-m", "ferlab.cli", "report", args.results_dir, "--out", page], check=True,
                       capture_output=True, cwd=REPO)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={os.path.join(work, 'chromium')}", "--allow-file-access-from-files",
                        "--virtual-time-budget=5000", f"--window-size=1280,{args.height}",
                        f"--screenshot={os.path.abspath(args.out)}", f"file://{os.path.join(page, 'index.html')}"],
                       capture_output=True, text=True, timeout=180, check=True)
    with open(os.path.join(args.results_dir, "run.json")) as f:
        run = json.load(f)
    print(f"{args.out}: the report of {args.results_dir} ({run['spec']['name']}, trained at "
          f"{(run.get('git_commit') or '?')[:7]}), photographed at {rows.commit()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
