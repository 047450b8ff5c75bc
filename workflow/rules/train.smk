# One training run: `msarepro train` for (method, dataset, seed), its log beside its outputs.


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics="runs/sweep/{method}/{dataset}/{seed}/metrics.json",
    log:
        "runs/sweep/{method}/{dataset}/{seed}/train.log",
    params:
        out=lambda w: f"runs/sweep/{w.method}/{w.dataset}/{w.seed}",
        params_file=PARAMS_FILE,
        config=method_config,
        gpu_wrap=GPU_WRAP,
    threads: 1
    priority: train_priority
    conda:
        "../envs/msarepro.yaml"
    resources:
        gpu=1 if N_GPUS > 0 else 0,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} MSAREPRO_PROGRESS=0 {params.gpu_wrap} "
        "msarepro train --model {wildcards.method} --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--out {params.out} --params {params.params_file} --no-progress > {log} 2>&1"
