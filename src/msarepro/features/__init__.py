"""Feature extraction from raw media, for users with their own videos or raw datasets.

Extractors (each batched or per item, resumable through a per-item cache, with progress bars):
    text       any Hugging Face encoder by name or local path; "packaged-minilm" (offline default)   text.py
    librosa    CH-SIMS's audio recipe: 22050 Hz, 20 MFCC (htk) + zero-crossing rate + chroma CQT = 33-d   audio.py
    opensmile  openSMILE eGeMAPSv02 low-level descriptors (25-d per 10 ms frame)                  audio.py
    openface   OpenFace 2 FeatureExtraction CSV -> 709-d per frame (CH-SIMS's recipe)              vision.py
    mediapipe  MediaPipe face-mesh landmarks from video, 468 x 3 = 1404-d per frame (optional)     vision.py
    image      a Hugging Face image backbone by name -> token features per image                  image.py
`pipeline.extract` runs them over a raw-media folder (layout in media.py) and writes a canonical dataset.
An extractor whose package is absent raises MissingPackage saying what to install.
"""


class MissingPackage(ImportError):
    """An optional extraction package is not installed; the message says which and how to install it."""


def require(module: str, install: str, extractor: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackage(f"the {extractor} extractor needs the Python package {module!r}, which is not "
                             f"installed: {install}") from None
