"""DICOM storage node: the DICOM-facing service (network handlers, index, durable storage)."""
