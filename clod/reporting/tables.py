"""The flat table of a sweep: one row per run, as CSV and as Markdown.

Metrics are those after the last task: mAP is COCO AP@[.5:.95], mAP50 AP at IoU 0.5;
``old``/``new`` average over the classes of earlier tasks / of the last task;
``avg_inc`` and ``forgetting`` are over the whole sequence (clod.metrics.continual).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clod.reporting.collect import DONE, Run, natural_key
from clod.utils.io import write_csv

# The paper's order: fine-tuning, replay, the distillation family, the upper bound.
STRATEGY_ORDER = (
    "naive",
    "replay",
    "lwf",
    "sid",
    "latent",
    "erd",
    "ilyolox",
    "ilyolox_shipped",
    "pseudo_label",
    "joint",
)

COLUMNS = (
    "run", "status", "strategy", "scenario", "data", "seed", "alpha", "beta",
    "tasks_done", "num_tasks", "attempts",
    "map", "map50", "old_map50", "new_map50", "avg_inc_map50", "forgetting_map50",
    "omega_map", "omega_map50", "abs_gap_map", "rel_gap_map", "rel_gap_map50", "upper_bound",
    "params_held", "params_trainable", "params_teacher", "buffer_images", "buffer_bytes",
    "peak_rss_mb", "train_s", "macs_conv_step", "n", "group", "error", "overrides", "path",
)  # fmt: skip

MEMORY_KEYS = (
    "params_held",
    "params_trainable",
    "params_teacher",
    "buffer_images",
    "buffer_bytes",
    "peak_rss_mb",
)

Row = dict[str, Any]


def run_row(run: Run) -> Row:
    """The run's line of the table; metrics are None unless the run finished."""
    row: Row = {column: None for column in COLUMNS}
    row.update(
        run=run.name,
        status=run.status,
        strategy=run.strategy,
        scenario=run.scenario,
        data=run.data,
        seed=run.config.get("seed"),
        alpha=run.alpha,
        beta=run.beta,
        tasks_done=run.tasks_done,
        num_tasks=run.num_tasks,
        attempts=run.attempts,
        error=run.error,
        overrides=" ".join(run.overrides),
        path=str(run.path),
    )
    summary = run.summary
    if run.status == DONE and summary is not None:
        memory = summary.get("memory", {})
        row.update(
            map=summary["final"]["map"],
            map50=summary["final"]["map50"],
            old_map50=summary["final_old"]["map50"],
            new_map50=summary["final_new"]["map50"],
            avg_inc_map50=summary["avg_inc"]["map50"],
            forgetting_map50=summary["forgetting"]["map50"],
            train_s=summary.get("time", {}).get("train_s"),
            macs_conv_step=summary.get("cost", {}).get("macs_conv_step"),
            **{key: memory.get(key) for key in MEMORY_KEYS},
            **gap_columns(summary.get("upper_bound")),
        )
    return row


def gap_columns(gaps: Mapping[str, Any] | None) -> Row:
    """Ω, AbsGap and RelGap against the run's upper bound (the joint run it names)."""
    if not gaps:
        return {}
    return {
        "omega_map": gaps["map"]["omega"],
        "omega_map50": gaps["map50"]["omega"],
        "abs_gap_map": gaps["map"]["abs_gap"],
        "rel_gap_map": gaps["map"]["rel_gap"],
        "rel_gap_map50": gaps["map50"]["rel_gap"],
        "upper_bound": gaps.get("run"),
    }


def run_rows(runs: Sequence[Run]) -> list[Row]:
    return sorted((run_row(run) for run in runs), key=row_order)


def row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Scenario, then the paper's strategy order, then the weights, seed and run path."""
    strategy = row.get("strategy") or ""
    rank = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return (
        natural_key(str(row.get("scenario") or "")),
        rank,
        strategy,
        _number_order(row.get("alpha")),
        _number_order(row.get("beta")),
        _number_order(row.get("seed")),
        natural_key(str(row["run"])),
    )


def _number_order(value: Any) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    try:
        return (1, float(value), "")
    except (TypeError, ValueError):
        return (2, 0.0, str(value))


