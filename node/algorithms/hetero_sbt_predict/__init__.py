"""hetero-sbt-predict: joint scoring with a split hetero-sbt model (see protocol.py)."""
