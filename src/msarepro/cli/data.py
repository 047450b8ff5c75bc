"""`msarepro data ...`: generate, download, import, extract and check datasets."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import load_params, with_params


def cmd_data_synth(args) -> int:
    from ..config import ConfigError
    from ..data.registry import DATASETS
    from ..data.synth import GENERATORS, generate
    from ..metrics import REPORTED
    from ..data.synth_like import LIKE, like_of, write_like

    like = like_of(args.name)
    if args.like is not None:
        if like is not None and like != args.like:
            raise ConfigError(f"data synth {args.name} --like {args.like}: the name says {like}; give another name "
                              f"or --like {like}")
        if args.name in DATASETS and like is None:  # never a synthetic set under a real or embedded set's name
            raise ConfigError(f"data synth {args.name} --like {args.like}: {args.name} is a registered dataset "
                              f"({DATASETS[args.name].source}); give the synthetic-like set another name")
    out = args.out or str(Path(load_params(args).data.root) / args.name)
    if args.like is not None:
        m = write_like(args.like, out, seed=args.seed, scale=args.scale, name=args.name)
    elif like is not None or args.name in GENERATORS:
        m = generate(args.name, out, seed=args.seed, scale=args.scale)
    else:
        raise ConfigError(f"data synth {args.name}: not an embedded set ({', '.join(sorted(GENERATORS))}) nor a "
                          f"synthetic-like one (synth-like-<{'|'.join(LIKE)}>); give --like REAL to write a "
                          "synthetic-like set under this name")
    print(f"wrote {out}: {m.splits}" + (f"; preset {m.preset}" if m.preset != m.name else ""))
    ref = m.provenance.get("reference", {})
    headline = REPORTED[m.metric_family][0]
    for k, v in ref.items():
        if all(isinstance(mv, dict) for mv in v.values()):  # per perturbation (oracle_without, oracle_random_drop)
            print(f"  reference {k} ({headline}): " + ", ".join(f"{pk}={pv[headline]:.3f}" for pk, pv in v.items()))
        else:
            print(f"  reference {k}: " + ", ".join(f"{mk}={mv:.3f}" for mk, mv in v.items()))
    return 0


def cmd_data_download(args) -> int:
    from ..prepare import Fetcher, download
    params = load_params(args)
    print(download(args.name, args.out, raw=args.raw, fetcher=Fetcher(retries=args.retries),
                   synth_seed=params.data.synth_seed, synth_scale=params.data.synth_scale))
    return 0


def cmd_data_import_mmsa(args) -> int:
    from ..data.mmsa import import_mmsa
    out = args.out or str(Path(load_params(args).data.root) / args.name)
    m = import_mmsa(args.path, out, name=args.name, family=args.family, preset=args.preset or args.name,
                    unlabeled=args.unlabeled)
    print(f"imported {args.path} as {args.name!r} into {out}: {m.splits}; non-finite values set to 0: "
          f"{m.nonfinite_replaced or 'none'}")
    return 0


def cmd_data_import_imagetext(args) -> int:
    from ..data import imagetext
    from ..data.registry import DATASETS
    out = args.out or str(Path(load_params(args).data.root) / args.name)
    info = DATASETS.get(args.name)
    classes = tuple(args.classes.split(",")) if args.classes else (
        info.extra["class_names"] if info and info.family == "image_text" else imagetext.MVSA_CLASSES)
    kw = {"image_size": args.image_size}
    if args.layout == "clmlf":
        f1 = "macro" if args.name == "hfm" else args.f1_average
        m = imagetext.import_clmlf(args.path, out, args.name, classes, f1, image_dir=args.images, **kw)
    elif args.layout == "mvsa":
        splits = None
        if args.splits:
            splits = {s: Path(args.splits) / f"{s}.json" for s in ("train", "dev", "test")}
        m = imagetext.import_mvsa(args.path, out, args.name, multiple=args.multiple, seed=args.seed,
                                  clmlf_splits=splits, **kw)
    elif args.layout == "hfm":
        m = imagetext.import_hfm(args.path, out, args.name, **kw)
    else:
        if not args.images:
            raise FileNotFoundError("--layout table needs --images FOLDER (one <id>.jpg per row)")
        m = imagetext.import_table(args.path, args.images, out, args.name, classes, args.f1_average,
                                   seed=args.seed, **kw)
    print(f"imported {args.path} ({args.layout}) as {args.name!r} into {out}: {m.splits}; "
          f"missing images: {m.provenance.get('missing_images', 0)}")
    return 0


def cmd_data_tokenize(args) -> int:
    """Fill the token cache: either one tokenizer (--tokenizer, --max-len) or every request a method makes on this
    dataset under its preset (--model: exactly what training will ask for, so the entries match)."""
    import json

    from ..config import ConfigError
    from ..data import load_dataset
    from ..data.registry import dataset_dir
    from ..data.tokens import TokenRequest, cache_entry, check_request, provide_tokens
    from ..io import sha256_file

    if bool(args.tokenizer) == bool(args.model):
        raise ConfigError("data tokenize: give --model METHOD (its own requests) or --tokenizer NAME (exactly one of them)")
    params = load_params(args)
    root = dataset_dir(args.name, params.data.root)
    ds = load_dataset(root, verify_hashes=params.data.verify_hashes)
    if args.model:
        from ..methods import get_method, method_config

        cls = get_method(args.model)
        cfg = method_config(params, args.model, ds.manifest.preset or ds.manifest.name)
        cls.check(cfg, ds.manifest)
        requests = cls.token_requests(cfg, ds.manifest)
        if not requests:
            print(f"{ds.manifest.name}: methods.{args.model} reads no token ids here; nothing to cache")
            return 0
    else:
        requests = [TokenRequest("text_ids", args.tokenizer, args.max_len)]
        problem = check_request(ds.manifest, requests[0], "--tokenizer")
        if problem is not None:
            raise ConfigError(problem)
    cache_root = Path(params.data.root) / ".tokens"
    record = provide_tokens(ds, requests, cache_root)
    for req in requests:
        rec = record[req.key]
        where = "the dataset's own ids (nothing to cache)"
        if rec["source"] == "derived":
            where = str(cache_entry(ds, req, cache_root, sha256_file(root / "labels.csv")))
        label = f"{req.key} " if args.model else ""
        print(f"{ds.manifest.name}: {label}token ids of {req.tokenizer!r}: {where}")
        print(json.dumps(rec, indent=2, sort_keys=True))
    return 0


def cmd_data_extract(args) -> int:
    from ..features import MissingPackage
    from ..features.pipeline import extract
    try:
        m, speed = extract(args.raw, args.out, text=args.text, audio=args.audio, vision=args.vision,
                           cache=args.cache, batch_size=args.batch_size, text_max_len=args.text_max_len,
                           audio_max_len=args.audio_max_len, vision_max_len=args.vision_max_len, name=args.name,
                           device=args.device)
    except MissingPackage as e:
        print(f"msarepro: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {m.splits}; dims " + ", ".join(f"{k}={v.get('dim', v.get('vocab_size'))}"
                                                           for k, v in sorted(m.modalities.items())))
    print("throughput (items/s): " + ", ".join(f"{k}={v:.1f}" for k, v in speed.items()))
    return 0


def cmd_data_extract_images(args) -> int:
    from ..features.image import add_image_features
    m, speed = add_image_features(args.dataset, args.out, args.model, batch_size=args.batch_size, device=args.device)
    print(f"wrote {args.out}: image_features {m.modalities['image_features']}; {speed:.1f} images/s")
    return 0


def cmd_data_check(args) -> int:
    from ..data import load_dataset
    from ..data.registry import dataset_dir
    from ..io import write_json

    params = load_params(args)
    ds = load_dataset(dataset_dir(args.name, params.data.root), verify_hashes=True)
    m = ds.manifest
    report = {"dataset": m.name, "family": m.family, "task": m.task, "metric_family": m.metric_family,
              "preset": m.preset or m.name, "splits": m.splits, "modalities": m.modalities, "raw_text": m.raw_text, "files": m.files,
              "nonfinite_replaced": m.nonfinite_replaced, "verified": "sha256 of every file"}
    if args.out:
        write_json(args.out, report)
    print(f"{m.name}: {m.family}, splits {m.splits}; every file's SHA-256 matches its manifest")
    return 0


def add_commands(sub) -> None:
    from ..data import DATASETS
    from ..data.synth import GENERATORS
    from ..data.synth_like import LIKE

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="generate an embedded synthetic dataset, or synthetic data in a real "
                        "dataset's shapes (--like)")
    s.add_argument("name", help=f"an embedded set ({', '.join(sorted(GENERATORS))}), synth-like-REAL, or with "
                   "--like any new name")
    s.add_argument("--like", choices=list(LIKE), help="write the real dataset's shapes, label range and grid, "
                   "split proportions and preset (src/msarepro/data/synth_like.py)")
    s.add_argument("--out", help="default: <data.root>/NAME")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, help="embedded sets: multiply every split size (default 1); "
                   "synthetic-like sets: fraction of the real split sizes (default: 200 training clips; 1: the "
                   "real sizes)")
    with_params(s)
    s.set_defaults(fn=cmd_data_synth)

    d = data.add_parser("download", help="the download stage: generate, download + verify + import, or say "
                        "where to place a dataset by hand")
    d.add_argument("name", help=f"{', '.join(sorted(DATASETS))} or raw-media (the embedded raw-media set)")
    d.add_argument("--out", required=True, help="dataset directory, e.g. data/NAME")
    d.add_argument("--raw", help="folder for downloaded / hand-placed source files (default: data/raw/NAME)")
    d.add_argument("--retries", type=int, default=4, help="retries per file, with exponential backoff")
    with_params(d)
    d.set_defaults(fn=cmd_data_download)

    im = data.add_parser("import-mmsa", help="import an MMSA feature pickle (loaded with a restricted unpickler)")
    im.add_argument("path")
    im.add_argument("--name", required=True, help="dataset name; then usable as --dataset NAME")
    im.add_argument("--family", choices=["mosi", "sims"], help="default: sims if the file has T/A/V labels")
    im.add_argument("--preset", help="params.yaml preset to use (default: NAME)")
    im.add_argument("--unlabeled", help="a pickle of unlabeled clips with the same features (CH-SIMS v2's "
                    "ch-simsv2u.pkl), imported as the `unlabeled` split that AE-MT can pretrain on")
    im.add_argument("--out", help="default: <data.root>/NAME")
    with_params(im)
    im.set_defaults(fn=cmd_data_import_mmsa)

    it = data.add_parser("import-imagetext", help="import an image-text dataset (CLMLF JSON, MVSA, HFM, table)")
    it.add_argument("path", help="clmlf: folder of split JSONs; mvsa: archive or folder; hfm: folder; table: file")
    it.add_argument("--name", required=True)
    it.add_argument("--layout", required=True, choices=["clmlf", "mvsa", "hfm", "table"])
    it.add_argument("--images", help="image folder (clmlf default: PATH/dataset_image; required for table)")
    it.add_argument("--multiple", action="store_true", help="mvsa: three annotators (MVSA-Multiple)")
    it.add_argument("--splits", help="mvsa: folder with CLMLF's train.json, dev.json, test.json to use their split")
    it.add_argument("--classes", help="comma-separated class names in label order (default: the registry's)")
    it.add_argument("--f1-average", default="weighted", choices=["weighted", "macro"])
    it.add_argument("--seed", type=int, default=1, help="seed of the random 8:1:1 split where none is official")
    it.add_argument("--image-size", type=int, default=224, help="stored image side (resize + centre crop)")
    it.add_argument("--out", help="default: <data.root>/NAME")
    with_params(it)
    it.set_defaults(fn=cmd_data_import_imagetext)

    tk = data.add_parser("tokenize", help="derive a dataset's token ids for a tokenizer from its raw text and "
                         "cache them under <data.root>/.tokens (ahead of offline training), then print the record")
    tk.add_argument("name", help="registered dataset name (under data.root) or a dataset directory")
    tk.add_argument("--model", help="a registered method: cache every token array it asks for on this dataset "
                    "(its preset in params.yaml, -S overrides applied), exactly as training will request them")
    tk.add_argument("--tokenizer", help="instead of --model: packaged-minilm, a Hugging Face tokenizer name (e.g. "
                    "microsoft/deberta-v3-base, openai/clip-vit-base-patch32) or a local folder")
    tk.add_argument("--max-len", type=int, default=0, help="ids per text (default 0: the tokenizer's own "
                    "model_max_length, at most 512; CLIP: 77); training asks for the method's own value")
    with_params(tk)
    tk.set_defaults(fn=cmd_data_tokenize)

    x = data.add_parser("extract", help="the features stage: raw media folder -> canonical trimodal dataset")
    x.add_argument("raw", help="raw-media folder (media.json, labels.csv, audio/, openface/ or video/)")
    x.add_argument("--out", required=True)
    x.add_argument("--name", help="dataset name (default: media.json's name)")
    x.add_argument("--text", default="packaged-minilm", help="HF encoder name or path (default: packaged MiniLM)")
    x.add_argument("--audio", default="librosa", choices=["librosa", "opensmile", "none"])
    x.add_argument("--vision", default="openface", choices=["openface", "mediapipe", "none"])
    x.add_argument("--cache", help="per-item feature cache (default: RAW/.features-cache)")
    x.add_argument("--batch-size", type=int, default=32)
    x.add_argument("--text-max-len", type=int, default=50)
    x.add_argument("--audio-max-len", type=int)
    x.add_argument("--vision-max-len", type=int)
    x.add_argument("--device", default="cpu", help="device of the text encoder (cpu, cuda, cuda:1 ...)")
    x.set_defaults(fn=cmd_data_extract)

    xi = data.add_parser("extract-images", help="add image-backbone features to an image-text dataset")
    xi.add_argument("dataset", help="canonical image-text dataset directory")
    xi.add_argument("--model", required=True, help="HF image backbone name or local folder")
    xi.add_argument("--out", required=True)
    xi.add_argument("--batch-size", type=int, default=32)
    xi.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    xi.set_defaults(fn=cmd_data_extract_images)

    c = data.add_parser("check", help="the check stage: verify every file's SHA-256, "
                        "shapes and labels, and write a summary")
    c.add_argument("name", help="registered dataset name (under data.root) or a dataset directory")
    c.add_argument("--out", help="summary JSON (e.g. checks/NAME.json)")
    with_params(c)
    c.set_defaults(fn=cmd_data_check)
