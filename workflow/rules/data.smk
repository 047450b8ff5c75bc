# A prepared dataset (download stage). Under `dvc repro` the `download` stage has made it already; this rule
# lets a direct Snakemake run (e.g. on a cluster) start from a fresh clone.


rule download:
    output:
        manifest=f"{DATA_ROOT}/{{dataset}}/manifest.json",
    log:
        f"{DATA_ROOT}/logs/download_{{dataset}}.log",
    params:
        out=lambda w: f"{DATA_ROOT}/{w.dataset}",
        params_file=PARAMS_FILE,
    conda:
        "../envs/msarepro.yaml"
    shell:
        "msarepro data download {wildcards.dataset} --out {params.out} --params {params.params_file} > {log} 2>&1"
