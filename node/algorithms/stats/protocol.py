"""Joint statistics (count, sum, mean, variance, histogram) by additive secret sharing.

Protocol, for parties P_1..P_n (n >= 2, on-chain order) and one recipient R among them:

1. Each party computes its local vector v_i (per group: missing, count, sum, sum of squares,
   histogram bins; exact integers of fixed-point values, see `local.py`), adds its share of
   the DP noise if `dp` is set (only the first non-recipient draws it, see `dp.py`), and splits v_i into n
   additive shares in Z_{2^256}: n - 1 uniformly random (SHAKE-256 of its secret seed) and
   one that makes them sum to v_i. Round 1, kind "share": share j goes to P_j.
2. Each party sums the n shares it holds into its aggregate share a_j and sends it to R
   (round 2, kind "agg"), and broadcasts c_j = sha256("pcn/stats/share/v2" | binding |
   sender | a_j) to every other party (round 2, kind "commit").
3. R checks every a_j against c_j, reconstructs sum_j a_j = sum_i v_i (+ noise), decodes
   the signed ring elements, computes the statistics exactly (fractions) and broadcasts
   h_r = sha256("pcn/stats/result/v1" | salt | result) to every other party (round 3, kind
   "result-hash"); the 32-byte salt is R's secret, so h_r cannot be used to confirm a
   guessed result.

Every party then commits to sha256("pcn/stats/commit/v1" | c_1 | ... | c_n | h_r), which is
identical at all parties in an honest run. R's `commitment_opening()` is c_1 | ... | c_n |
salt, so R can later show the result bytes and the opening hash to that commitment
(`StatsProtocol.commitment_for(result, opening)`).

What each party learns: only R learns the aggregates (per group, over all parties' rows).
Every other party sees only uniformly random shares, the commitments and h_r. R sees the
aggregate shares, which are uniformly random subject to summing to the total; with n = 2 the
total already reveals the other party's vector, as it must. Security model: semi-honest
parties (they follow the protocol but may try to learn more from what they see), without
collusion between R and others. A party that sends wrong shares in round 1 is not detected
here; the commitments bind round 2, and a tampered aggregate share is a ProtocolError at R.

Result (canonical JSON, sorted keys, at R only): {"algorithm": "stats", "column", "group_by",
"statistics", "decimals", "histogram_edges", "parties", "dp": null | {...}, "groups": {name:
{"missing", "count"?, "sum"?, "mean"?, "variance"?, "histogram"?}}}. Groups are the public
`groups` plus "__other__" (unlisted or null labels), or the single "__all__" without
`group_by`. A histogram over edges e_0 < ... < e_k has k + 2 bins: [underflow x < e_0,
[e_0, e_1), ..., [e_{k-1}, e_k), overflow x >= e_k]. Variance is the sample variance
(n - 1), null below 2 values; mean is null for an empty group. Without DP, counts are exact
integers and sum/mean/variance are the correctly rounded floats of the exact fractions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from pcn.algorithms.base import CommitmentScheme, Message, Protocol, ProtocolError, canonical_json
from pcn.algorithms.stats import dp as dpmod
from pcn.algorithms.stats.local import group_names, local_vector
from pcn.algorithms.stats.params import Layout, fixed
from pcn.algorithms.stats.params import validate_params as _validate_params

RING_BITS = 256
MODULUS = 1 << RING_BITS
HALF = 1 << (RING_BITS - 1)
ELEMENT_BYTES = RING_BITS // 8

SHARE_DOMAIN = b"pcn/stats/share/v2"
RESULT_DOMAIN = b"pcn/stats/result/v1"
COMMIT_DOMAIN = b"pcn/stats/commit/v1"

# The recipient's opening is c_1 | ... | c_n | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=ELEMENT_BYTES,
    min_head=ELEMENT_BYTES,
    error="a stats opening is c_1 | ... | c_n | salt, 32 bytes each",
)

ROUND_SHARE, ROUND_AGG, ROUND_RESULT = 1, 2, 3
KIND_SHARE, KIND_COMMIT, KIND_AGG, KIND_RESULT = "share", "commit", "agg", "result-hash"


def encode_vector(vector: list[int]) -> bytes:
    return b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in vector)


def decode_vector(payload: bytes) -> list[int]:
    return [int.from_bytes(payload[i : i + ELEMENT_BYTES], "big") for i in range(0, len(payload), ELEMENT_BYTES)]


def signed(v: int) -> int:
    """Two's-complement-style reading of a ring element: [2^255, 2^256) are the negatives."""
    v %= MODULUS
    return v - MODULUS if v >= HALF else v


