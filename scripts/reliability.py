"""Stress test of training that survives (issue 7): kill -9, SIGTERM/SIGINT, disk full, byte flips.

Every training here is a real ``python -m ddpm train --data digits`` process with a tiny U-Net on
the CPU. A *chain* is one run directory trained by a sequence of processes, each interrupted by an
event and the next one started with ``--resume``; after the last event a final process finishes the
run, and its final model, EMA and optimizer tensors must be ``torch.equal`` to those of an
uninterrupted reference run (and its log records equal, line for line).

Events (``kill9`` and ``double-sigint`` kill points are chosen at random):

- ``kill9``: SIGKILL after the log shows a random step, after a random pause (some land in a
  checkpoint write, some in start-up); ``kill9-save``: the process SIGKILLs itself right before a
  random call inside ``save_checkpoint`` (a file write, an fsync, the rename, the pruning);
- ``sigterm`` / ``sigint``: sent after a random step; the process must finish the step, commit a
  checkpoint of that step and exit 0;
- ``double-sigint``: two SIGINTs inside a checkpoint write; the process must exit at once (130)
  leaving no temporary folder.

After every event: each ``step_*`` folder must verify (0 corrupted), the newest valid checkpoint
must be the newest one (nothing skipped), and the next process must say it resumes from it.

    python scripts/reliability.py                       # the full run recorded in docs/RELIABILITY.md
    python scripts/reliability.py --kills 2 --sigterms 1 --sigints 1 --steps 12   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddpm.rundir import CHECKPOINT_PATTERN, SCRATCH_PATTERN, CheckpointError, RunDir, verify_checkpoint
from ddpm.train.checkpoint import load_checkpoint

TINY_MODEL = [
    "--set", "model.base_channels=16", "--set", "model.num_res_blocks=1", "--set", "model.num_groups=8",
    "--set", "model.channel_mult=[1, 2]", "--set", "run.batch_size=16", "--set", "run.checkpoint_every=2",
    "--set", "run.sample_every=0", "--set", "run.preview_images=4", "--set", "run.preview_steps=5",
    "--set", "run.log_every=1", "--set", "run.num_threads=1",
]  # fmt: skip
# Functions of ddpm.train.checkpoint a child may SIGKILL itself in front of, with how many calls
# one save makes (so a random call number lands in the first saves of the process).
SAVE_KILL_POINTS = {"write_durably": 10, "fsync_dir": 4, "_swap_in": 2, "_prune": 2, "_remove_tree": 1}
CHILD_TIMEOUT_S = 600.0
# The child: optionally wrap one checkpoint function to SIGKILL (or double-SIGINT) the process at
# its N-th call, then run the CLI. Only this harness uses it; the package has no test hooks.
BOOTSTRAP = r"""
import os, signal, sys, time
import ddpm.train.checkpoint as checkpoint

def arm(variable, action):
    if not os.environ.get(variable):
        return
    name, count = os.environ[variable].split(":")
    original, calls = getattr(checkpoint, name), [0]
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(count):
            action()
        return original(*args, **kwargs)
    setattr(checkpoint, name, wrapped)

def double_sigint():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the first one is handled (a stop request) before the second arrives
    os.kill(os.getpid(), signal.SIGINT)

arm("DDPM_RELIABILITY_KILL_AT", lambda: os.kill(os.getpid(), signal.SIGKILL))
arm("DDPM_RELIABILITY_SIGINT_AT", double_sigint)
from ddpm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.say(f"PROBLEM: {text}")


def train_command(run_dir: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-c", BOOTSTRAP, "train", "--data", "digits", "--out", str(run_dir),
        "--steps", str(steps), "--resume", *TINY_MODEL,
    ]  # fmt: skip


