"""Built-in cause patterns (registered in the ``correlator.patterns`` entry-point group)."""
