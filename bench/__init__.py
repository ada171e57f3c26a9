"""Benchmarks of the node and its codecs; their recorded results are in bench/RESULTS.md.

Each runs from the repository root as a module: `python -m bench.codec_bench` (lossless sizes
and speeds), `bench.peak_memory`, `bench.quality_bench` (lossy and near-lossless) and
`bench.network` (against Orthanc over DICOM). What they share has one home each: `tables`,
`timing` (the codec round trip), `run_header` (command, date, machine), `modality_groups`,
`arguments` (the command-line basics) and `loopback` (ports, and servers kept on 127.0.0.1).
"""
