"""Built-in pcn algorithms. Each lives in its own package; its registered hash covers that
package, every pcn module it imports and the libraries those import (see codehash.py)."""

from __future__ import annotations

import importlib

from pcn.algorithms.base import Protocol

# on-chain kind -> (module, registered protocol class; its `create` builds the class of a party's role)
BUILTIN: dict[str, tuple[str, str]] = {
    "stats": ("pcn.algorithms.stats.protocol", "StatsProtocol"),
    "psi": ("pcn.algorithms.psi.protocol", "PsiProtocol"),
    "psi-ot": ("pcn.algorithms.psi_ot.protocol", "PsiOtProtocol"),
    "private-query": ("pcn.algorithms.private_query.protocol", "PrivateQueryProtocol"),
    "fedavg": ("pcn.algorithms.fedavg.protocol", "FedAvgProtocol"),
    "hetero-lr": ("pcn.algorithms.hetero_lr.protocol", "HeteroLrProtocol"),
    "hetero-lr-predict": ("pcn.algorithms.hetero_lr_predict.protocol", "HeteroLrPredictProtocol"),
    "hetero-sbt": ("pcn.algorithms.hetero_sbt.protocol", "HeteroSbtProtocol"),
    "hetero-sbt-predict": ("pcn.algorithms.hetero_sbt_predict.protocol", "HeteroSbtPredictProtocol"),
}


class UnknownAlgorithm(LookupError):
    """No built-in algorithm of that name."""


def protocol_class(name: str) -> type[Protocol]:
    try:
        module_name, cls_name = BUILTIN[name]
    except KeyError:
        raise UnknownAlgorithm(f"no built-in algorithm {name!r}; known: {sorted(BUILTIN)}") from None
    # codehash: loads the built-in algorithm chosen by kind, whose package is hashed on its own
    return getattr(importlib.import_module(module_name), cls_name)
