"""End to end through a real Ray: shards -> Ray Data -> TorchTrainer trials -> Tune + Optuna -> results, on a
two-node cluster started with the `ray` command (as on a cluster) and on a local Ray."""

import collections
import contextlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import EPOCH_LINE, run_experiment_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "sweep_transfer.py")


def _run(args, env=None, timeout=900):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


@pytest.mark.parametrize("args,match", [
    (["--data", "/nonexistent/shards"], "/nonexistent/shards: no such shard folder"),
    (["--p1", "1.2"], r"p1=1.2 is outside its range: \[0, 1\)"),
    (["--p2", "-0.5"], "p2=-0.5 is outside"),
    (["--branches", "-1"], "branches=-1 is outside"),
    (["--stage", "5"], r"stem_stage=5 is outside its range: \{2, 3, 4\}"),
    (["--preset", "transfer_huge"], "unknown model preset 'transfer_huge'"),
    (["--encoder-weights", "/nonexistent/vit.pth"], "/nonexistent/vit.pth: no such weight file"),
    (["--set", "msad=sideways"], "msad='sideways' is outside its range"),
    (["--set", "colour=1"], r"unknown field\(s\) \['colour'\]"),
    (["--set", "lanet_bn"], "--set 'lanet_bn': expected FIELD=VALUE"),
])
def test_bad_input_is_one_line_before_ray(args, match, tmp_path, capsys):
    import re

    code, lines = run_experiment_main("sweep_transfer.py", args + ["--storage", str(tmp_path)], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("sweep_transfer: error:"), lines
    assert re.search(match, lines[0]), lines[0]


@pytest.mark.parametrize("args,match", [
    (["--storage", "/proc/ferlab"], "--storage /proc/ferlab: cannot be created"),
    (["--results-dir", "/proc/ferlab"], "--results-dir /proc/ferlab: cannot be created"),
    (["--set", "train.lrr=0.1"], r"unknown field\(s\) \['train.lrr'\]; train has: "),
    (["--resume", "--name", "never_ran"], "--resume: nothing stored under .*/never_ran to resume; the sweeps stored "
                                          "there are: none"),
    (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: no Ray cluster answers there"),
])
def test_bad_run_options_are_one_line_before_ray(args, match, tmp_path, capsys):
    """The inputs that crashed, hung or surprised (a typo in --resume's --name started a new sweep)."""
    import re

    code, lines = run_experiment_main("sweep_transfer.py", ["--smoke", "--storage", str(tmp_path)] + args, capsys)
    assert code == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


def test_bad_study_section_is_one_line(capsys):
    code, lines = run_experiment_main("sweep_mvt.py", ["--set", "study.nonexistent=1"], capsys)
    assert code == 2 and len(lines) == 1 and "unknown field(s) ['study.nonexistent']; study has: mask_ratio" in \
        lines[0], lines


def test_malformed_data_folder_is_named(tmp_path):
    """As a user meets it: the script in its own process, one line, exit 2, no Ray."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text("{not json")
    r = _run(["--data", str(tmp_path / "shards"), "--storage", str(tmp_path)], timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "manifest.json:1: not valid JSON" in lines[0], r.stderr
    assert "Started a local Ray" not in r.stdout + r.stderr


@contextlib.contextmanager
def _two_nodes(private: bool = False):
    """A head and a second node, each a `ray start` of 2 logical CPUs, with token authentication as on a real
    cluster; yields (address, env: what the sweep's driver needs). With `private`, the second node shares no disk
    with the head (ferlab.emulation). Both are stopped after, and no process of theirs may be left."""
    from ferlab.emulation import LocalCluster

    with LocalCluster(head_cpus=2) as cluster:
        cluster.add_node(cpus=2, private=private)
        yield cluster.address, cluster.env


def _run_mvt(args, timeout=900, env=None):
    """sweep_mvt.py in a subprocess. Kept in this module, where no test holds a Ray of its own: two local Ray
    instances on one machine confuse Train V2's placement-group cleaner, and the second trial never starts."""
    script = os.path.join(REPO, "experiments", "sweep_mvt.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)


@pytest.mark.slow
def test_smoke_sweep_runs_both_stages_on_data_larger_than_the_object_store(tmp_path):
    """Both MVT stages on a data set whose decoded splits (230 MiB at 224x224) are three times the local Ray's object
    store (75 MiB, Ray's minimum): the sweep chooses to stream and decode every epoch, says so, trains every epoch of
    both stages, and never spills an object to disk (the store was never full). Before streaming, the same set was
    materialized into a 75-MiB store by spilling 1 GiB to disk. One trial: the MGN's reuse by a second trial is
    tested by the MVT ablation and test_mvt_stages. A real Prometheus scrapes the local Ray meanwhile and finds each
    epoch's figures of the trial (ferlab.train.telemetry)."""
    import glob
    import re

    from ferlab.emulation import Prometheus

    # Ray's metrics reach its exporter every 10 s by default; every second here, so that a short trial's epochs show
    env = dict(os.environ, RAY_metrics_report_interval_ms="1000")
    with Prometheus(str(tmp_path / "prometheus")) as prom:
        r = _run_mvt(["--smoke", "--samples", "1", "--storage", str(tmp_path / "storage"), "--results-dir",
                      str(tmp_path / "results"), "--num-cpus", "2", "--mask-ratio", "0.1",
                      "--synth-n", "1200", "--object-store-mb", "75",  # 1,200 faces at 224x224: 230 MiB decoded
                      "--set", "model.input_size=224", "--set", "model.patch=32", "--set", "model.patch_stem=linear"],
                     timeout=900, env=env)
        series = {name: prom.query(f"last_over_time(ray_ferlab_{name}[1h])")
                  for name in ("val_acc", "train_loss", "train_images_per_s", "epoch")}
    out = r.stdout + r.stderr
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # a console to read: Ray Train's reports and checkpoint lines and Ray Data's execution plans stay in the log
    # files (before: about 130 lines for this run, one TrainingReport line of over 1,300 characters per epoch)
    lines = out.splitlines()
    longest = max(lines, key=len)  # said whole when too long: a Ray line whose length depends on timing was once
    assert len(lines) < 100 and len(longest) <= 300, (len(lines), longest, out[-3000:])  # 559 characters, unseen
    assert "TrainingReport(" not in out and "Execution plan of Dataset" not in out
    # nor Tune's experiment box, results path and TensorBoard command, or Optuna's "A new study created" line
    assert not re.search(r"Configuration for experiment|View detailed results|tensorboard --logdir|new study created",
                         out), out[-3000:]
    assert re.search(r"epoch 2: val_acc [\d.]+ \(epoch 2 of 2\), \d+ images/s, trial \w+, ", out), out[-3000:]
    # ferlab.tune.progress: a line when the trial ends
    assert re.search(r"trial \w+: finished after 2 of 2 epochs, best val_acc [\d.]+ \(1 of 1 trials ended\)", out), \
        out[-3000:]
    assert re.search(r"data: 230 MiB decoded at 224x224, object store 75 MiB: streamed from the shards", out), out
    session = os.path.realpath("/tmp/ray/session_latest")  # the local Ray the sweep started (never two at once)
    assert not glob.glob(os.path.join(session, "ray_spilled_objects*")), "objects were spilled to disk"
    df = pd.read_csv(tmp_path / "results" / "trials.csv")
    assert len(df) == 1 and (df["status"] == "ok").all() and (df["mask_ratio"] == 0.1).all()
    assert (df["epochs"] == 2).all()  # trained to the end
    assert set(df["relabel"]) <= {"none", "constant", "linear", "quadratic", "sigmoid"}
    assert "sigmoid" in set(df["relabel"])  # the paper's point first (its m is fixed here)
    assert df["best_val_acc"].between(0, 1).all()
    relabeling = df[df["relabel"] != "none"]
    assert relabeling["relabeled"].notna().all() and "relabel_precision" in df
    mgns = os.listdir(tmp_path / "storage" / "mgn")
    assert len(mgns) == 1 and mgns[0].startswith("mvt_tiny-") and "-m0.100-" in mgns[0]
    # the trial's figures as Prometheus stored them, tagged with the sweep and the trial, each one of its epochs'
    hist = pd.read_csv(tmp_path / "results" / "history.csv")
    for name in series:  # exported as ray_ferlab_<the history's column>
        (one,) = series[name] or [None]
        assert one is not None, (name, series)
        assert one["metric"]["sweep"] == "sweep_mvt_smoke" and one["metric"]["trial"] == df["trial"][0], one
        assert min(abs(float(one["value"][1]) - v) for v in hist[name]) < 1e-3 * max(1.0, hist[name].abs().max()), \
            (name, one, hist[name].tolist())


def _on_each_node(address, env, code: str) -> dict:
    """{node id: what `code` (a Python expression) evaluates to on that node}, from a Ray task pinned to each."""
    script = ("import json, ray\n"
              "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On\n"
              f"ray.init(address={address!r}, logging_level='ERROR')\n"
              f"f = ray.remote(num_cpus=0)(lambda: {code})\n"
              "ids = [n['NodeID'] for n in ray.nodes() if n['Alive']]\n"
              "print(json.dumps(dict(zip(ids, ray.get([f.options(scheduling_strategy=On(i, soft=False)).remote() "
              "for i in ids])))))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sweeps_of_both_studies_on_nodes_that_share_no_disk(tmp_path, s3_server):
    """The cluster ferlab is for, emulated: two nodes that share no disk (the second in a mount namespace of its
    own), token authentication as on a real cluster, data, weights and storage in a bucket of a real S3-compatible
    server. A TransFER and an MVT smoke sweep of two trials each, every trial's worker asking for 1.5 of a node's 2
    CPUs, so the two trials of a sweep run one per node or not at all (no deadlock between the trial drivers, the
    training workers and Ray Data), and the results say which node ran which. The shards are written to the bucket
    (`ferlab synth --out s3://...`) and read from it on both nodes; MVT's MGN is trained once under the bucket's lock,
    by whichever trial gets there first (after the stage's warm start), and the trial on the other node reuses it
    from the bucket; every checkpoint,
    and the tables' histories, are read from the bucket; nothing is written to a local folder named after the URI
    (before, the MGN stage made ./s3:/...).

    The TransFER sweep (one sweep for all of this: Ray's fixed cost per run is most of CI's time) also takes a
    --set and an encoder weight file from the bucket to every worker, tests every trial on an 8-class folder set
    prepared into the bucket (classes mapped by name, the contempt faces excluded and counted, a column per trial and
    a cross-data-set table in the report), evaluates the paper's point first, and confirms its best setting with a
    fresh seed (--confirm); then --resume restores it from the bucket."""
    import io
    import uuid

    import torch
    from timm.models.vision_transformer import VisionTransformer

    import fixtures_layouts as fx

    from ferlab import storage
    from ferlab.data.labels import BASIC8

    prefix = storage.join(s3_server, uuid.uuid4().hex[:8])
    data, store, other = (storage.join(prefix, n) for n in ("shards", "runs", "other"))
    synth = subprocess.run([sys.executable, "-m", "ferlab.cli", "synth", "--out", data, "--n", "300", "--size", "64"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert synth.returncode == 0, synth.stderr[-2000:]
    folder = tmp_path / "other"
    for c, cls in enumerate(BASIC8):
        for i in range(3):
            fx.save(os.path.join(folder, "test", cls, f"{i}.png"), fx.face(10 * c + i, 64))
    prep = subprocess.run([sys.executable, "-m", "ferlab.cli", "prepare", "folder", "--root", str(folder), "--out",
                           other, "--size", "64", "--num-cpus", "2"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    vit = storage.join(prefix, "vit.pth")  # a timm-named encoder file at transfer_tiny's sizes, for every trial
    buf = io.BytesIO()
    torch.save(VisionTransformer(embed_dim=128, depth=2, num_heads=4, mlp_ratio=2.0, qkv_bias=False).state_dict(), buf)
    storage.write_bytes(vit, buf.getvalue())
    with _two_nodes(private=True) as (address, env):
        seen = _on_each_node(address, env, f"__import__('os').path.isdir({str(tmp_path)!r})")
        assert sorted(seen.values()) == [False, True], seen  # the head's folder does not exist on the other node
        common = ["--address", address, "--smoke", "--samples", "2", "--data", data, "--storage", store,
                  "--cpus-per-worker", "1.5", "--grace-period", "2"]  # ASHA stops nobody
        transfer_args = common + ["--set", "lanet_bn=True", "--encoder-weights", vit, "--eval-data", f"other={other}"]
        transfer = _run(transfer_args + ["--results-dir", str(tmp_path / "transfer"), "--confirm", "1",
                                         "--confirm-seeds", "1"], env=env)
        mvt = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "sweep_mvt.py"), *common,
                              "--results-dir", str(tmp_path / "mvt"), "--mask-ratio", "0.1",
                              "--set", "study.mgn_warm_start=1"],
                             capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
        # --resume restores the finished sweep from the bucket instead of training again (compared below)
        again = _run(transfer_args + ["--results-dir", str(tmp_path / "again"), "--resume"], env=env, timeout=600)
    for r in (transfer, mvt, again):
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = mvt.stdout + mvt.stderr
    assert out.count(": training (1 epochs, m=0.1, after 1 epochs of the discriminator on full images)") == 1 and \
        out.count(": reusing s3://") == 1, out[-3000:]
    assert "the warm start's classifier reached" in out  # the stage's warm start ran in its Ray Train job
    for name, experiment in (("transfer", "sweep_transfer_smoke"), ("mvt", "sweep_mvt_smoke")):
        df = pd.read_csv(tmp_path / name / "trials.csv")
        assert len(df) == 2 and (df["status"] == "ok").all() and (df["epochs"] == 2).all(), df
        assert sorted(df["node_id"]) == sorted(seen), (name, df["node_id"].tolist())  # one trial per node
        runs = storage.join(store, experiment, "train_runs")
        assert all(p.startswith(runs + "/") for p in df["checkpoint_path"])
        assert sorted(n for n, _ in storage.listdir(runs)) == sorted(df["trial"])
        run = json.loads((tmp_path / name / "run.json").read_text())
        assert run["tune_experiment"] == storage.join(store, experiment) and run["spec"]["data"] == data
    (mgn,) = storage.listdir(storage.join(store, "mgn"))
    assert storage.is_file(storage.join(store, "mgn", mgn[0], "mgn.pt"))
    assert pd.read_csv(tmp_path / "mvt" / "trials.csv")["mgn_nuisance_precision"].notna().all()
    assert not os.path.exists(os.path.join(REPO, "s3:")) and not os.path.exists(tmp_path / "s3:")
    _check_transfer_sweep(tmp_path, transfer, again, store, vit)


def _check_transfer_sweep(tmp_path, r, again, store, vit):
    """The TransFER sweep of the test above: console, results, checkpoints, confirmation, cross-data-set."""
    import torch

    from ferlab import storage
    from ferlab.models import load_trained

    results = tmp_path / "transfer"
    # each worker's epoch lines reach the console once (Train V2's print replacement printed them twice)
    lines = collections.Counter(EPOCH_LINE.findall(r.stdout + r.stderr))
    assert len(lines) == 6 and set(lines.values()) == {1}, lines  # 3 trials (2 + 1 confirmation) x 2 epochs
    df = pd.read_csv(results / "trials.csv")
    assert set(df.columns) >= {"branches", "p1", "p2", "stem_stage", "best_val_acc", "epochs", "last_val_acc"}
    assert df["best_val_acc"].between(0, 1).all() and (df["best_val_acc"] >= df["last_val_acc"]).all()
    paper = df[(df["branches"] == 2) & (df["p1"] == 0.6) & (df["p2"] == 0.3) & (df["stem_stage"] == 3)]
    assert len(paper) == 1
    assert (results / "trials.md").read_text().count("\n|") >= 3
    assert "best:" in r.stdout and str(results) in r.stdout
    # the options reached the workers; the state dict holds the weights
    ckpt = df["checkpoint_path"].iloc[0]
    ckpt = ckpt if ckpt.endswith(".pt") else storage.join(ckpt, "checkpoint.pt")
    state = torch.load(storage.open_binary(ckpt), weights_only=True)
    assert state["model_config"]["lanet_bn"] is True and state["pretrained"] == {"encoder": vit}
    assert "encoder_weights" not in state["model_config"]
    local = tmp_path / "checkpoint.pt"
    local.write_bytes(storage.read_bytes(ckpt))
    assert load_trained(str(local)).cfg.lanet_bn
    # observability: TensorBoard logs per trial in the bucket, per-epoch history for the report; the Optuna study
    # has no SQLite file on an object store (it is saved with the searcher's state: test_faults reads the local one)
    run = json.loads((results / "run.json").read_text())
    assert run["optuna_db"] is None
    # the experiment file's config and the run options, saved whole beside the resolved spec
    assert run["experiment"]["name"] == "sweep_transfer" and run["experiment"]["kind"] == "search"
    assert run["run_options"]["confirm"] == 1 and run["run_options"]["results_dir"] == str(results)
    experiment = storage.join(store, "sweep_transfer_smoke")
    drivers = [n for n, is_dir in storage.listdir(experiment) if is_dir and n.startswith("trial_driver_")]
    assert len(drivers) == 2 and all(any(f.startswith("events.out.tfevents.") for f, _ in
                                         storage.listdir(storage.join(experiment, d))) for d in drivers)
    hist = pd.read_csv(results / "history.csv")
    assert len(hist) == 4 and set(hist["trial"].astype(str)) == set(df["trial"].astype(str))
    # --confirm: the search's best setting trained again with a fresh seed, its own experiment and table
    confirm = pd.read_csv(results / "confirm.csv")
    assert len(confirm) == 1 and confirm["n"].tolist() == [1] and confirm["seeds"].astype(str).tolist() == ["1"]
    assert storage.is_dir(storage.join(store, "sweep_transfer_smoke_confirm"))
    assert (results / "confirm" / "trials.csv").is_file()
    assert "confirmation: the search's top 1 settings re-trained with fresh seeds" in r.stdout
    # --eval-data: the cross-data-set test split, per trial and in the report
    assert "cross-data-set other: 21 faces of its test split; excluded (no such training class): {'contempt': 3}" \
        in r.stdout
    assert df["x_other_acc_at_best"].between(0, 1).all()
    assert run["cross_data"]["other"]["excluded"] == {"contempt": 3}
    rep = subprocess.run([sys.executable, "-m", "ferlab.cli", "report", str(results), "--no-plots"],
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0 and "Cross-data-set evaluation" in rep.stdout and "other acc %" in rep.stdout
    # the optimisation history of this real sweep (Tune's hex ids) follows the order its trials started
    started = pd.read_csv(results / "history.csv").groupby("trial")["trial_start"].min().sort_values()
    opt = pd.read_csv(results / "report" / "optimisation_history.csv")
    assert list(opt["trial"]) == [t for t in started.index if t in set(opt["trial"])]
    assert list(opt["order_started"]) == list(range(1, len(opt) + 1))
    # --resume, run above on the same cluster: the same trials and numbers
    assert "Restoring the run" in again.stdout + again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / "trials.csv").sort_values("trial", ignore_index=True),
                                  df.sort_values("trial", ignore_index=True))
