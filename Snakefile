# The training grid of the `sweep` stage: one job per (method, dataset, seed), each calling `msarepro train`,
# the same entry point as the single-run `train` stage. DVC decides when this runs (`dvc repro sweep`, through
# `msarepro sweep`, which first deletes stale runs); Snakemake only schedules the missing jobs.
#
#   snakemake -n                                  list the grid's pending jobs
#   snakemake --profile profiles/local-cpu        CPU slots (default of `msarepro sweep`)
#   snakemake --profile profiles/local-gpu        GPU slots (CUDA_VISIBLE_DEVICES): gpus and jobs_per_gpu set in the profile
#   snakemake --profile profiles/slurm            SLURM through snakemake-executor-plugin-slurm
#
# params.yaml is the config file (another with --configfile FILE: the jobs then read FILE). It is validated by
# msarepro's typed config before any job starts.

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        [f"{run_dir(j)}/metrics.json" for j in JOBS],
    default_target: True
