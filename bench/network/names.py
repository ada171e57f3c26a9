"""The names the clients and the targets agree on, and those the report shows the targets by."""

# storescu calls as a modality that neither server knows (both let anyone store); getscu and
# movescu as a viewer registered with each server, because both refuse C-GET and C-MOVE to
# unknown AE titles by default. A C-MOVE goes to BENCH_DEST, the bench's storescp, which each
# server must know by address because it opens the association to it.
STORE_AE = "BENCH_STORE"
GET_AE = "BENCH_GET"
DEST_AE = "BENCH_DEST"

NODE = "scp-node"
ORTHANC = "Orthanc"
