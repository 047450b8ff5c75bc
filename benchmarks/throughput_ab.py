"""Per-method training and evaluation throughput of two msarepro checkouts, interleaved (before/after a change).

    python benchmarks/throughput_ab.py --before ../msarepro-before            # 5 interleaved repetitions
    python benchmarks/throughput_ab.py --before ../old --after . --reps 3 --out benchmarks/results/throughput_ab

Runs this checkout's pytest-benchmark suite (tests/benchmarks/test_throughput.py: one training step on a batch of
32, one no-grad prediction pass on a batch of 256, every registered method, embedded data) against each
checkout's `src/` in turn (before, after, before, after, ...), one torch thread, and writes OUT.md (median step
time and samples/s per method and side, ratio before / after: > 1 means the after side is faster) and OUT.json
(every repetition). The same test file measures both sides, so only the package under test differs.
Not part of CI; timings depend on the machine and its load, which is why the sides are interleaved.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

def commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "?"


def run_side(src: Path, out: Path) -> dict[str, dict]:
    """One pytest-benchmark run with `src` first on the path: {'method/train'|'method/eval': {s, batch}}."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests/benchmarks/test_throughput.py"), "-q",
           "-p", "no:cacheprovider", "--benchmark-enable", f"--benchmark-json={out}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"benchmark run against {src} failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    got = {}
    for b in json.loads(out.read_text())["benchmarks"]:
        kind = "train" if b["name"].startswith("test_train_step") else "eval"
        got[f"{b['params']['method']}/{kind}"] = {"s": b["stats"]["median"], "batch": b["extra_info"]["batch"]}
    return got


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="checkout measured as 'before' (its src/ is used)")
    p.add_argument("--after", type=Path, default=ROOT, help="checkout measured as 'after' (default: this one)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per side")
    p.add_argument("--out", type=Path, default=HERE / "results" / "throughput_ab", help="writes OUT.md, OUT.json")
    a = p.parse_args()
    sides = {"before": a.before.resolve(), "after": a.after.resolve()}
    runs: dict[str, list] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.reps):
            for side, repo in sides.items():
                got = run_side(repo / "src", Path(tmp) / f"{side}-{rep}.json")
                runs[side].append(got)
                print(f"rep {rep} {side} done", flush=True)
    keys = sorted(runs["after"][0])
    med = {side: {k: statistics.median(r[k]["s"] for r in runs[side]) for k in keys} for side in runs}
    batch = {k: runs["after"][0][k]["batch"] for k in keys}
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    L = ["# Per-method throughput, before / after (benchmarks/throughput_ab.py)", "",
         f"Machine: {cpu}, {os.cpu_count()} cores, 1 torch thread; before = {sides['before']} ({commit(sides['before'])}),"
         f" after = {sides['after']} ({commit(sides['after'])}); {a.reps} interleaved repetitions, medians of each "
         f"run's median over 5 rounds. Training step: a batch of 32 (forward, losses, backward, Adam); "
         "evaluation: one no-grad pass over a batch of 135 clips (synth-mosi at the tests' scale; 180 of synth-mvsa "
         "for image-text methods). "
         "Ratio = before / after time (> 1: after is faster).", "",
         "| method | train samples/s before | after | ratio | eval samples/s before | after | ratio |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in sorted({k.split("/")[0] for k in keys}):
        row = [m]
        for kind in ("train", "eval"):
            k = f"{m}/{kind}"
            b, f, n = med["before"][k], med["after"][k], batch[k]
            row += [f"{n / b:.0f}", f"{n / f:.0f}", f"{b / f:.2f}x"]
        L.append("| " + " | ".join(row) + " |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".md", "\n".join(L) + "\n"),
                         (".json", json.dumps({"sides": {k: str(v) for k, v in sides.items()},
                                               "commits": {k: commit(v) for k, v in sides.items()},
                                               "cpu": cpu, "reps": a.reps, "runs": runs, "median_s": med},
                                              indent=1) + "\n")):
        tmpf = a.out.with_suffix(suffix + ".tmp")
        tmpf.write_text(text)
        tmpf.replace(a.out.with_suffix(suffix))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
