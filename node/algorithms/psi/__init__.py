"""Private set intersection (ECDH-PSI on X25519) for two or more parties (see `protocol.py`)."""
