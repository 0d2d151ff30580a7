"""The cached-logit store: everything downstream of a model reads from here.

The names below load on first use (PEP 562): importing the package costs
nothing, and a command loads only the modules it uses (``LogitStore`` needs
numpy, never pandas or torch). Extraction and ``.pth`` import load torch inside
the functions that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eebench.lazy import lazy_attributes

_LAZY = {
    "extract_logits": "eebench.store.extract",
    "export_npz": "eebench.store.formats",
    "import_msdnet_logits": "eebench.store.formats",
    "import_npz": "eebench.store.formats",
    "load_msdnet_logits": "eebench.store.formats",
    "load_npz_logits": "eebench.store.formats",
    "KINDS": "eebench.store.manifest",
    "LogitSet": "eebench.store.logitset",
    "AmbiguousReferenceError": "eebench.store.manifest",
    "EntryExistsError": "eebench.store.manifest",
    "EntryNotFoundError": "eebench.store.manifest",
    "LogitStore": "eebench.store.logitstore",
    "StoreError": "eebench.store.manifest",
    "VerifyProblem": "eebench.store.logitstore",
    "default_store_root": "eebench.store.manifest",
    "extraction_identity": "eebench.store.logitstore",
    "identity_key": "eebench.store.logitstore",
    "indices_sha256": "eebench.store.logitstore",
    "load_source": "eebench.store.sources",
    "split_logitset": "eebench.store.splits",
    "subsets": "eebench.store.splits",
}

# The lazy names for type checkers and editors; at run time __getattr__ loads them.
if TYPE_CHECKING:
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
    from eebench.store.sources import load_source
    from eebench.store.splits import split_logitset, subsets

__all__ = [  # sorted(_LAZY), written out so that linters and type checkers can read it
    "AmbiguousReferenceError",
    "EntryExistsError",
    "EntryNotFoundError",
    "KINDS",
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
    "load_source",
    "split_logitset",
    "subsets",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
