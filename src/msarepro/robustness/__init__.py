"""Test-time and training-time perturbations of a batch (docs/robustness.md).

    perturb.py   pure functions on a batch dict (random drops in LNLN's protocol, modality removal, Gaussian
                 noise at an SNR, temporal shift, image-text token drops and patch masks) and their registry
    special.py   the special token ids ([PAD], [CLS], [SEP], [UNK]) of the token ids a model reads
    training.py  LNLN's training-time drops (`train_missing_rate`), used by the training loop

This package imports only the data floor, so the training loop can use it; scoring saved runs under these
perturbations (and the `robustness` DVC stage) is msarepro.robustness_eval, above the loop.
"""
