"""The tutorial's experiment: the MSAD study's one table, both rows trained alike.

    ferlab run docs/tutorial/ablation_msad.py --smoke          # 2 trials of 1 epoch on SynthFER
    ferlab report results/ablation_msad_smoke
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # msad_study beside this file
# Every process of the run imports the study: a local Ray's workers inherit this environment (on a cluster, pass
# both variables in the job's runtime_env, with the module in its working_dir).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
os.environ["FERLAB_STUDIES"] = "msad_study"

import msad_study  # noqa: E402,F401  (registers the study in this process)

from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(paper="msad_only", name="ablation_msad", kind="ablation")


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, epochs=1, synth_n=420, cpus_per_worker=0.5)
