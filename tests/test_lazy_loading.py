"""Lazy loading and the streaming split-file writer: the same batches, runs and bytes as in memory."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from msarepro.config import RuntimeConfig
from msarepro.data import stfile
from msarepro.data.format import DatasetError, load_dataset, should_load_lazily
from msarepro.data.loader import to_tensors
from msarepro.data.stfile import LazyArray

from .conftest import fast_params

NAMES = ("synth-mosi", "synth-sims", "synth-mvsa")


def _arrays(rng):
    return {"text": rng.standard_normal((7, 5, 3)).astype(np.float32),
            "text_lengths": rng.integers(1, 6, 7),
            "zeta": rng.standard_normal((4, 2)),  # float64
            "audio": rng.standard_normal((7, 6, 2)).astype(np.float32)[:, ::-1],  # not contiguous
            "big": rng.standard_normal((3, 4)).astype(">f4"),  # big-endian
            "image": rng.integers(0, 255, (7, 3, 2, 2), dtype=np.uint8),
            "ids": rng.integers(0, 60, (7, 4)).astype(np.int32), "half": np.ones((2, 3), np.float16),
            "u16": np.arange(5, dtype=np.uint16), "i8": np.arange(-2, 3, dtype=np.int8),
            "flags": np.array([True, False, True]), "u64": np.arange(3, dtype=np.uint64),
            "empty": np.zeros((0, 4), np.int64), "scalar": np.array(2.5, np.float32)}


@pytest.mark.parametrize("chunk", [stfile.CHUNK, 7])  # 7 bytes: every array written a row at a time
def test_streaming_writer_is_byte_identical_to_save_file(tmp_path, monkeypatch, chunk):
    from safetensors.numpy import load_file, save_file

    monkeypatch.setattr(stfile, "CHUNK", chunk)
    arrays = _arrays(np.random.default_rng(0))
    for extra in ("", "a_longer_name_to_move_the_padding"):
        a = {**arrays, **({extra: np.ones(3, np.float32)} if extra else {})}
        save_file({k: np.ascontiguousarray(v.astype(v.dtype.newbyteorder("="))) for k, v in a.items()},
                  str(tmp_path / "ref.safetensors"))
        assert stfile.write(tmp_path / "ours.safetensors", a) == {}
        assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
        back = load_file(str(tmp_path / "ours.safetensors"))
        assert set(back) == set(a) and all(np.array_equal(back[k].reshape(a[k].shape), a[k]) for k in a)


def test_writer_zeroes_nonfinite_values_without_touching_the_input(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    monkeypatch.setattr(stfile, "CHUNK", 40)
    x = np.random.default_rng(1).standard_normal((6, 4, 3)).astype(np.float32)
    x[0, 1, 2], x[3, 0, 0], x[5, 3, 1] = np.nan, np.inf, -np.inf
    before = x.copy()
    counts = stfile.write(tmp_path / "a.safetensors", {"audio": x, "audio_lengths": np.full(6, 4)},
                          zero_nonfinite=True)
    assert counts == {"audio": 3}
    assert np.array_equal(x, before, equal_nan=True)  # the caller's array is not changed
    save_file({"audio": np.where(np.isfinite(x), x, 0).astype(np.float32), "audio_lengths": np.full(6, 4)},
              str(tmp_path / "ref.safetensors"))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def _both(path, **kw):
    mem, lazy = load_dataset(path, **kw), load_dataset(path, lazy=True, **kw)
    assert not any(isinstance(a, LazyArray) for s in mem.splits.values() for a in s.arrays.values())
    assert any(isinstance(a, LazyArray) for s in lazy.splits.values() for a in s.arrays.values())
    return mem, lazy


def _same_batch(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].stride() == b[k].stride(), k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_lazy_and_memory_batches_are_identical(small_data, name):
    mem, lazy = _both(small_data[name], splits=("train", "valid", "test", "unlabeled"))
    tm, tl = to_tensors(mem), to_tensors(lazy)
    assert list(tm) == list(tl)
    for split in tm:
        assert len(tm[split]) == len(tl[split]) and tm[split].ids == tl[split].ids
        for bs, shuffle, drop in ((4, True, False), (7, True, True), (64, False, False)):
            ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            pairs = list(zip(tm[split].batches(bs, shuffle, ga, drop), tl[split].batches(bs, shuffle, gb, drop)))
            assert pairs and len(pairs) == -(-len(tm[split]) // bs) - (drop and len(tm[split]) % bs > 0)
            for a, b in pairs:
                _same_batch(a, b)
        idx = torch.tensor([5, 0, 5, 2, 1])  # repeats and any order
        _same_batch(tm[split].batch(idx), tl[split].batch(idx))


def test_a_lazy_split_serves_arrays_and_takes_plain_ones(small_data):
    from msarepro.pretrain.run import pool_split

    mem, lazy = _both(small_data["synth-sims"], splits=("train", "unlabeled"))
    s, m = lazy.splits["train"], mem.splits["train"]
    a = s.arrays["audio"]
    assert (len(a), a.shape, a.dtype, a.ndim) == (len(m.arrays["audio"]), m.arrays["audio"].shape,
                                                 m.arrays["audio"].dtype, 3)
    assert np.array_equal(np.asarray(a), m.arrays["audio"])
    assert np.array_equal(a[2:9], m.arrays["audio"][2:9]) and np.array_equal(a[3], m.arrays["audio"][3])
    assert np.array_equal(a[[4, 1]], m.arrays["audio"][[4, 1]])
    assert isinstance(s.arrays["text_ids"], np.ndarray)  # token ids and lengths are read into memory
    for d in (mem, lazy):  # what data/tokens.provide_tokens does: plain arrays put into a split
        d.splits["train"].arrays["extra_ids"] = np.arange(len(s) * 3).reshape(len(s), 3)
        d.splits["train"].arrays["extra_ids_lengths"] = np.full(len(s), 2)
    _same_batch(to_tensors(mem)["train"].batch(torch.arange(6)), to_tensors(lazy)["train"].batch(torch.arange(6)))
    pm, pl = pool_split(mem, "both", "synth-sims")[0], pool_split(lazy, "both", "synth-sims")[0]
    _same_batch(pm.batch(torch.arange(len(pm))), pl.batch(torch.arange(len(pl))))


@pytest.mark.parametrize("model,name", [("lf_dnn", "synth-mosi"),
                                        pytest.param("mult", "synth-sims", marks=pytest.mark.slow)])
def test_a_run_is_bit_identical_with_lazy_loading(tmp_path, small_data, monkeypatch, model, name):
    import msarepro.train as train

    def run(out, lazy):
        loaded = []

        def load(*a, **k):
            ds = load_dataset(*a, **{**k, "lazy": lazy})
            loaded.append(any(isinstance(x, LazyArray) for s in ds.splits.values() for x in s.arrays.values()))
            return ds

        monkeypatch.setattr(train, "load_dataset", load)
        train.run(fast_params(2), train.RunSpec(model, str(small_data[name]), 1111, out, progress=False))
        assert loaded == [lazy]

    run(tmp_path / "mem", False)
    run(tmp_path / "lazy", True)
    for f in ("metrics.json", "history.csv", "predictions.csv"):
        assert (tmp_path / "mem" / f).read_bytes() == (tmp_path / "lazy" / f).read_bytes(), f


def test_auto_loads_lazily_above_the_threshold(small_data):
    root = small_data["synth-mosi"]
    assert should_load_lazily(root, RuntimeConfig(load="auto", lazy_above_gb=1e-9))
    assert not should_load_lazily(root, RuntimeConfig(load="auto", lazy_above_gb=2.0))
    assert should_load_lazily(root, RuntimeConfig(load="lazy", lazy_above_gb=1e9))
    assert not should_load_lazily(root, RuntimeConfig(load="memory", lazy_above_gb=0.0))
    assert not should_load_lazily(root, RuntimeConfig(load="auto", lazy_above_gb=1e-9), splits=("unlabeled",))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("damage", ["truncate", "header", "tiny"])
def test_a_damaged_split_file_names_the_file(tmp_path, small_data, lazy, damage):
    d = tmp_path / "ds"
    shutil.copytree(small_data["synth-mosi"], d)
    p = d / "valid.safetensors"
    raw = p.read_bytes()
    p.write_bytes({"truncate": raw[:len(raw) - 100], "header": raw[:8] + b"{not json" + raw[17:],
                   "tiny": raw[:5]}[damage])
    with pytest.raises(DatasetError, match=r"valid\.safetensors: not a readable safetensors file"):
        load_dataset(d, verify_hashes=False, lazy=lazy)
    with pytest.raises(DatasetError, match=r"valid\.safetensors: SHA-256"):
        load_dataset(d, lazy=lazy)


@pytest.mark.parametrize("lazy", [False, True])
def test_nonfinite_values_are_refused_in_both_modes(tmp_path, small_data, monkeypatch, lazy):
    from safetensors.numpy import load_file, save_file

    d = tmp_path / "ds"
    shutil.copytree(small_data["synth-mosi"], d)
    arrays = load_file(str(d / "test.safetensors"))
    arrays["vision"][-1, -1, -1] = np.nan
    arrays["vision"][0, 0, 0] = np.inf
    save_file(arrays, str(d / "test.safetensors"))
    monkeypatch.setattr(stfile, "CHUNK", 64)  # the check reads a few rows at a time
    with pytest.raises(DatasetError, match=r"test\.safetensors: array 'vision' holds 2 non-finite values"):
        load_dataset(d, verify_hashes=False, lazy=lazy)
