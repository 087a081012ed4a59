"""Keyword private query (匿踪查询): an ECDH OPRF on X25519 over a cached, encrypted copy of
the holder's table (see `protocol.py`)."""
