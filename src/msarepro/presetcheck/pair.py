"""One (method, dataset) pair of `msarepro check-presets`, normally in a process of its own (so that its peak
memory is its own and a crash or an out-of-memory kill fails this pair only):

    python -m msarepro.presetcheck.pair SPEC.json RESULT.json

What it does, through the code a training run uses (train.py's pieces, not a copy of them):
    config    params.yaml with the check's overrides -> `methods.method_config` for the dataset's preset, exactly as
              `msarepro train` resolves it; then every named pretrained model whose weights are not here is replaced
              by its stand-in (presetcheck.encoders)
    tokens    `train.provide_inputs`: the method's `check` on the dataset, then the token ids it asks for
    pretrain  a method that loads pretrained encoders (AE-MT) pretrains them first, for `pretrain.epochs` of the
              check's overrides (1), through msarepro.pretrain
    build     `methods.build_method`, `on_train_start`, the frozen modules' record, `runtime.compiled`
    train     per training stage (`stage_starts`: SFTTR has two): its optimizer and schedule
              (`train.stage_optimizer`), then `steps` calls of `train.train_step` on full batches of the train split
              (the loss must be finite), each timed (with a device synchronisation on CUDA)
    evaluate  `train.predict` and `train.score` on the valid and test splits (one evaluation, as after an epoch)
    checkpoint  the state a checkpoint holds (`train.saved_weights`, the optimizer) serialised in memory: its size
    count     the model rebuilt with the real encoders' architectures (presetcheck.encoders.real_folder, weights
              never loaded) on PyTorch's meta device: its parameters, trainable parameters and those outside the
              pretrained models; this also checks the preset against the real encoders' widths

Peak memory on CPU: the process's peak resident set size (Linux VmHWM, reset through /proc/self/clear_refs just
before the model is built, after the C heap's freed pages are returned: malloc_trim) minus its resident size at
that moment: the model, optimizer state, activations,
evaluation and checkpoint serialisation of this pair. Where the reset is not possible the peak is the process's
whole (ru_maxrss) and `memory` says so. On CUDA: torch.cuda.max_memory_allocated over the same span.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path


def _rss_kib() -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status; (None, None) elsewhere."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None, None


class PeakMemory:
    """Peak memory from `start()` to `peak_mib()`: CPU resident set (see the module docstring) or CUDA allocations."""

    def __init__(self, device):
        self.device = device
        self.how = ""
        self.base = 0

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.how = "CUDA max_memory_allocated over the allocations before the model was built"
            return
        _return_freed_memory()  # what earlier work (data, AE-MT's pretraining) freed is not counted as held
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
            rss, _ = _rss_kib()
            if rss is None:
                raise OSError("no /proc/self/status")
            self.base, self.how = rss * 1024, "peak RSS (VmHWM, reset before the build) minus RSS before the build"
        except OSError:
            self.base, self.how = 0, "the process's peak RSS (ru_maxrss): the reset is not available here"

    def peak_mib(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.base:
            _, hwm = _rss_kib()
            return (hwm * 1024 - self.base) / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _return_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's malloc_trim; a no-op
    elsewhere), so that the resident size before the build counts only what is still in use."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def _relabel_native_ids(ds, real_name: str, standin: str) -> None:
    """The stand-in of a BERT reads the ids the dataset carries for the real tokenizer (the same WordPiece
    vocabulary for bert-base-uncased; ids of bert-base-chinese fall inside it): mark them as the stand-in's, so
    that they are used at their real length instead of derived again from the raw text."""
    native = ds.manifest.modalities.get("text_ids")
    if native is None or native.get("tokenizer") != real_name:
        return
    mods = {**ds.manifest.modalities, "text_ids": {**native, "tokenizer": standin, "vocab_sha256": None}}
    ds.manifest = dataclasses.replace(ds.manifest, modalities=mods)


def run_pair(spec: dict) -> dict:
    """Check one pair; -> the result record (see presetcheck.RESULT_FIELDS). Never raises for a failure of the
    pair: `error` holds its first line and `phase` where it happened."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(spec.get("threads", 1)))
    res = {"name": spec["name"], "dataset": spec["dataset_label"], "ok": False, "error": "", "phase": "config"}
    try:
        _run(spec, res)
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure of the pair is reported, whatever its type
        first = (str(e).strip().splitlines() or [""])[0]
        res["error"] = f"{type(e).__name__}: {first}"[:600]
        res["traceback"] = traceback.format_exc()[-4000:]
    finally:
        torch.set_num_threads(threads)  # in-process checks leave the caller's thread count as it was
    return res


