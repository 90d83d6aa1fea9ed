"""``diffrl table`` on hand-made sweep directories: mean/std, failed and missing cells, the paper column."""

import csv
import json

import numpy as np
import pytest
import yaml

from diffrl.baselines import trainer_class
from diffrl.experiment import algorithm_options
from diffrl.paper_results import PAPER_RESULTS, PAPER_SAMPLES, paper_result
from diffrl.tables import collect_cells, format_number, markdown_table, write_tables

from conftest import compose_train, import_tool, run_diffrl


def make_job(
    sweep_dir, algo, task, per_seed=None, *, status="completed", log=None, seed=0, overrides=(), eval_episodes=16
):
    """A job directory as `diffrl train -m` leaves it; ``per_seed=None`` -> no summary.json (killed);
    ``overrides``: the job's other command-line/sweep overrides, e.g. ("algo.lr=0.1",)."""
    job = sweep_dir / "_".join([task, algo, f"seed{seed}", *overrides])
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"algo": {"name": algo}, "env": {"name": task}, "budget": "quick", "seed": seed})
    )
    all_overrides = [f"algo={algo}", f"env={task}", f"seed={seed}", "experiment=ceapg_table2", *overrides]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(all_overrides))
    if log is not None:
        (job / "train.log").write_text(log)
    if per_seed is not None:
        arr = np.asarray(per_seed, dtype=float)
        summary = {
            "status": status,
            "env": task,
            "algo": algo,
            "budget": "quick",
            "seed": seed,
            "num_seeds": len(per_seed),
            "env_steps_per_seed": 12000,
            "wall_clock_s": 90.0,
            "eval_episodes": eval_episodes,
            "final_return": {"per_seed": per_seed, "mean": arr.mean(), "std": arr.std()},
        }
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def make_sweep(tmp_path, algos, tasks, experiment="ceapg_table1"):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun = {
        "hydra": {
            "sweeper": {"params": {"algo": ",".join(algos), "env": ",".join(tasks)}},
            "overrides": {"task": [f"experiment={experiment}"]},
            "runtime": {"choices": {"experiment": experiment}},
        }
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    return sweep


def test_cells_are_mean_and_population_std_with_the_paper_beside(tmp_path):
    sweep = make_sweep(tmp_path, ["ce_apg", "ppo"], ["acrobot"])
    make_job(sweep, "ce_apg", "acrobot", [1000.0, 2000.0, 4000.0])
    make_job(sweep, "ppo", "acrobot", [10.0, 30.0])
    cells, rows, tasks, table = collect_cells([sweep])
    assert (rows, tasks, table) == ([("ce_apg", ""), ("ppo", "")], ["acrobot"], "table1")
    cell = cells[("ce_apg", "acrobot")]
    assert cell.status == "completed"
    assert cell.mean == pytest.approx(7000 / 3)
    assert cell.std == pytest.approx(np.std([1000, 2000, 4000]))  # population std (ddof 0)
    assert cells[("ppo", "acrobot")].std == pytest.approx(10.0)

    md_path, csv_path = write_tables([sweep], tmp_path / "out")
    md = md_path.read_text()
    assert "| CE-APG | 2333 ± 1247 (3 seeds) | 3053 ± 458 |" in md
    assert "| PPO | 20 ± 10 (2 seeds) | 405 ± 927 |" in md
    assert "12k steps, 90 s" in md
    rows = list(csv.DictReader(csv_path.open()))
    assert [(r["algo"], r["task"], r["status"]) for r in rows] == [
        ("ce_apg", "acrobot", "completed"),
        ("ppo", "acrobot", "completed"),
    ]
    assert float(rows[0]["mean"]) == pytest.approx(7000 / 3) and float(rows[0]["paper_mean"]) == 3053


def test_failed_killed_and_missing_jobs_are_shown_never_dropped(tmp_path):
    sweep = make_sweep(tmp_path, ["ce_apg", "sac", "brax_apg", "ppo"], ["acrobot"])
    make_job(sweep, "ce_apg", "acrobot", [1.0, 2.0])
    failed = make_job(sweep, "sac", "acrobot")
    (failed / "summary.json").write_text(
        json.dumps({"status": "failed", "algo": "sac", "env": "acrobot", "error": "ValueError: boom"})
    )
    make_job(sweep, "brax_apg", "acrobot", log="[2026-11-21 10:00:00][diffrl][ERROR] - out of memory\n")
    # ppo: in the sweep's plan, no directory at all
    cells, *_ = collect_cells([sweep])
    assert cells[("sac", "acrobot")].status == "failed"
    assert cells[("sac", "acrobot")].reason == "ValueError: boom"
    assert cells[("brax_apg", "acrobot")].status == "failed"
    assert cells[("brax_apg", "acrobot")].reason == "out of memory"
    assert cells[("ppo", "acrobot")].status == "missing"

    md = write_tables([sweep], tmp_path / "out")[0].read_text()
    assert "**failed**: ValueError: boom" in md and "**failed**: out of memory" in md
    assert "**missing**: no job directory" in md
    rows = {r["algo"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    assert rows["ppo"]["status"] == "missing" and rows["ppo"]["mean"] == ""


def test_a_task_with_no_job_of_one_algo_is_missing(tmp_path):
    sweep = make_sweep(tmp_path, ["cem"], ["cartpole_swingup", "acrobot"], experiment="ceapg_table2")
    make_job(sweep, "cem", "acrobot", [5.0, 7.0])
    cells, rows, tasks, table = collect_cells([sweep])
    assert tasks == ["cartpole_swingup", "acrobot"] and table == "table2"  # the paper's column order
    assert cells[("cem", "cartpole_swingup")].status == "missing"
    assert cells[("cem", "acrobot")].mean == 6.0


def test_seed_families_pool_into_one_cell_and_hyperparameters_make_rows(tmp_path):
    """A sweep over seed=0,1 and algo.lr=0.01,0.1: two rows (one per lr), each cell over both seed families;
    an override every job shares (iterations=2) labels nothing."""
    sweep = make_sweep(tmp_path, ["cem"], ["acrobot"], experiment="ceapg_table2")
    for seed, lr, returns in [(0, "0.01", [1.0, 2.0]), (1, "0.01", [3.0, 4.0]), (0, "0.1", [10.0, 20.0])]:
        make_job(sweep, "cem", "acrobot", returns, seed=seed, overrides=(f"algo.lr={lr}", "iterations=2"))
    cells, rows, tasks, _ = collect_cells([sweep])
    assert rows == [("cem", "algo.lr=0.01"), ("cem", "algo.lr=0.1")]  # the plan's plain row is replaced
    pooled = cells[("cem [algo.lr=0.01]", "acrobot")]
    assert sorted(pooled.per_seed.values()) == [1.0, 2.0, 3.0, 4.0] and pooled.mean == 2.5
    assert pooled.wall_clock_s == 180.0  # both jobs' wall clocks
    assert cells[("cem [algo.lr=0.1]", "acrobot")].mean == 15.0
    md = write_tables([sweep], tmp_path / "out")[0].read_text()
    assert "| CEM [algo.lr=0.01] | 2.5 ± 1.12 (4 seeds) | 626 ± 160 |" in md
    assert "| CEM [algo.lr=0.1] | 15 ± 5 (2 seeds) | 626 ± 160 |" in md
    csv_rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["variant"], r["num_seeds"]) for r in csv_rows] == [("algo.lr=0.01", "4"), ("algo.lr=0.1", "2")]


def test_a_failed_seed_family_is_named_in_its_pooled_cell_until_a_rerun_completes(tmp_path):
    """seed=0,1,2 on a cluster where the seed=1 job was cancelled: the cell pools the two that finished and
    says which job failed and why; a rerun of seed=1 that completes (another sweep directory) clears it."""
    sweep = make_sweep(tmp_path, ["cem"], ["acrobot"], experiment="ceapg_table2")
    make_job(sweep, "cem", "acrobot", [1.0, 2.0], seed=0)
    failed = make_job(sweep, "cem", "acrobot", seed=1)
    (failed / "summary.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "algo": "cem",
                "env": "acrobot",
                "seed": 1,
                "error": "Slurm job 7_1 ended CANCELLED by 0 without a result",
            }
        )
    )
    make_job(sweep, "cem", "acrobot", [3.0, 4.0], seed=2)
    cells, *_ = collect_cells([sweep])
    cell = cells[("cem", "acrobot")]
    assert cell.status == "completed" and sorted(cell.per_seed.values()) == [1.0, 2.0, 3.0, 4.0]
    assert cell.failures == {1: "Slurm job 7_1 ended CANCELLED by 0 without a result"}
    md = write_tables([sweep], tmp_path / "out")[0].read_text()
    assert (
        "2.5 ± 1.12 (4 seeds); **1 job(s) failed**: seed=1: Slurm job 7_1 ended CANCELLED by 0 without a result" in md
    )
    (row,) = csv.DictReader((tmp_path / "out" / "results.csv").open())
    assert row["reason"] == "seed=1 failed: Slurm job 7_1 ended CANCELLED by 0 without a result"

    rerun = tmp_path / "rerun"
    make_job(rerun, "cem", "acrobot", [5.0, 6.0], seed=1)
    cells, *_ = collect_cells([sweep, rerun])
    assert cells[("cem", "acrobot")].failures == {} and len(cells[("cem", "acrobot")].per_seed) == 6


