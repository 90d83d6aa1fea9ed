"""CE-APG at the paper's settings, old code against new, side by side on the same machine in one run.

    python -m benchmarks.bench_ceapg_speed [--base fb43257] [--apg-steps 10] [--repeats 3] [--out FILE]

Times one outer iteration of CE-APG on the acrobot at the paper's settings (24 candidates x 100 Adam
steps x 4 start states x 500 steps, plus the normaliser's rollout), for 1 seed and for 8 vmapped seeds:
- ``base``: the code at ``--base`` (a git worktree of that commit, made and removed here), as it ran then;
- HEAD on 1 device, and HEAD with ``hardware.devices=2`` (CPU: two host devices, one thread each; one seed
  shards its 24 candidates, 8 seeds shard the seeds).
Each configuration runs in its own process (XLA flags are per process), with ``--apg-steps`` Adam steps
scaled to 100 (the inner loop is a scan: its cost is linear in its length). Run time is the best of
``--repeats`` calls after the compile; the configurations are timed ``--rounds`` times, interleaved,
and the best round is kept, because this machine's speed drifts by tens of percent between processes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
TWO_HOST_DEVICES = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"


def time_in_this_process(tree: pathlib.Path, seeds: int, devices: int, apg_steps: int, repeats: int) -> dict:
    """Child: import diffrl from ``tree`` and time one compiled CE-APG iteration there."""
    sys.path.insert(0, str(tree))
    # Only ``tree``'s modules: an editable install would fill in modules the old tree does not have.
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    import jax
    from hydra import compose, initialize_config_dir

    import diffrl
    from benchmarks.timing import time_compiled
    from diffrl.run import build_experiment, make_chunk_runner, seed_keys  # both trees export these

    assert pathlib.Path(diffrl.__file__).resolve().is_relative_to(tree.resolve()), diffrl.__file__
    cache = os.environ.get("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    overrides = ["algo=ce_apg", "env=acrobot", "budget=paper", f"num_seeds={seeds}", f"algo.apg_steps={apg_steps}"]
    overrides += [f"hardware.devices={devices}"] if devices > 1 else []
    with initialize_config_dir(config_dir=str(tree / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    exp = build_experiment(cfg)
    mesh = None
    if devices > 1:
        from diffrl.devices import shard_seeds
        from diffrl.run import place_on_devices

        mesh, _ = place_on_devices(cfg, exp)
    states = jax.jit(jax.vmap(exp.algo.init))(seed_keys(0, seeds))
    if mesh is not None:
        states = shard_seeds(states, mesh)
    runner = make_chunk_runner(exp.algo, mesh) if mesh is not None else make_chunk_runner(exp.algo)  # base: no mesh
    compile_s, best = time_compiled(lambda: runner.lower(states, 1), (states,), repeats)
    return {"compile_s": compile_s, "run_s": best, "iteration_s": best * 100 / apg_steps}


def time_in_child(tree: pathlib.Path, seeds: int, devices: int, args) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = TWO_HOST_DEVICES
    command = [sys.executable, "-m", "benchmarks.bench_ceapg_speed", "--child", str(tree), str(seeds), str(devices)]
    command += ["--apg-steps", str(args.apg_steps), "--repeats", str(args.repeats)]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worktree(commit: str) -> pathlib.Path:
    path = pathlib.Path(tempfile.mkdtemp(prefix="diffrl-base-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="fb43257", help="the commit to compare against")
    parser.add_argument("--apg-steps", type=int, default=10, help="Adam steps timed, scaled to the paper's 100")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("TREE", "SEEDS", "DEVICES"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "ceapg_speed.md")
    args = parser.parse_args()
    if args.child:
        tree, seeds, devices = pathlib.Path(args.child[0]), int(args.child[1]), int(args.child[2])
        print(json.dumps(time_in_this_process(tree, seeds, devices, args.apg_steps, args.repeats)))
        return

    base = worktree(args.base)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    head_name = head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    configs = [(f"{args.base} (base)", base, 1), (f"{head_name}, 1 device", ROOT, 1)]
    configs += [(f"{head_name}, hardware.devices=2", ROOT, 2)]
    results: dict[tuple[str, int], dict] = {}
    try:
        for round_ in range(args.rounds):
            for seeds in (1, 8):
                for name, tree, devices in configs:
                    timing = time_in_child(tree, seeds, devices, args)
                    print(
                        f"round {round_ + 1} {name:32s} {seeds} seed(s): {timing['iteration_s']:.2f} s/iteration "
                        f"(compile {timing['compile_s']:.1f} s)",
                        flush=True,
                    )
                    kept = results.get((name, seeds))
                    if kept is None or timing["iteration_s"] < kept["iteration_s"]:
                        results[(name, seeds)] = timing
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
        shutil.rmtree(base.parent, ignore_errors=True)  # the temporary directory the worktree was made in

    old = {seeds: results[(configs[0][0], seeds)]["iteration_s"] for seeds in (1, 8)}
    lines = [
        f"# CE-APG at the paper's settings: {args.base} against {head_name}",
        "",
        f"{platform.node()}, {os.cpu_count()} CPU cores, {platform.machine()}. Acrobot (analytic), 24 candidates x "
        f"100 Adam steps x 4 starts x 500 steps; {args.apg_steps} Adam steps timed and scaled to 100; best of "
        f"{args.repeats} calls, best of {args.rounds} interleaved rounds.",
        "",
        "| code | seeds | s per iteration | speed-up vs base | 200 iterations | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for seeds in (1, 8):
        for name, _, _ in configs:
            r = results[(name, seeds)]
            lines.append(
                f"| {name} | {seeds} | {r['iteration_s']:.1f} | {old[seeds] / r['iteration_s']:.2f}x "
                f"| {r['iteration_s'] * 200 / 3600:.2f} h | {r['compile_s']:.1f} |"
            )
    lines.append("")
    for name, _, _ in configs:
        ratio = results[(name, 8)]["iteration_s"] / results[(name, 1)]["iteration_s"]
        lines.append(f"- {name}: 8 seeds cost {ratio:.2f}x one seed.")
    print("\n".join(lines), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
