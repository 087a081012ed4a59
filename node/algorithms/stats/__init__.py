"""Joint statistics across parties by additive secret sharing (see `protocol.py`)."""