def test_the_caption_names_the_evaluation_episodes_the_jobs_used(tmp_path):
    sweep = make_sweep(tmp_path, ["cem"], ["acrobot"], experiment="ceapg_table2")
    make_job(sweep, "cem", "acrobot", [1.0, 2.0], eval_episodes=4)
    md = write_tables([sweep], tmp_path / "out")[0].read_text()
    assert "final evaluation return (4 deterministic episodes per seed)" in md and "16 deterministic" not in md


def test_paper_results_cover_both_tables_and_the_shac_figure():
    assert paper_result("ce_apg", "acrobot") == (3053.0, 458.0)
    assert paper_result("cem", "double_pendulum_swingup", "table2") == (-2.7e5, 7.6e5)
    assert paper_result("cem", "acrobot", "table1") is None
    assert paper_result("shac", "shac_ant", "shac_fig4") == (7500.0, None)  # a reading of a curve: no std
    assert paper_result("ild", "hopper", "ild_fig") == (242.0, None) and paper_result("demo", "hopper", "ild_fig")
    assert len(PAPER_RESULTS) == 3 * (4 + 3) + 7 + 12
    assert format_number(-3.9e5) == "-3.9e5" and format_number(-355.0) == "-355"


def test_the_shac_figures_cost_table_names_the_papers_samples_beside_each_cells(tmp_path):
    sweep = make_sweep(tmp_path, ["shac", "ppo"], ["shac_ant", "shac_hopper"], experiment="shac_fig4")
    for algo in ("shac", "ppo"):
        for task in ("shac_ant", "shac_hopper"):
            make_job(sweep, algo, task, [1.0, 2.0])
    md = write_tables([sweep], tmp_path / "out")[0].read_text()
    assert "| the paper's samples per seed | 4.1M steps | 16.4M steps |" in md


