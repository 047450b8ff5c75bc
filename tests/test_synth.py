"""The embedded trimodal data's cross-modal structure (src/msarepro/data/synth.py's docstring): the modalities
of a clip agree in sentiment polarity at the stated rate, a swapped modality is detectable from sentiment and
not from anything else, the unlabeled pool follows the same process, and the manifests keep their reference
scores. Everything is computed on one half-size synth-sims (seed 0), generated once."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msarepro import metrics
from msarepro.data.format import load_dataset
from msarepro.data.synth import generate, generate_trimodal, synth_sims

MODS = ("text", "audio", "vision")


@pytest.fixture(scope="module")
def sims():
    """(arrays, labels, reference, latents) of synth-sims at half size: 450/100/150 clips + 750 unlabeled."""
    return generate_trimodal(synth_sims(0.5), seed=0)


def _agree(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sign(x) == np.sign(y)))


def test_modalities_agree_in_polarity_at_the_stated_rate(sims):
    lat = sims[3].splits
    z = {k: np.concatenate([s[k] for s in lat.values()]) for k in ("z_t", "z_a", "z_v", "shown_a", "shown_v")}
    assert len(z["z_t"]) == 1450
    # q = 0.8 (binomial standard error 0.011 at 1,450 clips)
    assert _agree(z["z_a"], z["z_t"]) == pytest.approx(0.8, abs=0.03)
    assert _agree(z["z_v"], z["z_t"]) == pytest.approx(0.8, abs=0.03)
    # audio with vision: q^2 + (1 - q)^2 = 0.68; what the modalities show, distractors included: 0.7 q + 0.15 = 0.71
    assert _agree(z["z_a"], z["z_v"]) == pytest.approx(0.68, abs=0.03)
    assert _agree(z["shown_a"], z["z_t"]) == pytest.approx(0.71, abs=0.03)
    assert _agree(z["shown_v"], z["z_t"]) == pytest.approx(0.71, abs=0.03)
    # the exact figures of this seed (the generator is deterministic)
    assert round(_agree(z["z_a"], z["z_t"]), 4) == 0.7993 and round(_agree(z["shown_a"], z["z_t"]), 4) == 0.7034
    # marginals unchanged by the agreement: audio/vision sentiment still spans U(-1.2, 1.2) symmetrically
    assert abs(z["z_a"]).max() <= 1.2 and abs(np.mean(z["z_a"] > 0) - 0.5) < 0.03


def _swap(feats: list[np.ndarray], rng: np.random.Generator, p: float = 0.5):
    """As AE-MT's pretraining tampers (pretrain/autoencoder.py): each clip with probability p gets one modality,
    chosen uniformly, from another clip. feats: per modality (n, k) -> (swapped feats, tampered (n,))."""
    n = len(feats[0])
    tampered = rng.random(n) < p
    which = rng.integers(0, 3, n)
    donor = (np.arange(n) + rng.integers(1, n, n)) % n
    return [np.where((tampered & (which == k))[:, None], f[donor], f) for k, f in enumerate(feats)], tampered


def _detector_accuracy(train: list[np.ndarray], held_out: list[np.ndarray]) -> float:
    """Logistic regression on the pairwise products of the modalities' features (a bilinear match score per pair),
    fitted on swapped/real clips of one split, scored on another."""
    def pairs(f):
        return np.concatenate([(f[j][:, :, None] * f[k][:, None, :]).reshape(len(f[j]), -1)
                               for j, k in ((0, 1), (0, 2), (1, 2))], axis=1)
    rng = np.random.default_rng(0)
    (x_tr, y_tr), (x_te, y_te) = _swap(train, rng), _swap(held_out, rng)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(pairs(x_tr), y_tr)
    return float(clf.score(pairs(x_te), y_te))


def _sentiment_features(lat: dict) -> list[np.ndarray]:
    """What each modality shows of sentiment: (value, polarity) of z_t, shown_a, shown_v."""
    return [np.stack([lat[k], np.sign(lat[k])], axis=1) for k in ("z_t", "shown_a", "shown_v")]


def _signature_features(arrays: dict, latents) -> list[np.ndarray]:
    """Everything but sentiment that a clip's modality carries as a whole: the mean of its real frames with the
    token embeddings subtracted (text) and the sentiment direction projected out. A speaker signature lives here."""
    out = []
    for m in MODS:
        x = arrays[m].astype(np.float64)
        if m == "text":
            x = x - latents.embedding[arrays["text_ids"]]
        lengths = arrays[f"{m}_lengths"]
        real = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        mean = (x * real).sum(1) / lengths[:, None]
        u = latents.directions[m].astype(np.float64)
        out.append(mean - np.outer(mean @ u, u))
    return out


def test_swapped_modality_is_detectable_from_sentiment_and_not_from_a_signature(sims):
    arrays, _, _, lat = sims
    sentiment = _detector_accuracy(_sentiment_features(lat.splits["train"]),
                                   _sentiment_features(lat.splits["unlabeled"]))
    signature = _detector_accuracy(_signature_features(arrays["train"], lat),
                                   _signature_features(arrays["unlabeled"], lat))
    # 750 held-out clips, half of them swapped: chance is 0.5, its standard error 0.018
    assert sentiment == pytest.approx(0.5827, abs=0.02) and sentiment > 0.55
    assert signature == pytest.approx(0.504, abs=0.02) and signature < 0.54


def test_unlabeled_pool_follows_the_same_process_with_hidden_labels(sims, tmp_path):
    arrays, labels, _, lat = sims
    tr, un = lat.splits["train"], lat.splits["unlabeled"]
    for k in ("z_a", "z_v", "shown_a", "shown_v"):
        assert _agree(un[k], un["z_t"]) == pytest.approx(_agree(tr[k], tr["z_t"]), abs=0.05)
    assert np.mean(un["r_a"]) == pytest.approx(0.7, abs=0.05) and np.mean(tr["r_a"]) == pytest.approx(0.7, abs=0.05)
    assert np.std(un["z_t"]) == pytest.approx(4 / np.sqrt(12), rel=0.05)  # U(-2, 2)
    for m in MODS:  # same feature statistics on real frames
        stat = {s: arrays[s][m][arrays[s][m] != 0].std() for s in ("train", "unlabeled")}
        assert stat["unlabeled"] == pytest.approx(stat["train"], rel=0.05)
    pool = labels[labels["split"] == "unlabeled"]
    assert len(pool) == 750 and pool[["M", "T", "A", "V"]].isna().all().all()
    assert labels[labels["split"] == "train"][["M", "T", "A", "V"]].notna().all().all()
    # and on disk: the pool loads with NaN labels
    generate("synth-sims", tmp_path / "s", seed=0, scale=0.05)
    ds = load_dataset(tmp_path / "s", splits=("unlabeled",))
    assert ds.splits["unlabeled"].labels["M"].isna().all()


@pytest.mark.parametrize("name,metric", [("synth-mosi", "Has0_acc_2"), ("synth-sims", "Mult_acc_2")])
def test_manifests_keep_reference_scores(tmp_path, name, metric):
    generate(name, tmp_path / name, seed=0, scale=0.2)
    ref = json.loads((tmp_path / name / "manifest.json").read_text())["provenance"]["reference"]
    assert set(ref) == {"oracle", "text_oracle", "majority", "oracle_without", "oracle_random_drop"}
    assert ref["oracle"][metric] > ref["text_oracle"][metric] > ref["majority"][metric]
    assert ref["oracle"]["Corr"] > ref["text_oracle"]["Corr"] > 0.8 > ref["majority"]["Corr"]


def test_text_oracle_is_the_expectation_given_the_text(sims):
    """text_oracle scores E[M | z_t, cue words] = z_t + (r_a + r_v) (2q - 1) E|z_a| sign(z_t), E|z_a| = 0.6: the
    residual of M is centred on every cue pattern, where the old predictor z_t leaves 0.36 per relevant cue."""
    _, labels, reference, lat = sims
    test = lat.splits["test"]
    expected = test["z_t"] + (test["r_a"] + test["r_v"].astype(float)) * 0.6 * 0.6 * np.sign(test["z_t"])
    y = labels[labels["split"] == "test"]["M"].to_numpy()
    assert reference["text_oracle"] == pytest.approx(metrics.compute("sims", expected / 3, y), abs=1e-9)
    assert metrics.compute("sims", test["z_t"] / 3, y)["Corr"] < reference["text_oracle"]["Corr"]
    pool = lat.splits["unlabeled"]
    raw = pool["z_t"] + pool["r_a"] * pool["z_a"] + pool["r_v"] * pool["z_v"]
    both = pool["r_a"] & pool["r_v"] & (pool["z_t"] > 0)
    assert (raw[both] - pool["z_t"][both]).mean() == pytest.approx(2 * 0.36, abs=0.1)


# SHA-256 of every file of the embedded sets (seed 0, scale 0.15) before their manifests recorded a tokenizer:
# recording it changes manifest.json only, never an array or a label.
BEFORE_TOKENIZER_RECORDS = {
    "synth-mosi": {"labels.csv": "b4fcbdafcaa3aa0bc4b6f58fc1dc038ed3d083ae2bf9f3f0a8dfb7dafed235b3",
                   "test.safetensors": "9531978f1d69ff31f9d60b86d82476d0f375b600a4c78e80f7693511e61e1e41",
                   "train.safetensors": "3a38c8b17e292ed4fce617b061beefaf0e928e68e8802bbc0c806250690f61ff",
                   "valid.safetensors": "479997da6ae9fedea6c67ab803d2cdf004e504351f007b536ae99ad993dfc4ad"},
    "synth-sims": {"labels.csv": "f12e430639fb019d5ea4e1b079da9ece46727e3f15485ba9c0746f620b985cd7",
                   "test.safetensors": "9531978f1d69ff31f9d60b86d82476d0f375b600a4c78e80f7693511e61e1e41",
                   "train.safetensors": "3a38c8b17e292ed4fce617b061beefaf0e928e68e8802bbc0c806250690f61ff",
                   "unlabeled.safetensors": "641bebe90be8b907c3b56b201d3e7b1ab9367487eeb4f5792ca8d57541065e9a",
                   "valid.safetensors": "479997da6ae9fedea6c67ab803d2cdf004e504351f007b536ae99ad993dfc4ad"},
    "synth-mvsa": {"labels.csv": "b1377d50091972af4dea579c54326ec9eddffb7e4a7cd2d63e7e9ed752d49d31",
                   "test.safetensors": "16963b0ac362b5f5ef5f00fd9dadf8abe6d626286c9141268321300df085541c",
                   "train.safetensors": "2cbf52edaf51089f2346879b4a7d4216f42d9e94adffa481501200511f7977e3",
                   "valid.safetensors": "a71c2edefac8d48e8e18cc6ef1086947789718e2ab641cb263000d813fe02e2d"},
}
TRIMODAL_VOCAB_SHA256 = "2c3eb9f442929ce6674752a92218b89fa999c597b700e9a20a50bb32f0cb4a99"
MVSA_VOCAB_SHA256 = "66088a26a32060dd504134de509807705a19b931e7c2fd1d5449d41009591e59"


@pytest.mark.parametrize("name,vocab_sha,max_len", [("synth-mosi", TRIMODAL_VOCAB_SHA256, 24),
                                                    ("synth-sims", TRIMODAL_VOCAB_SHA256, 24),
                                                    ("synth-mvsa", MVSA_VOCAB_SHA256, 16)])
def test_embedded_sets_record_their_own_vocabulary_and_keep_their_bytes(small_data, name, vocab_sha, max_len):
    m = load_dataset(small_data[name]).manifest
    assert m.files == BEFORE_TOKENIZER_RECORDS[name]
    assert m.modalities["text_ids"] == {"vocab_size": 64, "max_len": max_len, "vocab_sha256": vocab_sha,
                                        "tokenizer": f"msarepro {name} vocabulary",
                                        "special_ids": {"pad": 0, "cls": 1, "sep": 2, "unk": 3}}
    assert m.raw_text is False  # labels.csv spells the ids; it is no text for a real tokenizer


def test_vocabulary_definitions_spell_the_ids_as_labels_csv_does(small_data):
    from msarepro.data.synth import image_text_vocabulary, trimodal_vocabulary

    for name, vocab in (("synth-mosi", trimodal_vocabulary()), ("synth-mvsa", image_text_vocabulary())):
        ds = load_dataset(small_data[name])
        assert sorted(vocab.values()) == list(range(64))
        s = ds.splits["train"]
        ids, lens = s.arrays["text_ids"][0], s.arrays["text_ids_lengths"][0]
        words = str(s.labels["text"][0]).split()
        inner = ids[:lens] if name == "synth-mosi" else ids[1:lens - 1]  # synth-mvsa's text leaves out [CLS]/[SEP]
        assert [vocab[w] for w in words] == inner.tolist()


def test_oracles_under_perturbation_are_conditional_expectations(sims):
    """The oracle of a perturbed input is E[M | what is left] (latent.conditional_mean): with everything seen it is
    the oracle itself and with the text alone the text oracle; removing the text leaves the best guess of the
    polarity from what audio and vision show; under LNLN drop the stored score is the exact expectation over drop
    masks, which a Monte Carlo over masks reproduces."""
    from msarepro.data.latent import conditional_mean
    from msarepro.data.synth import _observed, synth_sims

    _, labels, ref, lat = sims
    spec, test = synth_sims(0.5), lat.splits["test"]
    y = labels[labels["split"] == "test"]["M"].to_numpy()
    raw = test["z_t"] + test["r_a"] * test["z_a"] + test["r_v"] * test["z_v"]
    np.testing.assert_allclose(conditional_mean(test, spec, **_observed(test, True, True, True)), raw, atol=1e-12)
    assert ref["oracle_without"]["AV"] == pytest.approx(ref["text_oracle"], abs=1e-12)
    assert ref["oracle_random_drop"]["0.0"]["Mult_acc_2"] == pytest.approx(ref["oracle"]["Mult_acc_2"], abs=1e-12)
    assert set(ref["oracle_without"]) == {"T", "A", "V", "TA", "TV", "AV"}
    # without the text: audio and vision agree with the hidden polarity; the prediction follows their signs
    no_t = conditional_mean(test, spec, **_observed(test, False, True, True))
    same = np.sign(test["shown_a"]) == np.sign(test["shown_v"])
    assert np.all(np.sign(no_t[same]) == np.sign(test["shown_a"][same]))
    h = "Mult_acc_2"
    w = {k: v[h] for k, v in ref["oracle_without"].items()}
    # (a conditional mean is not the best predictor of an accuracy on a finite split: no ordering of single ones)
    assert min(w.values()) > ref["majority"][h] and (w["TA"] + w["TV"]) / 2 < (w["A"] + w["V"]) / 2
    drop = [ref["oracle_random_drop"][f"{r / 10:.1f}"][h] for r in range(10)]
    assert drop[0] > drop[5] > drop[9] > ref["majority"][h]
    rng, r, n, accs = np.random.default_rng(0), 0.5, len(y), []
    for _ in range(300):
        zt, ka, kv = (rng.random((n, 2)) >= r).any(1), rng.random(n) >= r, rng.random(n) >= r
        sa, sv = (rng.random((n, 3)) >= r).any(1), (rng.random((n, 3)) >= r).any(1)
        pred = conditional_mean(test, spec, zt_seen=zt, cue_seen={"a": test["r_a"] & ka, "v": test["r_v"] & kv},
                                cue_miss={"a": r, "v": r}, shown_seen={"a": sa, "v": sv})
        accs.append(metrics.compute("sims", pred / 3, y)[h])
    assert np.mean(accs) == pytest.approx(ref["oracle_random_drop"]["0.5"][h], abs=3 * np.std(accs) / np.sqrt(300))


def test_image_text_oracle_without_a_modality(small_data):
    ref = json.loads((small_data["synth-mvsa"] / "manifest.json").read_text())["provenance"]["reference"]
    assert ref["oracle_without"]["I"] == ref["text_oracle"]
    assert ref["majority"]["Accuracy"] < ref["oracle_without"]["T"]["Accuracy"] < ref["oracle"]["Accuracy"]
