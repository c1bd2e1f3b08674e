"""Built-in source adapters (registered in the ``correlator.adapters`` entry-point group)."""
