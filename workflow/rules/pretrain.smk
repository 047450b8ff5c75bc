# AE-MT's autoencoders, pretrained once per dataset and pretraining key on the dataset's pool (the `pretrain` DVC
# stage normally makes them; this rule lets a direct Snakemake run, e.g. on SLURM, do it too). The key
# (methods.pretrain_settings) names the pretraining settings: AE-MT and the variants that pretrain alike share
# one job; a variant with its own (Table 5: w/o MCD, w/o TR) gets its own.


rule pretrain:
    input:
        manifest=f"{DATA_ROOT}/{{dataset}}/manifest.json",
    output:
        encoders=f"{msa_sweep.PRETRAIN_ROOT}/{{dataset}}/{{settings}}/encoders.pt",
    log:
        f"{msa_sweep.PRETRAIN_ROOT}/{{dataset}}/{{settings}}/pretrain.log",
    params:
        out=lambda w: f"{msa_sweep.PRETRAIN_ROOT}/{w.dataset}/{w.settings}",
        name=pretrain_name,
        params_file=PARAMS_FILE,
        seed=PRETRAIN_SEED,
        gpu_wrap=GPU_WRAP,
    threads: 1
    conda:
        "../envs/msarepro.yaml"
    resources:
        gpu=1 if N_GPUS > 0 else 0,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} MSAREPRO_PROGRESS=0 {params.gpu_wrap} "
        "msarepro pretrain --dataset {wildcards.dataset} --model {params.name} --seed {params.seed} "
        "--out {params.out} --params {params.params_file} --no-progress > {log} 2>&1"
