"""The dataset registry: every dataset msarepro knows by name. Other lists of dataset names derive from it.

Embedded datasets are generated (deterministically) when first asked for; real datasets are downloaded or
imported by the `download` stage and live under the data root as canonical directories.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    family: str  # "trimodal" | "image_text"
    metric_family: str  # "mosi" | "sims" | "cls"
    source: str  # "synth" for the embedded generators; real datasets name their download source
    description: str = ""
    extra: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {}


def preset_of(dataset: str, manifest: dict | None = None) -> str:
    """The preset a run on `dataset` resolves: its manifest's `preset` when the manifest exists; before (a
    registered dataset not generated or downloaded yet) the one its manifest will name: the registry's `preset`
    (an aligned release's: mosi-aligned -> mosi), a synth-like set's real dataset (synth-like-mosi -> mosi), else
    the dataset's own name."""
    if manifest and manifest.get("preset"):
        return manifest["preset"]
    info = DATASETS.get(dataset)
    if info is None:
        return dataset
    return info.extra.get("preset") or info.extra.get("like", dataset)


def paper_dataset(dataset: str) -> str:
    """The dataset the papers' tables name for `dataset`'s results: an aligned release's unaligned original
    (mosi-aligned -> mosi: the papers compare word-aligned baselines in their MOSI tables), else itself."""
    info = DATASETS.get(dataset)
    return info.extra.get("paper_dataset", dataset) if info is not None else dataset


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in DATASETS:
        raise ValueError(f"dataset {info.name!r} registered twice")
    DATASETS[info.name] = info
    return info


register_dataset(DatasetInfo("synth-mosi", "trimodal", "mosi", "synth",
                             "MOSI-like trimodal regression, labels in [-3, 3] on a 0.2 grid"))
register_dataset(DatasetInfo("synth-sims", "trimodal", "sims", "synth",
                             "CH-SIMS-like, labels in [-1, 1], unimodal labels T/A/V, unlabeled pool"))
register_dataset(DatasetInfo("synth-mvsa", "image_text", "cls", "synth",
                             "MVSA-like image-text classification, 3 classes"))


register_dataset(DatasetInfo("synth-media", "trimodal", "sims", "media",
                             "embedded raw media (sentences, WAV, OpenFace CSVs) through the real extractors"))


@dataclass(frozen=True)
class RemoteFile:
    """One file (or folder) a real dataset is made from, and where it comes from.

    Sources are tried in this order: a Hugging Face dataset repository (`hf_repo` + `hf_path`, or `hf_parts`, a
    glob of parts to concatenate in sorted order), a plain HTTP(S) `url`, and `manual`: text telling a person where
    to get it by hand (Google Drive / Baidu / an author's site). `sha256` is the published hash; None where no
    hash is published (the hash of what was placed is then recorded in the imported manifest). `kind="dir"`
    marks a folder placed by hand (an image folder); folders are not hashed, their file count is recorded.
    `split="unlabeled"` marks a release's unlabeled part (CH-SIMS v2 (u)): the importer turns it into the
    canonical `unlabeled` split, which AE-MT's pretraining reads (`pretrain.pool`).
    """
    filename: str  # name under the raw folder (data/raw/<dataset>/<filename>)
    sha256: str | None = None
    hf_repo: str = ""
    hf_path: str = ""
    hf_parts: str = ""
    url: str = ""
    manual: str = ""
    size: int = 0  # bytes, where known
    kind: str = "file"  # "file" | "dir"
    optional: bool = False  # used when present (e.g. CLMLF's split files), not required
    split: str = ""  # "unlabeled": the file holds the dataset's unlabeled clips, imported as that split


SEMMSA = "Bluexxx/SemMSA-data"  # the Hugging Face mirror of MMSA's unaligned pickles (same hashes)
MMSA_DRIVE = ("MMSA's release (https://github.com/thuiar/MMSA, README 'Datasets': Google Drive / Baidu links), "
              "file {}")


def _trimodal(name, metric_family, description, splits, dims, lens, files, unimodal=False, aligned_of=""):
    """aligned_of: for a word-aligned release, the registered unaligned dataset it is a release of: its preset
    is that dataset's (the same hyperparameters), and its results join that dataset's paper rows."""
    lo = 3.0 if metric_family == "mosi" else 1.0
    aligned = {"aligned": True, "preset": aligned_of, "paper_dataset": aligned_of} if aligned_of else {}
    return register_dataset(DatasetInfo(
        name, "trimodal", metric_family, "hf" if any(f.hf_repo for f in files) else "manual", description,
        extra={"task": "regression", "label_range": (-lo, lo), "splits": splits, "unimodal_labels": unimodal,
               "dims": dict(zip(("text", "audio", "vision"), dims)),
               "max_len": dict(zip(("text", "audio", "vision"), lens)), "importer": "mmsa", "files": tuple(files),
               **aligned}))


def _image_text(name, description, splits, classes, f1_average, importer, files):
    return register_dataset(DatasetInfo(
        name, "image_text", "cls", "manual", description,
        extra={"task": "classification", "label_range": (0.0, float(len(classes) - 1)), "splits": splits,
               "class_names": classes, "num_classes": len(classes), "f1_average": f1_average,
               "importer": importer, "files": tuple(files)}))


# Facts (splits, dims, lengths, hashes): MMSA's releases and the MMSA / INFIG papers' tables (docs/datasets.md).
_trimodal("mosi", "mosi", "CMU-MOSI: MMSA unaligned_50 features (BERT 768 / COVAREP 5 / Facet 20)",
          {"train": 1284, "valid": 229, "test": 686}, (768, 5, 20), (50, 375, 500),
          [RemoteFile("mosi_unaligned_50.pkl", "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524",
                      hf_repo=SEMMSA, hf_path="mosi_unaligned_50.pkl",
                      manual=MMSA_DRIVE.format("MOSI/Processed/unaligned_50.pkl"))])
_trimodal("mosei", "mosi", "CMU-MOSEI: MMSA unaligned_50 features (BERT 768 / COVAREP 74 / Facet 35)",
          {"train": 16326, "valid": 1871, "test": 4659}, (768, 74, 35), (50, 500, 500),
          [RemoteFile("mosei_unaligned_50.pkl", "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f",
                      hf_repo=SEMMSA, hf_parts="mosei_unaligned_50/mosei_unaligned_50.pkl.part*",
                      manual=MMSA_DRIVE.format("MOSEI/Processed/unaligned_50.pkl"))])
_trimodal("sims", "sims", "CH-SIMS: MMSA unaligned_39 features (BERT-zh 768 / librosa 33 / OpenFace 709), T/A/V labels",
          {"train": 1368, "valid": 456, "test": 457}, (768, 33, 709), (39, 400, 55),
          [RemoteFile("sims_unaligned_39.pkl", "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f",
                      hf_repo=SEMMSA, hf_path="sims_unaligned_39.pkl",
                      manual=MMSA_DRIVE.format("SIMS/Processed/unaligned_39.pkl"))], unimodal=True)
# The word-aligned releases (MMSA's aligned_50.pkl: audio and vision averaged over each word's span, 50 steps in
# all three modalities), on which MFN and MAG-BERT were published. Not on the Hugging Face mirror: placed by hand.
_trimodal("mosi-aligned", "mosi", "CMU-MOSI word-aligned: MMSA aligned_50 features (BERT 768 / COVAREP 5 / Facet 20 "
          "per word)", {"train": 1284, "valid": 229, "test": 686}, (768, 5, 20), (50, 50, 50),
          [RemoteFile("mosi_aligned_50.pkl", "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9",
                      manual=MMSA_DRIVE.format("MOSI/Processed/aligned_50.pkl"))], aligned_of="mosi")
_trimodal("mosei-aligned", "mosi", "CMU-MOSEI word-aligned: MMSA aligned_50 features (BERT 768 / COVAREP 74 / Facet "
          "35 per word)", {"train": 16326, "valid": 1871, "test": 4659}, (768, 74, 35), (50, 50, 50),
          [RemoteFile("mosei_aligned_50.pkl", "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791",
                      manual=MMSA_DRIVE.format("MOSEI/Processed/aligned_50.pkl"))], aligned_of="mosei")
# CH-SIMS v2 comes as two pickles (the authors' README, "Data Download"): the supervised part ch-simsv2s.pkl
# (MMSA's layout) and the unsupervised part ch-simsv2u.pkl (10,161 unlabeled clips in AE-MT's Section 4.1;
# its inner layout is an assumption, docs/datasets.md). The unlabeled part is optional: imported as the
# `unlabeled` split when placed.
SIMSV2_DRIVE = "https://github.com/thuiar/ch-sims-v2 (README 'Data Download': Google Drive folder {})"
_trimodal("simsv2", "sims", "CH-SIMS v2: supervised part (s), features 768 / 25 / 177, T/A/V labels; "
          "unsupervised part (u) as the unlabeled split when placed",
          {"train": 2722, "valid": 647, "test": 1034}, (768, 25, 177), (50, 925, 232),
          [RemoteFile("ch-simsv2s.pkl", None,
                      manual="the supervised standard pickle ch-simsv2s.pkl from "
                             + SIMSV2_DRIVE.format("1wFvGS0ebKRvT3q6Xolot-sDtCNfz7HRA")),
           RemoteFile("ch-simsv2u.pkl", None, optional=True, split="unlabeled",
                      manual="the unsupervised standard pickle ch-simsv2u.pkl from "
                             + SIMSV2_DRIVE.format("1llIbm3gwyJRwwk58RUQHWBNKjHI9vGGB")
                             + "; needed for AE-MT's pretraining pool `unlabeled`")], unimodal=True)
MVSA_SITE = "http://mcrlab.net/research/mvsa-sentiment-analysis-on-multi-view-social-data/"
CLMLF_SPLITS = "https://github.com/Link-Li/CLMLF/tree/main/dataset/data/{}/10-flod-1 (file {})"
_image_text("mvsa-single", "MVSA-Single: tweets with images, 3 classes (0 positive, 1 neutral, 2 negative)",
            {"train": 3611, "valid": 450, "test": 450}, ("positive", "neutral", "negative"), "weighted", "mvsa",
            [RemoteFile("MVSA-Single.zip", None, manual=f"the MVSA-Single archive from {MVSA_SITE}"),
             *[RemoteFile(f, None, manual=CLMLF_SPLITS.format("MVSA-single", f), optional=True)
               for f in ("train.json", "dev.json", "test.json")]])
_image_text("mvsa-multiple", "MVSA-Multiple: tweets with images, 3 annotators, 3 classes",
            {"train": 13624, "valid": 1700, "test": 1700}, ("positive", "neutral", "negative"), "weighted", "mvsa",
            [RemoteFile("MVSA-Multiple.zip", None, manual=f"the MVSA-Multiple archive from {MVSA_SITE}"),
             *[RemoteFile(f, None, manual=CLMLF_SPLITS.format("MVSA-multiple", f), optional=True)
               for f in ("train.json", "dev.json", "test.json")]])
HFM_REPO = "https://github.com/headacheboy/data-of-multimodal-sarcasm-detection"
_image_text("hfm", "HFM (Cai et al. 2019): Twitter sarcasm, 2 classes, official split",
            {"train": 19816, "valid": 2410, "test": 2409}, ("non-sarcastic", "sarcastic"), "macro", "hfm",
            [*[RemoteFile(f"text/{f}", None, manual=f"{HFM_REPO} (folder text/, file {f})")
               for f in ("train.txt", "valid2.txt", "test2.txt")],
             RemoteFile("dataset_image", None, kind="dir",
                        manual=f"the image archive linked from {HFM_REPO} (README, Google Drive), unpacked")])
TUMEMO_CLASSES = ("angry", "bored", "calm", "fearful", "happy", "loving", "sad")
_image_text("tumemo", "TumEmo (Yang et al. 2020): Tumblr posts, 7 emotions, random 8:1:1 split (seed recorded)",
            {"train": 156204, "valid": 19525, "test": 19536}, TUMEMO_CLASSES, "weighted", "table",
            [RemoteFile("tumemo.csv", None, manual="the TumEmo release linked from "
                        "https://github.com/YangXiaocui1215/MVAN, converted to a CSV with columns id,text,label "
                        f"(label one of {', '.join(TUMEMO_CLASSES)})"),
             RemoteFile("images", None, kind="dir", manual="the TumEmo images, one <id>.jpg per row of tumemo.csv")])

# Synthetic data in each real dataset's shapes (data/synth_like.py), generated on first use like the embedded
# sets; their manifests name the real dataset's preset. Not stand-ins for the embedded sets (source "synth-like").
# An aligned release gets none: its preset, dims and label grid are its unaligned original's, whose synthetic-like
# set checks them (at longer sequences).
LIKE_PREFIX = "synth-like-"
for _real in [i for i in DATASETS.values() if i.source not in ("synth", "media") and not i.extra.get("aligned")]:
    register_dataset(DatasetInfo(LIKE_PREFIX + _real.name, _real.family, _real.metric_family, "synth-like",
                                 f"synthetic, in {_real.name}'s shapes, label grid and split proportions "
                                 f"(preset {_real.name})", extra={"like": _real.name}))
del _real


def dataset_dir(name_or_path: str, data_root: str | Path) -> Path:
    """Directory of a dataset given by registered name (under data_root), by the name of a dataset imported under
    data_root (`msarepro data import-mmsa ... --name NAME`), or by a path to a canonical directory."""
    if name_or_path in DATASETS:  # a registered name wins over a same-named folder in the working directory
        return Path(data_root) / name_or_path
    p = Path(name_or_path)
    if (p / "manifest.json").exists():
        return p
    if "/" not in name_or_path and (Path(data_root) / name_or_path / "manifest.json").exists():
        return Path(data_root) / name_or_path
    raise KeyError(f"unknown dataset {name_or_path!r}: not a registered name ({', '.join(sorted(DATASETS))}) "
                   f"and not a directory with a manifest.json")
