"""hetero-lr's training in plaintext numpy: what the protocol must compute under encryption.

Used by the in-process protocol tests and by the tests over real nodes (the namespace
consortium), so both compare with one reference."""

from __future__ import annotations

from typing import Any

import numpy as np

from pcn.algorithms.hetero_lr.common import epoch_batches, split_key
from pcn.algorithms.hetero_lr.protocol import HeteroLrProtocol


def lr_reference(x_raw: np.ndarray, y: np.ndarray, split: list[range], params: dict[str, Any]) -> dict[str, Any]:
    """Train on rows in ID order, the columns of party k being `split[k]` (party 0 the guest,
    whose block carries the intercept); each party standardises its own columns."""
    p = HeteroLrProtocol.validate_params(params)
    n = len(y)
    xs = (x_raw - x_raw.mean(0)) / x_raw.std(0)
    parts = [xs[:, list(cols)] for cols in split]
    parts[0] = np.hstack([parts[0], np.ones((n, 1))])
    ws = [np.zeros(x.shape[1]) for x in parts]
    cw = p["class_weight"]
    pos = y.sum()
    if cw is None:
        s = np.ones(n)
    elif cw == "balanced":
        s = np.where(y == 1, n / (2 * pos), n / (2 * (n - pos)))
    else:
        s = np.where(y == 1, cw["1"], cw["0"])
    key = split_key(p["seed_split"])
    losses: list[float] = []
    z = np.zeros(n)
    for epoch in range(p["epochs"]):
        for b in epoch_batches(key, epoch, n, p["batch_size"]):
            zb = sum(x[b] @ w for x, w in zip(parts, ws, strict=True))
            d = s[b] * (0.25 * zb + 0.5 - y[b])
            for k, (x, w) in enumerate(zip(parts, ws, strict=True)):
                g = x[b].T @ d / len(b)
                reg = w.copy()
                if k == 0:
                    reg[-1] = 0.0
                ws[k] = w - p["learning_rate"] * (g + p["l2"] * reg)
        z = sum(x @ w for x, w in zip(parts, ws, strict=True))
        loss = float(np.mean(s * (np.log(2) - 0.5 * (2 * y - 1) * z + 0.125 * z * z)))
        loss += 0.5 * p["l2"] * (float(ws[0][:-1] @ ws[0][:-1]) + sum(float(w @ w) for w in ws[1:]))
        losses.append(loss)
        if epoch >= 1 and abs(losses[-2] - loss) < p["tol"]:
            break
    return {"weights": ws, "losses": losses, "scores": z}
