"""A renewed certificate takes effect without a restart: the services read their TLS files again when
they change, as a mounted Secret changes when cert-manager renews it (its files swapped by rename).

A real services.common.Server with a one-method service, credentials from the flags the services
take; certificates from two CAs made by openssl. Before the swap a client trusting CA 1 connects;
after it, new connections present the CA 2 certificate (a client trusting CA 2 connects, one
trusting only CA 1 fails), and under mutual TLS the client CA is reloaded the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import threading

import grpc
import pytest

SERVICE, METHOD = "vov.test.Echo", "Echo"


def make_pki(directory, name: str) -> dict[str, bytes]:
    """A CA and a certificate it signed for 127.0.0.1 (server and client use)."""
    directory.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", "tls.key", "-out", "tls.csr")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext.cnf", "-out", "tls.crt")
    return {f: (directory / f).read_bytes() for f in ("ca.crt", "tls.crt", "tls.key")}


def mount(directory, files: dict[str, bytes]) -> None:
    """Write the Secret's files as the kubelet does: a new directory, then a rename of the link to it."""
    version = directory / f"..version-{len(list(directory.glob('..version-*')))}"
    version.mkdir()
    for name, data in files.items():
        (version / name).write_bytes(data)
    link = directory / "..data.tmp"
    link.symlink_to(version.name)
    os.replace(link, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


HELD = b"hold"  # a call that stays open until RELEASE is set
ENTERED, RELEASE = threading.Event(), threading.Event()


def echo(request: bytes, context) -> bytes:
    if request == HELD:
        ENTERED.set()
        RELEASE.wait(30)
    return request


def start(secret, mutual: bool):
    from vov_services import common

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)})
    args = argparse.Namespace(tls_cert=str(secret / "tls.crt"), tls_key=str(secret / "tls.key"),
                              tls_client_ca=str(secret / "ca.crt") if mutual else "")
    return common.Server([SERVICE], lambda s: s.add_generic_rpc_handlers((handler,)), "127.0.0.1", 0, 2, 1 << 20,
                         logging.getLogger("test-tls-reload"), common.server_credentials(args)).start()


def call(address: str, ca: bytes, client: dict[str, bytes] | None = None) -> bool:
    credentials = grpc.ssl_channel_credentials(ca, client and client["tls.key"], client and client["tls.crt"])
    with grpc.secure_channel(address, credentials) as channel:
        try:
            echo = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=None, response_deserializer=None)
            return echo(b"hi", timeout=5) == b"hi"
        except grpc.RpcError:
            return False


@pytest.mark.parametrize("mutual", [False, True])
def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, mutual):
    first, second = make_pki(tmp_path / "pki-1", "first"), make_pki(tmp_path / "pki-2", "second")
    secret = tmp_path / "secret"
    secret.mkdir()
    mount(secret, first)
    server = start(secret, mutual)
    try:
        assert call(server.address, first["ca.crt"], first if mutual else None)
        assert not call(server.address, second["ca.crt"], second if mutual else None)
        ENTERED.clear(), RELEASE.clear()
        credentials = grpc.ssl_channel_credentials(first["ca.crt"], *((first["tls.key"], first["tls.crt"])
                                                                       if mutual else ()))
        channel = grpc.secure_channel(server.address, credentials)
        held = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=None,
                                   response_deserializer=None).future(HELD, timeout=30)
        assert ENTERED.wait(10)  # a call open on the first certificate's connection
        mount(secret, second)  # the renewal: new files in the same mounted paths
        assert call(server.address, second["ca.crt"], second if mutual else None)
        assert not call(server.address, first["ca.crt"], first if mutual else None)
        if mutual:  # the reloaded client CA: a client certificate of the old CA is refused now
            assert not call(server.address, second["ca.crt"], first)
        RELEASE.set()
        assert held.result() == HELD  # the open call was not cut
        channel.close()
    finally:
        RELEASE.set()
        server.stop(0.2)


def test_a_half_written_renewal_keeps_the_current_certificate(tmp_path):
    first = make_pki(tmp_path / "pki-1", "first")
    secret = tmp_path / "secret"
    secret.mkdir()
    mount(secret, first)
    server = start(secret, mutual=False)
    try:
        mount(secret, {**first, "tls.crt": b"-----BEGIN CERTIFICATE-----\nnot a certificate\n"})
        assert call(server.address, first["ca.crt"])
    finally:
        server.stop(0.2)
