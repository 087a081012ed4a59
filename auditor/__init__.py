"""The regulator's side of pcn: indexer, re-verification, anomalies, dashboard, reports.

- `store`: the SQL store (SQLAlchemy ORM models; SQLite file or PostgreSQL by URL);
- `migrations`: the versioned schema migrations of that store;
- `indexer`: follows every contract event into the store (cursor in the store, reorgs);
- `projection`: how each event changes the derived tables (pure; rebuilds after reorgs);
- `chainview`: chain state at any position (organisation status, dataset policy);
- `verify`: independent re-verification of tasks and result files;
- `logcheck`: an organisation's exported action log against its anchors and actions;
- `anomalies`: anomaly detection and its idempotent persistence.
"""