def test_the_papers_samples_are_shacs_paper_run_and_what_the_paper_budget_trains_ppo_and_sac():
    """PAPER_SAMPLES, SHAC's paper run (conf/tuned/shac_<task>_shac.yaml: epochs x envs x horizon) and what PPO's
    and SAC's paper budget (conf/tuned/shac_<task>_{ppo,sac}.yaml) trains, in Brax's whole epochs, say the same."""
    for task, samples in PAPER_SAMPLES["shac_fig4"].items():
        options, epochs = algorithm_options(compose_train("algo=shac", f"env={task}", "budget=paper"))
        assert epochs * options["num_envs"] * options["horizon"] == samples, task
        for algo in ("ppo", "sac"):
            options, iterations = algorithm_options(compose_train(f"algo={algo}", f"env={task}", "budget=paper"))
            assert iterations == samples, (task, algo)
            assert trainer_class(algo)(None, options, iterations).trained_iterations() == samples, (task, algo)


def test_brax_ppo_trains_whole_epochs_of_whole_batches():
    """Brax's PPO runs num_evals - 1 epochs, each rounded up to whole batches (batch_size x unroll x minibatches):
    the paper settings' 409,600-step batch with 21 evaluations trains 8.19M for any budget up to that."""
    options, _ = algorithm_options(compose_train("algo=ppo", "env=shac_ant", "budget=paper", "algo.num_evals=21"))
    assert trainer_class("ppo")(None, options, 4_096_000).trained_iterations() == 20 * 409_600
    assert trainer_class("ppo")(None, options, 80_000_000).trained_iterations() == 20 * 10 * 409_600


