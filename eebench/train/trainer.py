"""A small multi-exit trainer: real weights for the embedded and small data sets on a CPU.

The benchmark needs models whose exits disagree the way trained exits do;
random weights make every exit policy look the same. This trainer is
deliberately plain (one loss, SGD or AdamW, cosine schedule) and exactly
repeatable: the seed fixes the initialisation the caller made under it, the
shuffling (a seeded DataLoader generator, no worker processes) and the
augmentation (torch's global generator, seeded here), so two runs with one
seed give bitwise identical weights on the same machine.

Checkpoints carry what is needed to rebuild the model by name
(``create_model(model_name, **model_overrides)``), its config, the training
recipe and the history, as plain types that ``torch.load(weights_only=True)``
accepts.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from eebench.errors import InputError, InputTypeError
from eebench.zoo.base import MultiExitModel

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "constant")
CHECKPOINT_KEYS = (
    "state_dict",
    "model_name",
    "model_overrides",
    "model_config",
    "train_config",
    "history",
    "eebench_version",
)


@dataclass
class TrainResult:
    """What a training run produced.

    ``history`` has one dict per epoch: ``epoch``, ``loss`` (mean training loss),
    ``train_acc`` (per exit, on the augmented batches), ``val_acc`` (per exit, or
    None), ``lr`` (at the epoch's end) and ``seconds``. ``final_accuracy`` is the
    per-exit validation accuracy after the last epoch (None without a val set);
    ``test_accuracy`` the per-exit accuracy on ``test_set`` if one was given.
    """

    history: list[dict[str, Any]]
    final_accuracy: list[float] | None
    checkpoint_path: str | None
    seconds: float
    test_accuracy: list[float] | None = None
    model: MultiExitModel | None = field(default=None, repr=False)


def multi_exit_loss(
    logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    *,
    distill_alpha: float | None = None,
    distill_temperature: float = 1.0,
    exit_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Cross-entropy summed over exits, plus optional self-distillation from the last exit.

    ``loss = sum_k w_k CE(z_k, y)
           + alpha * sum_{k < K-1} T^2 KL(softmax(z_K / T) || softmax(z_k / T))``

    with the last exit's logits ``z_K`` detached (a teacher, not a student) and
    the KL averaged over the batch. This is the form in Dynamic Perceiver's
    official code (LeapLabTHU/Dynamic_Perceiver, ``engine.py``,
    ``train_one_epoch_earlyExit``, ``with_kd``: ``F.kl_div(log_softmax(y_k/T_kd),
    softmax(y_merge.detach()/T_kd), reduction='batchmean') * T_kd**2`` summed over
    the early exits and added with weight ``alpha_kd``); note the cross-entropy
    terms are *not* scaled by ``1 - alpha`` there. Their README trains with
    ``T_kd=1.0, alpha_kd=0.5`` (argparse defaults ``T_kd=4.0, alpha_kd=0.5``), and
    weights the CE terms per exit (``loss_cnn_factor`` etc.), which ``exit_weights``
    mirrors (default: all 1, as MSDNet).
    """
    if not logits:
        raise InputError("multi_exit_loss needs the logits of at least one exit")
    k = len(logits)
    weights = [1.0] * k if exit_weights is None else [float(w) for w in exit_weights]
    if len(weights) != k:
        raise InputError(f"{len(weights)} exit_weights for {k} exits; give one weight per exit")
    # a Tensor: logits is not empty (checked above), so sum() never returns its start value 0
    loss = cast(torch.Tensor, sum(w * F.cross_entropy(z, target) for w, z in zip(weights, logits)))
    if distill_alpha:
        if distill_temperature <= 0:
            raise InputError(f"distill_temperature must be positive, got {distill_temperature}")
        t = float(distill_temperature)
        teacher = F.softmax(logits[-1].detach() / t, dim=1)
        kd = sum(
            F.kl_div(F.log_softmax(z / t, dim=1), teacher, reduction="batchmean")
            for z in logits[:-1]
        )
        loss = loss + float(distill_alpha) * t * t * kd
    return loss


@torch.no_grad()
def predict_exits(
    model: MultiExitModel, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K, C) of every exit on a data set, and its labels (N,), in data set order."""
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    outs, labels = [], []
    for x, y in loader:
        outs.append(torch.stack(model(x.to(device)), dim=1).float().cpu())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def evaluate_exits(
    model: MultiExitModel, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu"
) -> list[float]:
    """Top-1 accuracy of each exit on a data set."""
    logits, labels = predict_exits(model, dataset, batch_size=batch_size, device=device)
    return (logits.argmax(-1) == labels[:, None]).float().mean(0).tolist()


def _plain(obj: Any) -> Any:
    """JSON-normalised copy (tuples to lists, numbers and strings kept) for checkpoints."""
    return json.loads(json.dumps(obj, default=str))


def _check_rebuild(model: MultiExitModel, name: str, overrides: dict[str, Any]) -> None:
    """Fail before training if ``create_model(name, **overrides)`` would not rebuild ``model``."""
    from eebench.zoo.checkpoint import describe_mismatch
    from eebench.zoo.registry import create_model, is_model

    if not is_model(name):
        raise InputError(
            f"checkpoints are rebuilt by model name, and {name!r} is not registered; register the "
            "model (eebench.zoo.register_model) or pass model_name= and model_overrides="
        )
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                twin = create_model(name, **overrides)
        except Exception:  # some constructors compute on their tensors; build on the CPU then
            twin = create_model(name, **overrides)
    # "checkpoint" = the weights being trained, "model" = what the name and overrides rebuild
    problem = describe_mismatch(twin.state_dict(), model.state_dict())
    now, built = _plain(model.config.to_dict()), _plain(twin.config.to_dict())
    changed = sorted(k for k in set(now) | set(built) if now.get(k) != built.get(k))
    if changed:
        problem = "; ".join(
            [problem] * bool(problem)
            + [f"config field {k}: trained {now.get(k)} vs rebuilt {built.get(k)}" for k in changed]
        )
    if problem:
        raise InputError(
            f"create_model({name!r}, **{overrides}) does not rebuild the model being trained "
            f"({problem}); pass the overrides the model was built with as model_overrides="
        )


def _lr_lambda(total: int, warmup: int, scheduler: str):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _len(ds: Dataset) -> int:
    """``len(ds)``: torch's ``Dataset`` leaves ``__len__`` optional, training needs it."""
    if not isinstance(ds, Sized):
        raise InputTypeError(f"object of type {type(ds).__name__!r} has no len()")  # as len() says
    return len(ds)


def _describe(ds: Dataset | None) -> Any:
    describe = getattr(ds, "describe", None)
    if ds is None:
        return None
    return _plain(describe()) if callable(describe) else {"type": type(ds).__name__, "n": _len(ds)}


@dataclass(frozen=True)
class TrainingConfig:
    """A training recipe: the keywords of :func:`train_multi_exit` other than the model, the
    data and where the result goes. Checked when made, so a bad recipe fails before any work."""

    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    distill_alpha: float | None = None
    distill_temperature: float = 1.0
    exit_weights: Sequence[float] | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise InputError(
                f"batch_size must be >= 1 and lr > 0, got {self.batch_size} and {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.distill_alpha is not None and self.distill_alpha < 0:
            raise InputError(f"distill_alpha must be >= 0 (or None), got {self.distill_alpha}")

    def recipe(self) -> dict[str, Any]:
        """The recipe as a checkpoint records it (``exit_weights`` as a list)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["exit_weights"] = list(self.exit_weights) if self.exit_weights is not None else None
        return out


def train_multi_exit(
    model: MultiExitModel,
    train_set: Dataset,
    val_set: Dataset | None = None,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    scheduler: str = "cosine",
    warmup_epochs: int = 0,
    distill_alpha: float | None = None,
    distill_temperature: float = 1.0,
    exit_weights: Sequence[float] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    model_name: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    test_set: Dataset | None = None,
) -> TrainResult:
    """Train every exit of ``model`` jointly (loss: :func:`multi_exit_loss`), in place.

    Data sets yield ``(image tensor, int label)``. Weight decay skips biases and
    normalisation parameters (timm's ``param_groups_weight_decay``); the learning
    rate follows a per-step cosine (or constant) schedule after
    ``warmup_epochs`` of linear warm-up. With ``val_set`` each epoch ends with the
    per-exit validation accuracy. With ``checkpoint_path`` the weights are saved
    at the end with the model's name (default ``model.config.name``), the
    ``model_overrides`` that rebuild it (checked before training starts), its
    config, the recipe and the history; :func:`load_trained` reads them back.
    The recipe keywords make a :class:`TrainingConfig`.
    """
    cfg = TrainingConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
        weight_decay=weight_decay, momentum=momentum, scheduler=scheduler,
        warmup_epochs=warmup_epochs, distill_alpha=distill_alpha,
        distill_temperature=distill_temperature, exit_weights=exit_weights, seed=seed,
        device=device,
    )
    _check_data(model, train_set)
    name = model_name or model.config.name
    overrides = dict(model_overrides or {})
    if checkpoint_path is not None:
        _check_rebuild(model, name, overrides)
    train_config = {**cfg.recipe(), "train_set": _describe(train_set), "val_set": _describe(val_set)}
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leave the caller's generator as it was
        torch.manual_seed(seed)
        history = _fit(model, train_set, val_set, cfg, progress)
        test_acc = evaluate_exits(model, test_set, device=device) if test_set is not None else None
    seconds = time.perf_counter() - start
    saved = None
    if checkpoint_path is not None:
        train_config["test_set"] = _describe(test_set)
        train_config["test_acc"] = test_acc
        train_config["seconds"] = seconds
        saved = _save_checkpoint(checkpoint_path, model, name, overrides, train_config, history)
    return TrainResult(
        history=history,
        final_accuracy=history[-1]["val_acc"],
        checkpoint_path=saved,
        seconds=seconds,
        test_accuracy=test_acc,
        model=model,
    )


def _check_data(model: MultiExitModel, train_set: Dataset) -> None:
    """Refuse an empty training set, or one with more classes than the model has outputs."""
    if _len(train_set) == 0:
        raise InputError("train_set is empty")
    n_classes = getattr(train_set, "num_classes", None)
    if n_classes is not None and n_classes > model.config.num_classes:
        raise InputError(
            f"the data set has {n_classes} classes but {model.config.name} has "
            f"{model.config.num_classes} outputs; build it with num_classes={n_classes}"
        )


def _fit(model: MultiExitModel, train_set: Dataset, val_set: Dataset | None,
         cfg: TrainingConfig, progress: bool) -> list[dict[str, Any]]:
    """Run every epoch (under the caller's seeded generator); returns the history."""
    from tqdm.auto import tqdm

    model.to(cfg.device)
    opt = _make_optimizer(model, cfg)
    loader = _make_loader(train_set, cfg)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(cfg.epochs * steps, cfg.warmup_epochs * steps, cfg.scheduler)
    )
    history: list[dict[str, Any]] = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        entry = _train_epoch(model, loader, opt, sched, cfg, epoch, progress)
        if val_set is not None:
            entry["val_acc"] = evaluate_exits(model, val_set, device=cfg.device)
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        if progress:
            acc = entry["val_acc"] or entry["train_acc"]
            which = "val" if entry["val_acc"] else "train"
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {entry['loss']:.4f}  {which} acc per exit "
                + " ".join(f"{a:.3f}" for a in acc)
            )
    return history


def _make_optimizer(model: MultiExitModel, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; weight decay skips biases and normalisation parameters."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _make_loader(train_set: Dataset, cfg: TrainingConfig) -> DataLoader:
    """Shuffled batches in an order fixed by the seed (its own generator, no workers)."""
    n = _len(train_set)
    drop_last = n > cfg.batch_size and n % cfg.batch_size == 1  # a batch of one breaks BatchNorm
    return DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=0,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _train_epoch(model: MultiExitModel, loader: DataLoader, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LambdaLR, cfg: TrainingConfig, epoch: int,
                 progress: bool) -> dict[str, Any]:
    """One pass over the training batches; returns the epoch's history entry (mean loss,
    per-exit training accuracy, the learning rate at its end; ``val_acc`` still None)."""
    from tqdm.auto import tqdm

    model.train()
    total, seen = 0.0, 0
    correct: torch.Tensor | None = None
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress
    )
    for x, y in bar:
        x, y = x.to(cfg.device), y.to(cfg.device)
        logits = model(x)
        loss = multi_exit_loss(
            logits,
            y,
            distill_alpha=cfg.distill_alpha,
            distill_temperature=cfg.distill_temperature,
            exit_weights=cfg.exit_weights,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} in epoch {epoch + 1}; lower lr "
                f"(now {cfg.lr})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            hits = torch.stack([(z.argmax(1) == y).sum() for z in logits]).cpu()
        correct = hits if correct is None else correct + hits
        total += loss.item() * y.shape[0]
        seen += y.shape[0]
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return {
        "epoch": epoch + 1,
        "loss": total / seen,
        "train_acc": (correct.double() / seen).tolist() if correct is not None else None,
        "val_acc": None,
        "lr": float(opt.param_groups[0]["lr"]),
    }


def _save_checkpoint(checkpoint_path: str | Path, model: MultiExitModel, name: str,
                     overrides: dict[str, Any], train_config: dict[str, Any],
                     history: list[dict[str, Any]]) -> str:
    """Write the checkpoint :func:`load_trained` reads (whole or not at all); returns its path."""
    import eebench

    ckpt = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_name": name,
        "model_overrides": _plain(overrides),
        "model_config": _plain(model.config.to_dict()),
        "train_config": _plain(train_config),
        "history": _plain(history),
        "eebench_version": eebench.__version__,
    }
    path = Path(checkpoint_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return str(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train_multi_exit`, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise InputError(
            f"{path} is not an eebench training checkpoint (missing {missing}); for a bare "
            "state_dict use eebench.zoo.create_model(name, checkpoint=path, ...)"
        )
    return obj


def load_trained(path: str | Path) -> MultiExitModel:
    """Rebuild the model of a training checkpoint by name and strict-load its weights.

    The rebuilt model's config must equal the saved one (a changed model
    definition is reported, never silently loaded). The recipe and history are
    attached as ``model.train_info``.
    """
    from eebench.zoo.checkpoint import CheckpointMismatchError, describe_mismatch
    from eebench.zoo.registry import create_model

    obj = read_checkpoint(path)
    model = create_model(obj["model_name"], **obj["model_overrides"])
    now, then = _plain(model.config.to_dict()), obj["model_config"]
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed:
        raise CheckpointMismatchError(
            f"{path}: {obj['model_name']} now builds with a different config than it was trained "
            f"with (fields {changed}: now {[now.get(k) for k in changed]}, "
            f"saved {[then.get(k) for k in changed]})"
        )
    problem = describe_mismatch(model.state_dict(), obj["state_dict"])
    if problem:
        raise CheckpointMismatchError(f"{path} does not match {obj['model_name']}: {problem}")
    model.load_state_dict(obj["state_dict"], strict=True)
    model.train_info = {
        "train_config": obj["train_config"],
        "history": obj["history"],
        "eebench_version": obj["eebench_version"],
    }
    return model.eval()


def train_on_dataset(
    model_name: str,
    *,
    dataset: str = "digits",
    dataset_params: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    split_seed: int = 0,
    fractions: dict[str, float] | None = None,
    index_files: dict[str, str | Path] | None = None,
    val_size: int | float | None = None,
    augment: bool = True,
    flip: bool | None = None,
    epochs: int,
    lr: float,
    seed: int = 0,
    **train_kwargs: Any,
) -> TrainResult:
    """Build a registered model, train it on a registered data set's train split, test it.

    ``num_classes`` defaults to the data set's. The train split gets random-crop
    augmentation (and flips where the data set is mirror-symmetric, unless
    ``flip`` says otherwise) when ``augment``; val and test get the model's
    evaluation transform. The model is initialised under ``seed``. Other
    keywords go to :func:`train_multi_exit`; ``test_accuracy`` of the result is
    per-exit top-1 on the test split.
    """
    from eebench.data import ImageDataset, create_dataset, split_dataset
    from eebench.zoo.registry import create_model

    full: ImageDataset = create_dataset(dataset, **(dataset_params or {}))  # no split: the full set
    views = split_dataset(
        full, seed=split_seed, fractions=fractions, index_files=index_files, val_size=val_size
    )
    missing = [s for s in ("train", "test") if s not in views]
    if missing:
        raise InputError(f"training needs train and test splits; this rule gives {list(views)}")
    overrides = dict(model_overrides or {})
    overrides.setdefault("num_classes", full.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(model_name, **overrides)
    cfg = model.config
    train = (
        views["train"].with_train_transform(cfg, flip=flip)
        if augment
        else views["train"].with_eval_transform(cfg)
    )
    val = views["val"].with_eval_transform(cfg) if "val" in views else None
    test = views["test"].with_eval_transform(cfg)
    return train_multi_exit(
        model,
        train,
        val,
        test_set=test,
        epochs=epochs,
        lr=lr,
        seed=seed,
        model_name=model_name,
        model_overrides=overrides,
        **train_kwargs,
    )
