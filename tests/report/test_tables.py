"""The flat table: one row per run, its CSV and its Markdown."""

from __future__ import annotations

import csv
from pathlib import Path

from clod.reporting.collect import collect_runs
from clod.reporting.tables import (
    COLUMNS,
    markdown_against_upper_bound,
    markdown_problems,
    markdown_results,
    row_order,
    run_rows,
    write_runs_csv,
)
from tests.report.conftest import Sweep, read_summary


def test_one_row_per_run_with_the_summary_metrics(sweep: Sweep) -> None:
    rows = {row["run"]: row for row in run_rows(collect_runs(sweep.root))}
    assert set(rows) == sweep.all_runs
    for name, (strategy, alpha, beta) in sweep.finished.items():
        row, summary = rows[name], read_summary(sweep, name)
        assert (row["status"], row["strategy"], row["alpha"], row["beta"]) == (
            "done",
            strategy,
            alpha,
            beta,
        )
        assert row["map"] == summary["final"]["map"]
        assert row["map50"] == summary["final"]["map50"]
        assert row["old_map50"] == summary["final_old"]["map50"]
        assert row["new_map50"] == summary["final_new"]["map50"]
        assert row["avg_inc_map50"] == summary["avg_inc"]["map50"]
        assert row["forgetting_map50"] == summary["forgetting"]["map50"]
        for key in ("params_held", "params_trainable", "params_teacher", "buffer_images"):
            assert row[key] == summary["memory"][key], key
        assert row["peak_rss_mb"] == summary["memory"]["peak_rss_mb"]
        assert row["train_s"] == summary["time"]["train_s"]
        assert row["error"] is None
    assert rows[sweep.failed]["status"] == "failed" and rows[sweep.failed]["map50"] is None
    assert "frozen_bn" in rows[sweep.failed]["error"]
    assert rows[sweep.running]["status"] == "running" and rows[sweep.running]["tasks_done"] == 2


def test_csv_has_every_column_and_run(sweep: Sweep, tmp_path: Path) -> None:
    rows = run_rows(collect_runs(sweep.root))
    write_runs_csv(rows, tmp_path / "runs.csv")
    with (tmp_path / "runs.csv").open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == list(COLUMNS)
    assert [r["run"] for r in read] == [r["run"] for r in rows]
    for written, row in zip(read, rows, strict=True):
        if row["map50"] is None:
            assert written["map50"] == "" and written["status"] != "done"
        else:
            assert float(written["map50"]) == row["map50"]  # repr round-trips exactly


def test_markdown_lists_finished_runs_in_strategy_order_and_the_rest_apart(sweep: Sweep) -> None:
    rows = run_rows(collect_runs(sweep.root))
    results = markdown_results(rows)
    lines = [line for line in results.splitlines() if line.startswith("| ") and "`" in line]
    assert len(lines) == len(sweep.finished)
    strategies = [line.split("|")[1].strip() for line in lines]
    assert strategies == ["lwf"] * 2 + ["sid"] * 4
    assert "**2p1** on synthetic_tiny" in results
    # sid's rows ordered by alpha then beta
    sid = [tuple(cell.strip() for cell in line.split("|")[2:4]) for line in lines[2:]]
    assert sid == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    problems = markdown_problems(rows)
    assert problems is not None
    assert "strategy.frozen_bn must be eval or train" in problems
    assert "| `running` | running | lwf | 2p1 | 2 |" in problems


def test_row_order_follows_the_papers_strategy_order() -> None:
    rows = [
        {"run": str(i), "scenario": scenario, "strategy": strategy, "alpha": None, "beta": None}
        for i, (scenario, strategy) in enumerate(
            [("19p1", "joint"), ("15p1", "latent"), ("15p1", "naive"), ("15p1", "mine"),
             ("15p1", "replay"), ("15p1", "sid"), ("15p1", "lwf"), ("15p1", "joint")]
        )
    ]  # fmt: skip
    ordered = [(r["scenario"], r["strategy"]) for r in sorted(rows, key=row_order)]
    assert ordered == [
        ("15p1", "naive"), ("15p1", "replay"), ("15p1", "lwf"), ("15p1", "sid"),
        ("15p1", "latent"), ("15p1", "joint"), ("15p1", "mine"), ("19p1", "joint"),
    ]  # fmt: skip


def test_markdown_cells_cannot_break_the_table() -> None:
    row = {"run": "x", "status": "failed", "strategy": "a|b", "scenario": "s", "tasks_done": 0,
           "num_tasks": None, "error": "ValueError: bad | worse\nnext"}  # fmt: skip
    table = markdown_problems([row])
    assert table is not None
    assert (
        table.splitlines()[-1]
        == "| `x` | failed | a\\|b | s | 0 | ValueError: bad \\| worse next |"
    )


def test_the_papers_table_puts_omega_in_parentheses_and_ends_with_the_bound() -> None:
    def row(run: str, strategy: str, scenario: str, final: float, **gaps: object) -> dict:
        return {"run": run, "status": "done", "strategy": strategy, "scenario": scenario,
                "alpha": None, "beta": None, "map": final, **gaps}  # fmt: skip

    rows = [
        row("j", "joint", "40p40", 0.40),
        row("l1", "latent", "40p40", 0.30, omega_map=(1 + 0.30 / 0.40) / 2, rel_gap_map=0.25,
            upper_bound="j"),
        row("n1", "naive", "40p40", 0.10, omega_map=(1 + 0.10 / 0.40) / 2, rel_gap_map=0.75,
            upper_bound="j"),
        row("n2", "naive", "70p10", 0.20, omega_map=0.75, rel_gap_map=0.5, upper_bound="j"),
        row("f", "lwf", "70p10", 0.15, status="failed"),
        row("a", "lwf", "40p40", 0.2, alpha=1.0, omega_map=0.75, rel_gap_map=0.5, upper_bound="j"),
        row("b", "lwf", "40p40", 0.3, alpha=10.0, omega_map=0.875, rel_gap_map=0.25,
            upper_bound="j"),
    ]  # fmt: skip
    assert markdown_against_upper_bound(rows).splitlines() == [
        "| strategy | 40p40 mAP (Ω) | 40p40 RelGap | 70p10 mAP (Ω) | 70p10 RelGap |",
        "|---|---|---|---|---|",
        "| naive | 0.100 (0.625) | 0.750 | 0.200 (0.750) | 0.500 |",
        "| lwf alpha=1 | 0.200 (0.750) | 0.500 | - | - |",
        "| lwf alpha=10 | 0.300 (0.875) | 0.250 | - | - |",
        "| latent | 0.300 (0.875) | 0.250 | - | - |",
        "| joint (upper bound) | 0.400 | - | 0.400 | - |",
    ]
    assert markdown_against_upper_bound(rows[:1]) is None
