"""The small multi-exit trainer: the loss, repeatability, checkpoints, and recipes that work."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from eebench.data import create_dataset
from eebench.train import (
    evaluate_exits,
    load_trained,
    multi_exit_loss,
    read_checkpoint,
    train_multi_exit,
    train_on_dataset,
)
from eebench.zoo import CheckpointMismatchError, create_model

TIMM = "timm/resnet10t"
TIMM_OVERRIDES = {"num_classes": 10, "input_size": 32, "exits": [2, 3, 4]}


# ---------------------------------------------------------------- the loss


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


LOGITS = [
    np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]),
    np.array([[1.0, 1.0, 0.0], [-2.0, 3.0, 0.5]]),
    np.array([[3.0, -1.0, 0.0], [0.0, 2.5, 1.0]]),
]
TARGET = np.array([0, 1])


def test_loss_is_summed_cross_entropy_without_distillation() -> None:
    expected = sum(-_log_softmax(z)[np.arange(2), TARGET].mean() for z in LOGITS)
    got = multi_exit_loss([torch.tensor(z) for z in LOGITS], torch.tensor(TARGET))
    assert math.isclose(float(got), expected, rel_tol=1e-9)
    weighted = multi_exit_loss(
        [torch.tensor(z) for z in LOGITS], torch.tensor(TARGET), exit_weights=[0.5, 0.0, 2.0]
    )
    ce = [-_log_softmax(z)[np.arange(2), TARGET].mean() for z in LOGITS]
    assert math.isclose(float(weighted), 0.5 * ce[0] + 2.0 * ce[2], rel_tol=1e-9)
    with pytest.raises(ValueError, match="one weight per exit"):
        multi_exit_loss([torch.tensor(z) for z in LOGITS], torch.tensor(TARGET), exit_weights=[1])


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distillation_term_matches_dynamic_perceiver_form(temperature: float) -> None:
    alpha = 0.3
    ce = sum(-_log_softmax(z)[np.arange(2), TARGET].mean() for z in LOGITS)
    log_t = _log_softmax(LOGITS[-1] / temperature)
    kl = 0.0
    for z in LOGITS[:-1]:  # KL(teacher || student), summed over classes, averaged over the batch
        kl += (np.exp(log_t) * (log_t - _log_softmax(z / temperature))).sum(axis=1).mean()
    expected = ce + alpha * temperature**2 * kl
    got = multi_exit_loss(
        [torch.tensor(z) for z in LOGITS],
        torch.tensor(TARGET),
        distill_alpha=alpha,
        distill_temperature=temperature,
    )
    assert math.isclose(float(got), expected, rel_tol=1e-9)


def test_distillation_teacher_is_detached() -> None:
    """The last exit learns from the labels only; the soft targets do not pull it back."""
    zs = [torch.tensor(z, requires_grad=True) for z in LOGITS]
    multi_exit_loss(zs, torch.tensor(TARGET), distill_alpha=0.7, distill_temperature=2.0).backward()
    plain = [torch.tensor(z, requires_grad=True) for z in LOGITS]
    multi_exit_loss(plain, torch.tensor(TARGET)).backward()
    assert torch.allclose(zs[-1].grad, plain[-1].grad)
    assert not torch.allclose(zs[0].grad, plain[0].grad)


# ---------------------------------------------------------------- training runs


def _small_timm_model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model(TIMM, **TIMM_OVERRIDES)


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory: pytest.TempPathFactory):
    """The documented timm recipe: resnet10t, exits after stages 2-4, 32x32 digits."""
    path = tmp_path_factory.mktemp("ckpt") / "resnet10t-digits.pt"
    t0 = time.perf_counter()
    result = train_on_dataset(
        TIMM,
        dataset="digits",
        model_overrides={"input_size": 32, "exits": [2, 3, 4]},
        epochs=4,
        lr=3e-3,
        optimizer="adamw",
        weight_decay=0.05,
        batch_size=64,
        seed=0,
        progress=False,
        checkpoint_path=path,
    )
    return result, time.perf_counter() - t0


def test_timm_recipe_reaches_90_percent_on_digits(timm_run) -> None:
    result, seconds = timm_run
    assert len(result.history) == 4 and all(h["val_acc"] for h in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.test_accuracy is not None and result.test_accuracy[-1] > 0.9
    assert min(result.test_accuracy) > 0.5  # every exit well above chance (0.1)
    assert result.final_accuracy == result.history[-1]["val_acc"]
    print(f"{TIMM} digits: test acc per exit {result.test_accuracy}, {seconds:.1f} s")


def test_checkpoint_round_trip(timm_run) -> None:
    result, _ = timm_run
    obj = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    assert obj["model_name"] == TIMM
    assert obj["model_overrides"] == {"input_size": 32, "exits": [2, 3, 4], "num_classes": 10}
    assert obj["model_config"]["input_size"] == [3, 32, 32]
    assert obj["train_config"]["optimizer"] == "adamw" and obj["train_config"]["epochs"] == 4
    assert obj["train_config"]["train_set"]["split"] == "train"
    assert obj["train_config"]["train_set"]["transform"]["flip"] is False  # digits: no flips
    assert obj["train_config"]["test_acc"] == result.test_accuracy
    assert obj["history"] == result.history
    model = load_trained(result.checkpoint_path)
    assert model.train_info["history"] == result.history
    x = torch.randn(4, 3, 32, 32)
    result.model.eval()
    with torch.no_grad():
        for a, b in zip(model(x), result.model(x)):
            assert torch.equal(a, b)
    test = create_dataset("digits", split="test", config=model.config)
    assert evaluate_exits(model, test) == result.test_accuracy


def test_load_trained_refuses_a_changed_config(timm_run, tmp_path: Path) -> None:
    result, _ = timm_run
    obj = read_checkpoint(result.checkpoint_path)
    obj["model_config"]["mean"] = [0.0, 0.0, 0.0]
    torch.save(obj, tmp_path / "changed.pt")
    with pytest.raises(CheckpointMismatchError, match="different config"):
        load_trained(tmp_path / "changed.pt")
    torch.save({"weights": obj["state_dict"]}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not an eebench training checkpoint"):
        load_trained(tmp_path / "bare.pt")


def test_same_seed_gives_bitwise_identical_weights() -> None:
    train = create_dataset("digits", split="train", fractions={"train": 0.15, "test": 0.1})
    cfg = _small_timm_model().config
    train = train.with_train_transform(cfg)  # random crops: the seed must fix them too
    runs = []
    for _ in range(2):
        model = _small_timm_model(seed=0)
        res = train_multi_exit(
            model, train, epochs=1, lr=0.05, batch_size=32, seed=7, progress=False
        )
        runs.append((model.state_dict(), res.history[0]["loss"]))
    (a, loss_a), (b, loss_b) = runs
    assert loss_a == loss_b
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = _small_timm_model(seed=0)
    train_multi_exit(other, train, epochs=1, lr=0.05, batch_size=32, seed=8, progress=False)
    assert not all(torch.equal(a[k], other.state_dict()[k]) for k in a)


def test_distillation_run_and_its_loss() -> None:
    train = create_dataset("digits", split="train", fractions={"train": 0.1, "test": 0.1})
    train = train.with_eval_transform(_small_timm_model().config)
    plain = train_multi_exit(
        _small_timm_model(), train, epochs=1, lr=0.05, batch_size=60, seed=0, progress=False
    )
    kd = train_multi_exit(
        _small_timm_model(),
        train,
        epochs=1,
        lr=0.05,
        batch_size=60,
        seed=0,
        progress=False,
        distill_alpha=0.5,
        distill_temperature=2.0,
    )
    assert math.isfinite(kd.history[0]["loss"])
    assert kd.history[0]["loss"] > plain.history[0]["loss"]  # the KL terms are added, >= 0


def test_overrides_that_do_not_rebuild_the_model_fail_before_training(tmp_path: Path) -> None:
    model = _small_timm_model()
    train = create_dataset("digits", split="train", config=model.config)
    with pytest.raises(ValueError, match="does not rebuild"):
        train_multi_exit(
            model,
            train,
            epochs=1,
            lr=0.1,
            progress=False,
            checkpoint_path=tmp_path / "x.pt",
            model_overrides={"input_size": 32, "exits": [2, 3, 4]},  # 1000 classes by default
        )
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="10 classes but"):
        train_multi_exit(create_model(TIMM, num_classes=5, input_size=32), train, epochs=1, lr=0.1)


@pytest.mark.slow  # about 25 s on two CPU cores
def test_msdnet_budget_reaches_90_percent_on_digits(tmp_path: Path) -> None:
    """The issue's acceptance check: MSDNet (CIFAR budgeted configuration, 10 classes) on
    digits, three epochs on the CPU, final exit above 90% on the test split (seed 0)."""
    t0 = time.perf_counter()
    result = train_on_dataset(
        "msdnet_cifar100_budget",
        dataset="digits",
        epochs=3,
        lr=3e-3,
        optimizer="adamw",
        weight_decay=0.05,
        batch_size=64,
        seed=0,
        progress=False,
        checkpoint_path=tmp_path / "msdnet-digits.pt",
    )
    seconds = time.perf_counter() - t0
    acc = result.test_accuracy
    assert acc is not None and len(acc) == 5
    assert acc[-1] > 0.9 and min(acc) > 0.8
    print(f"msdnet_cifar100_budget digits: test acc per exit {acc}, {seconds:.1f} s")
    model = load_trained(result.checkpoint_path)
    assert model.config.num_classes == 10
    test = create_dataset("digits", split="test", config=model.config)
    assert evaluate_exits(model, test) == acc
