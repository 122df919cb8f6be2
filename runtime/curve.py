"""ZeroMQ CURVE for tcp:// pipelines: encrypted, and only this run's stages may connect.

The supervisor makes one server and one client key pair per run in the run's private
directory (0700). Every socket that binds is a CURVE server and runs a ZAP authenticator
that accepts only the run's client public key; every socket that connects is a client.
A peer without the run's keys completes no handshake and receives nothing. Keys and the
authenticator are pyzmq's own (`zmq.auth`), not ours.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def make_keys(run_dir: str | Path) -> Path:
    d = Path(run_dir) / "curve"
    (d / "clients").mkdir(parents=True, mode=0o700)
    zmq.auth.create_certificates(str(d), "server")
    pub, _ = zmq.auth.create_certificates(str(d), "client")
    Path(pub).rename(d / "clients" / "client.key")  # the authenticator's allow-list: public keys only
    return d


def start_authenticator(ctx: zmq.Context, keys: str | Path) -> ThreadAuthenticator:
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(Path(keys) / "clients"))
    return auth


def as_server(sock: zmq.Socket, keys: str | Path) -> None:
    public, secret = zmq.auth.load_certificate(str(Path(keys) / "server.key_secret"))
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def as_client(sock: zmq.Socket, keys: str | Path) -> None:
    server_public, _ = zmq.auth.load_certificate(str(Path(keys) / "server.key_secret"))
    public, secret = zmq.auth.load_certificate(str(Path(keys) / "client.key_secret"))
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
