"""Search spaces, as Optuna define-by-run functions (OptunaSearch calls them once per trial).

Define-by-run because the spaces are conditional: MAD's p1 means nothing without local CNNs, so it is sampled only
when B > 0 (and fixed to 0 otherwise), which keeps TPE from learning noise about an unused knob.
"""

from __future__ import annotations

TRANSFER_BOUNDS = {
    "branches": (0, 8),  # B, Fig. 3
    "p1": (0.0, 0.9),  # MAD drop probability, Table 3
    "p2": (0.0, 0.9),  # MSAD drop probability, Table 3
    "stem_stage": (2, 3, 4),  # IR-50 cut, Table 2
}


def transfer_space(trial, fixed: dict | None = None) -> dict:
    """TransFER's knobs; those in `fixed` are not searched. Returns the constants Optuna did not sample (fixed
    knobs, and p1 = 0 when B = 0), which OptunaSearch's define-by-run adds to the trial config."""
    fixed = dict(fixed or {})
    const = {}

    def pick(name, suggest):
        if name in fixed:
            const[name] = fixed[name]
            return fixed[name]
        return suggest()

    branches = pick("branches", lambda: trial.suggest_int("branches", *TRANSFER_BOUNDS["branches"]))
    pick("p2", lambda: trial.suggest_float("p2", *TRANSFER_BOUNDS["p2"]))
    pick("stem_stage", lambda: trial.suggest_categorical("stem_stage", list(TRANSFER_BOUNDS["stem_stage"])))
    if branches > 0:
        pick("p1", lambda: trial.suggest_float("p1", *TRANSFER_BOUNDS["p1"]))
    else:
        const["p1"] = 0.0
    return const


# The paper's setting, evaluated first so every sweep has the published configuration as a reference point.
TRANSFER_PAPER_POINT = {"branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3}
