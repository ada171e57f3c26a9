"""The node's configuration: one typed model, read from YAML, overridable from the command line.

Every setting the node uses lives here so that an admin finds all knobs in one file
(config.yaml) and the code never looks up loose keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scp_node.imaging.codecs.settings import LdmConfig

# What a C-STORE of an already stored SOP Instance UID with different content does.
# overwrite_same_sender: replace only when the same calling AE title sent the stored copy.
DuplicatePolicy = Literal["reject", "keep", "overwrite", "overwrite_same_sender"]
Permission = Literal["echo", "store", "find", "get", "move"]
PERMISSIONS: tuple[str, ...] = get_args(Permission)
# What an HTTP user may do: QIDO-RS (find), WADO-RS (get), STOW-RS (store), /metrics and the
# console's admin pages (admin); the console's studies browser needs find (thumbnails get).
HttpPermission = Literal["find", "get", "store", "admin"]
HTTP_PERMISSIONS: tuple[str, ...] = get_args(HttpPermission)


class StrictModel(BaseModel):
    """Reject unknown keys so a typo in config.yaml fails loudly instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


class TlsConfig(StrictModel):
    """DICOM TLS (PS3.15 B.1). Set cert_file and key_file to serve TLS instead of plain TCP."""

    cert_file: Path | None = None
    key_file: Path | None = None
    # CA bundle that signs client certificates; with require_client_cert, peers must present one.
    ca_file: Path | None = None
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("network.tls needs both cert_file and key_file")
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("network.tls.require_client_cert needs ca_file")
        return self


class NetworkConfig(StrictModel):
    ae_title: str = "SCP_NODE"
    host: str = "127.0.0.1"
    port: int = 11112
    max_associations: int = 10
    max_pdu: int = 262_144
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    # Processes accepting associations on the one listening socket. The node's Python runs
    # under one interpreter lock per process, so one process uses about one core for DICOM
    # work; 2 or more spread associations over cores. max_associations is per process.
    serve_processes: int = Field(default=1, ge=1, le=32)
    tls: TlsConfig = Field(default_factory=TlsConfig)


class PeerConfig(StrictModel):
    """A remote AE seeded into the peer table at start-up (`scp-node ae` edits the table).

    host and port are where C-MOVE sends (and storage commitment reports on a new association);
    check_host also requires associations from this AE title to come from that host.
    """

    ae_title: str
    host: str = ""
    port: int = 104
    check_host: bool = False
    permissions: list[Permission] = Field(default_factory=lambda: ["echo", "store", "get"])
    # Associations the node opens to this peer use DICOM TLS (network.tls's certificate, if
    # set, as the client certificate; ca_file checks the peer's).
    tls: bool = False
    commitment_report: Literal["same_association", "new_association"] = "same_association"


class AccessConfig(StrictModel):
    # Operations allowed to calling AE titles that are not in the peer table; empty refuses
    # their associations outright. As in Orthanc, anyone may verify and send, while query
    # and retrieve need a peer entry.
    unknown_peer_permissions: list[Permission] = Field(default_factory=lambda: ["echo", "store"])
    peers: list[PeerConfig] = Field(default_factory=list)


class CodecRule(StrictModel):
    """Pick a codec for instances matching every given field (unset fields match anything)."""

    modality: str | None = None
    calling_ae: str | None = None
    codec: str
    options: dict[str, Any] = Field(default_factory=dict)


class LossyConfig(StrictModel):
    """What happens to the instance a modality sent when a rule stores a lossy copy of it.

    The lossy copy has its own SOP Instance UID and is what queries and retrievals see. The
    original is kept (losslessly coded, not served) so a radiologist's complaint can be
    answered with the real image; keep_original_days bounds how long (None: forever).
    """

    keep_original: bool = True
    keep_original_days: int | None = Field(default=30, ge=0)
    # How often the node deletes originals past their time (`scp-node originals purge` does it now).
    purge_interval_s: int = Field(default=3600, ge=60)


class CompressionConfig(StrictModel):
    default_codec: str = "jpegxl"
    default_options: dict[str, Any] = Field(default_factory=dict)
    rules: list[CodecRule] = Field(default_factory=list)
    ldm: LdmConfig = Field(default_factory=LdmConfig)
    lossy: LossyConfig = Field(default_factory=LossyConfig)
    # Fraction of instances `scp-node verify` fully decodes and compares (digests are always checked).
    verify_sample: float = 0.1


