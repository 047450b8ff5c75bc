"""Runs ONE training in the current interpreter and writes its per-epoch timings as JSON (used by mmsa_compare.py).

    python compare_runner.py mmsa     --model mult --pickle P --epochs N --seed S --out T.json [--workers W] ...
    python compare_runner.py msarepro --model mult --dataset D --epochs N --seed S --out T.json -- <-S overrides>

Stdlib only at the top: the `mmsa` side runs in MMSA's own virtual environment, the `msarepro` side in the
interpreter of the checkout being measured. Neither side's files are edited; what has to change is patched here,
at import time:
  MMSA on CPU: torch.cuda.set_device is made a no-op (MMSA calls it with a CPU device), and ReduceLROnPlateau
  accepts and drops `verbose=` (MMSA's MulT trainer passes it; torch 2.13 no longer has it). MMSA's trainers
  iterate their loaders through `tqdm(...)`: that name is replaced by a timer which records each pass over a
  loader (train / valid / test) and stops training when epoch N+1 would start. Then, as MMSA's own run does, the
  best checkpoint is loaded and tested once.
  msarepro: `SplitTensors.batches(..., shuffle=True)` (the training pass) and `train.predict` (each evaluation)
  are wrapped with timers; `msarepro train` runs unchanged otherwise.
Both: the train pass of an epoch is the time from its first batch request to the loader's exhaustion (forward,
backward, optimizer steps included); eval is the time of each evaluation pass; epoch is start-to-start.
--profile-epoch K: torch.profiler over epoch K (0-based), from its train pass to the next epoch's (or the end);
the top ops by self CPU time go into the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

T_START = time.perf_counter()


class Recorder:
    """Per-epoch train/eval timings; starts and stops the optional profiler at epoch boundaries."""

    def __init__(self, epochs: int, profile_epoch: int | None):
        self.epochs, self.profile_epoch = epochs, profile_epoch
        self.rows: list[dict] = []
        self.prof = None
        self.profile_table = None
        self.profile_top: list[dict] = []
        self.closed, self.end = False, None
        self.profile_self_cpu_s = None

    def train_start(self) -> bool:
        """Called when a training pass begins; False when the wanted number of epochs has run."""
        self._stop_profiler()
        if len(self.rows) >= self.epochs:
            return False
        if self.profile_epoch is not None and len(self.rows) == self.profile_epoch:
            import torch.profiler as tp
            self.prof = tp.profile(activities=[tp.ProfilerActivity.CPU], record_shapes=False)
            self.prof.__enter__()
        self.rows.append({"start": time.perf_counter(), "train_s": None, "train_batches": 0, "train_samples": 0,
                          "eval": {}})
        return True

    def train_end(self, batches: int, samples: int) -> None:
        row = self.rows[-1]
        row["train_s"] = time.perf_counter() - row["start"]
        row["train_batches"], row["train_samples"] = batches, samples

    def close(self) -> None:
        self._stop_profiler()
        self.closed, self.end = True, time.perf_counter()

    def eval_done(self, split: str, seconds: float) -> None:
        if self.rows and not self.closed:
            ev = self.rows[-1]["eval"]
            ev[split] = ev.get(split, 0.0) + seconds

    def _stop_profiler(self) -> None:
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        ka = self.prof.key_averages()
        self.profile_table = ka.table(sort_by="self_cpu_time_total", row_limit=25)
        self.profile_self_cpu_s = sum(e.self_cpu_time_total for e in ka) / 1e6
        top = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
        self.profile_top = [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
                             "cpu_total_s": e.cpu_time_total / 1e6} for e in top]
        self.prof = None

    def finish(self) -> list[dict]:
        self._stop_profiler()
        starts = [r["start"] for r in self.rows] + [self.end or time.perf_counter()]
        out = []
        for i, r in enumerate(self.rows):
            out.append({"epoch": i, "train_s": r["train_s"], "train_batches": r["train_batches"],
                        "train_samples": r["train_samples"], "eval_s": r["eval"],
                        "epoch_s": starts[i + 1] - r["start"]})
        return out


def _batch_size(batch) -> int:
    if isinstance(batch, dict):
        for key in ("y", "index", "labels"):
            if key in batch:
                v = batch[key]
                v = v["M"] if isinstance(v, dict) else v
                return len(v)
    return 0


# ----------------------------------------------------------------------------------------------------- MMSA
def run_mmsa(a, rec: Recorder) -> dict:
    import torch
    torch.cuda.set_device = lambda *args, **kw: None  # MMSA calls it even when its device is the CPU
    import torch.optim.lr_scheduler as lrs

    class Plateau(lrs.ReduceLROnPlateau):  # torch 2.13 dropped `verbose`; MMSA's MulT trainer passes it
        def __init__(self, *args, verbose=None, **kw):
            super().__init__(*args, **kw)
    lrs.ReduceLROnPlateau = Plateau  # before MMSA's trainers import the name
    torch.set_num_threads(a.threads) if a.threads else None

    from MMSA.config import get_config_regression
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO
    from MMSA.utils import setup_seed

    args = get_config_regression(a.model, "mosi")
    args.update({"featurePath": a.pickle, "model_save_path": os.path.join(a.workdir, f"{a.model}-mosi.pth"),
                 "device": torch.device("cpu"), "train_mode": "regression", "custom_feature": None,
                 "feature_T": "", "feature_A": "", "feature_V": "", "cur_seed": 1})
    setup_seed(a.seed)
    t_setup = time.perf_counter()
    loaders = MMDataLoader(args, a.workers)
    names = {id(v): k for k, v in loaders.items()}
    model = AMIO(args).to(args["device"])
    trainer = ATIO().getTrain(args)

    class Stop(Exception):
        pass

    class TimedPass:  # stands in for tqdm(loader) inside MMSA's trainer module
        def __init__(self, iterable, *args, **kw):
            self.it = iterable

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def set_description(self, *args, **kw):
            pass

        def set_postfix(self, *args, **kw):
            pass

        def __iter__(self):
            split = names.get(id(self.it), "?")
            if split == "train" and not rec.train_start():
                raise Stop
            t0, nb, ns = time.perf_counter(), 0, 0
            for batch in self.it:
                nb += 1
                ns += _batch_size(batch)
                yield batch
            if split == "train":
                rec.train_end(nb, ns)
            else:
                rec.eval_done(split, time.perf_counter() - t0)

    sys.modules[type(trainer).__module__].tqdm = TimedPass
    t_train = time.perf_counter()
    try:
        trainer.do_train(model, loaders)
    except Stop:
        pass
    rec.close()  # the final test below belongs to no epoch
    t_trained = time.perf_counter()
    model.load_state_dict(torch.load(args["model_save_path"]))
    test = trainer.do_test(model, loaders["test"], mode="TEST")
    return {"setup_s": t_train - t_setup, "train_loop_s": t_trained - t_train,
            "final_test_s": time.perf_counter() - t_trained,
            "test": {k: float(v) for k, v in test.items()}, "settings": {k: _plain(v) for k, v in args.items()}}


def _plain(v):
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


# ------------------------------------------------------------------------------------------------- msarepro
def run_msarepro(a, rec: Recorder) -> dict:
    import torch
    torch.set_num_threads(a.threads) if a.threads else None
    import msarepro.train as mt
    from msarepro.data import loader

    orig_batches, orig_predict = loader.SplitTensors.batches, mt.predict

    def batches(self, batch_size, shuffle=False, *args, **kw):
        if not shuffle:
            yield from orig_batches(self, batch_size, shuffle, *args, **kw)
            return
        if not rec.train_start():
            raise SystemExit(f"msarepro started epoch {rec.epochs + 1}; expected {rec.epochs} epochs: check that "
                             "max_epochs reached the dataset's preset")
        nb = ns = 0
        for batch in orig_batches(self, batch_size, shuffle, *args, **kw):
            nb += 1
            ns += _batch_size(batch)
            yield batch
        rec.train_end(nb, ns)

    def predict(model, split, *args, **kw):
        t0 = time.perf_counter()
        out = orig_predict(model, split, *args, **kw)
        done = rec.rows[-1]["eval"] if rec.rows else {}
        rec.eval_done(("valid", "test", "other")[min(len(done), 2)], time.perf_counter() - t0)  # msarepro's order
        return out

    loader.SplitTensors.batches = batches
    mt.predict = predict
    from msarepro.cli import main
    t_train = time.perf_counter()
    argv = ["train", "--model", a.model, "--dataset", a.dataset, "--seed", str(a.seed), "--out", a.workdir,
            "--device", "cpu", "--no-progress"]
    for kv in a.set:
        argv += ["-S", kv]
    rc = main(argv)
    if rc:
        raise SystemExit(f"msarepro train exited with {rc}")
    metrics = json.load(open(os.path.join(a.workdir, "metrics.json")))
    resolved = json.load(open(os.path.join(a.workdir, "config.json")))
    return {"setup_s": None, "train_loop_s": time.perf_counter() - t_train, "final_test_s": None,
            "test": metrics["test"], "settings": resolved["method"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("side", choices=["mmsa", "msarepro"])
    p.add_argument("--model", required=True, help="MMSA: mult | tfn | lf_dnn; msarepro: a method name")
    p.add_argument("--pickle", help="MMSA: the feature pickle")
    p.add_argument("--dataset", help="msarepro: the imported dataset directory")
    p.add_argument("--workdir", required=True, help="where the run writes its checkpoints")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--workers", type=int, default=0, help="MMSA: DataLoader workers")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--profile-epoch", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("-S", "--set", action="append", default=[], help="msarepro: a params override")
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    rec = Recorder(a.epochs, a.profile_epoch)
    info = (run_mmsa if a.side == "mmsa" else run_msarepro)(a, rec)
    import torch
    epochs = rec.finish()
    if a.side == "msarepro" and len(epochs) != a.epochs:
        raise SystemExit(f"msarepro ran {len(epochs)} epochs, expected {a.epochs}: check max_epochs/patience")
    result = {"side": a.side, "model": a.model, "epochs": epochs, **info,
              "process_in_python_s": time.perf_counter() - T_START, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "profile_top": rec.profile_top,
              "profile_self_cpu_s": rec.profile_self_cpu_s,
              "profile_table": rec.profile_table}
    with open(a.out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
