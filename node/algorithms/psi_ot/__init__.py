"""psi-ot: two-party private set intersection by OT extension (KKRT16 batched OPRF)."""
