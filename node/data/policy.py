"""A dataset's usage policy, written by its owner as a small TOML file (DESIGN §4 step 2)::

    algorithms = ["stats", "0x<64 hex>"]   # built-in algorithm names or code hashes
    requesters = ["0x...address", "bank"]  # addresses or organisation names
    recipients = ["0x..."]                 # addresses or organisation names
    max_uses = 100
    expires = "2027-06-30T00:00:00Z"      # or: expires_in_days = 90
    epsilon_total = 5.0                    # optional, default 0 (no DP budget)

`load_policy` checks the file's shape (every key known, every value of the right type and
range, each list at most `MAX_POLICY_ENTRIES` distinct entries, exactly one of `expires` and
`expires_in_days`); `Policy.resolve` then turns names into code hashes and addresses with
the caller's lookups and fixes the expiry against the caller's clock, giving the
`PolicyLimits` and `PolicyGrants` the chain takes. Every mistake is a `DataError` naming the
file and the key.

Rules: `max_uses` is required (an integer, 0 .. 2^64-1); the expiry is required, as an
RFC 3339 time with an explicit offset (a string or a TOML offset date-time), or as a whole
number of days (>= 1) from `now`; it must lie after `now`. `epsilon_total` is a number >= 0
(stored on chain with 6 decimals). The lists default to empty. An entry starting with "0x"
is taken literally (a 32-byte code hash for algorithms, an address for the others); any
other entry is a name for the caller's lookup.
"""

from __future__ import annotations

import datetime as _dt
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_utils import is_address, is_checksum_address, to_checksum_address

from pcn.chain.types import MAX_POLICY_ENTRIES, PolicyGrants, PolicyLimits, epsilon_to_fixed
from pcn.data.errors import DataError

U64_MAX = 2**64 - 1
ZERO_ADDRESS = "0x" + "00" * 20
_KEYS = ("algorithms", "requesters", "recipients", "max_uses", "expires", "expires_in_days", "epsilon_total")
_LIST_KEYS = ("algorithms", "requesters", "recipients")
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """A policy as written in its file (names not yet resolved, expiry not yet fixed)."""

    algorithms: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    max_uses: int = 0
    expires: int | None = None  # unix seconds, when given as a date-time
    expires_in_days: int | None = None
    epsilon_total: float = 0.0
    source: str = "<policy>"

    def _error(self, key: str, message: str) -> DataError:
        return DataError(f"{key}: {message}", path=self.source)

    def expiry(self, now: int) -> int:
        """The expiry as unix seconds, given the current time `now` (unix seconds)."""
        if self.expires is not None:
            expiry, key = self.expires, "expires"
        elif self.expires_in_days is not None:
            expiry, key = now + self.expires_in_days * 86_400, "expires_in_days"
        else:
            raise self._error("expires", "missing; give expires or expires_in_days")
        if expiry <= now:
            when = _dt.datetime.fromtimestamp(expiry, _dt.UTC).isoformat().replace("+00:00", "Z")
            raise self._error(key, f"the policy would expire at {when}, which is not in the future")
        if expiry > U64_MAX:
            raise self._error(key, "the expiry is too far in the future")
        return expiry

    def resolve(
        self,
        resolve_algorithm: Callable[[str], bytes],
        resolve_org: Callable[[str], str],
        now: int,
    ) -> tuple[PolicyLimits, PolicyGrants]:
        """The on-chain limits and grants of this policy.

        `resolve_algorithm` maps a built-in algorithm name to its 32-byte code hash and
        `resolve_org` an organisation name to its account address; either may raise (any
        exception) for an unknown name, which becomes a `DataError` naming the key.
        `now` is the current time in unix seconds (the chain's, ideally).
        """
        limits = PolicyLimits(
            max_uses=self.max_uses, expiry=self.expiry(now), epsilon_total=epsilon_to_fixed(self.epsilon_total)
        )
        algorithms = _dedupe(self._resolve_algorithm(e, i, resolve_algorithm) for i, e in enumerate(self.algorithms))
        requesters = _dedupe(
            self._resolve_account("requesters", e, i, resolve_org) for i, e in enumerate(self.requesters)
        )
        recipients = _dedupe(
            self._resolve_account("recipients", e, i, resolve_org) for i, e in enumerate(self.recipients)
        )
        return limits, PolicyGrants(algorithms=algorithms, requesters=requesters, recipients=recipients)

    def _resolve_algorithm(self, entry: str, i: int, lookup: Callable[[str], bytes]) -> bytes:
        key = f"algorithms[{i}]"
        if entry.startswith("0x"):
            return _code_hash(entry, key, self)
        try:
            value = lookup(entry)
        except Exception as exc:
            raise self._error(key, f"unknown algorithm {entry!r} ({_reason(exc)})") from None
        if isinstance(value, str):
            return _code_hash(value, f"{key} ({entry!r} resolved to)", self)
        if not isinstance(value, bytes | bytearray) or len(value) != 32:
            raise self._error(key, f"algorithm {entry!r} did not resolve to a 32-byte code hash")
        return bytes(value)

    def _resolve_account(self, list_key: str, entry: str, i: int, lookup: Callable[[str], str]) -> str:
        key = f"{list_key}[{i}]"
        if entry.startswith("0x"):
            return _address(entry, key, self)
        try:
            value = lookup(entry)
        except Exception as exc:
            raise self._error(key, f"unknown organisation {entry!r} ({_reason(exc)})") from None
        if not isinstance(value, str):
            raise self._error(key, f"organisation {entry!r} did not resolve to an address")
        return _address(value, f"{key} ({entry!r} resolved to)", self)


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text or type(exc).__name__


