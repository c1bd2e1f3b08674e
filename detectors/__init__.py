"""Built-in detectors, one module per modality (installed as ``correlator.detectors``).

They register in the ``correlator.detectors`` entry-point group like any
third-party detector; see :mod:`correlator.detector` for the contract.
"""
