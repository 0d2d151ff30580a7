"""The cached-logit store: everything downstream of a model reads from here.

Importing this package loads numpy only (no torch, no pandas), so the
``store``, ``sweep`` and ``report`` commands start quickly; extraction and
``.pth`` import load torch inside the functions that need it.
"""

from __future__ import annotations

from eebench.store.extract import extract_logits
from eebench.store.formats import (
    export_npz,
    import_msdnet_logits,
    import_npz,
    load_msdnet_logits,
    load_npz_logits,
)
from eebench.store.logitset import KINDS, LogitSet
from eebench.store.logitstore import (
    AmbiguousReferenceError,
    EntryExistsError,
    EntryNotFoundError,
    LogitStore,
    StoreError,
    VerifyProblem,
    default_store_root,
    extraction_identity,
    identity_key,
    indices_sha256,
)

__all__ = [
    "KINDS",
    "AmbiguousReferenceError",
    "EntryExistsError",
    "EntryNotFoundError",
    "LogitSet",
    "LogitStore",
    "StoreError",
    "VerifyProblem",
    "default_store_root",
    "export_npz",
    "extract_logits",
    "extraction_identity",
    "identity_key",
    "import_msdnet_logits",
    "import_npz",
    "indices_sha256",
    "load_msdnet_logits",
    "load_npz_logits",
]
