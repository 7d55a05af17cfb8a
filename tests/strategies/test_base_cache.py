"""The base-model cache: which configurations share a task-0 model, and atomic publishing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from clod.data.build import build_experiment_tasks
from clod.engine.base_cache import BaseModelCache
from clod.engine.run import task_epochs
from clod.strategies.base import Strategy
from tests.strategies.conftest import (
    CONF,
    batch,
    build_model,
    build_strategy,
    make_module,
    make_task,
)


@pytest.fixture(scope="module")
def cache_for(tmp_path_factory: pytest.TempPathFactory):
    """overrides -> the run's cache entry (None when the cache is not used)."""
    root = tmp_path_factory.mktemp("compose")

    def build(*overrides: str, epochs: int | None = None) -> BaseModelCache | None:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose(
                "train",
                overrides=[
                    "experiment=smoke",
                    f"paths.data_dir={root / 'data'}",
                    f"base_cache.dir={root / 'cache'}",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        cfg.hydra.runtime.output_dir = str(root / "run")
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        resolved = OmegaConf.to_container(cfg, resolve=True)
        _, tasks = build_experiment_tasks(resolved)
        if epochs is None:
            epochs = task_epochs(resolved, tasks[0])
        return BaseModelCache.for_run(resolved, instantiate(cfg.strategy), tasks[0], epochs)

    yield build
    GlobalHydra.instance().clear()


def key(cache: BaseModelCache | None) -> str:
    assert cache is not None
    return cache.key


def test_strategies_with_a_plain_task_zero_share_one_key(cache_for) -> None:
    base = key(cache_for())
    for strategy in ("lwf", "sid", "replay", "latent"):
        assert key(cache_for(f"strategy={strategy}")) == base, strategy
    # what only later tasks, evaluation or logging see does not matter either
    for override in (
        "scenario.increment=2",  # 2p2: the same first task, fewer later tasks
        "trainer.incremental_epochs=1",
        "eval.test_images=all_images",
        "eval.score_thr=0.3",
        "strategy=sid strategy.alpha=5",
        "logger=wandb",
        "trainer.log_every_n_steps=3",
        "hardware.threads=1",
    ):
        assert key(cache_for(*override.split())) == base, override


@pytest.mark.parametrize(
    "override",
    [
        "trainer.epochs=3",
        "seed=7",
        "scenario.base=3",  # the first task's classes
        "scenario.class_order=reversed",
        "optimizer.optimizer.lr=0.01",
        "data.batch_size=4",
        "data.augment.flip=0.0",
        "model.head.feat_channels=16",
        "hardware.precision=bf16-mixed",
        "strategy=latent strategy.freeze_from_task=0",
    ],
)
def test_a_change_to_task_zero_changes_the_key(cache_for, override: str) -> None:
    assert key(cache_for(*override.split())) != key(cache_for())


def test_the_epochs_task_zero_trains_are_in_the_key(cache_for) -> None:
    # whichever key sets them (trainer.epochs, or a strategy's own strategy.epochs)
    assert key(cache_for(epochs=3)) != key(cache_for())


def test_no_cache_for_joint_or_when_disabled(cache_for) -> None:
    assert cache_for("strategy=joint") is None
    assert cache_for("base_cache.enabled=false") is None


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"backbone.w": torch.full((3,), value), "head.b": torch.tensor([value])}


def test_publish_once_then_load(tmp_path: Path) -> None:
    cache = BaseModelCache(tmp_path, {"anything": 1})
    assert cache.load() is None
    assert cache.publish(weights(1.0), {"steps": 4})
    again = BaseModelCache(tmp_path, {"anything": 1})
    assert not again.publish(weights(2.0), {"steps": 9})  # the first entry stays
    loaded = again.load()
    assert loaded is not None and loaded.meta["steps"] == 4
    assert torch.equal(loaded.weights["backbone.w"], weights(1.0)["backbone.w"])
    assert loaded.meta["material"] == {"anything": 1}
    assert [p.name for p in tmp_path.iterdir()] == [cache.key]  # no staging left behind


def test_racing_publishers_agree_on_one_winner(tmp_path: Path) -> None:
    results: dict[int, bool] = {}
    start = threading.Barrier(6)

    def publish(value: int) -> None:
        cache = BaseModelCache(tmp_path, {"same": "key"})
        start.wait()
        results[value] = cache.publish(weights(float(value)), {"by": value})

    threads = [threading.Thread(target=publish, args=(v,)) for v in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, won in results.items() if won]
    assert len(winners) == 1
    loaded = BaseModelCache(tmp_path, {"same": "key"}).load()
    assert loaded is not None and loaded.meta["by"] == winners[0]
    assert torch.equal(loaded.weights["head.b"], torch.tensor([float(winners[0])]))
    assert len(list(tmp_path.iterdir())) == 1


# --------------------------------------------------------------------------- the claims
def trained_task_zero(strategy_name: str, steps: int = 3) -> dict[str, torch.Tensor]:
    """Weights after ``steps`` AdamW steps of task 0 under a shipped strategy, from one init."""
    torch.manual_seed(0)
    strategy = build_strategy(strategy_name)
    task = make_task(0, [0, 1])
    module = make_module(build_model(), strategy, task)
    assert strategy.train_loader(task, {}, 0) is None, "task 0 must use the engine's loader"
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    for seed in range(steps):
        optimizer.zero_grad()
        module.training_losses(batch(seed=seed))[0].backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def shipped_strategies() -> list[str]:
    return sorted(p.stem for p in (CONF / "strategy").glob("*.yaml"))


def test_every_strategy_claiming_a_plain_task_zero_trains_it_as_naive_does() -> None:
    claims = [n for n in shipped_strategies() if build_strategy(n).base_training_signature() == {}]
    # every shipped strategy but joint (one joint task, no base task) claims it
    assert set(shipped_strategies()) - set(claims) == {"joint"}
    naive = trained_task_zero("naive")
    for name in claims:
        got = trained_task_zero(name)
        assert got.keys() == naive.keys(), name
        differing = [k for k, v in naive.items() if not torch.equal(v, got[k])]
        assert not differing, f"{name}: task 0 differs from naive in {differing[:3]}"


def test_a_strategy_must_claim_a_plain_task_zero_to_share_the_cache() -> None:
    class Unclaimed(Strategy):  # a new strategy that forgot to say anything
        name = "unclaimed"

    assert Unclaimed().base_training_signature() is None
