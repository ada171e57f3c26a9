"""The recent-files cache keeps the newest files within its byte budget, least recently used
going first, and never holds a file larger than the budget."""

from __future__ import annotations

from scp_node.imaging.blob import RebuiltInstance
from scp_node.storage.recent_files import RecentFiles


def _file(size: int, tag: str) -> RebuiltInstance:
    return RebuiltInstance(data=tag.encode() * size, dataset_offset=0, dataset_sha256=tag, transfer_syntax="")


def _unbuildable() -> RebuiltInstance:
    raise AssertionError("built although cached")


def test_least_recently_used_files_go_first_within_the_budget() -> None:
    files = RecentFiles(budget_bytes=300)
    for key in "abc":
        files.put(key, _file(100, key))
    assert files.get("a", _unbuildable).dataset_sha256 == "a"  # now the most recent
    files.put("d", _file(100, "d"))  # over budget: b, the least recently used, goes
    assert files.get("b", lambda: _file(1, "rebuilt")).dataset_sha256 == "rebuilt"
    assert {files.get(key, _unbuildable).dataset_sha256 for key in "ad"} == {"a", "d"}


def test_a_file_over_the_budget_or_a_zero_budget_keeps_nothing() -> None:
    files, off = RecentFiles(budget_bytes=50), RecentFiles(budget_bytes=0)
    files.put("big", _file(51, "x"))
    off.put("small", _file(1, "y"))
    built = []
    files.get("big", lambda: built.append(1) or _file(51, "x"))
    off.get("small", lambda: built.append(1) or _file(1, "y"))
    assert built == [1, 1]
