"""A plaintext, single-party implementation of the trees hetero-sbt grows: every column in
one place, no encryption, no histogram subtraction, no packing. It uses the protocol's
binning, quantisation, row sampling, open-node rule and gain (`trees`), scanning all the
parties' candidate splits at once in the protocol's order (guest, then hosts, features in
each party's order, bins ascending; first of equal gains), so a correct protocol run grows
exactly these trees. Tests compare the two; it is not used by the protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcn.algorithms.hetero_sbt import trees
from pcn.algorithms.hetero_sbt.params import validate_params


def train(
    parties: list[tuple[str, list[str], np.ndarray]], y: np.ndarray, params: dict[str, Any], binding: bytes
) -> dict[str, Any]:
    """`parties`: (owner, feature names, raw columns in sorted-ID row order), the guest first
    as "guest", hosts in host order with their columns in their opaque order. Returns
    {"init_score", "trees", "metrics", "raw", "stopped"}; a host split is recorded with its
    feature name and threshold."""
    p = validate_params(params)
    n = len(y)
    valid = trees.validation_mask(binding, p["seed"], n, p["validation_fraction"])
    train_rows = np.flatnonzero(~valid)
    bins_list, edges, owners, names, counts = [], [], [], [], []
    for owner, feats, raw in parties:
        b, e = trees.bin_matrix(raw, ~valid, p["max_bins"])
        bins_list.append(b)
        edges += e
        owners += [owner] * len(feats)
        names += feats
        counts += [len(x) + 1 for x in e]
    bins = np.hstack(bins_list)
    rules = trees.Rules(p["l2"], p["min_child_weight"], p["min_samples_leaf"], p["min_gain"])
    feats_of, bins_of = trees.layout(counts)
    init = trees.init_score(p["objective"], y[train_rows])
    raw = np.full(n, init)
    out_trees: list[list[dict[str, Any]]] = []
    metrics: list[dict[str, Any]] = []
    best = (-1, 0.0)
    stopped = "max_trees"
    for t in range(p["trees"]):
        sample = trees.tree_sample(binding, p["seed"], t, train_rows, p["subsample"])
        in_sample = np.zeros(n, dtype=bool)
        in_sample[sample] = True
        g, h = trees.grad_hess(p["objective"], raw[sample], y[sample])
        q = trees.quantise(p["objective"], g, h, len(sample))
        gq, hq = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        gq[sample], hq[sample] = q.g, q.h
        records: dict[int, dict[str, Any]] = {}
        level = [(0, 0, np.arange(n))]
        next_id = 1
        while level:
            nxt = []
            for node_id, depth, rows in level:
                s = rows[in_sample[rows]]
                rec: dict[str, Any] = {"id": node_id, "depth": depth, "rows": len(s)}
                records[node_id] = rec
                total = (int(gq[s].sum()), int(hq[s].sum()), len(s))
                gain, i = float("-inf"), -1
                if trees.open_node(depth, len(s), p["max_depth"], p["min_samples_leaf"]):
                    hist = trees.plain_histogram(bins, counts, s, gq[s], hq[s])
                    gain, i = trees.best_in(hist, counts, total, rules)
                if i < 0:
                    rec["leaf"] = trees.leaf_weight(total[0], total[1], rules, p["learning_rate"])
                    raw[rows] += rec["leaf"]
                    continue
                f, cut = int(feats_of[i]), int(bins_of[i])
                rec.update(
                    {
                        "gain": gain,
                        "owner": owners[f],
                        "feature": names[f],
                        "threshold": float(edges[f][cut]),
                        "left": next_id,
                        "right": next_id + 1,
                    }
                )
                left = bins[rows, f] <= cut
                nxt += [(next_id, depth + 1, rows[left]), (next_id + 1, depth + 1, rows[~left])]
                next_id += 2
            level = nxt
        out_trees.append([records[k] for k in sorted(records)])
        obj = p["objective"]
        m: dict[str, Any] = {"tree": t + 1, **trees.metrics(obj, raw[train_rows], y[train_rows], "train")}
        if valid.any():
            m.update(trees.metrics(obj, raw[valid], y[valid], "validation"))
            key = (
                "validation_auc"
                if "validation_auc" in m
                else ("validation_mse" if obj == "regression" else "validation_log_loss")
            )
            score = m[key] if key == "validation_auc" else -m[key]
            if best[0] < 0 or score > best[1]:
                best = (t, score)
            metrics.append(m)
            if p["early_stopping_rounds"] and t - best[0] >= p["early_stopping_rounds"] and t + 1 < p["trees"]:
                stopped = "early_stopping"
                break
        else:
            metrics.append(m)
    return {"init_score": init, "trees": out_trees, "metrics": metrics, "raw": raw, "stopped": stopped}
