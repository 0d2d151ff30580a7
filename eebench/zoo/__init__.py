"""Model zoo: every architecture behind the one ``MultiExitModel`` interface.

Importing this package registers every architecture module's models.
"""

from eebench.zoo import cfvit, chase, dvt, dynperceiver, mcga, msdnet, ranet, timm_attach  # noqa: F401  (registration side effects)
from eebench.zoo.base import ModelConfig, MultiExitModel, TruncatedModel
from eebench.zoo.checkpoint import CheckpointMismatchError, load_checkpoint
from eebench.zoo.registry import (
    MODELS,
    UnknownModelError,
    create_model,
    describe_model,
    is_model,
    list_families,
    list_models,
    model_name,
    model_table,
    register_model,
)

__all__ = [
    "MODELS",
    "CheckpointMismatchError",
    "ModelConfig",
    "MultiExitModel",
    "TruncatedModel",
    "UnknownModelError",
    "create_model",
    "describe_model",
    "is_model",
    "list_families",
    "list_models",
    "load_checkpoint",
    "model_name",
    "model_table",
    "register_model",
]
