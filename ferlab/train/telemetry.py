"""Each epoch's figures as Ray metrics, per sweep and trial, for the dashboards a cluster already has.

Rank 0 of every trial sets a gauge per figure (`ray.util.metrics`, Ray's own API for application metrics); Ray's
metrics agent on each node exports them in Prometheus's format beside Ray's own, prefixed `ray_`:
`ray_ferlab_val_acc{sweep="sweep_transfer", trial="0877f210"}`. Prometheus scraping Ray's endpoints (the targets
Ray lists in /tmp/ray/prom_metrics_service_discovery.json) charts a running sweep, and Grafana beside the Ray
dashboard shows them. A gauge holds the latest epoch's value while its worker lives.
"""

from __future__ import annotations

from ferlab.train import metrics as M

# Figure (the metric's key in a trial's history) -> the exported name (before Ray's `ray_` prefix)
GAUGES = {
    M.VAL_ACC: ("ferlab_val_acc", "validation accuracy of the trial's latest epoch"),
    M.TRAIN_LOSS: ("ferlab_train_loss", "mean training loss of the trial's latest epoch"),
    M.IMAGES_PER_S: ("ferlab_train_images_per_s", "training images per second of the trial's latest epoch"),
    M.EPOCH: ("ferlab_epoch", "the trial's latest finished epoch"),
}
TAGS = ("sweep", "trial")


class EpochGauges:
    """`EpochGauges({"sweep": name, "trial": trial_id}).set(metrics)` after each epoch, on rank 0."""

    def __init__(self, tags: dict):
        from ray.util.metrics import Gauge

        self.tags = {k: str(tags[k]) for k in TAGS}
        self.gauges = {key: Gauge(name, description=what, tag_keys=TAGS) for key, (name, what) in GAUGES.items()}

    def set(self, metrics: dict) -> None:
        for key, gauge in self.gauges.items():
            if metrics.get(key) is not None:
                gauge.set(float(metrics[key]), tags=self.tags)
