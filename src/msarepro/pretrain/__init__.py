"""AE-MT's self-supervised pretraining (Feng et al., Information Sciences 2024, section 3.2).

    autoencoder.py   per-modality autoencoders, the tampering of eq. 6, the consistency classifier, the losses
    run.py           `msarepro pretrain`: the `pretrain:` params section, the loop, encoders.pt / history.csv /
                     metrics.json

The encoders it writes are loaded by the `aemt` method (methods/aemt.py) for fine-tuning.
"""
