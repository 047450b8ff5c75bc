"""Robustness evaluation (issue 18): saved checkpoints scored on the test split under test-time perturbations.

    perturb.py   pure functions on a batch dict (random drops in LNLN's protocol, modality removal, Gaussian
                 noise at an SNR, temporal shift, image-text token drops and patch masks) and their registry
    special.py   the special token ids ([PAD], [CLS], [SEP], [UNK]) of the token ids a model reads
    evaluate.py  a run directory's valid-selected checkpoint through the training loop's predict/score path

perturb.py and special.py import only the data floor (so the training loop may use them); evaluate.py sits on the
pipeline floor. No DVC stage of the default pipeline imports this package.
"""
