"""The live demo shop and its recorder (``correlator demo``)."""
