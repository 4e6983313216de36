"""The TorchTrainer loop with one real worker: per-epoch reports, checkpoints, resume from storage."""

import os

import pytest
import torch

from ferlab.config import TrainConfig, TrialConfig

pytestmark = pytest.mark.slow


def _fit(tiny_synth, storage, epochs):
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from ferlab.data.pipeline import data_config, decoded_splits, training_datasets
    from ferlab.data.shards import open_shards
    from ferlab.train.loop import train_loop_per_worker

    decoded = decoded_splits(open_shards(tiny_synth), 64)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": TrialConfig("transfer_tiny", TrainConfig(epochs=epochs, batch_size=16,
                                                                             torch_threads=1), {"branches": 1})},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        datasets=training_datasets(decoded),
        dataset_config=data_config(workers=1),
        run_config=ray.train.RunConfig(name="loop", storage_path=str(storage)),
    )
    return trainer.fit()


def test_reports_every_epoch_and_resumes(ray_local, tiny_synth, tmp_path):
    result = _fit(tiny_synth, tmp_path, epochs=2)
    hist = result.metrics_dataframe
    assert hist["epoch"].tolist() == [1, 2]
    for key in ("train_loss", "val_acc", "val_mean_class_acc", "best_val_acc", "train_images_per_s"):
        assert hist[key].notna().all(), key
    assert (hist["val_images"] == 20).all()  # the whole validation split, every epoch
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 1 and state["preset"] == "transfer_tiny" and state["model_config"]["branches"] == 1

    # The same run name on the same storage continues from the last checkpoint: only epoch 3 is trained.
    resumed = _fit(tiny_synth, tmp_path, epochs=3)
    again = resumed.metrics_dataframe
    assert again["epoch"].tolist() == [1, 2, 3]
    # epochs 1-2 are the first run's own records (a measured throughput never repeats to the last digit)
    assert again["train_images_per_s"].tolist()[:2] == hist["train_images_per_s"].tolist()


