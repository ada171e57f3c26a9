"""DICOM TLS (PS3.15 B.1): the node's server side, and its client side towards peers marked `tls`."""

from __future__ import annotations

import ssl

from scp_node.config import TlsConfig


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2 or newer, client certificates checked against ca_file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file is not None:
        context.load_verify_locations(tls.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """For associations the node opens: the peer's certificate must chain to ca_file (the
    system's CAs without one); the node's own certificate goes along for mutual TLS. Host
    names are not checked: DICOM peers are configured by address, and the CA vouches for them."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if tls.enabled:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context
