"""`json.loads` for documents pcn did not write (params files, row proofs).

Importing web3 or eth-account imports py_ecc, which raises the interpreter's recursion limit
to 100000 for its own use. json's C decoder recurses on the C stack up to that limit, so a
document nested some 100000 deep ("[[[[…", a few hundred KB) overflows the stack and the
process dies with SIGSEGV instead of raising. `loads` parses under Python's default limit,
where such a document is an error like any other.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

DEFAULT_RECURSION_LIMIT = 1000
_lock = threading.Lock()


class JsonTooDeep(ValueError):
    """The document is nested deeper than the JSON decoder may safely recurse."""


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`; :class:`JsonTooDeep` (a ValueError) when nested too deeply.

    The recursion limit is process-wide: it is lowered only for the parse, under a lock."""
    with _lock:
        saved = sys.getrecursionlimit()
        sys.setrecursionlimit(min(saved, DEFAULT_RECURSION_LIMIT))
        try:
            return json.loads(text)
        except RecursionError:
            raise JsonTooDeep("nested too deeply") from None
        finally:
            sys.setrecursionlimit(saved)
