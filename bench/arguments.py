"""The command line every benchmark shares: its usage shows the `python -m` form that runs it,
its description is its docstring's first paragraph, and a FOLDER must exist before any work."""

from __future__ import annotations

import argparse
from pathlib import Path


def benchmark_parser(program: str, docstring: str | None) -> argparse.ArgumentParser:
    """`program` is the module run as `python -m program`."""
    return argparse.ArgumentParser(
        prog=f"python -m {program}", description=(docstring or "").split("\n\n")[0]
    )


def add_folders(parser: argparse.ArgumentParser) -> None:
    """The FOLDER arguments: folders of DICOM files, read recursively."""
    parser.add_argument("folders", nargs="+", type=existing_folder, metavar="FOLDER")


def existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path