def start(run_dir: Path, steps: int, log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    output = (run_dir.parent / log_name).open("w")
    return subprocess.Popen(
        train_command(run_dir, steps),
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def output_of(run_dir: Path, log_name: str) -> str:
    return (run_dir.parent / log_name).read_text(errors="replace")


def logged_step(run_dir: Path) -> int:
    """The last step in log.jsonl (a line cut off by a kill is ignored)."""
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def step_seconds(run_dir: Path) -> float:
    """Wall time of the last logged step (from the log's time_s), 0.1 s if unknown."""
    times = []
    for line in (run_dir / "log.jsonl").read_text().splitlines()[-3:]:
        try:
            times.append(float(json.loads(line)["time_s"]))
        except (ValueError, KeyError):
            continue
    return times[-1] - times[-2] if len(times) >= 2 and times[-1] > times[-2] else 0.1


def wait_for_step(process: subprocess.Popen, run_dir: Path, target: int) -> bool:
    """Wait until the log reaches ``target``; False if the process ended first."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        if logged_step(run_dir) >= target:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    process.kill()
    raise TimeoutError(f"no step {target} in {run_dir} after {CHILD_TIMEOUT_S:.0f}s")


def wait(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def audit(run_dir: Path, report: Report, label: str, *, clean_pid: int | None = None) -> Path | None:
    """Check the invariants after an event; return the checkpoint the next resume must use.

    ``clean_pid``: a process that exited on its own terms, which must have left no scratch folder.
    """
    folder = run_dir / "checkpoints"
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    for entry in entries:
        if CHECKPOINT_PATTERN.match(entry.name):
            try:
                verify_checkpoint(entry)
            except CheckpointError as err:
                report.problem(f"{label}: corrupted checkpoint {entry.name}: {err}")
    scratch = [
        e.name for e in entries if (m := SCRATCH_PATTERN.match(e.name)) and int(m.group(3)) == clean_pid
    ]
    if scratch:
        report.problem(f"{label}: the process left temporary folders {scratch}")
    skipped: list[str] = []
    newest = RunDir(run_dir).latest_checkpoint(warn=skipped.append)
    if skipped:
        report.problem(f"{label}: resume would skip invalid checkpoints: {skipped}")
    if (run_dir / "config.toml").exists():
        import tomllib

        try:
            tomllib.loads((run_dir / "config.toml").read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            report.problem(f"{label}: config.toml is damaged: {err}")
    return newest


def check_resume_line(output: str, expected: Path | None, report: Report, label: str) -> None:
    """The process must have resumed from ``expected`` (if it got as far as saying anything)."""
    match = re.search(r"resuming from (\S+)", output)
    if expected is None:
        if match:
            report.problem(f"{label}: resumed from {match.group(1)} although no checkpoint was complete")
    elif match and Path(match.group(1)).name != expected.name:
        report.problem(f"{label}: resumed from {match.group(1)}, expected {expected}")
    elif not match and "Traceback" in output:
        report.problem(f"{label}: the process failed before resuming:\n{output[-2000:]}")


def run_event(event: str, run_dir: Path, steps: int, rng: random.Random, report: Report, index: int) -> bool:
    """One process interrupted by ``event``; False when the run finished before the event landed."""
    label = f"event {index} ({event})"
    expected = audit(run_dir, report, f"before {label}")
    done = logged_step(run_dir)
    target = min(steps - 1, done + rng.randint(1, 3))
    env = {}
    if event == "kill9-save":
        name = rng.choice(sorted(SAVE_KILL_POINTS))
        env["DDPM_RELIABILITY_KILL_AT"] = f"{name}:{rng.randint(1, SAVE_KILL_POINTS[name])}"
    if event == "double-sigint":
        env["DDPM_RELIABILITY_SIGINT_AT"] = f"write_durably:{rng.randint(1, 5)}"
    log_name = f"process_{index:02d}.out"
    process = start(run_dir, steps, log_name, env)
    detail = env.get("DDPM_RELIABILITY_KILL_AT") or env.get("DDPM_RELIABILITY_SIGINT_AT") or ""
    if event == "kill9" and rng.random() < 0.2:  # some kills land in start-up (imports, data loading)
        time.sleep(rng.uniform(0.0, 1.5))  # importing torch alone takes longer
        process.send_signal(signal.SIGKILL)
        detail = "during start-up"
    elif event in ("kill9", "sigterm", "sigint"):
        if not wait_for_step(process, run_dir, target):
            wait(process)
            report.say(f"{label}: the run finished before step {target}")
            return False
        if event == "kill9":  # anywhere in the next step or so: a step, a log write, a checkpoint write
            time.sleep(rng.uniform(0.0, 1.5) * step_seconds(run_dir))
        sent_at = logged_step(run_dir)
        process.send_signal(
            {"kill9": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[event]
        )
        detail = f"after step {sent_at}"
    status = wait(process)
    output = output_of(run_dir, log_name)
    check_resume_line(output, expected, report, label)
    clean = event in ("sigterm", "sigint", "double-sigint")
    newest = audit(run_dir, report, f"after {label}", clean_pid=process.pid if clean else None)
    if event in ("sigterm", "sigint"):
        stopped = re.search(r"stopping at step (\d+)", output)
        if status != 0:
            report.problem(f"{label}: exit status {status}, expected 0:\n{output[-2000:]}")
        elif stopped is None:
            report.say(f"{label}: the signal came after the last step; the run is complete")
            return False
        elif newest is None or newest.name != f"step_{int(stopped.group(1)):07d}":
            report.problem(
                f"{label}: stopped at step {stopped.group(1)} but the newest checkpoint is {newest}"
            )
        elif int(stopped.group(1)) < sent_at:
            report.problem(f"{label}: stopped at step {stopped.group(1)}, before the step it was at")
    if event == "double-sigint" and status not in (0, 130):
        report.problem(f"{label}: exit status {status}, expected 130 (or 0):\n{output[-2000:]}")
    if event.startswith("kill9") and status == 0:
        report.say(f"{label}: the process finished before its kill point ({detail})")
        return False
    report.say(
        f"{label}: {detail or 'sent'}; exit {status}; newest checkpoint {newest.name if newest else None}"
    )
    return True


def run_chain(run_dir: Path, steps: int, events: list[str], rng: random.Random, report: Report) -> int:
    """Interrupt a run with ``events`` in turn, then finish it; the number of events that landed."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    landed = 0
    for index, event in enumerate(events):
        if not run_event(event, run_dir, steps, rng, report, index):
            break
        landed += 1
    expected = audit(run_dir, report, "before the final process")
    process = start(run_dir, steps, "process_final.out")
    status = wait(process)
    output = output_of(run_dir, "process_final.out")
    check_resume_line(output, expected, report, "final process")
    if status != 0:
        report.problem(f"final process: exit status {status}:\n{output[-2000:]}")
    audit(run_dir, report, "after the final process", clean_pid=process.pid)
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if SCRATCH_PATTERN.match(p.name)]
    if leftovers:
        report.problem(f"after the final process: scratch folders of dead processes remain: {leftovers}")
    return landed


def reference_run(run_dir: Path, steps: int) -> subprocess.Popen:
    """The uninterrupted run, started in the background."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return start(run_dir, steps, "reference.out")


LOG_FIELDS = ("step", "loss", "lr", "grad_norm", "epoch", "skipped_steps")


def compare_runs(reference: Path, chain: Path, report: Report, label: str) -> None:
    """Final tensors torch.equal, same meta counters, same log records (but for timings)."""
    newest = [RunDir(p).latest_checkpoint(warn=lambda _: None) for p in (reference, chain)]
    if None in newest:
        report.problem(f"{label}: a run has no checkpoint: {newest}")
        return
    a, b = (load_checkpoint(p) for p in newest)
    if a.step != b.step:
        report.problem(f"{label}: final steps differ: {a.step} vs {b.step}")
    problems_before = len(report.problems)
    for part in ("model", "ema", "optimizer"):
        tensors_a, tensors_b = getattr(a, part), getattr(b, part)
        if tensors_a.keys() != tensors_b.keys():
            report.problem(f"{label}: {part} tensors have different names")
            continue
        unequal = [name for name in tensors_a if not torch.equal(tensors_a[name], tensors_b[name])]
        if unequal:
            report.problem(f"{label}: {part} tensors differ from the reference: {unequal[:5]}")
    for key in ("ema_updates", "counters"):
        if a.meta.get(key) != b.meta.get(key):
            report.problem(f"{label}: meta {key} differs: {a.meta.get(key)} vs {b.meta.get(key)}")
    logs = [
        [
            {k: r.get(k) for k in LOG_FIELDS}
            for r in map(json.loads, (p / "log.jsonl").read_text().splitlines())
        ]
        for p in (reference, chain)
    ]
    if logs[0] != logs[1]:
        report.problem(f"{label}: log.jsonl records differ from the reference")
    report.say(
        f"{label}: final step {b.step}; model, EMA ({len(b.ema)} tensors), optimizer ({len(b.optimizer)} "
        f"tensors) equal to the reference: {len(report.problems) == problems_before}; "
        f"log records equal: {logs[0] == logs[1]}"
    )


def flip_trials(checkpoint: Path, work: Path, trials: int, rng: random.Random) -> tuple[int, int]:
    """Damage one random file of a copy of ``checkpoint`` per trial: (detected, loaded anyway)."""
    names = sorted(p.name for p in checkpoint.iterdir())
    copy = work / checkpoint.name
    detected = loaded = 0
    for trial in range(trials):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(checkpoint, copy)
        target = copy / rng.choice(names)
        data = bytearray(target.read_bytes())
        if trial % 2 == 0:
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)  # flip some bits of one byte
        else:
            del data[rng.randrange(len(data)) :]  # truncate
        target.write_bytes(bytes(data))
        try:
            load_checkpoint(copy)
            loaded += 1
        except CheckpointError:
            detected += 1
    return detected, loaded


def disk_full_check(run_dir: Path, steps: int, report: Report) -> None:
    """Resume a run whose next checkpoint cannot be written: a tiny tmpfs (root) or a file size limit."""
    mount = run_dir.parent / "tmpfs"
    mount.mkdir(exist_ok=True)
    newest = RunDir(run_dir).latest_checkpoint(warn=lambda _: None)
    size = sum(f.stat().st_size for f in newest.iterdir())
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size + size // 2}", "tmpfs", str(mount)],
            capture_output=True,
        ).returncode
        == 0
    )
    target = mount / "run"
    shutil.copytree(newest, target / "checkpoints" / newest.name)
    for name in ("config.toml", "log.jsonl"):
        shutil.copy(run_dir / name, target / name)
    how = f"tmpfs of {size + size // 2} bytes" if mounted else "RLIMIT_FSIZE below one tensor file"
    try:
        limit = max(f.stat().st_size for f in newest.iterdir()) // 2
        command = train_command(target, steps + 2)  # two more steps, then a checkpoint that cannot fit
        preexec = None if mounted else _file_size_limit(limit)
        result = subprocess.run(
            command, capture_output=True, text=True, preexec_fn=preexec, timeout=CHILD_TIMEOUT_S
        )
        message = [line for line in result.stderr.splitlines() if "could not write checkpoint" in line]
        leftovers = [p.name for p in (target / "checkpoints").iterdir() if SCRATCH_PATTERN.match(p.name)]
        intact = load_checkpoint(target / "checkpoints" / newest.name).step
        if result.returncode == 0 or not message or leftovers:
            report.problem(
                f"disk full ({how}): exit {result.returncode}, message {message}, temporaries {leftovers}"
            )
        report.say(
            f"disk full ({how}): exit {result.returncode}; {message[-1].strip() if message else '-'}; "
            f"previous checkpoint step {intact} loads; temporary folders left: {len(leftovers)}"
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def plan(
    kills: int, sigterms: int, sigints: int, double_sigints: int, rng: random.Random
) -> tuple[list, list]:
    """A kill chain (half timed kills, half kills inside checkpoint writes) and a signal chain."""
    kill_events = ["kill9", "kill9-save"] * (kills // 2) + ["kill9"] * (kills % 2)
    signal_events = ["sigterm"] * sigterms + ["sigint"] * sigints + ["double-sigint"] * double_sigints
    rng.shuffle(kill_events)
    rng.shuffle(signal_events)
    return kill_events, signal_events


def run_suite(
    work: Path, steps: int, kill_events: list[str], signal_events: list[str], flips: int, disk_full: bool,
    rng: random.Random,
) -> Report:  # fmt: skip
    """Reference run, the two chains compared with it, byte flips and (optionally) a full disk."""
    report = Report()
    reference = reference_run(work / "reference" / "run", steps)
    for name, events in (("kill", kill_events), ("signal", signal_events)):
        if events:
            landed = run_chain(work / name / "run", steps, events, rng, report)
            report.say(f"{name} chain: {landed} of {len(events)} events landed")
    if wait(reference) != 0:
        report.problem(f"reference run failed:\n{output_of(work / 'reference' / 'run', 'reference.out')}")
        return report
    for name, events in (("kill", kill_events), ("signal", signal_events)):
        if events:
            compare_runs(
                work / "reference" / "run", work / name / "run", report, f"{name} chain vs reference"
            )
    if flips:
        newest = RunDir(work / "reference" / "run").latest_checkpoint(warn=lambda _: None)
        detected, loaded = flip_trials(newest, work / "flips", flips, rng)
        report.say(f"byte flips and truncations: {detected} of {flips} detected, {loaded} loaded")
        if loaded:
            report.problem(f"{loaded} damaged checkpoints were loaded")
    if disk_full:
        disk_full_check(work / "reference" / "run", steps, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 events (half of them inside saves)")
    parser.add_argument("--sigterms", type=int, default=10)
    parser.add_argument("--sigints", type=int, default=10)
    parser.add_argument("--double-sigints", type=int, default=3, help="two SIGINTs inside a checkpoint write")
    parser.add_argument("--flips", type=int, default=100, help="damaged copies of a checkpoint")
    parser.add_argument("--no-disk-full", action="store_true", help="skip the full-disk check")
    parser.add_argument("--steps", type=int, default=60, help="steps of each run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="work folder, kept afterwards (default: a temporary one, deleted)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="ddpm-reliability-"))
    started = time.monotonic()
    kill_events, signal_events = plan(args.kills, args.sigterms, args.sigints, args.double_sigints, rng)
    try:
        report = run_suite(
            work, args.steps, kill_events, signal_events, args.flips, not args.no_disk_full, rng
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report.say(f"{len(report.problems)} problem(s) in {time.monotonic() - started:.0f}s")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
