"""Give each Snakemake job its own GPU: `python -m msarepro.gpuslot --gpus N -- COMMAND ...`.

Snakemake's `--resources gpu=N` only limits how many jobs run at once; it does not say *which* device a job
may use. This wrapper takes the first free slot among N (an exclusive `flock` on `<lockdir>/gpu<i>.lock`, held
until the command exits, so a crashed job frees its slot), runs COMMAND with CUDA_VISIBLE_DEVICES=<i>, and
returns its exit status. With `--gpus 0` it runs COMMAND unchanged (CPU slots).
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


def acquire(n_gpus: int, lockdir: Path, poll_s: float = 1.0, timeout_s: float | None = None):
    """-> (slot index, open lock file). Blocks until a slot is free."""
    lockdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    while True:
        for i in range(n_gpus):
            f = open(lockdir / f"gpu{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            return i, f
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"no free GPU slot among {n_gpus} in {lockdir} after {timeout_s}s")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m msarepro.gpuslot", description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, required=True, help="GPUs on this machine (0: run on CPU)")
    p.add_argument("--lockdir", default=os.environ.get("MSAREPRO_GPU_LOCKDIR",
                                                       str(Path(tempfile.gettempdir()) / "msarepro-gpus")))
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command after --")
    if args.gpus <= 0:
        return subprocess.call(cmd)
    slot, lock = acquire(args.gpus, Path(args.lockdir))
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(slot)}
        print(f"gpuslot: CUDA_VISIBLE_DEVICES={slot}", file=sys.stderr, flush=True)
        return subprocess.call(cmd, env=env)
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
