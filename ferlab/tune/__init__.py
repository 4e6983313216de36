"""The sweep engine: a validated `SweepSpec` (spec) run as Ray Tune trials (sweep), each a Train V2 TorchTrainer
(trial), with the resources it asks for, the resume, the signals, the ablation grid and the confirmation step."""
