"""Mutual TLS between graft_trio nodes, and for K/V clients, over real sockets on 127.0.0.1.

* ``test_only_the_valid_peer_joins``: members a, b, c over TLS; b and c run,
  and seven impostors speak as ``a`` to b's port: no client certificate, a
  certificate from a foreign CA, an expired certificate from the cluster CA,
  a valid certificate naming another node (``m``), a K/V client's
  certificate (which names no node), plaintext, and a connection that never
  starts its TLS handshake. Each but the last follows its HELLO, in the same
  write, with an AppendRequest of term 10**6 that would overwrite
  b's log if it got through. Each is refused, logged with its reason and
  counted; b's term never reaches 10**6. Then the real ``a`` starts, with its
  certificate, joins, and the cluster of three commits through it.
* ``test_the_dialer_checks_who_answered``: the dialing node refuses a server
  whose certificate comes from a foreign CA, and one with a valid certificate
  for another node answering HELLO as the peer it dialled.
* ``test_kv_client_over_tls``: the K/V store's client port, in code and on
  the command line: put/get with a client certificate; refused without one,
  and to plaintext.
* ``test_kv_client_checks_the_server_is_a_node``: a K/V client sends nothing
  to a server whose certificate names no node (a client certificate).
* certificates tool and configuration errors; the tool never replaces a CA
  whose key is missing or wrong, and writes keys to new 0600 files that
  replace (never follow, never write into) what was at the key's path.

About 5 s in all.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from graft_core import AppendRequest, Entry, Role
from graft_trio import (
    IdentityMismatch,
    Node,
    Options,
    StartupError,
    TlsConfig,
    TlsConfigError,
    TlsHandshakeFailed,
    TlsNetwork,
    certs,
    kv,
)
from graft_trio._tls import client_uri, identities, node_uri
from graft_trio._wire import encode_batch, encode_hello

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from trio_helpers import HANG, append_when_ready, until_closed, wait_until

from graft_trio.testing import free_ports

#: Shorter than the node's HELLO deadline, so a stalled TLS handshake is
#: dropped by the TLS layer's own cancel scope.
TLS_TIMEOUT = 1.0
OPTIONS = Options(heartbeat_interval=0.05, election_timeout=1.0, handshake_timeout=3.0)
#: A guard against a hung test, never a measure of speed.
HOSTILE_TERM = 10**6


# ------------------------------------------------------------------ certificates


class Pki:
    """The cluster CA's files, plus the certificates impostors hold."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "cluster"
        certs.make_cluster(self.dir, ["a", "b", "c", "m"], clients=["client"])
        self.ca = self.dir / "ca.pem"
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        ca_key = serialization.load_pem_private_key(
            (self.dir / "ca-key.pem").read_bytes(), password=None
        )
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        # The cluster CA's signature, but no longer valid.
        now = datetime.datetime.now(datetime.UTC)
        expired = certs.issue(
            ca_cert, ca_key, node_uri("a"), common_name="a",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        self.expired = certs.write_pair(self.dir, "expired-a", *expired)
        # Another CA's certificate naming a.
        self.foreign_dir = root / "foreign"
        certs.make_cluster(self.foreign_dir, ["a", "b"], clients=[])

    def node(self, node_id: str) -> TlsConfig:
        return TlsConfig(self.ca, self.dir / f"{node_id}.pem", self.dir / f"{node_id}-key.pem",
                         handshake_timeout=TLS_TIMEOUT)

    def pair(self, stem: str) -> tuple[Path, Path]:
        return self.dir / f"{stem}.pem", self.dir / f"{stem}-key.pem"

    def foreign(self, node_id: str) -> tuple[Path, Path]:
        return self.foreign_dir / f"{node_id}.pem", self.foreign_dir / f"{node_id}-key.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def attacker_context(pair: tuple[Path, Path] | None) -> ssl.SSLContext:
    """An impostor's client context: presents ``pair`` (if any), trusts any server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if pair is not None:
        ctx.load_cert_chain(*map(str, pair))
    return ctx


def server_context(pair: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*map(str, pair))
    return ctx


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def cluster(
    tmp: Path, pki: Pki, members: list[str], running: list[str]
) -> AsyncIterator[tuple[dict[str, Node], dict[str, tuple[str, int]], trio.Nursery]]:
    addrs = {i: ("127.0.0.1", p) for i, p in zip(members, free_ports(len(members)), strict=True)}
    nodes = {
        i: Node(i, addrs[i], {j: a for j, a in addrs.items() if j != i}, tmp / i,
                options=OPTIONS, tls=pki.node(i))
        for i in running
    }
    async with trio.open_nursery() as nursery:
        for node in nodes.values():
            await nursery.start(node.run)
        yield nodes, addrs, nursery
        nursery.cancel_scope.cancel()


async def wait_for_leader(nodes: dict[str, Node]) -> Node:
    with trio.fail_after(HANG):
        while True:
            leaders = {n.status().leader_id for n in nodes.values()}
            if len(leaders) == 1 and None not in leaders:
                leader_id = leaders.pop()
                assert leader_id is not None
                if leader_id in nodes and nodes[leader_id].status().role is Role.LEADER:
                    return nodes[leader_id]
            await trio.sleep(0.01)


def hostile_hello(src: str, dst: str) -> bytes:
    """A HELLO as ``src``, then an AppendRequest that would take over ``dst``'s log."""
    append = AppendRequest(HOSTILE_TERM, src, dst, 0, 0, (Entry(HOSTILE_TERM, b"evil"),), 1)
    return encode_hello("graft", src, dst) + encode_batch([append])


async def impostor(port: int, ctx: ssl.SSLContext | None, payload: bytes) -> None:
    """Connect (over TLS with ``ctx``, or plaintext), send ``payload``, wait to be closed."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream: trio.abc.Stream = tcp
    if ctx is not None:
        stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    with trio.fail_after(HANG):
        async with stream:
            try:
                if payload:
                    await stream.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # refused during the handshake
            await until_closed(stream)


def warnings_about(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name.startswith("graft_trio") and r.levelno >= logging.WARNING
        and all(n in r.getMessage() for n in needles)
    ]


# ------------------------------------------------------------------ peers


async def test_only_the_valid_peer_joins(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="graft_trio")
    async with cluster(tmp_path, pki, ["a", "b", "c"], ["b", "c"]) as (nodes, addrs, nursery):
        b, c = nodes["b"], nodes["c"]
        leader = await wait_for_leader(nodes)
        await leader.append(b"before")
        port = b.port
        bad = hostile_hello("a", "b")
        # (who, how it connects, what b must log about it: the refusal's reason)
        cases: list[tuple[str, ssl.SSLContext | None, bytes, tuple[str, ...]]] = [
            ("no client certificate", attacker_context(None), bad,
             ("TlsHandshakeFailed", "PEER_DID_NOT_RETURN_A_CERTIFICATE")),
            ("foreign CA", attacker_context(pki.foreign("a")), bad,
             ("TlsHandshakeFailed", "unable to get local issuer certificate")),
            ("expired", attacker_context(pki.expired), bad,
             ("TlsHandshakeFailed", "certificate has expired")),
            ("identity of another node", attacker_context(pki.pair("m")), bad,
             ("IdentityMismatch", "says it is 'a'", "names 'm'")),
            ("a K/V client's certificate", attacker_context(pki.pair("client")), bad,
             ("IdentityMismatch", "says it is 'a'", "no single node id")),
            ("plaintext HELLO", None, bad, ("TlsHandshakeFailed",)),
            ("no handshake at all", None, b"", ("TlsHandshakeFailed", "no TLS handshake")),
        ]
        for what, ctx, payload, reason in cases:
            seen = len(warnings_about(caplog, *reason))
            await impostor(port, ctx, payload)
            # b logs the refusal (as it closes the connection, give or take a moment).
            with trio.fail_after(HANG):
                while len(warnings_about(caplog, *reason)) == seen:
                    await trio.sleep(0.01)
            assert b.status().term < HOSTILE_TERM, what
            assert all(e.data != b"evil" for e in b.committed()), what
        rejected = b.status().rejected
        assert rejected.get("tls_handshake", 0) >= 5
        assert rejected.get("tls_identity", 0) >= 2
        # The impostors as a never delivered a message: nothing raised b's term,
        # nothing of theirs is in the log, and b still follows the same leader.
        # (b and c may be between terms of their own under load; only the
        # impostors' term must never have reached them.)
        assert b.status().term < HOSTILE_TERM and c.status().term < HOSTILE_TERM

        # The real a joins: it dials b and c, and the cluster of three commits through it.
        a = Node("a", addrs["a"], {"b": addrs["b"], "c": addrs["c"]}, tmp_path / "a",
                 options=OPTIONS, tls=pki.node("a"))
        await nursery.start(a.run)
        result = await append_when_ready(a, b"through a")  # a may still be connecting
        await wait_until(lambda: all(n.status().applied_index >= result.index for n in (a, b, c)))
        logs = [[e.data for e in n.committed()][: result.index] for n in (a, b, c)]
        assert logs[0] == logs[1] == logs[2]
        assert b"through a" in logs[0] and b"evil" not in logs[0]
        # No refusals were logged about the real a.
        assert not warnings_about(caplog, "a: closing")


async def test_the_dialer_checks_who_answered(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """a dials b (the smaller id dials); two impostors in turn sit at b's address."""
    caplog.set_level(logging.WARNING, logger="graft_trio")
    addrs = {i: ("127.0.0.1", p) for i, p in zip("ab", free_ports(2), strict=True)}

    async def fake_b(ctx: ssl.SSLContext, reason: tuple[str, ...]) -> None:
        listeners = await trio.open_tcp_listeners(addrs["b"][1], host="127.0.0.1")
        served = 0

        async def answer(tcp: trio.SocketStream) -> None:
            nonlocal served
            served += 1
            stream = trio.SSLStream(tcp, ctx, server_side=True)
            async with stream:
                try:
                    await stream.send_all(hostile_hello("b", "a"))
                    await until_closed(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        async with trio.open_nursery() as inner:
            inner.start_soon(trio.serve_listeners, answer, listeners)
            await wait_until(lambda: bool(warnings_about(caplog, *reason)))
            inner.cancel_scope.cancel()
        assert served >= 1

    node = Node("a", addrs["a"], {"b": addrs["b"]}, tmp_path / "a", options=OPTIONS,
                tls=pki.node("a"))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await fake_b(server_context(pki.foreign("b")), ("TlsHandshakeFailed", "CERTIFICATE_VERIFY"))
        await fake_b(server_context(pki.pair("m")), ("IdentityMismatch", "says it is 'b'"))
        assert node.status().term < HOSTILE_TERM
        assert node.status().rejected.get("tls_identity", 0) >= 1
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ K/V clients


async def test_kv_client_over_tls(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="graft_trio")
    peer_port, client_port = free_ports(2)
    node = Node("a", ("127.0.0.1", peer_port), {}, tmp_path / "a", options=OPTIONS,
                tls=pki.node("a"))
    server = kv.KVServer(node, ("127.0.0.1", client_port), tls=pki.node("a"))
    address = ("127.0.0.1", client_port)
    client = TlsConfig(pki.ca, *pki.pair("client"))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        put = await kv.request(address, {"op": "put", "key": "k", "value": "v"}, tls=client)
        assert put["ok"] is True
        got = await kv.request(address, {"op": "get", "key": "k"}, tls=client)
        assert got == {"ok": True, "value": "v"}

        # Without a client certificate: refused; the refusal is logged; no write.
        evil = json.dumps({"op": "put", "key": "k", "value": "evil"}).encode() + b"\n"
        await impostor(client_port, attacker_context(None), evil)
        await wait_until(lambda: bool(warnings_about(
            caplog, "refusing a client", "PEER_DID_NOT_RETURN_A_CERTIFICATE")))
        # Plaintext to the TLS port: no answer.
        with pytest.raises(ConnectionError):
            await kv.request(address, {"op": "put", "key": "k", "value": "evil"})
        await wait_until(lambda: len(warnings_about(caplog, "refusing a client")) >= 2)
        # A client certificate from a foreign CA: refused.
        foreign = TlsConfig(pki.ca, *pki.foreign("a"))
        with pytest.raises((ConnectionError, TlsHandshakeFailed)):
            await kv.request(address, {"op": "get", "key": "k"}, tls=foreign)

        # The command line: --tls-* on a client command.
        flags = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.pair("client")[0]),
                 "--tls-key", str(pki.pair("client")[1])]
        server_arg = ["--server", f"127.0.0.1:{client_port}"]
        rc = await trio.to_thread.run_sync(kv.main, ["get", *server_arg, *flags, "k"])
        assert rc == 0
        rc = await trio.to_thread.run_sync(kv.main, ["get", *server_arg, "k"])
        assert rc == 1  # plaintext: refused, reported as an error answer
        assert server.sm.data == {"k": "v"}
        nursery.cancel_scope.cancel()