def test_epochs_are_shuffled_differently_and_completely(ray_local, tiny_synth, monkeypatch):
    import numpy as np

    import ferlab.data.pipeline as pipeline
    from ferlab.data.shards import open_shards

    monkeypatch.setattr(pipeline, "BLOCK_ROWS", 32)
    decoded = pipeline.decoded_splits(open_shards(tiny_synth), 64)
    assert decoded["train"].num_blocks() == 5  # 160 rows in 32-row blocks
    train = pipeline.training_datasets(decoded, seed=1)["train"]
    epochs = [np.concatenate([b["label"] for b in train.iter_batches(batch_size=None)]) for _ in range(2)]
    reference = np.concatenate([b["label"] for b in decoded["train"].iter_batches(batch_size=None)])
    for labels in epochs:
        assert sorted(labels.tolist()) == sorted(reference.tolist())  # every row once per epoch
    assert not np.array_equal(epochs[0], epochs[1])  # a different order each epoch

    # The same seed gives the same block order; another seed does not.
    def first_epoch(seed):
        ds = pipeline.training_datasets(decoded, seed=seed)["train"]
        return np.concatenate([b["image"] for b in ds.iter_batches(batch_size=None)])

    a, b, c = first_epoch(5), first_epoch(5), first_epoch(6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_one_worker_reads_its_epochs_itself_and_two_workers_split_them(ray_local, tiny_synth, monkeypatch):
    """data_config: a lone worker gets the whole train set through its own iterator, with no split coordinator (an
    actor per trial, ~2 s before the first batch), in the seeded per-epoch block orders (a restored trial's first
    epoch too); two workers get disjoint shares that together hold every row."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from ray import cloudpickle

    import ferlab.data.pipeline as pipeline
    from ferlab.data.shards import open_shards

    monkeypatch.setattr(pipeline, "BLOCK_ROWS", 32)  # 5 blocks: an order to get right
    decoded = pipeline.decoded_splits(open_shards(tiny_synth), 64, keys=True)

    def keys(ds_or_iterator):  # one epoch's rows, in the order read
        return np.concatenate([b["key"] for b in ds_or_iterator.iter_batches(batch_size=None)]).tolist()

    def epochs(workers, first_epoch=0, n=1):
        datasets = pipeline.training_datasets(decoded, seed=3, first_epoch=first_epoch)
        its = pipeline.data_config(decoded, workers=workers).configure(datasets, world_size=workers,
                                                                       worker_handles=None, worker_node_ids=None)
        its = [cloudpickle.loads(cloudpickle.dumps(it["train"])) for it in its]  # as a worker receives it

        def read(it):
            return [keys(it) for _ in range(n)]

        with ThreadPoolExecutor(workers) as pool:  # a split's shares are read at once, as the workers read them
            return its, list(pool.map(read, its))

    driver = pipeline.training_datasets(decoded, seed=3)["train"]
    expected = [keys(driver) for _ in range(2)]
    its, [alone] = epochs(1, n=2)
    assert alone == expected and expected[0] != expected[1]  # the seeded orders, another one each epoch
    assert type(its[0]).__name__ != "StreamSplitDataIterator"  # Ray's class for a split's share
    assert epochs(1, first_epoch=1)[1][0][0] == expected[1]  # restored at epoch 2: epoch 2's order
    its, [[a], [b]] = epochs(2)
    assert type(its[0]).__name__ == "StreamSplitDataIterator"
    assert a and b and not set(a) & set(b) and sorted(a + b) == sorted(expected[0])


def test_streamed_epochs_are_shuffled_by_file_and_a_restart_gets_its_epochs_order(ray_local, tmp_path):
    """A streamed training split (decoded_splits(stream=True): a set too big for the object store) is read in a
    new file order every epoch, drawn from the data seed; a trial restored at epoch k (first_epoch=k) gets epoch k's
    order, as with the stored splits above."""
    import numpy as np

    import ferlab.data.pipeline as pipeline
    from ferlab.data.shards import open_shards
    from ferlab.data.synth import SynthSpec, make_synthfer

    make_synthfer(tmp_path, n=200, spec=SynthSpec(size=32), seed=4, progress=False, rows_per_file=20)  # 8 train files
    shards = open_shards(str(tmp_path))

    def epochs(seed, first_epoch=0, n=2):
        decoded = pipeline.decoded_splits(shards, 32, splits=("train",), keys=True, stream=True, seed=seed)
        assert type(decoded["train"]).__name__ == "Dataset"  # lazy: not materialized in the store
        train = pipeline.training_datasets(decoded, seed=seed, first_epoch=first_epoch)["train"]
        return [np.concatenate([b["key"] for b in train.iter_batches(batch_size=None)]) for _ in range(n)]

    e0, e1 = epochs(1)
    assert sorted(e0.tolist()) == sorted(e1.tolist()) and len(set(e0.tolist())) == 160  # every row once
    assert not np.array_equal(e0, e1)  # another file order in epoch 2
    assert np.array_equal(epochs(1)[0], e0)  # the same seed: the same order
    assert not np.array_equal(epochs(2)[0], e0)  # another seed: another
    assert np.array_equal(epochs(1, first_epoch=1, n=1)[0], e1)  # restored at epoch 2: epoch 2's order


def test_two_workers_share_every_relabel(ray_local, tiny_synth, tmp_path, monkeypatch):
    """DDP: each rank relabels its part of each epoch, rows move between ranks from epoch to epoch, and after every
    epoch rank 0's table must be the one-process table for the same decisions: the previous epoch's table with the
    epoch's decisions (kept in its checkpoint) applied in order, re-relabels by a lower rank and reverts included.
    Rank 0 also holds relabels of rows it has never met. delta 0 and f constant relabel every row the model gets
    wrong, so rows change label often. (Exchanging cumulative changes, the old merge, fails the replay.)"""
    import glob

    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    import ferlab.data.pipeline as pipeline
    from ferlab.data.pipeline import data_config, decoded_splits, training_datasets
    from ferlab.data.shards import open_shards
    from ferlab.train.loop import train_loop_per_worker

    monkeypatch.setattr(pipeline, "BLOCK_ROWS", 32)  # 5 blocks, dealt to the ranks afresh every epoch
    decoded = decoded_splits(open_shards(tiny_synth), 64, keys=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": TrialConfig("transfer_tiny", TrainConfig(
            epochs=3, batch_size=8, torch_threads=1, relabel="constant", relabel_delta=0.0, relabel_start=1))},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets=training_datasets(decoded), dataset_config=data_config(workers=2),
        run_config=ray.train.RunConfig(name="ddp", storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    folders = sorted(d for d in glob.glob(str(tmp_path / "ddp" / "checkpoint_*")) if os.path.isdir(d))
    states = [torch.load(os.path.join(d, "checkpoint.pt"), weights_only=True) for d in folders]
    assert [s["epoch"] for s in states] == [0, 1, 2]
    replay, last_rank, moved_and_relabeled = {}, {}, 0
    for state in states:
        labels = state["labels"]
        for step, rank, key, label in sorted(labels["epoch_decisions"], key=lambda d: d[:2]):  # as DDP's steps ran
            replay[key] = label
            moved_and_relabeled += last_rank.get(key, rank) != rank
            last_rank[key] = rank
        changed = {k: y for k, y in labels["current"].items() if y != labels["original"][k]}
        assert changed == {k: y for k, y in replay.items() if y != labels["original"][k]}
        assert all(labels["current"][k] == y for k, y in replay.items())
    assert moved_and_relabeled > 0  # some row was relabeled by one rank and later again by the other
    met = len(labels["original"])  # rows rank 0 met, plus those whose relabel it merged
    assert result.metrics["relabeled"] > 0
    assert len(labels["current"]) == met and met > 80  # more than its own half of the 160 training rows
