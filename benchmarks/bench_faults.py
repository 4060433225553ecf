"""Fault injection on a whole benchmark run: SIGKILL at random moments, truncated files of
every kind, a full disk; each followed by the same command, whose outputs are compared
byte for byte with an uninterrupted run.

    python benchmarks/bench_faults.py --out /tmp/faults [--kills 20] [--patients 30]

Writes ``faults.md`` (the table of cases and outcomes) and ``faults.json`` in ``--out``.
Compared: ``metrics.csv``, ``predictions.csv``, ``survival.csv``, ``selection.csv`` and every
``importance/**.csv`` (radiopath.faults.output_files).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from radiopath.datasets import make_synthetic_cohort
from radiopath.faults import (
    differences,
    radiopath_command,
    run_and_kill,
    stage_at,
    truncate,
)


def _intact(path: Path, reference: Path) -> bool:
    """Whether a file damaged before the resume is whole again: a CSV equal to the
    uninterrupted run's, an npz with the same arrays, a checkpoint or JSON that loads."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".csv":
            return path.read_bytes() == reference.read_bytes()
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as a, np.load(reference) as b:
                return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
        if path.suffix == ".pt":
            import torch

            torch.load(path, weights_only=False)
            return True
        json.loads(path.read_text())
        return True
    except Exception:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--patients", type=int, default=30)
    p.add_argument("--epochs", type=int, default=12)
    a = p.parse_args()
    out = a.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    csv = make_synthetic_cohort(
        out / "cohort", n_patients=a.patients, seed=0, wsi_patches=(300, 600), ct_patches=(300, 600)
    )
    args = [
        "benchmark", "--cohort", csv, "--aggregators", "sparra,mean", "--models", "coxph,rsf",
        "--folds", 2, "--epochs", a.epochs, "--seed", 3, "--backend", "torch",
        "--bootstrap", 50,
    ]  # fmt: skip

    def cmd(run_dir):
        return radiopath_command(*args, "--out", run_dir)

    rows = []
    ref = out / "reference"
    whole = run_and_kill(cmd(ref))
    assert whole.returncode == 0, whole.stderr[-2000:]
    t_ref = whole.seconds
    again = run_and_kill(cmd(out / "reference2"))
    rows.append(
        {
            "case": "two uninterrupted runs",
            "where": "-",
            "outcome": "identical" if not differences(ref, out / "reference2") else "DIFFER",
            "seconds": round(again.seconds, 1),
        }
    )
    print(f"reference run {t_ref:.1f} s", flush=True)

    # 1. SIGKILL at random moments, then the same command to completion.
    for seed in range(a.kills):
        rng = random.Random(seed)
        run_dir = out / f"kill_{seed:02d}"
        delay = rng.uniform(0.02, 0.98) * t_ref
        first = run_and_kill(cmd(run_dir), delay=delay)
        where = stage_at(run_dir) if first.killed else "finished before the kill"
        resumed = run_and_kill(cmd(run_dir))
        diff = differences(ref, run_dir)
        ok = resumed.returncode == 0 and not diff
        rows.append(
            {
                "case": f"SIGKILL at {delay:.1f} s (seed {seed})",
                "where": where,
                "outcome": "identical" if ok else f"rc {resumed.returncode}; differ: {diff[:4]}",
                "seconds": round(resumed.seconds, 1),
            }
        )
        print(rows[-1], flush=True)
        shutil.rmtree(run_dir)

    # 2. Each kind of file truncated in a finished run, then the same command.
    kinds = {
        "graph (.pt)": lambda d: next((d / "graphs").rglob("*.pt")),
        "graph manifest": lambda d: d / "graphs" / "manifest.csv",
        "fold checkpoint (.pt)": lambda d: d / "runs" / "sparra" / "checkpoints" / "fold_0.pt",
        "fold ledger (done.json)": lambda d: (
            d / "runs" / "sparra" / "checkpoints" / "fold_1.done.json"
        ),
        "fold embeddings (.npz)": lambda d: d / "runs" / "sparra" / "embeddings" / "fold_0.npz",
        "importance map (.csv)": lambda d: next(
            (d / "runs" / "sparra" / "importance" / "sparra").glob("*.csv")
        ),
        "risk offsets (.csv)": lambda d: (
            d / "runs" / "sparra" / "importance" / "sparra.risk_offsets.csv"
        ),
        "evaluation metrics.csv": lambda d: d / "runs" / "mean" / "metrics.csv",
        "merged predictions.csv": lambda d: d / "predictions.csv",
        "stage ledger (stages.json)": lambda d: d / "stages.json",
        "run record (run.json)": lambda d: d / "run.json",
        "training run.json": lambda d: d / "runs" / "sparra" / "run.json",
    }
    for name, which in kinds.items():
        run_dir = out / "truncated"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(ref, run_dir, symlinks=True)
        target = which(run_dir)
        if name.startswith("fold checkpoint"):
            # a checkpoint is read only to finish or re-export its fold: take the fold's
            # ledger and embeddings away so that it must be read
            (target.parent / "fold_0.done.json").unlink()
            (run_dir / "runs" / "sparra" / "embeddings" / "fold_0.npz").unlink()
        if name.startswith("fold ledger"):
            # read when the training stage runs: make the benchmark check every stage again
            (run_dir / "stages.json").unlink()
        truncate(target)
        resumed = run_and_kill(cmd(run_dir))
        diff = differences(ref, run_dir)
        reported = target.name in resumed.stderr
        ok = resumed.returncode == 0 and not diff
        rel = target.relative_to(run_dir)
        rows.append(
            {
                "case": f"truncated {name}",
                "where": str(rel),
                "outcome": ("identical" if ok else f"rc {resumed.returncode}; differ: {diff[:4]}")
                + ("; reported by name" if reported else "; not named in the log")
                + ("; file repaired" if _intact(target, ref / rel) else "; FILE STILL DAMAGED"),
                "seconds": round(resumed.seconds, 1),
            }
        )
        print(rows[-1], flush=True)

    # 3. A full disk: every file capped at 64 KiB; the run must fail naming a path, then
    # finish identically once there is room.
    run_dir = out / "disk_full"
    full = run_and_kill(cmd(run_dir), file_size_limit=64 * 1024)
    last = [ln for ln in full.stderr.strip().splitlines() if ln.strip()][-1:] or [""]
    resumed = run_and_kill(cmd(run_dir))
    diff = differences(ref, run_dir)
    rows.append(
        {
            "case": "disk full (64 KiB file limit), then room again",
            "where": last[0][:160],
            "outcome": f"first rc {full.returncode}; "
            + (
                "identical after resume"
                if resumed.returncode == 0 and not diff
                else f"differ: {diff[:4]}"
            ),
            "seconds": round(resumed.seconds, 1),
        }
    )
    print(rows[-1], flush=True)

    # 4. A read-only output folder (as root, whom permissions do not stop, a read-only
    # tmpfs mounted there, where the operating system refuses every write).
    run_dir = out / "read_only"
    run_dir.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(run_dir)],
                capture_output=True,
            ).returncode
            == 0
        )
    else:
        run_dir.chmod(0o555)
    if os.geteuid() == 0 and not mounted:
        outcome = "not testable (root, and no read-only mount allowed)"
    else:
        ro = run_and_kill(cmd(run_dir))
        named = str(run_dir) in ro.stderr and "Traceback" not in ro.stderr
        outcome = f"rc {ro.returncode}; " + (
            "one-line error naming the folder" if named else "folder not named: " + ro.stderr[-200:]
        )
    if mounted:
        subprocess.run(["umount", str(run_dir)], check=False)
    run_dir.chmod(0o755)
    rows.append({"case": "read-only output folder", "where": "-", "outcome": outcome, "seconds": 0})

    # 5. A second writer on the same folder while the first runs.
    run_dir = out / "two_writers"
    first = subprocess.Popen(cmd(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = run_dir / ".radiopath.lock"
    while first.poll() is None and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)  # until the first run holds the folder
    second = run_and_kill(cmd(run_dir))
    first.wait()
    rows.append(
        {
            "case": "second writer on the same --out",
            "where": "-",
            "outcome": f"rc {second.returncode}; "
            + (
                "refused naming the owner"
                if "another radiopath run" in second.stderr and f"pid {first.pid}" in second.stderr
                else "NOT refused"
            )
            + ("; first run identical" if not differences(ref, run_dir) else "; first run DIFFERS"),
            "seconds": round(second.seconds, 1),
        }
    )

    n_kill = sum(r["case"].startswith("SIGKILL") for r in rows)
    n_ok = sum(r["case"].startswith("SIGKILL") and r["outcome"] == "identical" for r in rows)
    lines = [
        f"# Fault injection ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{a.patients} patients, reference run {t_ref:.1f} s)",
        "",
        f"SIGKILL resumes identical: {n_ok} of {n_kill}",
        "",
        "| case | where | outcome | resume s |",
        "|---|---|---|---|",
        *(f"| {r['case']} | {r['where']} | {r['outcome']} | {r['seconds']} |" for r in rows),
    ]
    (out / "faults.md").write_text("\n".join(lines) + "\n")
    (out / "faults.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    sys.exit(0 if n_ok == n_kill else 1)


if __name__ == "__main__":
    main()
