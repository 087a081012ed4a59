"""Vertical (hetero) logistic regression with Paillier-encrypted, masked gradients (see `protocol.py`)."""
