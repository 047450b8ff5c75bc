"""The download stage against a local HTTP server: resume after a cut connection, retries, SHA-256 checks,
truncated files, atomic placement, the Hugging Face mirror (files and joined parts), the cache (a second run
does nothing), and the placement message for hand-placed and offline sources."""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest

from .realdata_fixtures import FileServer, make_mmsa

from msarepro.data.fetch import DownloadError, Fetcher
from msarepro.data.placement import PlacementRequired, placement_message
from msarepro.prepare import download
from msarepro.data.registry import DATASETS, DatasetInfo, RemoteFile

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture
def fetcher():
    return Fetcher(retries=3, backoff=0.0, chunk=64 * 1024, progress=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_resume_after_cut_connection(server, tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr("msarepro.data.fetch.time.sleep", slept.append)
    server.files["/f.bin"] = PAYLOAD
    server.cut["/f.bin"] = 2  # two responses die half-way
    fetcher = Fetcher(retries=3, backoff=0.5, chunk=64 * 1024, progress=False)
    digest = fetcher.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", SHA)
    assert slept == [0.5, 1.0]  # exponential backoff between attempts
    assert digest == SHA and (tmp_path / "f.bin").read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests if p == "/f.bin"]
    assert ranges == [None, f"bytes={len(PAYLOAD) // 2}-", f"bytes={len(PAYLOAD) * 3 // 4}-"]
    assert _leftovers(tmp_path) == ["f.bin"]


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut["/f.bin"] = 5
    with pytest.raises(DownloadError, match="the next run resumes"):
        Fetcher(retries=0, backoff=0, progress=False).fetch(f"{server.url}/f.bin", tmp_path / "f.bin", SHA)
    assert not (tmp_path / "f.bin").exists()  # nothing half-placed
    assert (tmp_path / "f.bin.part").stat().st_size == len(PAYLOAD) // 2
    server.cut["/f.bin"] = 0
    Fetcher(retries=0, progress=False).fetch(f"{server.url}/f.bin", tmp_path / "f.bin", SHA)
    assert server.requests[-1] == ("/f.bin", f"bytes={len(PAYLOAD) // 2}-")
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_wrong_hash_is_rejected_and_nothing_is_placed(server, fetcher, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="f.bin: SHA-256 .* does not match") as e:
        fetcher.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", "0" * 64)
    assert SHA in str(e.value) and "0" * 64 in str(e.value)
    assert _leftovers(tmp_path) == []  # neither the file nor its .part


def test_truncated_file_is_rejected(server, fetcher, tmp_path):
    server.files["/f.bin"] = PAYLOAD[:1000]  # the server itself holds a truncated copy
    with pytest.raises(DownloadError, match="truncated"):
        fetcher.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", SHA, size=len(PAYLOAD))
    assert not (tmp_path / "f.bin").exists()


def test_http_404_says_to_place_by_hand(server, fetcher, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetcher.fetch(f"{server.url}/missing.bin", tmp_path / "m.bin")


# ----------------------------------------------------------------------------------- registry-driven stage


def _register(monkeypatch, name: str, files, source="hf") -> DatasetInfo:
    info = DatasetInfo(name, "trimodal", "mosi", source, "test dataset",
                       extra={"importer": "mmsa", "files": tuple(files)})
    monkeypatch.setitem(DATASETS, name, info)
    return info


def test_hf_mirror_download_imports_and_second_run_does_nothing(server, fetcher, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    blob = pickle.dumps(make_mmsa(), protocol=4)
    server.files["/datasets/org/mirror/resolve/main/tiny.pkl"] = blob
    _register(monkeypatch, "tiny-mosi", [RemoteFile("tiny.pkl", hashlib.sha256(blob).hexdigest(),
                                                    hf_repo="org/mirror", hf_path="tiny.pkl")])
    out = tmp_path / "data" / "tiny-mosi"
    msg = download("tiny-mosi", out, fetcher=fetcher, endpoint=server.url)
    assert msg.startswith("imported tiny-mosi") and (out / "manifest.json").exists()
    assert (tmp_path / "data" / "raw" / "tiny-mosi" / "tiny.pkl").read_bytes() == blob
    n = len(server.requests)
    assert "up to date" in download("tiny-mosi", out, fetcher=fetcher, endpoint=server.url)
    assert len(server.requests) == n  # the cache: no request, no re-import


def test_hand_placed_file_with_wrong_hash_is_named_not_used(tmp_path, monkeypatch, fetcher):
    _register(monkeypatch, "placed", [RemoteFile("p.pkl", "ab" * 32, manual="the authors' site")], "manual")
    raw = tmp_path / "raw" / "placed"
    raw.mkdir(parents=True)
    (raw / "p.pkl").write_bytes(b"not the file")
    with pytest.raises(PlacementRequired) as e:
        download("placed", tmp_path / "placed", fetcher=fetcher)
    text = str(e.value)
    assert f"{raw / 'p.pkl'}: SHA-256" in text and "ab" * 32 in text and "put at:" in text
    assert (raw / "p.pkl").exists() and not (tmp_path / "placed").exists()  # the user's file is left alone


def test_parts_are_downloaded_joined_and_verified(server, fetcher, tmp_path, monkeypatch):
    blob = pickle.dumps(make_mmsa(sizes=(10, 4, 4)), protocol=4)
    k = len(blob) // 3
    for i, chunk in enumerate((blob[:k], blob[k:2 * k], blob[2 * k:])):
        server.files[f"/datasets/org/mirror/resolve/main/big/big.pkl.part{i:02d}"] = chunk
    server.files["/datasets/org/mirror/resolve/main/other/unrelated.bin"] = b"x"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    _register(monkeypatch, "big", [RemoteFile("big.pkl", hashlib.sha256(blob).hexdigest(), hf_repo="org/mirror",
                                              hf_parts="big/big.pkl.part*")])
    out = tmp_path / "data" / "big"
    download("big", out, fetcher=fetcher, endpoint=server.url)
    raw = tmp_path / "data" / "raw" / "big"
    assert (raw / "big.pkl").read_bytes() == blob
    assert _leftovers(raw) == ["big.pkl"]  # parts removed once the joined file verified
    assert (out / "manifest.json").exists()


def test_joined_parts_with_wrong_hash_are_not_placed(server, fetcher, tmp_path, monkeypatch):
    server.files["/datasets/org/mirror/resolve/main/big/big.pkl.part00"] = b"abc"
    server.files["/datasets/org/mirror/resolve/main/big/big.pkl.part01"] = b"def"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    _register(monkeypatch, "big", [RemoteFile("big.pkl", "1" * 64, hf_repo="org/mirror", hf_parts="big/big.pkl.part*")])
    with pytest.raises(DownloadError, match="2 joined parts"):
        download("big", tmp_path / "data" / "big", fetcher=fetcher, endpoint=server.url)
    assert not (tmp_path / "data" / "raw" / "big" / "big.pkl").exists()


def test_manual_source_prints_placement_instructions(tmp_path, capsys, monkeypatch):
    from msarepro.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    assert main(["data", "download", "simsv2", "--out", "data/simsv2"]) == 2
    err = capsys.readouterr().err
    assert "ch-simsv2s.pkl" in err and "https://github.com/thuiar/ch-sims-v2" in err
    assert f"put at: {Path('data/raw/simsv2/ch-simsv2s.pkl')}" in err
    assert "none published" in err and "Traceback" not in err


def test_offline_real_dataset_fails_fast_with_the_placement_message(tmp_path, capsys, monkeypatch):
    from msarepro.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    assert main(["data", "download", "mosi", "--out", "data/mosi"]) == 2
    err = capsys.readouterr().err
    assert "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524" in err
    assert "Bluexxx/SemMSA-data" in err and "data/raw/mosi/mosi_unaligned_50.pkl" in err
    assert not (tmp_path / "data" / "mosi").exists()


def test_training_on_an_absent_real_dataset_raises_the_placement_message(tmp_path):
    from msarepro.data import ensure_dataset

    with pytest.raises(FileNotFoundError) as e:
        ensure_dataset("hfm", tmp_path)
    assert str(e.value) == placement_message(DATASETS["hfm"], tmp_path / "hfm")
    assert "dataset_image" in str(e.value) and "headacheboy" in str(e.value)


def test_every_real_dataset_is_registered_with_its_preset_facts():
    real = {"mosi", "mosei", "sims", "simsv2", "mvsa-single", "mvsa-multiple", "hfm", "tumemo"}
    assert real <= set(DATASETS)
    for name in real:
        info = DATASETS[name]
        assert info.extra["files"] and set(info.extra["splits"]) == {"train", "valid", "test"}
        msg = placement_message(info, Path("data") / name)
        assert all(f.filename in msg for f in info.extra["files"])
    published = {f.sha256 for n in ("mosi", "mosei", "sims") for f in DATASETS[n].extra["files"]}
    assert len(published) == 3 and all(len(h) == 64 for h in published)
    assert os.environ.get("DVC_NO_ANALYTICS") == "1"


def test_synth_media_is_made_by_the_features_stage(tmp_path):
    from msarepro.data import ensure_dataset

    with pytest.raises(FileNotFoundError, match="msarepro data download synth-media --out"):
        ensure_dataset("synth-media", tmp_path)


def test_a_failed_import_leaves_the_previous_dataset_whole(tmp_path, monkeypatch, fetcher):
    import os as _os

    _register(monkeypatch, "tofu", [RemoteFile("t.pkl", None, manual="a colleague")], "manual")
    raw = tmp_path / "data" / "raw" / "tofu"
    raw.mkdir(parents=True)
    (raw / "t.pkl").write_bytes(pickle.dumps(make_mmsa(), protocol=4))
    out = tmp_path / "data" / "tofu"
    download("tofu", out, fetcher=fetcher)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    class Evil:
        def __reduce__(self):
            return (_os.system, ("true",))

    (raw / "t.pkl").write_bytes(pickle.dumps({"train": Evil()}))  # no published hash: a new file is imported
    with pytest.raises(Exception, match="refused to load"):
        download("tofu", out, fetcher=fetcher)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw", "tofu"]  # no staging folder left


def test_aligned_releases_are_registered_with_their_published_hashes_and_their_originals_presets():
    from msarepro.data.registry import LIKE_PREFIX, paper_dataset, preset_of

    hashes = {"mosi-aligned": "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9",
              "mosei-aligned": "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791"}
    for name, sha in hashes.items():
        info, original = DATASETS[name], name.removesuffix("-aligned")
        (f,) = info.extra["files"]
        assert f.sha256 == sha and f.manual and "aligned_50.pkl" in f.manual and not f.hf_repo
        assert info.extra["max_len"] == {"text": 50, "audio": 50, "vision": 50}
        assert info.extra["dims"] == DATASETS[original].extra["dims"]
        assert info.extra["splits"] == DATASETS[original].extra["splits"]
        assert preset_of(name) == original and paper_dataset(name) == original and paper_dataset(original) == original
        assert LIKE_PREFIX + name not in DATASETS
        msg = placement_message(info, Path("data") / name)
        assert sha in msg and f"data/raw/{name}/{f.filename}" in msg


def test_a_hand_placed_aligned_release_imports_with_its_originals_preset(tmp_path, monkeypatch, fetcher):
    """An aligned pickle (one length for all three modalities, no audio/vision lengths stored) placed by hand: it
    is verified, imported under its own name with the unaligned original's preset, marked aligned, and each
    clip's audio and vision lengths are its word count."""
    import dataclasses
    import json

    import numpy as np

    from msarepro.data import load_dataset

    data = make_mmsa(lens=(12, 12, 12), dims=(16, 5, 7), neg_inf=False)
    rng = np.random.default_rng(0)
    for split in data.values():
        n_words = split["text_bert"][:, 1].sum(1).astype(int)
        for key in ("audio", "vision"):  # one (non-zero) frame per word, zeros after the clip's last word
            a = rng.normal(0, 1, split[key].shape).astype(np.float32)
            for i, n in enumerate(n_words):
                a[i, n:] = 0
            split[key] = a
            split.pop(f"{key}_lengths", None)
    blob = pickle.dumps(data, protocol=4)
    info = DATASETS["mosi-aligned"]
    (f,) = info.extra["files"]
    monkeypatch.setitem(DATASETS, "mosi-aligned", dataclasses.replace(
        info, extra={**info.extra, "files": (dataclasses.replace(f, sha256=hashlib.sha256(blob).hexdigest()),)}))
    raw = tmp_path / "raw" / "mosi-aligned"
    raw.mkdir(parents=True)
    (raw / f.filename).write_bytes(blob)
    out = tmp_path / "mosi-aligned"
    assert download("mosi-aligned", out, fetcher=fetcher).startswith("imported mosi-aligned")
    man = json.loads((out / "manifest.json").read_text())
    assert man["name"] == "mosi-aligned" and man["preset"] == "mosi" and man["provenance"]["aligned"] is True
    train = load_dataset(out).splits["train"].arrays
    assert np.array_equal(train["audio_lengths"], train["text_ids_lengths"])
    assert np.array_equal(train["vision_lengths"], train["text_ids_lengths"])
