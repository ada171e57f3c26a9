"""The report, as text and as Markdown: the run's header, the tables, the node's index counts,
and everything that went wrong."""

from __future__ import annotations

from collections.abc import Sequence

from bench.network.measurement import Measurement
from bench.network.names import NODE
from bench.network.report_tables import report_tables
from bench.tables import markdown_table, text_table


def problem_lines(results: Sequence[Measurement]) -> list[str]:
    """Everything that went wrong, per target, over all repetitions (each distinct line once)."""
    lines: list[str] = []
    for name in dict.fromkeys(m.target for m in results):
        runs = [m for m in results if m.target == name]
        failed = {path: why for m in runs for path, why in m.send_failures.items()}
        lines += [f"{name}: not stored: {path}: {' | '.join(why)}" for path, why in sorted(failed.items())]
        for service in runs[0].retrievals():
            records = [m.retrievals()[service] for m in runs]
            missing = sorted({p for _, _, paths, _ in records for p in paths})
            differing = sorted({p for _, _, _, paths in records for p in paths})
            lines += [f"{name}: stored but not retrieved by {service}: {p}" for p in missing]
            lines += [f"{name}: retrieved by {service} with different content: {p}" for p in differing]
        problems = list(dict.fromkeys(line for m in runs for line in m.log_problems))
        if problems:
            lines.append(f"{name}: {len(problems)} distinct error/warning log lines, the first ones follow")
            lines += [f"{name} log: {line[:300]}" for line in problems[:10]]
    return lines


def stats_lines(results: Sequence[Measurement]) -> list[str]:
    lines = []
    for m in results:
        if m.node_stats:
            stats = m.node_stats
            lines.append(
                f"{NODE} rep {m.repetition + 1} index: by_state {stats.get('by_state')}, "
                f"by_codec {stats.get('by_codec')}, received_bytes {stats.get('received_bytes')}, "
                f"stored_bytes {stats.get('stored_bytes')}, "
                f"compression_ratio {stats.get('compression_ratio')}"
            )
    return lines


def report_text(header: list[str], results: Sequence[Measurement]) -> str:
    parts = ["\n".join(header)]
    parts += [f"{title}\n{text_table(h, rows)}" for title, h, rows in report_tables(results)]
    parts.append("\n".join(stats_lines(results)))
    parts.append("\n".join(problem_lines(results)) or "no failures, no differing content, no log errors")
    return "\n\n".join(p for p in parts if p) + "\n"


def report_markdown(header: list[str], results: Sequence[Measurement]) -> str:
    parts = ["\n".join(f"- {line}" for line in header)]
    parts += [f"#### {title}\n\n{markdown_table(h, rows)}" for title, h, rows in report_tables(results)]
    parts.append("\n".join(f"- {line}" for line in stats_lines(results)))
    problems = problem_lines(results)
    parts.append(
        "\n".join(f"- {line}" for line in problems) or "No failures, no differing content, no log errors."
    )
    return "\n\n".join(p for p in parts if p) + "\n"