def write_runs_csv(rows: Sequence[Row], path: Path) -> None:
    """Every column of every run (blank where a value is missing), written atomically."""
    write_csv(path, [{k: "" if v is None else v for k, v in row.items()} for row in rows])


# Markdown: (column, header, formatter) of the results table of finished runs.
Formatter = Callable[[Any], str]


def number(value: Any) -> str:
    """A weight as typed: 1.0 -> 1, 0.5 -> 0.5, anything else as text."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fixed(digits: int) -> Formatter:
    return lambda value: f"{float(value):.{digits}f}"


def _thousands(value: Any) -> str:
    return f"{int(value):,}"


def _megabytes(value: Any) -> str:
    return f"{float(value) / 1e6:.1f}"


RESULT_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("strategy", "strategy", str),
    ("alpha", "alpha", number),
    ("beta", "beta", number),
    ("seed", "seed", str),
    ("map50", "mAP50", _fixed(3)),
    ("map", "mAP", _fixed(3)),
    ("old_map50", "mAP50 old", _fixed(3)),
    ("new_map50", "mAP50 new", _fixed(3)),
    ("avg_inc_map50", "avg inc mAP50", _fixed(3)),
    ("forgetting_map50", "forgetting mAP50", _fixed(3)),
    ("omega_map", "Ω mAP", _fixed(3)),
    ("rel_gap_map", "RelGap mAP", _fixed(3)),
    ("omega_map50", "Ω mAP50", _fixed(3)),
    ("params_held", "params held", _thousands),
    ("params_trainable", "trainable", _thousands),
    ("params_teacher", "teacher", _thousands),
    ("buffer_images", "buffer images", _thousands),
    ("buffer_bytes", "buffer MB", _megabytes),
    ("peak_rss_mb", "peak RSS MB", _fixed(0)),
    ("train_s", "train time (s)", _fixed(0)),
    ("n", "n", str),
    ("run", "run", lambda name: f"`{name}`"),
)
PROBLEM_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("run", "run", lambda name: f"`{name}`"),
    ("status", "status", str),
    ("strategy", "strategy", str),
    ("scenario", "scenario", str),
    ("tasks_done", "tasks done", str),
    ("error", "error", str),
)
OPTIONAL_COLUMNS = frozenset(
    {"alpha", "beta", "n", "omega_map", "rel_gap_map", "omega_map50"}
)  # shown only where some row has them
VARYING_COLUMNS = frozenset({"seed"})  # shown only where the rows differ in them


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, Formatter]]
) -> str:
    shown = [
        c
        for c in columns
        if (c[0] not in OPTIONAL_COLUMNS or any(r.get(c[0]) is not None for r in rows))
        and (c[0] not in VARYING_COLUMNS or len({repr(r.get(c[0])) for r in rows}) > 1)
    ]
    lines = ["| " + " | ".join(header for _, header, _ in shown) + " |"]
    lines.append("|" + "|".join("---" for _ in shown) + "|")
    for row in rows:
        cells = (
            _cell(row.get(key), formatter, row.get(f"{key}_std")) for key, _, formatter in shown
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, formatter: Formatter, std: Any = None) -> str:
    if value is None or value == "":
        return "-"
    text = formatter(value) if std is None else f"{formatter(value)} ± {formatter(std)}"
    # A pipe would end the cell and a newline the row.
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_results(rows: Sequence[Row], seed_means: Sequence[Row] = ()) -> str:
    """One table of finished runs per scenario (rows already in :func:`row_order`).

    With ``seed_means`` (rows of runs repeated over seeds, :mod:`clod.reporting.seeds`),
    those settings show as mean ± std over their n runs, and every run follows in a
    per-seed table.
    """
    done = [row for row in rows if row["status"] == DONE]
    if not done:
        return "No run has finished yet."
    if seed_means:
        grouped = {row["group"] for row in seed_means}
        single = [row for row in done if row.get("group") not in grouped]
        means = sorted([*seed_means, *({**r, "n": 1} for r in single)], key=row_order)
        return (
            "Mean ± sample standard deviation over the n runs of a setting that differ only "
            "in `seed`.\n\n"
            + _scenario_tables(means)
            + "\n\n### Per-seed runs\n\n"
            + _scenario_tables(done)
        )
    return _scenario_tables(done)


def _scenario_tables(done: Sequence[Row]) -> str:
    sections = []
    for scenario in dict.fromkeys(row["scenario"] for row in done):
        in_scenario = [row for row in done if row["scenario"] == scenario]
        datasets = ", ".join(sorted({str(row["data"]) for row in in_scenario}))
        sections.append(
            f"**{scenario}** on {datasets} (after the last task; mAP = COCO AP@[.5:.95])\n\n"
            + markdown_table(in_scenario, RESULT_COLUMNS)
        )
    return "\n\n".join(sections)


def markdown_against_upper_bound(rows: Sequence[Row]) -> str | None:
    """The second seed's table: a strategy per row, a scenario per column pair, final mAP
    with Ω in parentheses and RelGap, and last the joint model each scenario was compared
    with; None when no finished run has an upper bound.

    A strategy run at several alpha/beta gets a row per setting; a setting repeated over
    seeds shows its first run (the per-scenario tables have them all).
    """
    done = sorted(
        (row for row in rows if row["status"] == DONE and row.get("omega_map") is not None),
        key=row_order,
    )
    if not done:
        return None
    scenarios = list(dict.fromkeys(str(row["scenario"]) for row in done))
    weights: dict[str, set[tuple[Any, Any]]] = {}
    for row in done:
        weights.setdefault(str(row["strategy"]), set()).add((row.get("alpha"), row.get("beta")))
    table: dict[str, Row] = {}
    for row in done:
        label = _setting(row) if len(weights[str(row["strategy"])]) > 1 else str(row["strategy"])
        cells = table.setdefault(label, {"strategy": label})
        cells.setdefault(f"{row['scenario']}/map", f"{row['map']:.3f} ({row['omega_map']:.3f})")
        cells.setdefault(f"{row['scenario']}/rel_gap", row.get("rel_gap_map"))
    by_name = {row["run"]: row for row in rows if row["status"] == DONE}
    bound = {"strategy": "joint (upper bound)"}
    for scenario in scenarios:
        joint = by_name.get(_upper_bound_of(done, scenario))
        bound[f"{scenario}/map"] = None if joint is None else f"{joint['map']:.3f}"
    columns: list[tuple[str, str, Formatter]] = [("strategy", "strategy", str)]
    for scenario in scenarios:
        columns += [
            (f"{scenario}/map", f"{scenario} mAP (Ω)", str),
            (f"{scenario}/rel_gap", f"{scenario} RelGap", _fixed(3)),
        ]
    has_bound = any(bound[f"{scenario}/map"] for scenario in scenarios)
    return markdown_table([*table.values(), *([bound] if has_bound else [])], columns)


def _upper_bound_of(rows: Sequence[Row], scenario: Any) -> Any:
    """The upper-bound run named by the first run of ``scenario`` that has one."""
    return next((r["upper_bound"] for r in rows if str(r["scenario"]) == scenario), None)


def _setting(row: Mapping[str, Any]) -> str:
    """The strategy with its weights (lwf alpha=10 beta=1), for a strategy swept over them."""
    weights = [f"{k}={number(row[k])}" for k in ("alpha", "beta") if row.get(k) is not None]
    return " ".join([str(row["strategy"]), *weights])


def markdown_problems(rows: Sequence[Row]) -> str | None:
    """The runs that did not finish, with their error; None when every run finished."""
    unfinished = [row for row in rows if row["status"] != DONE]
    if not unfinished:
        return None
    shown = [{**row, "tasks_done": _tasks_done(row)} for row in unfinished]
    return markdown_table(shown, PROBLEM_COLUMNS)


def _tasks_done(row: Mapping[str, Any]) -> str:
    # An unfinished run does not know its number of tasks unless it once finished.
    return f"{row['tasks_done']}/{row['num_tasks']}" if row["num_tasks"] else str(row["tasks_done"])
