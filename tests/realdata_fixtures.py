"""Fixture builders for the real-data tests (not collected): MMSA-format pickles in the real layout and a local
HTTP server (http.server in a thread on 127.0.0.1) that serves files, Range requests, Hugging Face-style
`resolve` and `tree` URLs, and can cut a connection part-way through a response."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
