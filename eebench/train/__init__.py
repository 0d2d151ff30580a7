"""A small multi-exit trainer for the embedded and small data sets (CPU is enough).

Imported lazily (torch loads on first use), so that importing ``eebench.train``
to reach a name costs nothing until training starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eebench.lazy import lazy_attributes

# The lazy names for type checkers and editors; at run time __getattr__ loads them.
if TYPE_CHECKING:
    from eebench.train.trainer import (
        TrainResult,
        evaluate_exits,
        load_trained,
        multi_exit_loss,
        predict_exits,
        read_checkpoint,
        train_multi_exit,
        train_on_dataset,
    )

__all__ = [  # written out so that linters and type checkers can read it
    "TrainResult",
    "evaluate_exits",
    "load_trained",
    "multi_exit_loss",
    "predict_exits",
    "read_checkpoint",
    "train_multi_exit",
    "train_on_dataset",
]
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(__all__, "eebench.train.trainer"))
