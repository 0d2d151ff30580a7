"""LogitSet: one model's per-exit outputs on one split of one data set.

Everything downstream of the store (policies, evaluation, reports) consumes
this and nothing else, which is what lets exit policies be compared without
re-running a network. Raw logits are kept so calibration can run after the
fact; an imported cache that only holds probabilities says so in ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eebench.errors import DataError, InputTypeError
from eebench.store.manifest import KINDS
from eebench.store.validate import check_costs


@dataclass
class LogitSet:
    """``logits`` is (N samples, K exits, C classes), possibly a read-only memory map.

    ``features``, when the cache has them, holds one (N, D_k) array per exit: the input of
    the nn.Linear that produced exit k's logits (widths may differ between exits), for
    calibrations that need more than the logits (last-layer Laplace). None otherwise.
    """

    logits: np.ndarray
    labels: np.ndarray
    costs: np.ndarray
    exit_names: list[str] = field(default_factory=list)
    ids: np.ndarray | None = None
    kind: str = "logits"
    manifest: dict[str, Any] = field(default_factory=dict)
    features: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 3:
            raise DataError(
                f"logits must be (samples, exits, classes), got shape {self.logits.shape}"
            )
        n, k, c = self.logits.shape
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False).reshape(-1)
        if self.labels.shape[0] != n:
            raise DataError(f"{self.labels.shape[0]} labels for {n} samples")
        if n and (self.labels.min() < 0 or self.labels.max() >= c):
            raise DataError(
                f"labels must lie in [0, {c - 1}] for {c} classes, "
                f"got [{self.labels.min()}, {self.labels.max()}]"
            )
        self.costs = check_costs(self.costs, "costs", allow_unknown=True)
        if self.costs.shape[0] != k:
            raise DataError(f"{self.costs.shape[0]} costs for {k} exits; give one cost per exit")
        if not self.exit_names:
            self.exit_names = [f"exit{i}" for i in range(k)]
        if len(self.exit_names) != k:
            raise DataError(f"{len(self.exit_names)} exit names for {k} exits")
        if self.ids is None:
            self.ids = np.arange(n, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        if self.ids.shape[0] != n:
            raise DataError(f"{self.ids.shape[0]} sample ids for {n} samples")
        if self.kind not in KINDS:
            raise DataError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.features is not None:
            self.features = _check_feature_shapes(self.features, n, k)

    @property
    def num_samples(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_exits(self) -> int:
        return int(self.logits.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[2])

    def subset(self, indices: np.ndarray, *, logits: np.ndarray | None = None) -> LogitSet:
        """The samples at ``indices`` (positions, not ids), loaded into memory; ``logits``:
        their rows, when the caller gathered them already."""
        idx = np.asarray(indices, dtype=np.int64)
        assert self.ids is not None  # __post_init__ fills in the ids
        return LogitSet(
            logits=np.asarray(self.logits[idx]) if logits is None else logits,
            labels=self.labels[idx],
            costs=self.costs.copy(),
            exit_names=list(self.exit_names),
            ids=self.ids[idx],
            kind=self.kind,
            manifest=dict(self.manifest),
            features=None if self.features is None else [np.asarray(f[idx]) for f in self.features],
        )

    def log_probs(self) -> np.ndarray:
        """Per-exit log-probabilities, float64, (N, K, C), whatever ``kind`` holds."""
        x = np.asarray(self.logits, dtype=np.float64)
        if self.kind == "probabilities":
            return np.log(np.clip(x, 1e-300, None))
        from scipy.special import log_softmax

        return log_softmax(x, axis=-1)


def _check_feature_shapes(features: Any, n: int, k: int) -> list[np.ndarray]:
    """``features`` as a list of K floating (N, D_k) arrays (memory maps stay maps)."""
    if isinstance(features, np.ndarray) or not isinstance(features, (list, tuple)):
        raise DataError(
            f"features must be a list with one (samples, width) array per exit, got "
            f"{type(features).__name__}"
        )
    if len(features) != k:
        raise DataError(f"{len(features)} feature arrays for {k} exits; give one per exit")
    out = []
    for j, f in enumerate(features):
        arr = f if isinstance(f, np.ndarray) else np.asarray(f)
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise DataError(
                f"features of exit {j} must be ({n} samples, width > 0), got shape {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"features of exit {j} have dtype {arr.dtype}, not floating point")
        out.append(arr)
    return out


def check_logitset(ls: Any, what: str) -> None:
    """Fail early, and say what was expected, when something else than a LogitSet comes in."""
    if not all(hasattr(ls, a) for a in ("logits", "labels", "costs", "kind")):
        raise InputTypeError(
            f"{what} must be an eebench.store.logitset.LogitSet, got {type(ls).__name__}"
        )
