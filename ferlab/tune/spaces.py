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


# MVT (Li et al. 2021): the mask ratio m of Eq. 2 (Table 1; m = 0 is the model without MGN, Table 3's first column)
# and the relabel threshold function f of Eq. 6 (Table 2; "none" = no relabeling). m is a grid, not a range: every
# value needs its own trained MGN, which trials with the same m then share.
MVT_BOUNDS = {
    "mask_ratio": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    "relabel": ("none", "constant", "linear", "quadratic", "sigmoid"),
}


def mvt_space(trial, fixed: dict | None = None) -> dict:
    """MVT's knobs; those in `fixed` are not searched. Returns the constants (the fixed knobs)."""
    fixed = dict(fixed or {})
    const = {k: fixed[k] for k in MVT_BOUNDS if k in fixed}
    for name, choices in MVT_BOUNDS.items():
        if name not in fixed:
            trial.suggest_categorical(name, list(choices))
    return const


# The paper's RAF-DB setting (m = 15%, sigmoid f); FERPlus's is m = 20%, quadratic.
MVT_PAPER_POINT = {"mask_ratio": 0.15, "relabel": "sigmoid"}


# Each study: its define-by-run space, the knobs it searches, and the paper's point (evaluated first).
STUDIES = {
    "transfer": (transfer_space, tuple(TRANSFER_BOUNDS), TRANSFER_PAPER_POINT),
    "mvt": (mvt_space, tuple(MVT_BOUNDS), MVT_PAPER_POINT),
}
