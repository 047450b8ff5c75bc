"""Fixture builders for the real-data tests (not collected): MMSA-format pickles in the real layout, a local
HTTP server (http.server in a thread on 127.0.0.1) that serves files, Range requests, Hugging Face-style
`resolve` and `tree` URLs, and can cut a connection part-way through a response, and small image-text datasets
placed in each real layout (original MVSA archive, CLMLF, HFM, TumEmo table)."""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def make_mmsa(sizes=(24, 8, 8), family="mosi", lens=(12, 20, 16), dims=(16, 5, 7), seed=0, neg_inf=True) -> dict:
    """A dict in MMSA's layout with every key its files carry: variable true lengths, -inf in audio, token ids
    in text_bert, annotations, classification labels, and regression_labels_T/_A/_V for the CH-SIMS family.
    The label is planted in the text features so that a model can learn it."""
    rng = np.random.default_rng(seed)
    lt, la, lv = lens
    dt, da, dv = dims
    hi = 3.0 if family == "mosi" else 1.0
    out = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        y = np.round(rng.uniform(-hi, hi, n), 1).astype(np.float32)
        t_len = rng.integers(3, lt + 1, n)
        a_len = rng.integers(1, la + 1, n)
        v_len = rng.integers(2, lv + 1, n)
        text = rng.normal(0, 1, (n, lt, dt)).astype(np.float32)
        text[:, 0, 0] = y  # the [CLS] position carries the label
        bert = np.zeros((n, 3, lt), np.float32)  # MMSA stores ids / mask / segments as floats
        audio = rng.normal(0, 1, (n, la, da)).astype(np.float32)
        vision = rng.normal(0, 1, (n, lv, dv)).astype(np.float32)
        for i in range(n):
            bert[i, 0, :t_len[i]] = rng.integers(1000, 2000, t_len[i])
            bert[i, 0, 0], bert[i, 0, t_len[i] - 1] = 101, 102
            bert[i, 1, :t_len[i]] = 1
            text[i, t_len[i]:] = 0
            audio[i, a_len[i]:] = 0
            vision[i, v_len[i]:] = 0
        if neg_inf:
            audio[0, 0, 0] = -np.inf  # as in MOSI's released audio
            audio[n - 1, 0, :2] = -np.inf
        d = {"raw_text": np.array([f"sentence {split} {i}" for i in range(n)], dtype=object),
             "id": np.array([f"vid{split}${i}" for i in range(n)], dtype=object),
             "text": text, "text_bert": bert, "audio": audio, "vision": vision,
             "audio_lengths": [int(x) for x in a_len], "vision_lengths": [int(x) for x in v_len],
             "annotations": ["Positive" if v > 0 else "Negative" if v < 0 else "Neutral" for v in y],
             "classification_labels": (y > 0).astype(np.float32) * 2 - (y < 0).astype(np.float32) + 0,
             "regression_labels": y}
        if family == "sims":
            for c in "TAV":
                d[f"regression_labels_{c}"] = np.clip(y + rng.normal(0, 0.2, n), -1, 1).astype(np.float32)
        out[split] = d
    return out


def make_simsv2_unlabeled(n=20, lens=(12, 20, 16), dims=(16, 5, 7), seed=1) -> dict:
    """CH-SIMS v2's unsupervised part (ch-simsv2u.pkl) as docs/datasets.md assumes it: one flat dict with
    MMSA's feature keys and no labels (no split level; code that reads the release indexes data['text_bert'],
    data['audio'], data['vision'] directly). Same per-frame dims as `make_mmsa`'s CH-SIMS-family file."""
    d = make_mmsa(sizes=(n, 1, 1), family="sims", lens=lens, dims=dims, seed=seed, neg_inf=False)["train"]
    for k in ("annotations", "classification_labels", "regression_labels",
              "regression_labels_T", "regression_labels_A", "regression_labels_V"):
        del d[k]
    d["id"] = np.array([f"unsup${i}" for i in range(n)], dtype=object)
    d["raw_text"] = np.array([f"unlabeled sentence {i}" for i in range(n)], dtype=object)
    return d


