"""Units of cost: multiply-accumulates and their multiples.

eebench keeps costs in MACs. Sources give them in MACs, millions or billions of MACs
(papers' "FLOPs" are usually MACs); every place that converts reads the factors here, so
a suite, an imported curve and a comparison agree on what "GMACs" means.
"""

from __future__ import annotations

MAC_UNITS: dict[str, float] = {"MACs": 1.0, "MMACs": 1e6, "GMACs": 1e9}
"""Multiply-accumulate units and their size in MACs; any other unit (``ms``, ``mJ``, ...)
is kept as given and labelled so in reports."""

