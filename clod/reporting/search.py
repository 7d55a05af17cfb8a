"""An Optuna search (``hparams_search=...``) in a sweep: its trials ranked by objective, and
a figure of how the search went and where in the weight space it looked.

A sweep is a search when its runs' ``.hydra/hydra.yaml`` names Optuna's sweeper. The
objective of each trial is recomputed from its summary.json with the run's own
``objective`` key, the function ``python -m clod.train`` returned to the sampler, and
``optimization_results.yaml`` (written when the search ends) gives Optuna's best trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clod.errors import ClodError
from clod.metrics.objective import objective_value
from clod.reporting.collect import Run
from clod.reporting.plots import Drawing, panels
from clod.reporting.tables import markdown_table

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
RESULTS_FILE = "optimization_results.yaml"


@dataclass
class Trial:
    run: Run
    number: int  # Hydra's job number: the order in which the sampler proposed it
    params: dict[str, float]
    objective: float | None  # None until the run finished


@dataclass
class Search:
    objective: str
    direction: str  # maximize or minimize
    params: list[str]  # the searched keys, e.g. strategy.alpha
    trials: list[Trial]
    best_params: dict[str, float] | None = None  # optimization_results.yaml, once written
    best_value: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.objective is not None]

    def ranked(self) -> list[Trial]:
        sign = -1.0 if self.direction == "maximize" else 1.0
        return sorted(self.finished, key=lambda t: (sign * float(t.objective or 0), t.number))

    @property
    def best(self) -> Trial | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None


def _sweeper(run: Run) -> dict[str, Any] | None:
    path = run.path / ".hydra" / "hydra.yaml"
    try:
        hydra = yaml.safe_load(path.read_text())["hydra"]
        return hydra["sweeper"] if isinstance(hydra.get("sweeper"), dict) else None
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def _run_objective(run: Run) -> str | None:
    """The run's ``objective`` key: config.yaml has it, the report's comparable config
    leaves it out (it does not change the results)."""
    try:
        config = yaml.safe_load((run.path / "config.yaml").read_text())
        return str(config["objective"]) if config.get("objective") else None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def read_search(sweep_dir: Path, runs: Sequence[Run]) -> Search | None:
    """The search the runs of ``sweep_dir`` belong to; None unless Optuna's sweeper ran them."""
    sweepers = [(run, _sweeper(run)) for run in runs]
    optuna = [(run, s) for run, s in sweepers if s and s.get("_target_") == OPTUNA_SWEEPER]
    if not optuna:
        return None
    sweeper = optuna[0][1]
    params = sorted(str(key) for key in sweeper.get("params") or {})
    direction = str(sweeper.get("direction", "maximize"))
    objectives = {run.name: _run_objective(run) for run, _ in optuna}
    # a run from before `objective` existed returned the final mAP50
    default_objective = next((o for o in objectives.values() if o), "map50")
    search = Search(default_objective, direction, params, [])
    for run, _ in optuna:
        value = None
        if run.finished and run.summary is not None:
            try:
                value = objective_value(run.summary, objectives[run.name] or default_objective)
            except ClodError as problem:
                search.problems.append(f"{run.name}: {problem}")
        number_ = int(run.name) if run.name.isdigit() else len(search.trials)
        values = {key: float(run.config[key]) for key in params if key in run.config}
        search.trials.append(Trial(run, number_, values, value))
    search.trials.sort(key=lambda t: t.number)
    results = sweep_dir / RESULTS_FILE
    if results.is_file():
        try:
            data = yaml.safe_load(results.read_text()) or {}
            search.best_params = {str(k): float(v) for k, v in data["best_params"].items()}
            search.best_value = float(data["best_value"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as problem:
            search.problems.append(f"{results} is not Optuna's results file: {problem}")
    return search


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def search_markdown(search: Search) -> str:
    """What was searched, the best trial and every trial ranked by the objective."""
    finished = search.finished
    lines = [
        f"Optuna ({search.direction} `{search.objective}` over "
        f"{', '.join(f'`{p}`' for p in search.params)}): {len(finished)} of "
        f"{len(search.trials)} trials finished."
    ]
    best = search.best
    if best is not None:
        shown = ", ".join(f"{_short(k)} = {v:.3g}" for k, v in best.params.items())
        lines.append(
            f"Best: trial {best.number}, {shown}: {search.objective} {best.objective:.3f}."
        )
    if search.best_value is not None and best is not None:
        agrees = math.isclose(search.best_value, float(best.objective or 0), abs_tol=1e-9)
        lines.append(
            f"`{RESULTS_FILE}` names the same best value."
            if agrees
            else f"`{RESULTS_FILE}` says best value {search.best_value:.6f}, which no "
            "finished trial here has (were trials added or removed?)."
        )
    lines += [f"- {problem}" for problem in search.problems]
    final = {"map50": "final", "old map50": "final_old", "new map50": "final_new"}
    rows = [
        {
            "trial": t.number,
            **{key: t.params.get(key) for key in search.params},
            "objective": t.objective,
            **{
                name: (t.run.summary or {}).get(part, {}).get("map50")
                for name, part in final.items()
            },
        }
        for t in search.ranked()
    ]
    if rows:
        fixed = lambda value: f"{float(value):.3f}"  # noqa: E731
        columns = [
            ("trial", "trial", str),
            *((key, _short(key), lambda value: f"{float(value):.3g}") for key in search.params),
            ("objective", search.objective, fixed),
            *((name, name, fixed) for name in final if name != search.objective),
        ]
        lines += ["", markdown_table(rows, columns)]
    return "\n".join(lines)


def plot_search(search: Search) -> Drawing | None:
    """Left: the objective of each trial in the order proposed, and the best so far.
    Right: where the trials lie in the weight space (log axes), coloured by objective."""
    finished = search.finished
    if not finished:
        return None
    figure, axes = panels(2, width=5.0, height=4.0)
    drawing = Drawing("search", figure)
    numbers = [t.number for t in finished]
    values = [float(t.objective or 0) for t in finished]
    better = max if search.direction == "maximize" else min
    best_so_far = [better(values[: i + 1]) for i in range(len(values))]
    axes[0].plot(numbers, values, "o", label="trial")
    axes[0].step(numbers, best_so_far, where="post", label="best so far")
    axes[0].set(xlabel="trial", ylabel=search.objective, title="Optuna search")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    keys = search.params
    ax = axes[1]
    if len(keys) >= 2:
        xs = [t.params.get(keys[0], math.nan) for t in finished]
        ys = [t.params.get(keys[1], math.nan) for t in finished]
        points = ax.scatter(xs, ys, c=values, cmap="viridis", edgecolors="black")
        figure.colorbar(points, ax=ax, shrink=0.8, label=search.objective)
        ax.set(xlabel=keys[0], ylabel=keys[1], xscale="log", yscale="log")
    elif keys:
        xs = [t.params.get(keys[0], math.nan) for t in finished]
        ax.plot(xs, values, "o")
        ax.set(xlabel=keys[0], ylabel=search.objective, xscale="log")
    best = search.best
    if best is not None and keys:
        x = best.params.get(keys[0], math.nan)
        y = best.params.get(keys[1], math.nan) if len(keys) >= 2 else best.objective
        ax.plot([x], [y], "*", color="red", markersize=16, label=f"best (trial {best.number})")
        ax.legend(fontsize=8)
    ax.set_title("trials in the weight space")
    ax.grid(alpha=0.3)
    return drawing
