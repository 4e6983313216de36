"""What a sweep prints beside the training workers' epoch lines: a line when a trial ends (finished, stopped early by
ASHA, or failed), from a Tune callback in the driver. Tune's own trial tables come back with --verbose."""

from __future__ import annotations

from ray.tune import Callback

from ferlab.train import metrics as M


class Progress(Callback):
    """One line per trial as it ends: its epochs, its best validation accuracy, and whether ASHA stopped it."""

    def __init__(self, epochs: int, search: bool, total: int):
        self.epochs, self.search, self.total = epochs, search, total

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        done = result.get(M.EPOCH, 0)
        best = result.get(M.BEST_VAL_ACC)
        how = "stopped by ASHA" if self.search and done < self.epochs else "finished"
        acc = f", best val_acc {best:.4f}" if isinstance(best, (int, float)) else ""
        ended = sum(t.is_finished() or t is trial for t in trials)
        print(f"trial {trial.trial_id}: {how} after {done} of {self.epochs} epochs{acc} ({ended} of {self.total} "
              f"trials ended)", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id}: failed ({trial.error_file or 'see the Ray logs'})", flush=True)
