"""Give each Snakemake job a GPU slot: `python -m msarepro.gpuslot --gpus N [--jobs-per-gpu J] -- COMMAND ...`.

Snakemake's `--resources gpu=N` only limits how many jobs run at once; it does not say *which* device a job
may use. This wrapper takes the first free slot among N x J (an exclusive `flock` on `<lockdir>/slot<i>.lock`,
held until the command exits, so a crashed job frees its slot), runs COMMAND with CUDA_VISIBLE_DEVICES set to
the slot's GPU, and returns its exit status. Slot i is GPU i mod N: the first N jobs go to N different GPUs, and
with J > 1 up to J small runs share each GPU (a run that cannot fill a GPU leaves it idle between its steps;
J runs side by side fill those gaps). With `--gpus 0` it runs COMMAND unchanged (CPU slots).
The Snakemake profile allows N x J jobs at once (profiles/local-gpu/config.yaml: `resources: gpu=N*J`).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def acquire(n_slots: int, lockdir: Path, poll_s: float = 1.0, timeout_s: float | None = None):
    """-> (slot index, open lock file). Blocks until one of `n_slots` slots is free."""
    lockdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    while True:
        for i in range(n_slots):
            f = open(lockdir / f"slot{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            return i, f
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"no free GPU slot among {n_slots} in {lockdir} after {timeout_s}s")
        time.sleep(poll_s)


def device_of(slot: int, n_gpus: int) -> int:
    """The GPU of slot `slot` among n_gpus GPUs (slots go round the GPUs: 0, 1, ..., N-1, 0, 1, ...)."""
    return slot % n_gpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m msarepro.gpuslot", description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, required=True, help="GPUs on this machine (0: run on CPU)")
    p.add_argument("--jobs-per-gpu", type=int, default=1, help="runs sharing one GPU (default 1)")
    p.add_argument("--lockdir", default=os.environ.get("MSAREPRO_GPU_LOCKDIR",
                                                       str(Path(tempfile.gettempdir()) / "msarepro-gpus")))
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command after --")
    if args.jobs_per_gpu < 1:
        p.error(f"--jobs-per-gpu {args.jobs_per_gpu}: expected 1 or more (the jobs_per_gpu of the Snakemake profile)")
    if args.gpus <= 0:
        return subprocess.call(cmd)
    slot, lock = acquire(args.gpus * args.jobs_per_gpu, Path(args.lockdir))
    try:
        gpu = device_of(slot, args.gpus)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        print(f"gpuslot: slot {slot}, CUDA_VISIBLE_DEVICES={gpu}", file=sys.stderr, flush=True)
        return subprocess.call(cmd, env=env)
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