def legacy_client_pair(pki: Pki) -> tuple[Path, Path]:
    """A K/V client certificate as the tool used to issue it: also serverAuth."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(
        (pki.dir / "ca-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(client_uri("old"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certs.write_pair(pki.dir, "legacy-client", cert, key)


async def test_kv_client_checks_the_server_is_a_node(pki: Pki) -> None:
    """A fake K/V server with a certificate from the CA that names no node gets no request."""
    client = TlsConfig(pki.ca, *pki.pair("client"), handshake_timeout=TLS_TIMEOUT)
    req = {"op": "put", "key": "secret", "value": "s3cret"}

    async def fake_server(pair: tuple[Path, Path]) -> tuple[type[Exception] | None, bytes]:
        """Serve one connection with ``pair``; what request() raised, and what the server got."""
        (port,) = free_ports(1)
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        received = bytearray()
        done = trio.Event()

        async def answer(tcp: trio.SocketStream) -> None:
            stream = trio.SSLStream(tcp, server_context(pair), server_side=True)
            try:
                async with stream:
                    while data := await stream.receive_some(65536):
                        received.extend(data)
                        if b"\n" in received:
                            await stream.send_all(b'{"ok": true}\n')
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                done.set()

        raised: type[Exception] | None = None
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.serve_listeners, answer, listeners)
            try:
                with trio.fail_after(HANG):
                    answer_ = await kv.request(("127.0.0.1", port), req, tls=client)
                assert answer_ == {"ok": True}
            except (IdentityMismatch, TlsHandshakeFailed) as e:
                raised = type(e)
            with trio.fail_after(HANG):
                await done.wait()
            inner.cancel_scope.cancel()
        return raised, bytes(received)

    # Control: a node's certificate is a K/V server's; the request arrives.
    raised, got = await fake_server(pki.pair("a"))
    assert raised is None and b"s3cret" in got
    # A client certificate issued before client certificates lost serverAuth:
    # the handshake succeeds, but it names no node, so nothing is sent.
    raised, got = await fake_server(legacy_client_pair(pki))
    assert raised is IdentityMismatch and got == b""
    # A client certificate as the tool issues it now: no serverAuth, so the
    # handshake itself fails.
    raised, got = await fake_server(pki.pair("client"))
    assert raised is TlsHandshakeFailed and got == b""
    # On the command line: reported as an error, exit status 1.
    rc = await trio.to_thread.run_sync(kv.main, [
        "get", "--server", "127.0.0.1:1", "--tls-ca", str(pki.ca),
        "--tls-cert", str(pki.pair("client")[0]), "--tls-key", str(pki.pair("client")[1]), "k",
    ])
    assert rc == 1


def test_kv_cli_tls_flags_go_together(pki: Pki) -> None:
    with pytest.raises(SystemExit) as e:
        kv.main(["get", "--server", "127.0.0.1:1", "--tls-ca", str(pki.ca), "k"])
    assert e.value.code == 2


# ------------------------------------------------------------------ configuration, tool


def test_a_bad_tls_configuration_fails_at_construction(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError):
        TlsConfig(pki.ca, *pki.pair("a"), handshake_timeout=0)
    missing = TlsConfig(pki.ca, tmp_path / "nope.pem", pki.pair("a")[1])
    with pytest.raises(TlsConfigError, match=r"nope\.pem"):
        TlsNetwork(missing)
    with pytest.raises(StartupError):
        Node("a", ("127.0.0.1", 1), {}, tmp_path / "a", tls=missing)
    # A key that is not the certificate's.
    wrong_key = TlsConfig(pki.ca, pki.pair("a")[0], pki.pair("b")[1])
    with pytest.raises(StartupError):
        Node("a", ("127.0.0.1", 1), {}, tmp_path / "a", tls=wrong_key)


def test_certs_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert certs.main(["--out", str(out), "--nodes", "a,b,n/1", "--days", "7"]) == 0
    printed = capsys.readouterr().out
    assert "ca.pem" in printed
    for stem in ("ca", "a", "b", "n%2F1", "client"):
        assert (out / f"{stem}.pem").exists()
        assert (out / f"{stem}-key.pem").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "n%2F1.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["graft-node:n%2F1"]
    assert identities({"subjectAltName": (("URI", "graft-node:n%2F1"),)}, "graft-node:") == ["n/1"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=7) <= lifetime <= datetime.timedelta(days=7, minutes=10)
    # A second run adds a node with the same CA.
    ca_before = (out / "ca.pem").read_bytes()
    assert certs.main(["--out", str(out), "--nodes", "d", "--clients", ""]) == 0
    assert (out / "ca.pem").read_bytes() == ca_before
    ca = x509.load_pem_x509_certificate(ca_before)
    d = x509.load_pem_x509_certificate((out / "d.pem").read_bytes())
    d.verify_directly_issued_by(ca)
    # Caller mistakes: typed errors (a usage error on the command line).
    with pytest.raises(certs.CertError):
        certs.make_cluster(out, ["a", "a"])
    with pytest.raises(certs.CertError):
        certs.make_cluster(out, [])
    with pytest.raises(certs.CertError):
        certs.make_cluster(out, ["ca"], clients=[])
    with pytest.raises(certs.CertError):
        certs.make_cluster(out, ["a"], days=0)
    with pytest.raises(SystemExit):
        certs.main(["--out", str(out), "--nodes", "a,,b"])


def extended_key_usage(path: Path) -> list[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_client_certificates_are_tls_clients_only(pki: Pki) -> None:
    assert extended_key_usage(pki.pair("client")[0]) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Nodes both accept and dial.
    assert set(extended_key_usage(pki.pair("a")[0])) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    }


def test_certs_never_replaces_an_existing_ca(tmp_path: Path) -> None:
    first, other = tmp_path / "first", tmp_path / "other"
    certs.make_cluster(first, ["a"], clients=[])
    certs.make_cluster(other, ["a"], clients=[])
    ca_pem, ca_key = (first / "ca.pem").read_bytes(), (first / "ca-key.pem").read_bytes()

    # The key kept offline, as the docs say: refused, ca.pem untouched, nothing issued.
    only_cert = tmp_path / "only-cert"
    only_cert.mkdir()
    (only_cert / "ca.pem").write_bytes(ca_pem)
    with pytest.raises(certs.CertError, match=r"ca-key\.pem does not"):
        certs.make_cluster(only_cert, ["b"], clients=[])
    assert (only_cert / "ca.pem").read_bytes() == ca_pem
    assert not (only_cert / "ca-key.pem").exists() and not (only_cert / "b.pem").exists()
    with pytest.raises(SystemExit) as e:
        certs.main(["--out", str(only_cert), "--nodes", "b"])
    assert e.value.code == 2
    assert (only_cert / "ca.pem").read_bytes() == ca_pem

    # The key without its certificate: refused, the key untouched.
    only_key = tmp_path / "only-key"
    only_key.mkdir()
    (only_key / "ca-key.pem").write_bytes(ca_key)
    with pytest.raises(certs.CertError, match=r"ca\.pem does not"):
        certs.make_cluster(only_key, ["b"], clients=[])
    assert (only_key / "ca-key.pem").read_bytes() == ca_key
    assert not (only_key / "ca.pem").exists()

    # Both, but the key is another CA's: refused, both untouched.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ca.pem").write_bytes(ca_pem)
    (mixed / "ca-key.pem").write_bytes((other / "ca-key.pem").read_bytes())
    with pytest.raises(certs.CertError, match="not the key"):
        certs.make_cluster(mixed, ["b"], clients=[])
    assert (mixed / "ca.pem").read_bytes() == ca_pem
    assert not (mixed / "b.pem").exists()

    # The matching pair still issues (the normal case).
    certs.make_cluster(first, ["b"], clients=[])
    assert (first / "ca.pem").read_bytes() == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    x509.load_pem_x509_certificate((first / "b.pem").read_bytes()).verify_directly_issued_by(ca)


def key_matches(cert_path: Path, key_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def test_key_files_are_replaced_never_written_through(tmp_path: Path) -> None:
    out, outside = tmp_path / "certs", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    # A readable key file left from before, with a second (hard) link to it,
    # as someone else could hold in a shared directory.
    (out / "a-key.pem").write_bytes(b"old key")
    (out / "a-key.pem").chmod(0o644)
    os.link(out / "a-key.pem", outside / "a-link")
    # A symlink at a key path, to an existing file and to a missing one.
    (outside / "target").write_bytes(b"target")
    (outside / "target").chmod(0o644)
    (out / "b-key.pem").symlink_to(outside / "target")
    (out / "client-key.pem").symlink_to(outside / "missing")

    certs.make_cluster(out, ["a", "b"], clients=["client"])

    for stem in ("ca", "a", "b", "client"):
        key_path = out / f"{stem}-key.pem"
        assert not key_path.is_symlink(), stem
        assert key_path.stat().st_mode & 0o777 == 0o600, stem
        assert key_matches(out / f"{stem}.pem", key_path), stem
    # Replaced, not written into: the other link still has the old bytes, and
    # the symlinks' targets are as they were (the missing one still missing).
    assert (outside / "a-link").read_bytes() == b"old key"
    assert (outside / "target").read_bytes() == b"target"
    assert (outside / "target").stat().st_mode & 0o777 == 0o644
    assert not (outside / "missing").exists()
    # No temporary files left behind.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_identity_mismatch_is_a_wire_error() -> None:
    # So the node counts and logs it like any other bad input from a peer.
    from graft_trio._wire import WireError

    assert issubclass(IdentityMismatch, WireError) and IdentityMismatch.reason == "tls_identity"
    assert issubclass(TlsHandshakeFailed, WireError)
    assert TlsHandshakeFailed.reason == "tls_handshake"