class FileServer:
    """Serve `files` (URL path -> bytes) on 127.0.0.1. `cut[path] = k`: the first k responses for that path
    announce the full length but send only half of what remains, then drop the connection."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                if path.startswith("/api/datasets/"):  # HF tree listing: /api/datasets/<repo>/tree/<rev>/<folder>
                    _, _, _, owner, repo, _, _rev, *folder = path.split("/")
                    prefix = f"/datasets/{owner}/{repo}/resolve/main/"
                    entries = [{"type": "file", "path": p[len(prefix):], "size": len(b), "oid": "0" * 40}
                               for p, b in server.files.items() if p.startswith(prefix + "/".join(folder))]
                    body = json.dumps(entries).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut.get(path, 0) > 0:
                    server.cut[path] -= 1
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------------- image-text layouts, placed by hand
# Small fixtures in each real image-text layout, written where a user puts them (docs/datasets.md, the registry's
# placement message): `rows` gives every item's id, raw text and label, each image has its own pixels (a seeded
# pattern, 40 x 30, so resizing and cropping matter), and texts are distinct (mixed case, a hashtag, an emoji, one
# long enough to be truncated), so a test can tell every row's tokens and pixels apart.

TEXT_WORDS = ("Happy sunny day at the beach with friends", "so sad and tired in the rain today",
              "calm quiet morning coffee", "ANGRY about the train again", "love this photo of my dog",
              "bored at home, nothing on", "great game tonight! #team", "dark cold night in the city")


def imagetext_rows(n: int = 24, n_classes: int = 3, seed: int = 0, first_id: int = 1) -> list[dict]:
    """n rows {id, text, label}: distinct raw texts, labels cycling over the classes (shuffled, seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    rows = []
    for i in range(n):
        text = f"{i} {TEXT_WORDS[i % len(TEXT_WORDS)]}"  # the number first: rows stay distinct when cut
        if i % 5 == 1:
            text += " \U0001F600"  # an emoji: unknown to the DeBERTa vocabulary, bytes to CLIP's
        if i == 2:
            text = " ".join([text] * 6)  # longer than a small max_len: truncated
        rows.append({"id": str(first_id + i), "text": text, "label": int(labels[i])})
    return rows


def write_pattern_image(path, seed: int, size=(40, 30)) -> None:
    """A seeded RGB pattern (smooth gradient plus noise), saved as JPEG or PNG by the file's extension."""
    from PIL import Image

    rng = np.random.default_rng(1000 + seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    img = np.stack([(base[c] + (c + 1) * 3.0 * xx + (3 - c) * 2.0 * yy) % 256 for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "RGB").save(path)


def place_mvsa_release(raw_dir, archive_name: str, rows: list[dict], annotators: int = 1) -> Path:
    """The original MVSA release zipped as distributed: MVSA[_Single]/labelResultAll.txt (ID<TAB>text,image per
    annotator) and data/<id>.txt, data/<id>.jpg, in raw_dir/archive_name. Every row's annotations aggregate to its
    label (MVSA-Multiple: two of three annotators agree on both modalities, the third dissents)."""
    import zipfile

    from msarepro.data.imagetext import MVSA_CLASSES

    raw_dir = Path(raw_dir)
    staging = raw_dir / ".staging"
    top = staging / ("MVSA" if annotators > 1 else "MVSA_Single")
    lines = ["ID\t" + "\t".join(["text,image"] * annotators)]
    for k, r in enumerate(rows):
        c = MVSA_CLASSES[r["label"]]
        other = MVSA_CLASSES[(r["label"] + 1) % 3]
        pairs = [f"{c},{c}"] if annotators == 1 else [f"{c},{c}", f"{other},{other}", f"{c},{c}"][-annotators:]
        if annotators == 1 and k % 4 == 3 and c != "neutral":
            pairs = [f"{c},neutral"]  # one neutral modality: the pair takes the other's label
        lines.append(f"{r['id']}\t" + "\t".join(pairs))
        (top / "data").mkdir(parents=True, exist_ok=True)
        (top / "data" / f"{r['id']}.txt").write_bytes(r["text"].encode("utf-8") + b"\n")
        write_pattern_image(top / "data" / f"{r['id']}.jpg", int(r["id"]))
    (top / "labelResultAll.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    archive = raw_dir / archive_name
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(staging.rglob("*")):
            z.write(p, p.relative_to(staging).as_posix())
    shutil.rmtree(staging)
    return archive


def write_clmlf_splits(folder, rows: list[dict], sizes=(16, 4, 4)) -> Path:
    """CLMLF's split files train.json, dev.json, test.json (lists of {"id", "text", "emotion_label"}) in folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a, b = sizes[0], sizes[0] + sizes[1]
    for name, part in (("train.json", rows[:a]), ("dev.json", rows[a:b]), ("test.json", rows[b:])):
        (folder / name).write_text(json.dumps([{"id": r["id"], "text": r["text"], "emotion_label": r["label"]}
                                               for r in part], ensure_ascii=False), encoding="utf-8")
    return folder


def place_clmlf_layout(folder, rows: list[dict], sizes=(16, 4, 4)) -> Path:
    """CLMLF's repository layout: train.json, dev.json, test.json and dataset_image/<id>.jpg."""
    folder = write_clmlf_splits(folder, rows, sizes)
    for r in rows:
        write_pattern_image(folder / "dataset_image" / f"{r['id']}.jpg", int(r["id"]))
    return folder


def place_hfm(raw_dir, rows: list[dict], sizes=(16, 4, 4)) -> Path:
    """HFM as its repository has it: text/train.txt, valid2.txt, test2.txt (one Python list literal per line:
    train [id, text, label], valid/test [id, text, hashtag label, label]) and dataset_image/<id>.jpg."""
    raw_dir = Path(raw_dir)
    (raw_dir / "text").mkdir(parents=True, exist_ok=True)
    a, b = sizes[0], sizes[0] + sizes[1]
    for name, part in (("train.txt", rows[:a]), ("valid2.txt", rows[a:b]), ("test2.txt", rows[b:])):
        lines = [repr([r["id"], r["text"], r["label"]]) if name == "train.txt"
                 else repr([r["id"], r["text"], 0, r["label"]]) for r in part]
        (raw_dir / "text" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for r in rows:
        write_pattern_image(raw_dir / "dataset_image" / f"{r['id']}.jpg", int(r["id"]))
    return raw_dir


def place_tumemo(raw_dir, rows: list[dict], class_names) -> Path:
    """TumEmo as the registry asks for it: tumemo.csv (id, text, label as a class name) and images/<id>.jpg."""
    import csv

    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    with open(raw_dir / "tumemo.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for r in rows:
            w.writerow([r["id"], r["text"], class_names[r["label"]]])
    for r in rows:
        write_pattern_image(raw_dir / "images" / f"{r['id']}.jpg", int(r["id"]))
    return raw_dir
