"""Horizontal federated learning (FedAvg) with dropout-tolerant secure aggregation (see `protocol.py`)."""
