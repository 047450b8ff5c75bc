"""Vision features per frame.

OpenFace 2 (CH-SIMS's recipe, 709-d): the CSV that OpenFace's FeatureExtraction writes per video (one row per
frame and face; separators ", "). The features are every column after the five bookkeeping columns, in this order:
    gaze (6) + gaze angles (2) + 2-D eye landmarks (112) + 3-D eye landmarks (168) + head pose (6)
    + 2-D face landmarks (136) + 3-D face landmarks (204) + rigid PDM (6) + non-rigid PDM (34)
    + AU intensities (17) + AU presences (18) = 709.
Frames where tracking failed (success = 0) are set to zeros; with several faces, face_id 0 (the first) is kept.
MediaPipe face mesh (optional): 468 landmarks x (x, y, z) = 1404-d per video frame from an mp4/avi (decoded by
OpenCV), zeros on frames without a face. Needs `mediapipe==0.10.21` (its wheel ships the face-mesh model;
install with --no-deps) and `opencv-contrib-python<5`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import require

OPENFACE_META = ["frame", "face_id", "timestamp", "confidence", "success"]
AU_R = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
AU_C = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45"]


def openface_feature_columns() -> list[str]:
    cols = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    cols += [f"eye_lmk_{a}_{i}" for a in ("x", "y", "X", "Y", "Z") for i in range(56)]
    cols += [f"pose_{a}" for a in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")]
    cols += [f"{a}_{i}" for a in ("x", "y", "X", "Y", "Z") for i in range(68)]
    cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    cols += [f"AU{a}_r" for a in AU_R] + [f"AU{a}_c" for a in AU_C]
    return cols


OPENFACE_COLUMNS = openface_feature_columns()
assert len(OPENFACE_COLUMNS) == 709


class OpenFaceCSV:
    name = "openface"
    dim = 709

    def config(self) -> dict:
        return {"extractor": self.name, "columns": len(OPENFACE_COLUMNS), "failed_frames": "zeros", "face_id": 0}

    def __call__(self, path: str | Path) -> np.ndarray:
        import pandas as pd

        try:
            df = pd.read_csv(path, skipinitialspace=True)
        except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise ValueError(f"{path}: cannot read an OpenFace CSV ({e})") from None
        df.columns = [c.strip() for c in df.columns]
        missing = [c for c in OPENFACE_META[1:] + OPENFACE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: not an OpenFace 2 FeatureExtraction CSV: {len(missing)} columns missing, "
                             f"e.g. {missing[:5]} (run FeatureExtraction with its default outputs)")
        if df["face_id"].nunique() > 1:
            df = df[df["face_id"] == df["face_id"].min()]
        x = df[OPENFACE_COLUMNS].to_numpy(dtype=np.float32)
        x[df["success"].to_numpy() == 0] = 0.0
        return x if len(x) else np.zeros((1, self.dim), np.float32)


class MediaPipeFaceMesh:
    name = "mediapipe"
    dim = 468 * 3

    def __init__(self, stride: int = 1):
        hint = "pip install --no-deps 'mediapipe==0.10.21' && pip install 'opencv-contrib-python<5' absl-py flatbuffers 'protobuf<5'"
        self.mp = require("mediapipe", hint, "MediaPipe face-mesh")
        self.cv2 = require("cv2", "pip install 'opencv-contrib-python<5'", "MediaPipe face-mesh")
        self.stride = stride

    def config(self) -> dict:
        return {"extractor": self.name, "landmarks": 468, "stride": self.stride, "version": self.mp.__version__}

    def __call__(self, path: str | Path) -> np.ndarray:
        cap = self.cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        rows = []
        with self.mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                  refine_landmarks=False) as mesh:
            k = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if k % self.stride == 0:
                    res = mesh.process(self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB))
                    if res.multi_face_landmarks:
                        lm = res.multi_face_landmarks[0].landmark
                        rows.append(np.array([[p.x, p.y, p.z] for p in lm], np.float32).reshape(-1)[:self.dim])
                    else:
                        rows.append(np.zeros(self.dim, np.float32))
                k += 1
        cap.release()
        if not rows:
            raise ValueError(f"{path}: no frame could be decoded")
        return np.stack(rows)


VISION_EXTRACTORS = {"openface": OpenFaceCSV, "mediapipe": MediaPipeFaceMesh}
