"""Image-text imports: CLMLF-style JSON splits, the original MVSA releases, HFM, and a generic table (TumEmo).

Layouts read:
    clmlf   DIR/train.json, DIR/dev.json (or valid.json), DIR/test.json: JSON lists of {"id", "text",
            "emotion_label" (or "label")}, images DIR/dataset_image/<id>.jpg (CLMLF's repository layout;
            MVSA labels 0 positive, 1 neutral, 2 negative; HFM 0 non-sarcastic, 1 sarcastic)
    mvsa    the original MVSA-Single / MVSA-Multiple archive (or its unpacked folder): labelResultAll.txt
            ("ID<TAB>text,image" per annotator) and data/<id>.txt, data/<id>.jpg. Labels are aggregated as the
            INFIG paper (following CLMLF / Xu and Mao 2017) describes: MVSA-Multiple first takes, per modality,
            the label at least two of the three annotators gave (no majority: dropped); then a pair with equal
            text and image labels keeps it, a pair with one neutral label takes the other, and a
            positive/negative conflict is dropped. Splits: CLMLF's split files when given, else random 8:1:1.
    hfm     DIR/text/train.txt, valid2.txt, test2.txt (one Python literal list per line: id, text, ..., label;
            read with ast.literal_eval, never eval), images DIR/dataset_image/<id>.jpg; the official split.
    table   a CSV / TSV / JSON table with id, text, label (a class name or index) [, split] and an image folder
            with <id>.jpg; without a split column, a random 8:1:1 split with a recorded seed (TumEmo).

Storage choice: images are stored in the canonical `image` array (N, 3, S, S) uint8 after resizing the shorter
side to S and centre-cropping (S = `image_size`, default 224, the input size of ResNet-50 / ViT backbones; pass
a smaller S to save disk, e.g. 112 for TumEmo's 195k images, ~7 GB at 112 against ~29 GB at 224). The loader
turns it into batch["image"] (B, 3, S, S) float in [0, 1]. Precomputed backbone features can be added with
`msarepro data extract-images`. A missing or unreadable image is stored as zeros and counted in
provenance.missing_images. Text is stored once, raw, in labels.csv's `text` column (manifest raw_text: true);
no token ids are stored: each method's tokenizer derives its own ids from the raw text when it first trains on
the dataset (data/tokens.py, cached under <data root>/.tokens; `msarepro data tokenize` fills the cache ahead).
"""
from __future__ import annotations

import ast
import collections
import json
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from ..runtime import progress
from .format import DatasetError, Manifest, write_dataset

MVSA_CLASSES = ("positive", "neutral", "negative")
HFM_CLASSES = ("non-sarcastic", "sarcastic")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".gif", ".bmp")


def load_image(path: Path | None, size: int) -> np.ndarray | None:
    """(3, size, size) uint8: shorter side resized to `size`, centre crop; None when missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if path is None:
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None


def find_image(folder: Path, item_id: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{item_id}{ext}"
        if p.exists():
            return p
    return None


def write_image_text_dataset(rows: pd.DataFrame, image_dir: Path, out: Path, name: str, class_names: tuple,
                             f1_average: str, image_size: int = 224, provenance: dict | None = None,
                             preset: str = "") -> Manifest:
    """rows: split, id, label (int), text. Reads images from image_dir/<id>.<ext>, writes the canonical set
    (images as arrays, the raw text in labels.csv). preset: the manifest's preset (default: name)."""
    rows = rows.reset_index(drop=True)
    images = np.zeros((len(rows), 3, image_size, image_size), np.uint8)
    missing = 0
    it = rows["id"].astype(str).tolist()
    for i, item in enumerate(progress(it, f"{name} images", unit="img")):
        im = load_image(find_image(image_dir, item), image_size)
        if im is None:
            missing += 1
        else:
            images[i] = im
    arrays, sizes = {}, {}
    for split in ("train", "valid", "test"):
        idx = np.flatnonzero(rows["split"].to_numpy() == split)
        if len(idx) == 0:
            raise DatasetError(f"{name}: split {split!r} is empty after import; check the split files")
        arrays[split] = {"image": images[idx]}
        sizes[split] = len(idx)
    labels = pd.DataFrame({"split": rows["split"], "id": rows["id"].astype(str), "M": rows["label"].astype(int),
                           "text": rows["text"].fillna("").astype(str)})
    manifest = Manifest(
        name=name, family="image_text", task="classification", metric_family="cls",
        label_range=(0.0, float(len(class_names) - 1)),
        modalities={"image": {"shape": [3, image_size, image_size]}}, raw_text=True,
        splits=sizes, num_classes=len(class_names), class_names=tuple(class_names), f1_average=f1_average,
        preset=preset or name, provenance={**(provenance or {}), "missing_images": missing, "image_size": image_size,
                                 "image_preprocessing": "shorter side resized, centre crop, uint8 RGB"})
    return write_dataset(out, manifest, arrays, labels)


