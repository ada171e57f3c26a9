"""Benchmark DICOM network ingest (C-STORE) and retrieval (C-GET, C-MOVE): the node against Orthanc
(issues 3 and 15).

The node's codec speed says nothing about what a modality or a viewer sees on the wire, so this
drives both servers the way sites do, with the dcmtk clients: N parallel `storescu` associations
send a folder of files as they are (each file's own transfer syntax is proposed, nothing is
converted on the way), then N parallel `getscu` associations retrieve every study (STUDY level,
bit-preserving, `+B`), then N parallel `movescu` associations ask the server to move every study
(the same chunks of studies as getscu's) to BENCH_DEST: a dcmtk `storescp +B +xa --fork` that the
benchmark starts for the repetition on a free loopback port, writing to a folder. A viewer
retrieves by C-GET on its own association; a PACS workstation or a router by C-MOVE, to which
the server opens associations of its own, so both are measured, on the same stored data. Each
phase is timed from the first client process start to the last client process end (movescu
ends with the final C-MOVE response, sent once the destination has answered every C-STORE).
MB means bytes of the files sent, or of the files getscu or the destination wrote.

Every retrieved data set, by either service, is compared with the one sent: byte-identical;
converted (it came back in another transfer syntax, with every non-binary element and the decoded
pixels equal); or differing. dcmtk 3.6.7's getscu offers a single transfer syntax per storage SOP
class, Explicit VR Little Endian by default, so a server must convert every instance stored in
another one; the C-MOVE destination accepts every syntax dcmtk knows (`+xa`), so there a server
may send an instance as it holds it. The destination forks a process per association because a
server may open several at once (one per C-MOVE), which a single storescp would serve in turn.
storescu re-encodes what it sends (undefined-length sequences get explicit lengths, for one), so
"sent" means the bytes on the wire: before the repetitions, the files are sent once to dcmtk's
`storescp +B`, which writes exactly what arrives, and those data sets are the reference.

    python -m bench.network FOLDER [FOLDER ...] [--associations 10] [--repeat 3] [--limit N]
        [--no-wait-compressed] [--no-orthanc] [--plot bench/network_bench.png] [--markdown FILE]

Each repetition starts every target afresh on an empty temporary storage directory, on
127.0.0.1 and free ports, and stops it (SIGTERM, SIGKILL after a timeout) before the next. The
reported figures are medians over the repetitions.

storescu calls as BENCH_STORE, an AE title neither server knows (both let unknown AEs store by
default); getscu and movescu call as BENCH_GET, registered with both servers as a viewer, since
both refuse C-GET and C-MOVE to unknown AE titles by default; BENCH_DEST, the C-MOVE destination,
is registered with both with the storescp's address, which a server needs to reach it.

scp-node runs as `scp-node serve --config <tmp>/config.yaml`; the file sets only network.host
(127.0.0.1), network.port, storage.data_dir and two access.peers entries (BENCH_GET, host
127.0.0.1, permissions [get, move]; BENCH_DEST, host 127.0.0.1, the storescp's port, permissions
[]), so everything else is the embedded default (SQLite, in-process
compression worker, jpegxl, at most 10 associations); --node-set changes more (e.g.
storage.database_url for PostgreSQL). With --node-set queue.redis_url=... the jobs go to RQ on
that Redis, on a queue named after the repetition, and the bench also runs one `scp-node worker`
on the same config, as a site would; its CPU counts in the node's.
The node compresses in the background, so its ingest time covers the network ingest only. By
default (--wait-compressed) the benchmark then waits until `scp-node stats --json` shows no
instance `received` or `queued`, so that retrieval decodes from the compressed blobs; that wait
is reported as "compress s". It polls the SQLite index read-only and asks `scp-node stats` only
once that shows nothing pending, because each stats call costs about 2 CPU seconds here.
"server CPU s" is the user + system time the server process used during a phase.

Orthanc (`Orthanc` on PATH, or /usr/sbin/Orthanc) runs with the distribution's configuration
directory (/etc/orthanc: every *.json file in it, comments stripped) copied to a temporary
directory, with only these changes:

- StorageDirectory and IndexDirectory: a temporary directory (default /var/lib/orthanc/db-v6).
- DicomPort and HttpPort: free ports (default 4242 and 8042), so it runs beside anything else.
- DicomModalities: BENCH_GET registered as ["BENCH_GET", "127.0.0.1", 104] and BENCH_DEST as
  ["BENCH_DEST", "127.0.0.1", <the storescp's port>] (default: none). Orthanc refuses C-GET and
  C-MOVE from AE titles that are not registered (DicomAlwaysAllowGet and DicomAlwaysAllowMove are
  false); a registered modality may use every command. A modality's port is only used when it
  is a C-MOVE destination, so BENCH_GET's is never.
- RemoteAccessAllowed: false, as in the default; it only guards the HTTP API.
- Orthanc 1.10 has no option to choose the listen address, and binds both ports to 0.0.0.0. The
  benchmark therefore compiles a tiny LD_PRELOAD library (needs `cc`) whose bind() turns the
  wildcard address into 127.0.0.1 (and :: into ::1); without a compiler Orthanc is skipped.
- Its log goes to a file in the temporary directory instead of the package's --logdir.

The same library keeps the capturing storescp and the C-MOVE destination on loopback; without
a compiler the C-MOVE phase is not run either. The destination is stopped with its forked
children (SIGTERM to its process group), since Orthanc keeps an association open for a few
seconds in case it can reuse it.

After start-up, both targets' listening sockets are read from /proc/net/tcp{,6}; a target that
listens on anything but loopback is stopped and the run aborts.

The exit status is 1 when scp-node failed to store an instance, lost one (by either service),
or returned different content; Orthanc's failures are only reported.

One module per step, in the order a run takes them: `corpus` (the files to send), `capture`
(the wire reference), `receiver` (storescp, for the capture and as the C-MOVE destination),
`node` and `orthanc` (starting each target; `targets` for what they share), `repetition` (one
target, once), `ingest` (the storescu runs), `retrieve` and `move` (the getscu and movescu
commands), `retrieval` (what C-GET and C-MOVE share: the chunks of studies, the queries, the
runs through `clients`, the timing, and what arrived compared with what was sent), `compare` (a
retrieved data set against the one sent), `report_tables`, `report` and `plot` (the outputs),
`provenance` (the report's header) and `cli` (options, the loop, the exit status); `names`,
`measurement` and `figures` hold the AE titles, the measured records and how a figure is printed.
"""
