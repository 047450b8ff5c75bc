# AE-MT's autoencoders, pretrained once per dataset on its unlabeled pool (the `pretrain` DVC stage normally
# makes them; this rule lets a direct Snakemake run, e.g. on SLURM, do it too).


rule pretrain:
    input:
        manifest=f"{DATA_ROOT}/{{dataset}}/manifest.json",
    output:
        encoders=f"{msa_sweep.PRETRAIN_ROOT}/{{dataset}}/encoders.pt",
    log:
        f"{msa_sweep.PRETRAIN_ROOT}/{{dataset}}/pretrain.log",
    params:
        out=lambda w: f"{msa_sweep.PRETRAIN_ROOT}/{w.dataset}",
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
        "msarepro pretrain --dataset {wildcards.dataset} --seed {params.seed} --out {params.out} "
        "--params {params.params_file} > {log} 2>&1"