def _run(spec: dict, res: dict) -> None:
    import torch

    from ..config import to_jsonable
    from ..data import ensure_dataset, load_dataset
    from ..data.loader import to_device, to_tensors
    from ..methods import build_method, get_method, load_params, method_config, method_of
    from ..runtime import compiled, configure, pick_device, pin, seed_everything
    from ..train import (_stage_starts, frozen_record, predict, provide_inputs, saved_weights, score,
                         stage_optimizer, train_step)
    from . import encoders

    params = load_params(spec["params"], spec.get("overrides") or [])
    name, seed, n_steps = spec["name"], int(spec.get("seed", 1111)), int(spec["steps"])
    res["phase"] = "data"
    data_dir = ensure_dataset(spec["dataset"], params.data.root, params.data.synth_seed, params.data.synth_scale)
    ds = load_dataset(data_dir, verify_hashes=params.data.verify_hashes)
    manifest = ds.manifest
    preset = manifest.preset or manifest.name
    res["phase"] = "config"
    method = method_of(params, name)
    cls = get_method(method)
    cfg = method_config(params, name, preset)  # the preset exactly as a run resolves it
    res.update(preset=preset, batch_size=cfg.batch_size, config=to_jsonable(cfg))
    named = {f: getattr(cfg, f) for f in encoders.ENCODER_FIELDS if isinstance(getattr(cfg, f, None), str)}
    standins = {f: spec["substitutes"][v] for f, v in named.items() if v in spec.get("substitutes", {})}
    res["encoders"] = {f: {"named": v, "used": standins.get(f, v)} for f, v in named.items()
                       if v not in ("features",)}
    run_cfg = dataclasses.replace(cfg, **standins) if standins else cfg
    for f, standin in standins.items():
        if standin == "packaged-minilm":
            _relabel_native_ids(ds, named[f], standin)

    res["phase"] = "tokens"
    provide_inputs(method, run_cfg, ds, params.data.root)  # the method's check, then its token ids
    manifest = ds.manifest
    device = pick_device(spec.get("device"))
    rt = params.runtime
    configure(rt, device)
    seed_everything(seed)
    splits = to_tensors(ds)
    res["samples"] = {s: len(t) for s, t in splits.items()}

    if cls.uses_pretraining and getattr(run_cfg, "pretrained", ""):
        res["phase"] = "pretrain"
        from ..pretrain.run import run_pretraining

        t0 = time.perf_counter()
        run_pretraining(params, spec["dataset"], seed, Path(run_cfg.pretrained.format(dataset=manifest.name)),
                        device=str(device), progress=False, name=name)
        res["pretrain_s"] = time.perf_counter() - t0

    res["phase"] = "build"
    mem = PeakMemory(device)
    mem.start()
    t0 = time.perf_counter()
    model = build_method(method, run_cfg, manifest).to(device)
    model.on_train_start()
    frozen = frozen_record(model)
    compiled(model, rt)
    res["build_s"] = time.perf_counter() - t0
    res["params_run"] = encoders.count(model)

    res["phase"] = "train"
    train = splits["train"]
    bs = run_cfg.batch_size
    res["full_batches"] = len(train) >= bs
    starts = _stage_starts(model, run_cfg)
    steps_per_epoch = max(1, math.ceil(len(train) / bs))
    pinned = pin(rt, device)
    times, losses = [], []
    for k, epoch in enumerate(starts):
        opt, sched = stage_optimizer(model, run_cfg, starts, k, steps_per_epoch)
        model.use_split(train)
        model.on_epoch_start(epoch, train)
        model.pop_epoch_counters()
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        batches = iter(())
        for i in range(n_steps):
            batch = next(batches, None)
            if batch is None:  # the split is shorter than the steps: another pass in a new order
                batches = train.batches(bs, shuffle=True, generator=gen, drop_last=True)
                batch = next(batches)
            batch = to_device(batch, device, pinned)
            _sync(device)
            t0 = time.perf_counter()
            terms = train_step(model, batch, epoch, opt, sched, run_cfg, rt, device)
            loss = float(sum(terms.values()).detach())  # the step's result on the host: the step is complete
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss is {loss} at step {i + 1} of stage {k} "
                                         f"(terms: {', '.join(f'{n}={float(v):.4g}' for n, v in terms.items())})")
    res["stages"] = len(starts)
    res["step_s"] = times
    timed = [t for j, t in enumerate(times) if j % n_steps] or times  # each stage's first step (allocations) left out
    res["s_per_step"] = sum(timed) / len(timed)
    res["first_losses"] = losses[:n_steps]

    res["phase"] = "evaluate"
    _sync(device)
    t0 = time.perf_counter()
    for s in ("valid", "test"):
        outputs, loss = predict(model, splits[s], device, runtime=rt)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the {s} loss is {loss}")
        res[f"{s}_metrics"] = score(manifest, outputs, splits[s].tensors["y"].numpy())
    res["eval_s"] = time.perf_counter() - t0

    res["phase"] = "checkpoint"
    buf = io.BytesIO()
    torch.save({"model": saved_weights(model, frozen), "optimizer": opt.state_dict()}, buf)
    res["checkpoint_mib"] = buf.tell() / 2**20
    del buf
    res["peak_mib"] = mem.peak_mib()
    res["memory"] = mem.how

    res["phase"] = "count"
    real = {f: spec["real_folders"][v] for f, v in named.items() if v in spec.get("real_folders", {})}
    if real:
        del model, opt, sched
        real_cfg = dataclasses.replace(cfg, **real)
        with encoders.quiet_transformers():
            try:
                with torch.device("meta"):  # the real architectures without weights: counted, never allocated
                    model = cls(real_cfg, manifest)
            except Exception:  # noqa: BLE001 - a build that needs real tensors: on the CPU (a real error recurs)
                model = cls(real_cfg, manifest)
    res["params"] = encoders.count(model)
    res["trainable"] = encoders.count_trainable(model)
    res["own"] = res["params"] - sum(encoders.count(m) for m in encoders.pretrained_modules(model))
    res["phase"] = "done"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m msarepro.presetcheck.pair SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    os.environ.setdefault("MSAREPRO_PROGRESS", "0")
    from ..io import write_json
    write_json(argv[1], run_pair(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
