"""The incident generator: realistic labeled scenario bundles, deterministic by seed."""
