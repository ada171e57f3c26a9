"""Imports run one way: each layer imports only itself and the layers below it.

From the bottom: the imaging library (DICOM layout, pixels, blob format, codecs); the config,
index and storage; the runtime context; the background compression (workers/); the DICOM
service; the CLI. Research tools (corpus, metrics, trials, training) sit beside the runtime:
they use the imaging library, and only the CLI (and bench/, tests) use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Module prefix -> layer; the longest matching prefix decides.
LAYERS = {
    "scp_node.imaging": 0,
    "scp_node.config": 1,
    "scp_node.index": 1,
    "scp_node.storage": 1,
    "scp_node.context": 2,
    "workers": 3,
    "scp_node": 4,  # the DICOM service: handlers, server, access, negotiation, retrieve, tls
    "scp_node.cli": 5,
}
RESEARCH = "scp_node.research"
# Who may import the research tools besides themselves.
RESEARCH_USERS = ("scp_node.cli",)


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _imports(path: Path) -> list[str]:
    """Every module an import statement names, top level or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


SOURCES = sorted(path for package in ("scp_node", "workers") for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_imports_upward(path: Path) -> None:
    module = _module(path)
    upward = []
    for imported in _imports(path):
        if imported.startswith(RESEARCH) and not module.startswith((RESEARCH, *RESEARCH_USERS)):
            upward.append(f"{imported} (research tools are off the runtime path)")
        if module.startswith(RESEARCH):
            if _layer(imported) not in (None, 0) and not imported.startswith(RESEARCH):
                upward.append(f"{imported} (research tools use the imaging library only)")
            continue
        own, theirs = _layer(module), _layer(imported)
        if own is not None and theirs is not None and theirs > own:
            upward.append(imported)
    assert upward == [], f"{module} imports upward: {upward}"


def test_the_contract_sees_every_layer() -> None:
    """A layer map that matched nothing would pass every module vacuously."""
    layers = {_layer(_module(path)) for path in SOURCES if not _module(path).startswith(RESEARCH)}
    assert layers == set(LAYERS.values())


def test_no_module_sets_state_of_another() -> None:
    """No `global` statement: what a module needs from the runtime (the context, the site's
    codecs) comes as an argument, not as module state that someone must remember to set."""
    setters = [
        f"{path.relative_to(ROOT)}:{node.lineno} global {', '.join(node.names)}"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Global)
    ]
    assert setters == []


# Bare bases that mean a bug unless a library raised them: caught only to be translated.
BARE_BASES = {"ValueError", "RuntimeError", "TypeError", "KeyError", "IndexError"}


def test_bare_exceptions_are_caught_only_to_be_translated() -> None:
    """Each layer has its exception base and is caught by it; a handler naming ValueError or
    RuntimeError (what third-party libraries raise) must raise the layer's own type from it.
    Research tools, off the runtime path, may skip what they cannot read."""
    swallowed = []
    for path in SOURCES:
        if _module(path).startswith(RESEARCH):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ExceptHandler) or node.type is None:
                continue
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            names = {getattr(leaf, "id", getattr(leaf, "attr", "")) for leaf in caught}
            raises = any(isinstance(inner, ast.Raise) and inner.exc is not None for inner in ast.walk(node))
            if names & BARE_BASES and not raises:
                swallowed.append(f"{path.relative_to(ROOT)}:{node.lineno} except {sorted(names)}")
    assert swallowed == []


# Instance columns that make up its storage state.
STATE_COLUMNS = {"state", "spool_path", "blob_path", "blob_sha256", "replaced_by_uid", "original_expires_at"}


def test_only_the_index_writes_instance_state() -> None:
    """Outside scp_node/index/, no module assigns a storage-state column of an instance row."""
    writers = []
    for path in SOURCES:
        if _module(path).startswith("scp_node.index"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                for leaf in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(leaf, ast.Attribute) and leaf.attr in STATE_COLUMNS:
                        writers.append(f"{path.relative_to(ROOT)}:{node.lineno} .{leaf.attr}")
    assert writers == []
