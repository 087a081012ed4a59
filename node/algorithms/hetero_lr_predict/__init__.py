"""Joint scoring of new aligned rows with a split hetero-lr model (see `protocol.py`)."""
