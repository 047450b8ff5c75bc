"""AE-MT's self-supervised pretraining (Feng et al., Information Sciences 2024, section 3.2).

    autoencoder.py   per-modality autoencoders around methods/modality_encoder.py's encoders, the tampering of
                     eq. 6, the consistency classifier, the losses
    run.py           `msarepro pretrain`: the `pretrain:` params section, the loop, encoders.pt / history.csv /
                     metrics.json
    stage.py         `msarepro pretrain --stage`: the pipeline's pretrain stage (only where an AE-MT run needs
                     it; up-to-date encoders kept)

This package sits above methods/: it builds on the `aemt` method's encoders and settings, and methods/ never
imports it. The encoders it writes are loaded by the `aemt` method (methods/aemt.py) for fine-tuning.
"""
