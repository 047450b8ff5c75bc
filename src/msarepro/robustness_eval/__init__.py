"""Robustness evaluation (docs/robustness.md): saved checkpoints scored on the test split under the test-time
perturbations of msarepro.robustness.

    evaluate.py  a run directory's valid-selected checkpoint through the training loop's predict/score path, under
                 each perturbation: the long CSV (`msarepro robustness RUN_DIR...`)
    stage.py     the `robustness` DVC stage: the sweep's runs with params.yaml's `robustness:` settings

It sits on the pipeline floor, above the training loop it rebuilds runs with; the perturbations themselves
(msarepro.robustness) sit below the loop, which uses them for training-time drops.
"""
