"""The report's tables, each a title, a header and formatted rows, so that the text and the
Markdown report show the very same figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.network.figures import median, number, ratio
from bench.network.measurement import MB, Measurement
from bench.network.names import NODE, ORTHANC

Table = tuple[str, tuple[str, ...], list[tuple[str, ...]]]

COMPARED: list[tuple[str, Callable[[Measurement], float], int]] = [
    ("ingest inst/s", lambda m: m.ingest.per_second, 1),
    ("ingest MB/s", lambda m: m.ingest.mb_per_second, 1),
    ("C-GET inst/s", lambda m: m.retrieve.per_second, 1),
    ("C-GET MB/s", lambda m: m.retrieve.mb_per_second, 1),
    ("C-MOVE inst/s", lambda m: m.move.per_second, 1),
    ("C-MOVE MB/s", lambda m: m.move.mb_per_second, 1),
    ("stored MB after ingest", lambda m: m.stored_after_ingest / MB, 1),
    ("stored MB before get", lambda m: m.stored_final / MB, 1),
    ("instances sent", lambda m: m.ingest.instances, 0),
    ("instances by C-GET", lambda m: m.retrieve.instances, 0),
    ("instances by C-MOVE", lambda m: m.move.instances, 0),
]


def services_run(runs: Sequence[Measurement]) -> list[str]:
    """The retrieval services these repetitions measured (C-MOVE is not run without the bind() shim)."""
    return [
        service for service in runs[0].retrievals() if any(m.retrievals()[service][0].processes for m in runs)
    ]


def report_tables(results: Sequence[Measurement]) -> list[Table]:
    """Every table, in report order; the comparison only where both targets ran."""
    by_target: dict[str, list[Measurement]] = {}
    for m in results:
        by_target.setdefault(m.target, []).append(m)
    tables = [
        ("Per repetition", *repetition_rows(results)),
        ("Throughput (medians)", *summary_rows(by_target)),
        ("Retrieved data sets compared with those sent (medians)", *content_rows(by_target)),
        (
            "Storage directory size (medians; data, index and journals; with --wait-compressed "
            "'before get' is after compression)",
            *storage_rows(by_target),
        ),
    ]
    if NODE in by_target and ORTHANC in by_target:
        tables.append((f"Comparison (medians, same run): {NODE}/{ORTHANC}", *comparison_rows(by_target)))
    return tables


def repetition_rows(results: Sequence[Measurement]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("rep", "target", "ingest s", "in inst/s", "in MB/s", "compress s")
    header += ("get s", "get inst/s", "get MB/s", "move s", "move inst/s", "move MB/s", "stored MB")
    rows = [
        (
            str(m.repetition + 1),
            m.target,
            number(m.ingest.seconds, 2),
            number(m.ingest.per_second),
            number(m.ingest.mb_per_second),
            number(m.compress_seconds if m.compress_seconds is not None else float("nan")),
            number(m.retrieve.seconds, 2),
            number(m.retrieve.per_second),
            number(m.retrieve.mb_per_second),
            number(m.move.seconds, 2),
            number(m.move.per_second),
            number(m.move.mb_per_second),
            number(m.stored_final / MB),
        )
        for m in results
    ]
    return header, rows


def summary_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("target", "phase", "assoc", "instances", "failed", "MB", "s", "inst/s", "MB/s", "server CPU s")
    rows = []
    for name, runs in by_target.items():
        phases_run = [("ingest", [m.ingest for m in runs])]
        phases_run += [
            (service, [m.retrievals()[service][0] for m in runs]) for service in services_run(runs)
        ]
        for phase_name, phases in phases_run:
            rows.append(
                (
                    name,
                    phase_name,
                    number(median(p.processes for p in phases), 0),
                    number(median(p.instances for p in phases), 0),
                    number(median(p.failed for p in phases), 0),
                    number(median(p.bytes / MB for p in phases)),
                    number(median(p.seconds for p in phases), 2),
                    number(median(p.per_second for p in phases)),
                    number(median(p.mb_per_second for p in phases)),
                    number(median(p.server_cpu for p in phases)),
                )
            )
    return header, rows


def content_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("target", "service", "retrieved", "byte-exact", "converted", "differing", "missing")
    header += ("unexpected",)
    rows = []
    for name, runs in by_target.items():
        for service in services_run(runs):
            records = [m.retrievals()[service] for m in runs]
            rows.append(
                (
                    name,
                    service,
                    number(median(phase.instances for phase, _, _, _ in records), 0),
                    number(median(content.exact for _, content, _, _ in records), 0),
                    number(median(content.converted for _, content, _, _ in records), 0),
                    number(median(content.differing for _, content, _, _ in records), 0),
                    number(median(len(missing) for _, _, missing, _ in records), 0),
                    number(median(content.unexpected for _, content, _, _ in records), 0),
                )
            )
    return header, rows


def storage_rows(
    by_target: dict[str, list[Measurement]],
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = (
        "target",
        "sent MB",
        "stored MB after ingest",
        "stored MB before get",
        "sent/stored",
        "compress s",
        "compress CPU s",
        "drain inst/s",
        "worker cores to keep pace",
    )
    rows = []
    for name, runs in by_target.items():
        sent = median(m.ingest.bytes / MB for m in runs)
        final = median(m.stored_final / MB for m in runs)
        rows.append(
            (
                name,
                number(sent),
                number(median(m.stored_after_ingest / MB for m in runs)),
                number(final),
                ratio(sent, final),
                number(median(m.compress_seconds for m in runs)),
                number(median(m.compress_cpu for m in runs)),
                number(median(_drain_rate(m) for m in runs)),
                number(median(_cores_to_keep_pace(m) for m in runs)),
            )
        )
    return header, rows


def _drain_rate(m: Measurement) -> float | None:
    """Instances compressed per second once the push ended (the compress worker yields to it)."""
    return m.ingest.instances / m.compress_seconds if m.compress_seconds else None


def _cores_to_keep_pace(m: Measurement) -> float | None:
    """Cores of compress workers it takes to compress as fast as this push arrived: the
    compression CPU time over the push's wall time."""
    return m.compress_cpu / m.ingest.seconds if m.compress_cpu is not None and m.ingest.seconds else None


def comparison_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("metric", NODE, ORTHANC, f"{NODE}/{ORTHANC}")
    rows = []
    for label, metric, digits in COMPARED:
        node = median(metric(m) for m in by_target[NODE])
        other = median(metric(m) for m in by_target[ORTHANC])
        rows.append((label, number(node, digits), number(other, digits), ratio(node, other)))
    return header, rows
