"""FedAvg in the clear: the same local training, fixed-point encoding and dropout rule as
`protocol.py`, with the per-party vectors summed directly instead of masked.

It is the yardstick the tests hold the secure protocol to: with the same seeds (hence the
same minibatch orders) the protocol's unmasked aggregates and final weights must equal
these bit for bit, which shows the masks cancel exactly. It is also what `bench/` compares
secure-aggregation round times against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from pcn.algorithms.fedavg import model as mdl


@dataclass
class PlainRun:
    thetas: list[np.ndarray] = field(default_factory=list)  # theta_0 .. theta_R
    aggregates: dict[int, np.ndarray] = field(default_factory=dict)  # round -> sum of x_i (uint64)
    vectors: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # round -> party -> x_i
    contributors: dict[int, list[int]] = field(default_factory=dict)  # round -> party indexes
    metrics: list[dict[str, Any]] = field(default_factory=list)


def party_vector(
    round_: int,
    theta: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    num_parties: int,
    permutation: Callable[[str, int], np.ndarray],
) -> np.ndarray:
    """x_i of one party in one aggregation round, in Z_{2^64} (what the protocol masks)."""
    parts = []
    if round_ <= params["rounds"]:
        trained = mdl.local_train(theta, x, y, params, lambda e: permutation(f"minibatch/{round_}/{e}", len(y)))
        parts.append(mdl.encode_update(trained, mdl.weight_factor(len(y), params), num_parties))
    parts.append(mdl.encode_metrics(*mdl.evaluate(theta, x, y, params)))
    return mdl.to_ring(np.concatenate(parts))


def plain_fedavg(
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    params: dict[str, Any],
    permutation_for: Callable[[int, str, int], np.ndarray],
    dropouts: dict[int, dict[str, Any]] | None = None,
) -> PlainRun:
    """Run FedAvg over `data` (one (X, y) per party, in participant order) with validated
    `params`. `permutation_for(i, label, n)` is party i's labelled secret permutation
    (`Protocol.secret_permutation`); `dropouts`
    maps a party index to {"round", "phase"} as `simulate_dropout` does."""
    dropouts = dropouts or {}
    n = len(data)
    num_params = mdl.num_parameters(mdl.layer_shapes(len(params["features"]), params["hidden"]))
    theta = mdl.initial_model(params)
    run = PlainRun(thetas=[theta])
    active = list(range(n))

    def leaves(i: int, r: int, phase: str) -> bool:
        d = dropouts.get(i)
        return d is not None and d["round"] == r and d["phase"] == phase

    for r in range(1, params["rounds"] + 2):
        contributors = [i for i in active if not leaves(i, r, "update")]
        vectors = {
            i: party_vector(r, theta, data[i][0], data[i][1], params, n, partial(permutation_for, i))
            for i in contributors
        }
        total = np.zeros(len(next(iter(vectors.values()))), dtype=np.uint64)
        for i in contributors:
            total += vectors[i]
        run.vectors[r], run.aggregates[r], run.contributors[r] = vectors, total, contributors
        values = mdl.signed(total)
        if r <= params["rounds"]:
            theta, _ = mdl.decode_average(values[: num_params + 1], num_params)
            run.thetas.append(theta)
            run.metrics.append(mdl.decode_metrics(values[num_params + 1 :]))
        else:
            run.metrics.append(mdl.decode_metrics(values))
        active = [i for i in contributors if not leaves(i, r, "unmask")]
    return run
