# Config validation and the job list, derived from params.yaml and the method / dataset registries.
import os
import shlex
import sys

from msarepro import sweep as msa_sweep
from msarepro.methods import get_method, load_params, method_of
from msarepro.pretrain.stage import pretrain_plan

# The params file the jobs read: the last --configfile given, else params.yaml.
PARAMS_FILE = os.path.relpath(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"
PARAMS = load_params(PARAMS_FILE)  # raises a ConfigError naming the bad key before any job starts
JOBS = msa_sweep.validate(PARAMS)
DATA_ROOT = PARAMS.data.root
PRETRAIN_SEED = PARAMS.pipeline.pretrain_seed
# Machine settings come from the profile (`config: [gpus=N, jobs_per_gpu=J]`), never from tracked params: each
# job takes one of N x J slots (msarepro.gpuslot), J jobs sharing each GPU.
N_GPUS = int(config.get("gpus", 0))
JOBS_PER_GPU = int(config.get("jobs_per_gpu", 1))
if JOBS_PER_GPU < 1:
    raise ValueError(f"jobs_per_gpu={JOBS_PER_GPU} (Snakemake config, from the profile): expected 1 or more")
GPU_WRAP = (f"{shlex.quote(sys.executable)} -m msarepro.gpuslot --gpus {N_GPUS} --jobs-per-gpu {JOBS_PER_GPU} --"
            if N_GPUS > 0 else "")
# (dataset, pretraining key) -> a run name whose runs load those encoders (methods.pretrain_settings): the
# `pretrain` rule pretrains for it, once per key, however many variants and seeds share the key
PRETRAIN_NAMES = {(d, key): names[0] for d in msa_sweep.pretrain_needs(PARAMS)
                  for key, names in pretrain_plan(PARAMS, d).items()}

wildcard_constraints:
    method="|".join(sorted({j.method for j in JOBS})),  # method and variant names
    dataset="[A-Za-z0-9_.-]+",
    seed=r"\d+",
    settings="[0-9a-f]{12}",  # a pretraining key


def run_dir(job):
    return str(job.run_dir())


def method_config(wildcards):
    """The resolved Config of a job (a Snakemake param, so that editing it re-triggers the job)."""
    return msa_sweep.fingerprint(PARAMS, msa_sweep.Job(wildcards.method, wildcards.dataset, int(wildcards.seed)))["config"]


def train_priority(wildcards):
    """Snakemake's priority of a job: its method's `sweep_priority` (the longest runs start first)."""
    return get_method(method_of(PARAMS, wildcards.method)).sweep_priority


def train_inputs(wildcards):
    inputs = {"manifest": f"{DATA_ROOT}/{wildcards.dataset}/manifest.json"}
    # only runs that load pretrained encoders (AE-MT and its variants): the encoders of their pretraining settings
    encoders = msa_sweep.pretrained_encoders(PARAMS, wildcards.method, wildcards.dataset)
    if encoders is not None:
        inputs["encoders"] = str(encoders)
    return inputs


def pretrain_name(wildcards):
    """The run name the `pretrain` rule pretrains pretrain/{dataset}/{settings}/ for."""
    name = PRETRAIN_NAMES.get((wildcards.dataset, wildcards.settings))
    if name is None:
        known = ", ".join(f"{d}/{k}" for d, k in sorted(PRETRAIN_NAMES)) or "none"
        raise ValueError(f"pretrain/{wildcards.dataset}/{wildcards.settings}: no run of {PARAMS_FILE} loads "
                         f"encoders of that pretraining key on that dataset (known: {known})")
    return name