def test_an_imitation_sweep_shows_the_demos_return_beside_the_methods(tmp_path):
    sweep = make_sweep(tmp_path, ["ild", "bc"], ["hopper"], experiment="ild_fig")
    demo = tmp_path / "hopper.npz"
    np.savez(demo, **{"return": np.array([354.4, 340.0])})
    for algo, returns in (("ild", [200.0, 250.0]), ("bc", [100.0, 120.0])):
        job = make_job(sweep, algo, "hopper", returns)
        summary = json.loads((job / "summary.json").read_text())
        summary["effective"] = {"algo": {"name": algo, "demo": str(demo)}}
        (job / "summary.json").write_text(json.dumps(summary))
    cells, rows, _, table = collect_cells([sweep])
    assert table == "ild_fig" and rows[-1] == ("demo", "")
    text = markdown_table(cells, rows, ["hopper"], table)
    assert "| expert demo | 354 (best of 2) | ≈ 331 |" in text
    assert "| ILD | 225 ± 25 (2 seeds) | ≈ 242 |" in text


def test_diffrl_table_command(tmp_path):
    sweep = make_sweep(tmp_path, ["cem"], ["acrobot"], experiment="ceapg_table2")
    make_job(sweep, "cem", "acrobot", [5.0, 7.0])
    proc = run_diffrl("table", str(sweep), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert "| CEM | 6 ± 1 (2 seeds) | 626 ± 160 |" in proc.stdout
    assert (tmp_path / "out" / "results.md").is_file() and (tmp_path / "out" / "results.csv").is_file()


def fake_imitation_run(
    directory, env: str, algo: str, distances: list[float], overrides: tuple[str, ...] = (), demo: dict | None = None
) -> None:
    """A finished BC/ILD run's files; ``demo``: its summary's record of the demo it imitated (``effective.algo``)."""
    directory.mkdir(parents=True)
    if overrides:
        (directory / ".hydra").mkdir()
        (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {"env": env, "algo": algo, **({"effective": {"algo": demo}} if demo else {})}
    (directory / "summary.json").write_text(json.dumps(summary))
    rows = [{"iteration": 0, "bc_loss_final": 0.1}] + [
        {"iteration": i + 1, "distance": d} for i, d in enumerate(distances)
    ]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_ild_distance_table_says_where_the_distance_fell_and_where_it_rose(tmp_path):
    """`make ild`'s distance.md (tools/ild_distances.py): first -> lowest -> last of each run's fixed-scale
    distance, and whether the last is below the first."""
    ild_distances = import_tool("ild_distances")
    fake_imitation_run(tmp_path / "hopper_ild_seed0", "hopper", "ild", [0.8, 0.5, 0.6])
    fake_imitation_run(tmp_path / "hopper_bc_seed0", "hopper", "bc", [0.4, 0.3, 0.7])
    ild_distances.main([str(tmp_path)])
    table = (tmp_path / "distance.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Hopper"))
    ild, bc = "0.800 (1) → 0.500 (2) → 0.600 (3): falls", "0.400 (1) → 0.300 (2) → 0.700 (3): **rises**"
    # the reference: the committed hopper demo file's 5 other episodes against its best (docs/ild.md)
    assert row == f"| Hopper | {ild} | {bc} | 0.202 (5 episodes) |"
    assert "| task | ILD | BC | expert's other episodes |" in table


def test_the_ild_distance_table_gives_each_variant_its_column_and_refuses_two_runs_of_one(tmp_path):
    """A sweep over ILD's learning rate keeps both runs (labelled as `diffrl table` labels rows), and two runs of
    the same column on one task are refused instead of one silently replacing the other."""
    ild_distances = import_tool("ild_distances")
    fake_imitation_run(tmp_path / "a" / "hopper_ild_lr3", "hopper", "ild", [0.8, 0.9], ("algo.learning_rate=1e-3",))
    fake_imitation_run(tmp_path / "a" / "hopper_ild_lr4", "hopper", "ild", [0.8, 0.7], ("algo.learning_rate=1e-4",))
    fake_imitation_run(tmp_path / "a" / "hopper_bc", "hopper", "bc", [0.4, 0.3])
    ild_distances.main([str(tmp_path / "a")])
    table = (tmp_path / "a" / "distance.md").read_text()
    assert "| task | ILD [algo.learning_rate=1e-3] | ILD [algo.learning_rate=1e-4] | BC |" in table
    lr3, lr4 = "0.800 (1) → 0.800 (1) → 0.900 (2): **rises**", "0.800 (1) → 0.700 (2) → 0.700 (2): falls"
    assert f"| Hopper | {lr3} | {lr4} |" in table
    fake_imitation_run(tmp_path / "b" / "hopper_ild", "hopper", "ild", [0.5, 0.4])
    fake_imitation_run(tmp_path / "c" / "hopper_ild", "hopper", "ild", [0.6, 0.4])
    with pytest.raises(SystemExit, match="two runs of ILD on hopper"):
        ild_distances.main([str(tmp_path / "b"), str(tmp_path / "c")])


def test_the_ild_distance_tables_reference_follows_the_demo_each_run_recorded(tmp_path):
    """The reference column reads what each run's summary says it imitated: with `algo.demos=2` the hopper demo
    file's other 4 episodes against the nearer of its best 2, unclipped; runs of one task that imitated different
    demos get no reference, and say why, instead of one that serves neither."""
    from diffrl.algos.ild import reference_distances
    from diffrl.demo_file import default_demo_path

    ild_distances = import_tool("ild_distances")
    hopper = str(default_demo_path("hopper"))
    two = {"demo": hopper, "demos": 2, "episode_length": 128, "state_clip": None}
    fake_imitation_run(tmp_path / "a" / "hopper_ild", "hopper", "ild", [0.8, 0.7], demo=two)
    fake_imitation_run(tmp_path / "a" / "hopper_bc", "hopper", "bc", [0.4, 0.3], demo=two)
    ild_distances.main([str(tmp_path / "a")])
    with np.load(hopper) as data:
        states = data["state"][:, :128]
    expected = float(np.mean(reference_distances(states[:2], states[2:], clip=None)))
    assert f"| {expected:.3f} (4 episodes) |" in (tmp_path / "a" / "distance.md").read_text()
    one = {**two, "demos": 1, "state_clip": 5.0}
    fake_imitation_run(tmp_path / "b" / "hopper_ild", "hopper", "ild", [0.8, 0.7], demo=two)
    fake_imitation_run(tmp_path / "b" / "hopper_bc", "hopper", "bc", [0.4, 0.3], demo=one)
    ild_distances.main([str(tmp_path / "b")])
    assert "| – (the runs imitated different demos) |" in (tmp_path / "b" / "distance.md").read_text()


def fake_eval(path, per_episode):
    """An eval.json as `diffrl eval` writes it: per seed, every episode's return."""
    path.parent.mkdir(parents=True, exist_ok=True)
    means = [float(np.mean(r)) for r in per_episode]
    path.write_text(json.dumps({"return_per_episode": per_episode, "return": {"per_seed": means}, "eval_seed": 12345}))
    return path


def test_compare_evals_pairs_the_seeds_of_both_methods_in_order_and_pools_seed_families(tmp_path):
    """Method A's seeds pair with B's in the order given, across files (seed families); the differences, the
    count of seeds where A is ahead and the one-sided tests are A's over B's, never the other way round."""
    compare_evals = import_tool("compare_evals")
    a = [
        fake_eval(tmp_path / "a0" / "eval.json", [[10.0, 12.0], [4.0, 6.0]]),
        fake_eval(tmp_path / "a1.json", [[9.0, 9.0]]),
    ]
    b = [
        fake_eval(tmp_path / "b0" / "eval.json", [[7.0, 9.0], [6.0, 8.0]]),
        fake_eval(tmp_path / "b1.json", [[5.0, 5.0]]),
    ]
    table = compare_evals.comparison(a, b, ("SHAC", "PPO"))
    rows = [line for line in table.splitlines() if line.startswith("| a")]
    assert rows[0] == "| a0[0] (2 episodes) / b0[0] (2 episodes) | 11.0 ± 1.0 | 8.0 ± 1.0 | +3.0 |"
    assert rows[1].endswith("| 5.0 ± 1.0 | 7.0 ± 1.0 | -2.0 |")
    assert rows[2].startswith("| a1[0] (2 episodes) / b1[0]") and rows[2].endswith("| +4.0 |")
    assert "| **mean ± std over 3 seeds** | **8.3 ± 2.5** | **6.7 ± 1.2** | **+1.7** |" in table
    assert "SHAC above PPO on 2 of 3 seed pairs" in table
    welch = float(table.split("Welch's t = ")[1].split(",")[0])
    assert welch > 0  # A's mean is the larger: the statistic of "A above B" is positive
    reversed_table = compare_evals.comparison(b, a, ("PPO", "SHAC"))
    assert float(reversed_table.split("Welch's t = ")[1].split(",")[0]) == -welch
    with pytest.raises(SystemExit, match="must pair up"):
        compare_evals.comparison(a[:1], b, ("SHAC", "PPO"))
    other_starts = tmp_path / "b2.json"
    other_starts.write_text(json.dumps({**json.loads(b[1].read_text()), "eval_seed": 7}))
    with pytest.raises(SystemExit, match="different start states"):
        compare_evals.comparison(a, [b[0], other_starts], ("SHAC", "PPO"))


def test_equal_samples_reads_both_curves_at_each_others_env_steps(tmp_path):
    """A compiled run's periodic evaluations (``eval_return``, one per seed) against an external trainer's
    reports (``return``, a row per seed), each read between its evaluations by interpolation, never beyond."""
    tool = import_tool("equal_samples")
    shac, ppo = tmp_path / "shac", tmp_path / "ppo"
    rows = {
        shac: [
            {"iteration": 1, "env_steps": 100, "return": [5.0, 7.0]},  # training episodes: not an evaluation
            {"iteration": 2, "env_steps": 200, "return": [0.0, 0.0], "eval_return": [10.0, 20.0]},
            {"iteration": 4, "env_steps": 400, "eval_return": [30.0, 50.0]},
        ],
        ppo: [
            {"seed_index": s, "env_steps": steps, "return": value}
            for s, offset in ((0, 0.0), (1, 2.0))
            for steps, value in ((0, 1.0 + offset), (300, 7.0 + offset))
        ],
    }
    for run, lines in rows.items():
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    a, b = tool.evaluation_curve(shac), tool.evaluation_curve(ppo)
    assert a == {200: 15.0, 400: 40.0} and b == {0: 2.0, 300: 8.0}
    table = tool.markdown(a, b, ("SHAC", "PPO"))
    assert "| 200 | 15.0 | ≈ 6.0 | +9.0 |" in table  # PPO read between 0 and 300
    assert "| 300 | ≈ 27.5 | 8.0 | +19.5 |" in table
    assert "| 400 | 40.0 | – | – |" in table and "| 0 | – | 2.0 | – |" in table  # nothing read beyond a curve
