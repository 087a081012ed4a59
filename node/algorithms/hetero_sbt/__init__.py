"""hetero-sbt: vertical gradient-boosted trees, SecureBoost style (see protocol.py)."""
