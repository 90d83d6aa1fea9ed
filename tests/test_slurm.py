"""A table sweep on a real Slurm cluster (``tools/slurm_cluster.sh``: slurmctld, slurmd, slurmdbd on this
machine): submitted as a job array, one job told to checkpoint and requeue (Slurm's warning of a time limit
or preemption), one cancelled for good, one preempted by a higher-priority partition. The interrupted jobs
end exactly where an uninterrupted run ends; the cancelled one is a named failure in the table.

Every job holds after its checkpoint of iteration INTERRUPT_AFTER (``DIFFRL_HOLD_AT_CHECKPOINT``) until it is
interrupted, so each interruption lands on a running job, however fast the machine (a 300-iteration run used
to finish in 7 s, before the preemption that was meant for it).

Slow (a few minutes): `make test-slurm`. It uses the local cluster if it is up; otherwise it brings one up, which
needs root on Debian/Ubuntu (it installs and starts the daemons).
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from diffrl.run import HOLD_AT_CHECKPOINT

from conftest import REPO, deterministic_part, read_metrics, run_diffrl

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
ITERATIONS = 20
INTERRUPT_AFTER = 10  # iterations checkpointed before a job is interrupted; each job holds there until then
RUN = (
    "experiment=ceapg_table2",
    "env=acrobot",
    "algo=cem",
    "debug=smoke",
    f"iterations={ITERATIONS}",
    "chunk_iterations=2",
    "env.episode_length=200",
    "logger.console.progress_bar=false",
)
# One CPU and 2 GB a job: two jobs share the 2-core node, the third waits in the array.
SLURM = ("launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20")


def cluster_is_up() -> bool:
    """A cluster made by tools/slurm_cluster.sh answers (its `urgent` partition is what preempts here)."""
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h", "-p", "urgent", "-o", "%P"], capture_output=True, text=True).stdout != ""


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local cluster: used if it is up (any user), else brought up (root on Debian/Ubuntu)."""
    if cluster_is_up():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "no local Slurm cluster is up, and bringing one up needs root on Debian/Ubuntu: "
            "sudo tools/slurm_cluster.sh up"
        )
    up = subprocess.run([str(REPO / "tools" / "slurm_cluster.sh"), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"tools/slurm_cluster.sh up failed:\n{up.stdout}\n{up.stderr}"


def squeue(*fmt: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", " ".join(fmt)], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()]


def wait_for(predicate, what: str, sweep: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        assert sweep.poll() is None, f"the sweep ended while waiting for {what}: {sweep.communicate()[1][-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; squeue: {squeue('%i', '%T', '%P')}")


def job_dir(sweep_dir, seed):
    found = list(sweep_dir.glob(f"acrobot_cem_seed{seed}_*"))
    return found[0] if found else None


def checkpointed(sweep_dir, seed) -> bool:
    run_dir = job_dir(sweep_dir, seed)
    steps = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()] if run_dir else []
    return max(steps, default=0) >= INTERRUPT_AFTER


def running_slurm_id(seed) -> str | None:
    """``<array>_<task>`` of the sweep job of ``seed`` (array task = job number = seed here) while it runs."""
    return next((jid for jid, state in squeue("%i", "%T") if jid.endswith(f"_{seed}") and state == "RUNNING"), None)


def test_a_table_sweep_survives_requeue_preemption_and_a_cancelled_job(slurm_cluster, tmp_path, monkeypatch):
    # The Slurm jobs (one CPU each) and the local reference (every core) compare bit for bit only if their
    # programs are the same: multi-threaded Eigen would split matmuls by the core count (docs/cluster.md).
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip())
    # sbatch exports the submitting environment to the jobs (and to their requeued attempts, which resume
    # from the held checkpoint and save later iterations only, so they never hold again).
    env = {**os.environ, "DIFFRL_OUTPUTS": str(tmp_path / "slurm"), HOLD_AT_CHECKPOINT: str(INTERRUPT_AFTER)}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "train", "-m", *RUN, f"seed={','.join(map(str, SEEDS))}", *SLURM],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweep_dir = tmp_path / "slurm" / "tables" / "table2_quick"
    try:
        # seed 0: Slurm's warning signal (what it sends before a time limit or a preemption); submitit calls
        # the launcher's checkpoint hook and requeues the job.
        wait_for(lambda: checkpointed(sweep_dir, 0), "seed 0's checkpoint", sweep)
        subprocess.run(["scancel", "--signal=USR2", running_slurm_id(0)], check=True)
        # seed 1: cancelled for good.
        wait_for(lambda: checkpointed(sweep_dir, 1), "seed 1's checkpoint", sweep)
        cancelled = running_slurm_id(1)
        subprocess.run(["scancel", cancelled], check=True)
        # seed 2: preempted by a job of the higher-priority partition that needs the whole node; Slurm kills
        # and requeues it (PreemptMode=REQUEUE), with no warning to the job.
        wait_for(lambda: checkpointed(sweep_dir, 2) and running_slurm_id(2), "seed 2 running, checkpointed", sweep)
        cpus = str(os.cpu_count())
        subprocess.run(
            ["sbatch", "-p", "urgent", "-c", cpus, "--mem=100", "-o", "/dev/null", "--wrap", "sleep 3"],
            check=True,
            capture_output=True,
        )
        wait_for(lambda: not running_slurm_id(2), "seed 2's preemption", sweep, timeout=60)
        _, stderr = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            subprocess.run(["scancel", "--name=train"], check=False)
    assert sweep.returncode == 0, stderr[-3000:]

    # Every job in its own directory; the interrupted ones resumed from their checkpoints.
    assert sorted(p.name.split("_")[2] for p in sweep_dir.glob("acrobot_cem_*")) == ["seed0", "seed1", "seed2"]
    for seed in (0, 2):
        log = (job_dir(sweep_dir, seed) / "train.log").read_text()
        resumed = [
            int(line.rsplit("iteration ", 1)[1].split()[0]) for line in log.splitlines() if "resumed from" in line
        ]
        assert resumed and min(resumed) >= INTERRUPT_AFTER, f"seed {seed} did not resume: {log[-2000:]}"

    # ...and ended exactly where uninterrupted runs of the same jobs end.
    run_diffrl("train", "-m", *RUN, "seed=0,2", cwd=tmp_path / "local")
    local_dir = tmp_path / "local" / "outputs" / "tables" / "table2_quick"
    for seed in (0, 2):
        interrupted, clean = read_metrics(job_dir(sweep_dir, seed)), read_metrics(job_dir(local_dir, seed))
        assert [r["iteration"] for r in interrupted] == list(range(2, ITERATIONS + 1, 2))  # nothing lost or repeated
        assert [deterministic_part(r) for r in interrupted] == [deterministic_part(r) for r in clean]

    # The cancelled job failed for good, says so, and the table names it beside the two that finished.
    table = run_diffrl("table", str(sweep_dir), cwd=tmp_path).stdout
    assert "(4 seeds); **1 job(s) failed**: seed=1: Slurm job" in table and "CANCELLED" in table, table