def share_commitment(binding: bytes, sender: str, aggregate: bytes) -> bytes:
    name = sender.encode()
    return hashlib.sha256(SHARE_DOMAIN + binding + len(name).to_bytes(4, "big") + name + aggregate).digest()


@dataclass(eq=False)
class StatsProtocol(Protocol):
    name: ClassVar[str] = "stats"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT

    _params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _layout: Layout | None = field(default=None, init=False, repr=False)
    _held: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _shares_from: set[str] = field(default_factory=set, init=False, repr=False)
    _aggregate: bytes | None = field(default=None, init=False, repr=False)
    _aggs: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _commits: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        if len(ctx.participants) < 2 or len(set(ctx.participants)) != len(ctx.participants):
            raise ProtocolError("stats needs at least 2 distinct participants")
        self._check_context()
        self._params = self.validate_params(ctx.params)
        p = self._params
        num_groups = len(p["groups"]) + 1 if p["group_by"] else 1
        self._layout = Layout.build(num_groups, p["statistics"], len(p["histogram"]["edges"]) if p["histogram"] else 0)

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The params normalised (defaults filled in); ProtocolError on anything wrong."""
        return _validate_params(params)

    @staticmethod
    def privacy_cost(params: dict[str, Any]) -> float:
        """ε of the release: the budget split across statistics composes sequentially to
        dp.epsilon; the missing count is over disjoint rows (parallel composition)."""
        dp = params.get("dp")
        return float(dp["epsilon"]) if dp else 0.0

    # -- protocol ---------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        assert self._layout is not None
        return self._layout

    def _salt(self) -> bytes:
        return self.secret_bytes("result-salt", 32)

    def start(self) -> list[Message]:
        self._mark_started()
        ctx = self.ctx
        self.report(0.0, f"aggregating column {self._params['column']!r} locally")
        vector = local_vector(self.data, self._params, self.layout)
        if self._params["dp"] is not None and ctx.me == dpmod.noise_party(ctx.participants, ctx.recipient):
            vector = self._add_noise(vector)
        self.report(0.2, "splitting local aggregates into additive shares")
        size = self.layout.size
        own = [v % MODULUS for v in vector]
        out: list[Message] = []
        for peer in ctx.peers:
            share = decode_vector(self.secret_bytes(f"share/{peer}", size * ELEMENT_BYTES))
            own = [(o - s) % MODULUS for o, s in zip(own, share, strict=True)]
            out.append(self.send(peer, ROUND_SHARE, KIND_SHARE, encode_vector(share)))
        self._held[ctx.me] = own
        self.report(0.3, f"sent shares to {len(ctx.peers)} parties")
        return out

    def _add_noise(self, vector: list[int]) -> list[int]:
        p, layout = self._params, self.layout
        terms = dpmod.noise_terms(p["dp"], layout, p["decimals"])
        rng = dpmod.AesCtrRandom(self.secret_bytes("dp-noise", 32))
        g = layout.num_groups
        noise: dict[str, list[int]] = {}
        for comp in [*layout.components, *(["histogram"] if layout.num_bins else [])]:
            size = g * layout.num_bins if comp == "histogram" else g
            noise[comp] = terms[comp].draw(rng, size)
        out = list(vector)
        per = layout.per_group
        for k in range(g):
            base = k * per
            for j, comp in enumerate(layout.components):
                out[base + j] += noise[comp][k]
            for b in range(layout.num_bins):
                out[base + len(layout.components) + b] += noise["histogram"][k * layout.num_bins + b]
        return out

    def receive(self, msg: Message) -> list[Message]:
        ctx = self.ctx
        self._check_delivery(msg)
        key = (msg.round, msg.kind)
        vector_bytes = self.layout.size * ELEMENT_BYTES
        if key == (ROUND_SHARE, KIND_SHARE):
            self._expect(msg, msg.sender not in self._shares_from, vector_bytes)
            self._shares_from.add(msg.sender)
            self._held[msg.sender] = decode_vector(msg.payload)
            return self._maybe_aggregate()
        if key == (ROUND_AGG, KIND_COMMIT):
            self._expect(msg, msg.sender not in self._commits, ELEMENT_BYTES)
            self._commits[msg.sender] = msg.payload
            return self._maybe_finish()
        if key == (ROUND_AGG, KIND_AGG):
            if not ctx.is_recipient:
                raise ProtocolError(f"{msg.sender!r} sent an aggregate share to {ctx.me!r}, which is not the recipient")
            self._expect(msg, msg.sender not in self._aggs, vector_bytes)
            self._aggs[msg.sender] = msg.payload
            return self._maybe_finish()
        if key == (ROUND_RESULT, KIND_RESULT):
            if ctx.is_recipient or msg.sender != ctx.recipient:
                raise ProtocolError(f"result hash from {msg.sender!r}, who is not the recipient")
            self._expect(msg, self._result_hash is None, ELEMENT_BYTES)
            self._result_hash = msg.payload
            return self._maybe_finish()
        raise ProtocolError(f"unexpected message round {msg.round} kind {msg.kind!r} from {msg.sender!r}")

    @staticmethod
    def _expect(msg: Message, first: bool, length: int) -> None:
        if not first:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r}")
        if len(msg.payload) != length:
            raise ProtocolError(
                f"{msg.kind!r} message from {msg.sender!r} has {len(msg.payload)} bytes, expected {length}"
            )

    def _maybe_aggregate(self) -> list[Message]:
        ctx = self.ctx
        if len(self._shares_from) < len(ctx.peers):
            return []
        self.report(0.5, "summing held shares")
        total = [0] * self.layout.size
        for sender in ctx.participants:
            total = [(t + s) % MODULUS for t, s in zip(total, self._held[sender], strict=True)]
        self._held.clear()
        self._aggregate = encode_vector(total)
        commit = share_commitment(ctx.binding, ctx.me, self._aggregate)
        self._commits[ctx.me] = commit
        out = [self.send(peer, ROUND_AGG, KIND_COMMIT, commit) for peer in ctx.peers]
        if ctx.is_recipient:
            self._aggs[ctx.me] = self._aggregate
        else:
            out.append(self.send(ctx.recipient, ROUND_AGG, KIND_AGG, self._aggregate))
        self.report(0.6, "sent aggregate share and commitment")
        return out + self._maybe_finish()

    def _maybe_finish(self) -> list[Message]:
        ctx = self.ctx
        if self._done or self._aggregate is None or len(self._commits) < len(ctx.participants):
            return []
        if not ctx.is_recipient:
            if self._result_hash is None:
                return []
            self._done = True
            self.report(1.0, "done; the recipient holds the result")
            return []
        if len(self._aggs) < len(ctx.participants):
            return []
        for sender in ctx.participants:
            if share_commitment(ctx.binding, sender, self._aggs[sender]) != self._commits[sender]:
                raise ProtocolError(f"aggregate share from {sender!r} does not match its broadcast commitment")
        self.report(0.8, "reconstructing the aggregates")
        total = [0] * self.layout.size
        for sender in ctx.participants:
            total = [(t + s) % MODULUS for t, s in zip(total, decode_vector(self._aggs[sender]), strict=True)]
        self._result = canonical_json(self._build_result([signed(v) for v in total]))
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        self._done = True
        out = [self.send(peer, ROUND_RESULT, KIND_RESULT, self._result_hash) for peer in ctx.peers]
        self.report(1.0, "done; result computed")
        return out

    # -- decoding -----------------------------------------------------------------------

    def _build_result(self, values: list[int]) -> dict[str, Any]:
        p, layout = self._params, self.layout
        scale = 10 ** p["decimals"]
        dp = p["dp"]
        groups: dict[str, Any] = {}
        for k, name in enumerate(group_names(p)):
            chunk = values[k * layout.per_group : (k + 1) * layout.per_group]
            comps = dict(zip(layout.components, chunk, strict=False))
            bins = chunk[len(layout.components) :]
            if dp is None:
                groups[name] = self._exact_group(name, comps, bins, scale)
            else:
                groups[name] = self._noisy_group(comps, bins, scale)
        dp_out: dict[str, Any] | None = None
        if dp is not None:
            dp_out = {
                "mechanism": dp["mechanism"],
                "epsilon": dp["epsilon"],
                "delta": dp["delta"],
                "clip": [fixed(c, p["decimals"]) / scale for c in dp["clip"]],
                "neighbouring": "add or remove one row",
                "noise_parties": 1,
                "noise_party": dpmod.noise_party(self.ctx.participants, self.ctx.recipient),
                "noise": dpmod.plan(dp, layout, p["decimals"]),
            }
        return {
            "algorithm": self.name,
            "column": p["column"],
            "group_by": p["group_by"],
            "statistics": p["statistics"],
            "decimals": p["decimals"],
            "histogram_edges": p["histogram"]["edges"] if p["histogram"] else None,
            "groups": groups,
            "dp": dp_out,
            "parties": len(self.ctx.participants),
        }

    def _exact_group(self, name: str, comps: dict[str, int], bins: list[int], scale: int) -> dict[str, Any]:
        def whole(v: int, what: str) -> int:
            if v < 0 or v % scale:
                raise ProtocolError(f"reconstructed {what} of group {name!r} is not a count; shares were inconsistent")
            return v // scale

        wanted = set(self._params["statistics"])
        out: dict[str, Any] = {"missing": whole(comps["missing"], "missing count")}
        count = whole(comps["count"], "count") if "count" in comps else None
        s = comps.get("sum")
        if "count" in wanted:
            out["count"] = count
        if "sum" in wanted:
            assert s is not None
            out["sum"] = float(Fraction(s, scale))
        if "mean" in wanted:
            assert count is not None and s is not None
            out["mean"] = float(Fraction(s, count * scale)) if count > 0 else None
        if "variance" in wanted:
            assert count is not None and s is not None
            spread = count * comps["sumsq"] - s * s
            if spread < 0:
                raise ProtocolError(f"reconstructed sums of group {name!r} are inconsistent; shares were inconsistent")
            out["variance"] = float(Fraction(spread, count * (count - 1) * scale * scale)) if count > 1 else None
        if bins:
            hist = [whole(b, "histogram bin") for b in bins]
            if count is not None and sum(hist) != count:
                raise ProtocolError(f"histogram of group {name!r} does not add up to its count")
            out["histogram"] = hist
        return out

    def _noisy_group(self, comps: dict[str, int], bins: list[int], scale: int) -> dict[str, Any]:
        """Post-processing of noisy values: counts clamped at 0, mean into the clip range,
        variance into [0, (hi - lo)^2 / 4 * c / (c - 1)]."""
        p = self._params
        lo, hi = (fixed(c, p["decimals"]) / scale for c in p["dp"]["clip"])
        wanted = set(p["statistics"])
        out: dict[str, Any] = {"missing": max(0.0, comps["missing"] / scale)}
        count = max(0.0, comps["count"] / scale) if "count" in comps else None
        s = comps["sum"] / scale if "sum" in comps else None
        if "count" in wanted:
            out["count"] = count
        if "sum" in wanted:
            out["sum"] = s
        if "mean" in wanted:
            assert count is not None and s is not None
            out["mean"] = min(hi, max(lo, s / count)) if count > 0 else None
        if "variance" in wanted:
            assert count is not None and s is not None
            if count > 1:
                ss = comps["sumsq"] / (scale * scale)
                var = (count * ss - s * s) / (count * (count - 1))
                out["variance"] = min((hi - lo) ** 2 / 4 * count / (count - 1), max(0.0, var))
            else:
                out["variance"] = None
        if bins:
            out["histogram"] = [max(0.0, b / scale) for b in bins]
        return out

    # -- outcome ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def result_commitment(self) -> bytes:
        if not self._done or self._result_hash is None:
            raise ProtocolError("the stats protocol has not finished")
        commits = b"".join(self._commits[p] for p in self.ctx.participants)
        return COMMITMENT.commit(commits, self._result_hash)

    def commitment_opening(self) -> bytes:
        """c_1 | ... | c_n (participant order), followed at the recipient by its 32-byte result
        salt; with the result bytes, `commitment_for` recomputes `result_commitment()`."""
        if not self._done:
            raise ProtocolError("the stats protocol has not finished")
        commits = b"".join(self._commits[p] for p in self.ctx.participants)
        return commits + self._salt() if self.ctx.is_recipient else commits
