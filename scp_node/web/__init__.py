"""The HTTP service beside DICOM: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) under /dicom-web, the
admin console under /console (package `console`), /healthz and /metrics, over the same index,
storage and codecs as the DIMSE handlers.

It sits in the service layer with scp_node/handlers: it may use the index, storage, context,
workers and retrieve, and nothing below imports it. `app.create_app` builds the ASGI app for a
runtime; `server.HttpServer` runs it on uvicorn in a thread of `scp-node serve`.
"""
