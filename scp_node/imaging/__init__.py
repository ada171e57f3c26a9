"""The imaging library: DICOM file layout, pixel words, the blob format, transfer-syntax
encapsulation and the codecs. It imports nothing from the node (index, storage, queue,
DICOM service, CLI), so it can be used, tested and benchmarked on files alone."""