def random_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Split names for n rows: a permutation cut at 8:1:1 (train gets the rounding remainder)."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
    out = np.empty(n, dtype=object)
    out[order[:n_test]] = "test"
    out[order[n_test:n_test + n_valid]] = "valid"
    out[order[n_test + n_valid:]] = "train"
    return out


# ----------------------------------------------------------------------------------------------------- CLMLF


def read_clmlf_split(path: Path, split: str) -> pd.DataFrame:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read a CLMLF split file ({e})") from None
    out = []
    for i, r in enumerate(rows):
        label = r.get("emotion_label", r.get("label"))
        if "id" not in r or label is None:
            raise DatasetError(f"{path}: row {i} lacks 'id' or 'emotion_label'/'label': {r}")
        out.append({"split": split, "id": str(r["id"]), "label": int(label), "text": str(r.get("text", ""))})
    return pd.DataFrame(out)


def import_clmlf(root: str | Path, out: str | Path, name: str, class_names: tuple = MVSA_CLASSES,
                 f1_average: str = "weighted", image_dir: str | Path | None = None, **kw) -> Manifest:
    root = Path(root)
    frames = []
    for split, names in (("train", ["train.json"]), ("valid", ["dev.json", "valid.json"]), ("test", ["test.json"])):
        p = next((root / n for n in names if (root / n).exists()), None)
        if p is None:
            raise DatasetError(f"{root}: no {' or '.join(names)} (CLMLF layout: train.json, dev.json, test.json)")
        frames.append(read_clmlf_split(p, split))
    rows = pd.concat(frames, ignore_index=True)
    _check_labels(rows, class_names, root)
    prov = {"importer": "msarepro.data.imagetext.import_clmlf", "layout": "clmlf", **kw.pop("provenance", {})}
    return write_image_text_dataset(rows, Path(image_dir) if image_dir else root / "dataset_image", Path(out), name,
                                    class_names, f1_average, provenance=prov, **kw)


def _check_labels(rows: pd.DataFrame, class_names, where) -> None:
    bad = rows[(rows["label"] < 0) | (rows["label"] >= len(class_names))]
    if len(bad):
        raise DatasetError(f"{where}: {len(bad)} rows have labels outside 0..{len(class_names) - 1} "
                           f"({', '.join(class_names)}), e.g. id {bad.iloc[0]['id']}")


# ------------------------------------------------------------------------------------------------------ MVSA


def _member_problem(name: str, is_link: bool, is_special: bool = False) -> str | None:
    """Why an archive member must not be unpacked, or None: an absolute path, a `..` component, a link."""
    if is_link:
        return "is a link"
    if is_special:
        return "is a device, FIFO or other special file"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    return None