def _dedupe(values: Iterable[T]) -> list[T]:
    """Drop repeats, keeping the first (a name and its own address may both be listed)."""
    out: list[T] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _code_hash(text: str, key: str, policy: Policy) -> bytes:
    body = text[2:] if text.startswith("0x") else text
    if len(body) != 64:
        raise policy._error(key, f"{text!r} is not a code hash (0x followed by 64 hex digits)")
    try:
        value = bytes.fromhex(body)
    except ValueError:
        raise policy._error(key, f"{text!r} is not a code hash (0x followed by 64 hex digits)") from None
    if value == b"\x00" * 32:
        raise policy._error(key, "the zero hash is not an algorithm")
    return value


def _address(text: str, key: str, policy: Policy) -> str:
    body = text[2:]
    mixed_case = body != body.lower() and body != body.upper()
    if not (text.startswith("0x") and len(text) == 42 and is_address(text)) or (
        mixed_case and not is_checksum_address(text)
    ):
        raise policy._error(
            key, f"{text!r} is not an account address (0x and 40 hex digits, with a valid checksum if mixed case)"
        )
    if text.lower() == ZERO_ADDRESS:
        raise policy._error(key, "the zero address cannot be granted anything")
    return to_checksum_address(text)


def _timestamp(value: Any, key: str, policy: Policy) -> int:
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise policy._error(key, f"{value!r} is not an RFC 3339 date-time such as 2027-06-30T00:00:00Z") from None
    elif isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        raise policy._error(key, "give a date-time with an offset, e.g. 2027-06-30T00:00:00Z, not a bare date")
    if not isinstance(value, _dt.datetime):
        raise policy._error(key, f"must be a date-time string, not {_type_name(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise policy._error(key, "the date-time needs an explicit offset, e.g. 2027-06-30T00:00:00Z")
    return math.ceil(value.timestamp())


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _integer(value: Any, key: str, policy: Policy, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise policy._error(key, f"must be an integer, not {_type_name(value)}")
    if value < minimum:
        what = "negative" if value < 0 else f"below {minimum}"
        raise policy._error(key, f"must not be {what} (got {value})")
    if value > U64_MAX:
        raise policy._error(key, f"{value} is too large")
    return value


def _string_list(value: Any, key: str, policy: Policy) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise policy._error(key, f"must be a list of strings, not {_type_name(value)}")
    if len(value) > MAX_POLICY_ENTRIES:
        raise policy._error(key, f"has {len(value)} entries; at most {MAX_POLICY_ENTRIES} are allowed")
    out: list[str] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            raise policy._error(f"{key}[{i}]", f"must be a string, not {_type_name(entry)}")
        entry = entry.strip()
        if not entry:
            raise policy._error(f"{key}[{i}]", "is empty")
        if entry in out:
            raise policy._error(f"{key}[{i}]", f"{entry!r} is listed twice")
        out.append(entry)
    return tuple(out)


def parse_policy(raw: dict[str, Any], source: str | Path = "<policy>") -> Policy:
    """A `Policy` from the parsed TOML document `raw`; `DataError` naming `source` and the key."""
    where = Policy(source=str(source))
    if not isinstance(raw, dict):
        raise DataError("a policy must be a TOML table of keys", path=source)
    for key in raw:
        if key not in _KEYS:
            raise where._error(key, f"unknown key; the keys are {', '.join(_KEYS)}")
    lists = {k: _string_list(raw[k], k, where) if k in raw else () for k in _LIST_KEYS}
    for key, entries in lists.items():  # literal hashes and addresses are checked now, names on resolve
        for i, entry in enumerate(entries):
            if entry.startswith("0x"):
                check = _code_hash if key == "algorithms" else _address
                check(entry, f"{key}[{i}]", where)
    if "max_uses" not in raw:
        raise where._error("max_uses", "missing; say how many tasks may use the dataset")
    max_uses = _integer(raw["max_uses"], "max_uses", where, 0)
    if "expires" in raw and "expires_in_days" in raw:
        raise where._error("expires_in_days", "give either expires or expires_in_days, not both")
    if "expires" not in raw and "expires_in_days" not in raw:
        raise where._error("expires", "missing; give expires (a date-time) or expires_in_days")
    expires = _timestamp(raw["expires"], "expires", where) if "expires" in raw else None
    if expires is not None and expires <= 0:
        raise where._error("expires", "must be after 1970-01-01T00:00:00Z")
    days = _integer(raw["expires_in_days"], "expires_in_days", where, 1) if "expires_in_days" in raw else None
    epsilon = raw.get("epsilon_total", 0.0)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise where._error("epsilon_total", f"must be a number, not {_type_name(epsilon)}")
    if not math.isfinite(epsilon):
        raise where._error("epsilon_total", "must be a finite number")
    if epsilon < 0:
        raise where._error("epsilon_total", f"must not be negative (got {epsilon})")
    if epsilon_to_fixed(float(epsilon)) > U64_MAX:
        raise where._error("epsilon_total", f"{epsilon} is too large")
    return Policy(
        algorithms=lists["algorithms"],
        requesters=lists["requesters"],
        recipients=lists["recipients"],
        max_uses=max_uses,
        expires=expires,
        expires_in_days=days,
        epsilon_total=float(epsilon),
        source=str(source),
    )


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy TOML file (see the module docstring)."""
    p = Path(path)
    try:
        raw_bytes = p.read_bytes()
    except FileNotFoundError:
        raise DataError("policy file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read the policy file: {exc.strerror or exc}", path=path) from None
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError("the policy file is not valid UTF-8", path=path) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"invalid TOML: {exc}", path=path) from None
    return parse_policy(raw, path)
