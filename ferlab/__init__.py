"""ferlab: reproduce and extend the ablation studies of TransFER and MVT with Ray Tune + Optuna."""

__version__ = "0.1.0"