def _members(archive: Path) -> list[tuple[str, bool, bool]]:
    """(name, is_link, is_special) of every member of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return [(i.filename, stat.S_ISLNK(i.external_attr >> 16), False) for i in z.infolist()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            return [(m.name, m.issym() or m.islnk(), not (m.isfile() or m.isdir() or m.issym() or m.islnk()))
                    for m in t.getmembers()]
    raise DatasetError(f"{archive}: neither a zip nor a tar archive; unpack it by hand and pass the folder")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tar archive into dest (once). Every member is checked before anything is written: an
    absolute path, a `..` component, a link (symlink or hard link), a special file, or a path that resolves
    outside the staging folder refuses the whole archive with a DatasetError naming the member."""
    archive, dest = Path(archive), Path(dest)
    marker = dest / ".complete"
    if marker.exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    root = tmp.resolve()
    for name, is_link, is_special in _members(archive):
        why = _member_problem(name, is_link, is_special)
        if why is None and not (root / name).resolve().is_relative_to(root):
            why = f"would be written outside {dest}"
        if why is not None:
            raise DatasetError(f"{archive}: member {name!r} {why}; refused, nothing was extracted "
                               "(unpack a trusted copy by hand and pass the folder)")
    shutil.rmtree(tmp, ignore_errors=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    marker.write_text(archive.name)
    return dest


def aggregate_pair(text_label: str, image_label: str) -> str | None:
    """One label for a (text, image) pair; None for a positive/negative conflict (dropped)."""
    if text_label == image_label:
        return text_label
    if text_label == "neutral":
        return image_label
    if image_label == "neutral":
        return text_label
    return None


def majority(labels: list[str]) -> str | None:
    """The label at least two of three annotators gave; None when all differ."""
    label, count = collections.Counter(labels).most_common(1)[0]
    return label if count * 2 > len(labels) else None


def read_mvsa_labels(path: Path) -> pd.DataFrame:
    """labelResultAll.txt -> id, label (aggregated), text_label, image_label; rows that aggregate to nothing dropped."""
    rows, dropped = [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        cells = line.strip().split("\t")
        if i == 0 and not cells[0].strip().isdigit():
            continue  # header
        if len(cells) < 2:
            continue
        pairs = [c.split(",") for c in cells[1:]]
        if any(len(p) != 2 or p[0] not in MVSA_CLASSES or p[1] not in MVSA_CLASSES for p in pairs):
            raise DatasetError(f"{path}: line {i + 1} is not 'ID<TAB>text,image[<TAB>text,image ...]': {line!r}")
        t = majority([p[0] for p in pairs])
        v = majority([p[1] for p in pairs])
        label = aggregate_pair(t, v) if t is not None and v is not None else None
        if label is None:
            dropped += 1
            continue
        rows.append({"id": cells[0].strip(), "label": MVSA_CLASSES.index(label), "text_label": t, "image_label": v})
    df = pd.DataFrame(rows)
    df.attrs["dropped"] = dropped
    return df


def import_mvsa(source: str | Path, out: str | Path, name: str, multiple: bool = False,
                clmlf_splits: dict[str, Path] | None = None, seed: int = 1, **kw) -> Manifest:
    """Original MVSA release (archive or folder) -> canonical set; CLMLF's split files decide the split if given."""
    source = Path(source)
    root = safe_extract(source, source.with_name(source.name + ".d")) if source.is_file() else source
    label_file = next(iter(sorted(root.rglob("labelResultAll.txt"))), None) or next(iter(sorted(root.rglob("labelResult.txt"))), None)
    if label_file is None:
        raise DatasetError(f"{source}: no labelResultAll.txt inside; is this the MVSA release?")
    data_dir = label_file.parent / "data"
    labels = read_mvsa_labels(label_file)
    texts = {}
    for item in labels["id"]:
        p = data_dir / f"{item}.txt"
        texts[item] = p.read_bytes().decode("utf-8", errors="replace").strip() if p.exists() else ""
    labels["text"] = labels["id"].map(texts)
    prov = {"importer": "msarepro.data.imagetext.import_mvsa", "layout": "mvsa", "annotators": 3 if multiple else 1,
            "aggregation": "per-modality majority of annotators; equal -> it, one neutral -> the other, "
                           "positive/negative conflict dropped", "dropped_by_aggregation": labels.attrs["dropped"],
            **kw.pop("provenance", {})}
    if clmlf_splits:
        frames = [read_clmlf_split(Path(p), {"dev": "valid"}.get(s, s)) for s, p in clmlf_splits.items()]
        rows = pd.concat(frames, ignore_index=True)
        known = set(labels["id"])
        unknown = rows[~rows["id"].isin(known)]
        prov.update(split="CLMLF split files", clmlf_ids_not_in_release=int(len(unknown)),
                    clmlf_label_disagreements=int((rows.merge(labels, on="id", suffixes=("", "_agg"))
                                                   .eval("label != label_agg")).sum()))
    else:
        rows = labels[["id", "label", "text"]].copy()
        rows["split"] = random_split(len(rows), seed)
        prov.update(split=f"random 8:1:1, seed {seed}")
    _check_labels(rows, MVSA_CLASSES, label_file)
    return write_image_text_dataset(rows, data_dir, Path(out), name, MVSA_CLASSES, "weighted", provenance=prov, **kw)


# ------------------------------------------------------------------------------------------------------- HFM


def read_hfm_lines(path: Path, split: str) -> pd.DataFrame:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            item = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            raise DatasetError(f"{path}: line {i + 1} is not a Python literal list: {line[:80]!r}") from None
        if not isinstance(item, (list, tuple)) or len(item) < 3:
            raise DatasetError(f"{path}: line {i + 1}: expected [id, text, ..., label], got {item!r}"[:200])
        rows.append({"split": split, "id": str(item[0]), "text": str(item[1]), "label": int(item[-1])})
    return pd.DataFrame(rows)


def import_hfm(root: str | Path, out: str | Path, name: str = "hfm", **kw) -> Manifest:
    root = Path(root)
    frames = [read_hfm_lines(root / "text" / f, s)
              for s, f in (("train", "train.txt"), ("valid", "valid2.txt"), ("test", "test2.txt"))]
    rows = pd.concat(frames, ignore_index=True)
    _check_labels(rows, HFM_CLASSES, root)
    prov = {"importer": "msarepro.data.imagetext.import_hfm", "layout": "hfm", "split": "official (Cai et al. 2019)",
            **kw.pop("provenance", {})}
    return write_image_text_dataset(rows, root / "dataset_image", Path(out), name, HFM_CLASSES, "macro",
                                    provenance=prov, **kw)


# ----------------------------------------------------------------------------------------------------- table


def import_table(table: str | Path, images: str | Path, out: str | Path, name: str, class_names: tuple,
                 f1_average: str = "weighted", seed: int = 1, **kw) -> Manifest:
    table = Path(table)
    if table.suffix == ".json":
        df = pd.DataFrame(json.loads(table.read_text(encoding="utf-8")))
    else:
        df = pd.read_csv(table, sep="\t" if table.suffix in (".tsv", ".txt") else ",", dtype={"id": str},
                         keep_default_na=False)
    for col in ("id", "text", "label"):
        if col not in df.columns:
            raise DatasetError(f"{table}: missing column {col!r}; found {list(df.columns)}")
    lookup = {c.lower(): i for i, c in enumerate(class_names)}

    def to_index(v):
        s = str(v).strip()
        if s.lower() in lookup:
            return lookup[s.lower()]
        if s.lstrip("-").isdigit():
            return int(s)
        raise DatasetError(f"{table}: label {s!r} is neither an index nor one of {', '.join(class_names)}")

    rows = pd.DataFrame({"id": df["id"].astype(str), "text": df["text"].astype(str),
                         "label": [to_index(v) for v in df["label"]]})
    if "split" in df.columns:
        rows["split"] = df["split"].replace({"dev": "valid", "val": "valid"}).to_numpy()
        split_note = "the table's split column"
    else:
        rows["split"] = random_split(len(rows), seed)
        split_note = f"random 8:1:1, seed {seed}"
    _check_labels(rows, class_names, table)
    prov = {"importer": "msarepro.data.imagetext.import_table", "layout": "table", "split": split_note,
            **kw.pop("provenance", {})}
    return write_image_text_dataset(rows, Path(images), Path(out), name, class_names, f1_average, provenance=prov, **kw)
