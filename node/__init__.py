"""pcn: a blockchain-audited privacy computation network."""

__version__ = "0.1.0"
