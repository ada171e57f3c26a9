"""What one repetition measures on one target: its three phases and the retrieved content."""

from __future__ import annotations

from dataclasses import dataclass, field

MB = 1e6


@dataclass
class Phase:
    instances: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    processes: int = 0
    server_cpu: float = float("nan")  # CPU seconds the server process used meanwhile

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else float("nan")

    @property
    def mb_per_second(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds else float("nan")


@dataclass
class Retrieved:
    exact: int = 0  # data set bytes identical to the file sent
    converted: int = 0  # another transfer syntax than the file sent
    differing: int = 0  # same transfer syntax and other bytes, or converted with other content
    unexpected: int = 0  # an instance that was not stored in this run


# A retrieval (C-GET or C-MOVE): the phase, the content compared, the paths not retrieved, and
# those retrieved differing.
RetrievalResult = tuple[Phase, Retrieved, list[str], list[str]]


@dataclass
class Measurement:
    target: str
    repetition: int
    ingest: Phase
    retrieve: Phase  # C-GET, like content, missing and differing
    content: Retrieved
    stored_after_ingest: int
    stored_final: int
    compress_seconds: float | None = None
    compress_cpu: float | None = None
    node_stats: dict | None = None
    send_failures: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    # C-MOVE, after C-GET on the same stored data; not run (no processes) without the bind() shim.
    move: Phase = field(default_factory=Phase)
    move_content: Retrieved = field(default_factory=Retrieved)
    move_missing: list[str] = field(default_factory=list)
    move_differing: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    def retrievals(self) -> dict[str, RetrievalResult]:
        """Each retrieval service's figures by its name, so that reports treat C-GET and C-MOVE alike."""
        return {
            "C-GET": (self.retrieve, self.content, self.missing, self.differing),
            "C-MOVE": (self.move, self.move_content, self.move_missing, self.move_differing),
        }
