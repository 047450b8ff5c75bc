"""Feature extractors on hand-made media (a pure tone, OpenFace CSVs, sentences, images), the per-item cache,
missing-package messages, and the features stage on the embedded raw-media default."""
from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msarepro.features import MissingPackage
from msarepro.features.vision import OPENFACE_COLUMNS

SR = 22050


def _tone(path: Path, hz: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * hz * t)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((y * 32767).astype("<i2").tobytes())
    return y


def test_openface_709_columns_in_chsims_order():
    groups = [("gaze_", 8), ("eye_lmk_", 280), ("pose_", 6), ("x_", 68), ("y_", 68), ("X_", 68), ("Y_", 68),
              ("Z_", 68), ("p_", 40), ("AU", 35)]
    assert len(OPENFACE_COLUMNS) == 709 == sum(n for _, n in groups)
    i = 0
    for prefix, n in groups:
        assert all(c.startswith(prefix) for c in OPENFACE_COLUMNS[i:i + n]), prefix
        i += n
    assert (OPENFACE_COLUMNS[-35], OPENFACE_COLUMNS[-18], OPENFACE_COLUMNS[-1]) == ("AU01_r", "AU01_c", "AU45_c")


def test_openface_csv_keeps_first_face_and_zeros_failed_frames(tmp_path):
    from msarepro.features.vision import OpenFaceCSV

    n = 4
    df = pd.DataFrame({c: np.full(n, 1.5) for c in OPENFACE_COLUMNS})
    meta = pd.DataFrame({"frame": [1, 1, 2, 3], "face_id": [0, 1, 0, 0], "timestamp": [0, 0, 0.033, 0.067],
                         "confidence": [0.9, 0.8, 0.1, 0.95], "success": [1, 1, 0, 1]})
    table = pd.concat([meta, df], axis=1)
    table.loc[3, "AU12_r"] = 4.0
    path = tmp_path / "clip.csv"
    path.write_text(", ".join(table.columns) + "\n" + "\n".join(", ".join(map(str, r)) for r in table.values) + "\n")
    x = OpenFaceCSV()(path)
    assert x.shape == (3, 709)  # face_id 1 dropped
    assert (x[0] == 1.5).all() and (x[1] == 0).all()  # the failed frame is zeros
    assert x[2, OPENFACE_COLUMNS.index("AU12_r")] == 4.0
    table.drop(columns=["AU45_c", "pose_Rx"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="2 columns missing"):
        OpenFaceCSV()(tmp_path / "bad.csv")


def test_librosa_recipe_on_a_pure_tone(tmp_path):
    from msarepro.features.audio import LibrosaAudio

    y = _tone(tmp_path / "a440.wav", 440.0, 0.5)
    x = LibrosaAudio()(tmp_path / "a440.wav")
    assert x.shape == (1 + len(y) // 512, 33) and x.dtype == np.float32  # centred frames, hop 512
    mid = x[3:-3]
    # zero-crossing rate of a sine: 2 f / sr crossings per sample
    assert abs(mid[:, 20].mean() - 2 * 440 / SR) < 0.003
    # chroma: A (pitch class 9 counting from C) dominates
    assert (mid[:, 21:].argmax(1) == 9).all()


def test_opensmile_egemaps_lld(tmp_path):
    from msarepro.features.audio import OpenSmileAudio

    _tone(tmp_path / "t.wav", 220.0, 1.0, sr=16000)
    x = OpenSmileAudio()(tmp_path / "t.wav")
    assert x.shape[1] == 25 and abs(x.shape[0] - 100) <= 6  # 10 ms frames
    assert np.isfinite(x).all()


def test_missing_package_names_what_to_install(monkeypatch):
    from msarepro.features.audio import LibrosaAudio
    from msarepro.features.vision import MediaPipeFaceMesh

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(MissingPackage, match="mediapipe==0.10.21"):
        MediaPipeFaceMesh()
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(MissingPackage, match="pip install 'librosa"):
        LibrosaAudio()


def test_mediapipe_face_mesh_on_a_video_without_a_face(tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    from msarepro.features.vision import MediaPipeFaceMesh

    path = tmp_path / "blank.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for k in range(5):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    x = MediaPipeFaceMesh()(path)
    assert x.shape == (5, 1404) and not x.any()  # every frame decoded, no face found -> zeros


def test_text_encoder_batches_and_caches(tmp_path, monkeypatch):
    from msarepro.features.text import TextEncoder

    enc = TextEncoder("packaged-minilm", max_len=16, batch_size=2)
    items = [("a", "what a wonderful film"), ("b", "awful"), ("c", "it was okay i guess , nothing more")]
    out = enc.extract(items, tmp_path / "cache")
    ids, feats = out["b"]
    assert ids[0] == 101 and ids[-1] == 102 and feats.shape == (len(ids), 384)
    alone = enc.extract([("b", "awful")])["b"][1]  # no padding partner: same features within the true length
    np.testing.assert_allclose(alone, feats, atol=1e-4)
    monkeypatch.setattr(enc, "encode", lambda texts: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = enc.extract(items, tmp_path / "cache")
    np.testing.assert_array_equal(again["c"][1], out["c"][1])


def test_image_backbone_tokens(tmp_path, small_data):
    from transformers import ResNetConfig, ResNetModel, ViTImageProcessor

    from msarepro.data import load_dataset
    from msarepro.features.image import add_image_features

    model_dir = tmp_path / "tiny-resnet"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
                ).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    m, speed = add_image_features(small_data["synth-mvsa"], tmp_path / "mvsa-feat", str(model_dir), batch_size=64)
    assert speed > 0
    ds = load_dataset(tmp_path / "mvsa-feat")
    f = ds.splits["valid"].arrays["image_features"]
    assert f.shape[0] == m.splits["valid"] and f.shape[2] == 16 and f.shape[1] == m.modalities["image_features"]["max_len"]
    np.testing.assert_allclose(f[:, 0], f[:, 1:].mean(1), atol=1e-5)  # pooled token = mean of the grid
    assert ds.splits["valid"].arrays["image"].dtype == np.uint8  # pixels stay for methods that read them


def test_features_stage_on_the_raw_media_default(tmp_path, capsys):
    from msarepro.cli import main
    from msarepro.data import load_dataset
    from msarepro.features.media import write_raw_media

    raw = write_raw_media(tmp_path / "raw-media", seed=0, sizes={"train": 8, "valid": 4, "test": 4})
    assert (raw / "audio" / "train_0000.wav").exists() and (raw / "openface" / "test_0003.csv").exists()
    args = ["data", "extract", str(raw), "--out", str(tmp_path / "synth-media"), "--batch-size", "8"]
    assert main(args) == 0
    assert "throughput (items/s): text:packaged-minilm=" in capsys.readouterr().out
    ds = load_dataset(tmp_path / "synth-media")
    m = ds.manifest
    assert m.splits == {"train": 8, "valid": 4, "test": 4} and m.unimodal_labels and m.metric_family == "sims"
    assert (m.modalities["text"]["dim"], m.modalities["audio"]["dim"], m.modalities["vision"]["dim"]) == (384, 33, 709)
    assert m.modalities["text_ids"]["special_ids"] == {"pad": 0, "cls": 101, "sep": 102, "unk": 100}  # the MiniLM's
    tr = ds.splits["train"]
    # the planted facial signal survives extraction: mean AU12 intensity over true frames follows V
    au12 = OPENFACE_COLUMNS.index("AU12_r")
    lens = tr.arrays["vision_lengths"]
    mean_au12 = np.array([tr.arrays["vision"][i, :lens[i], au12].mean() for i in range(len(lens))])
    v = tr.labels["V"].to_numpy()
    assert np.corrcoef(mean_au12, np.maximum(v, 0))[0, 1] > 0.9
    first = (tmp_path / "synth-media" / "train.safetensors").read_bytes()
    assert main(args) == 0  # second run: every item from the cache, same bytes
    assert (tmp_path / "synth-media" / "train.safetensors").read_bytes() == first
