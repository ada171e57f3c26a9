"""The names the clients and the targets agree on, and those the report shows the targets by."""

# storescu calls as a modality that neither server knows (both let anyone store); getscu as a
# viewer registered with each server, because both refuse C-GET to unknown AE titles by default.
STORE_AE = "BENCH_STORE"
GET_AE = "BENCH_GET"

NODE = "scp-node"
ORTHANC = "Orthanc"
