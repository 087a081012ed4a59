"""The regulator's side of pcn: indexer, re-verification, dashboard, reports."""