class QueueConfig(StrictModel):
    # Empty: jobs run on in-process worker threads. Otherwise an RQ queue on this Redis.
    redis_url: str = ""
    name: str = "scp-node"
    in_process_workers: int = 1
    job_timeout_s: int = 3600
    # Niceness of compress jobs (in-process threads and `scp-node worker`): 19 lets receiving
    # and retrieval take the CPU whenever they want it, and compression the rest.
    worker_nice: int = Field(default=19, ge=0, le=19)


class StorageConfig(StrictModel):
    data_dir: Path = Path("./data")
    # Empty: SQLite (WAL) at <data_dir>/index.sqlite.
    database_url: str = ""
    duplicate_policy: DuplicatePolicy = "overwrite"
    # Memory for the most recently stored or rebuilt files (storage/recent_files.py): retrieval
    # soon after a push sends them without decoding the blob again. 0 turns it off.
    recent_files_mb: int = Field(default=128, ge=0)


class QueryConfig(StrictModel):
    """C-FIND. Relational queries (PS3.4 C.4.1.2.2: no unique keys for the levels above, as some
    viewers send) are answered for requesters that negotiate them; lenient answers them for
    any requester, as dcm4chee can, instead of refusing with 0xA900."""

    relational_without_negotiation: bool = False


class HttpUser(StrictModel):
    """An HTTP client: a name with a salted password hash (HTTP Basic) and/or the SHA-256 of a
    bearer token. Only hashes live in config.yaml: `scp-node http hash-password` and
    `scp-node http new-token` make them."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^:\s]+$")
    password_hash: str | None = None
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    permissions: list[HttpPermission] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_credential(self) -> HttpUser:
        if self.password_hash is None and self.token_sha256 is None:
            raise ValueError(f"http user {self.name!r} needs password_hash or token_sha256")
        return self


class HttpConfig(StrictModel):
    """DICOMweb (under /dicom-web), the admin console (/console), /healthz and /metrics, served
    by `scp-node serve` beside DICOM."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Serve HTTPS with network.tls's certificate and key (and its client-certificate settings).
    tls: bool = False
    # What requests without credentials may do; [] leaves them nothing but /healthz.
    anonymous_permissions: list[HttpPermission] = Field(default_factory=list)
    users: list[HttpUser] = Field(default_factory=list)
    # Origins a browser viewer (OHIF...) may call from; [] sends no CORS headers.
    cors_origins: list[str] = Field(default_factory=list)
    # The node's address as clients reach it (behind a proxy, say), e.g. https://pacs.example.org:
    # the start of the RetrieveURLs and BulkDataURIs it answers with. Empty: the request's Host.
    public_url: str = Field(default="", pattern=r"^(https?://[^\s/]+(/[^\s]*)?)?$")
    # Largest request body (STOW-RS upload) accepted; larger ones get 413 before anything is stored.
    max_body_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # The admin console (/console): a login lasts this long without a request (sessions are kept
    # in the serving process, so a restart logs everyone out).
    session_seconds: int = Field(default=8 * 3600, ge=60)

    @model_validator(mode="after")
    def _unique_names(self) -> HttpConfig:
        names = [user.name for user in self.users]
        if len(names) != len(set(names)):
            raise ValueError("http.users has a name twice")
        return self


class NodeConfig(StrictModel):
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _resolve_paths(self) -> NodeConfig:
        self.storage.data_dir = self.storage.data_dir.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _http_tls_has_certificate(self) -> NodeConfig:
        if self.http.enabled and self.http.tls and not self.network.tls.enabled:
            raise ValueError("http.tls serves network.tls's certificate: set network.tls.cert_file, key_file")
        return self

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.storage.data_dir / 'index.sqlite'}"


def load_config(path: Path | None = None, **overrides: Any) -> NodeConfig:
    """Read `path` (if given) and apply dotted overrides such as ``network.port=11113``.

    Overrides whose value is None are skipped, so CLI flags that were not given change nothing.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            section = section.setdefault(key, {})
        section[leaf] = value
    return NodeConfig.model_validate(raw)
