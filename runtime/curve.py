"""ZeroMQ CURVE for tcp:// pipelines: encrypted, and only this run's stages may connect.

The supervisor makes one server and one client key pair per run in the run's private
directory (0700). Every socket that binds is a CURVE server and runs a ZAP authenticator
that accepts only the run's client public key; every socket that connects is a client.
A peer without the run's keys completes no handshake and receives nothing; one that tries
is counted (`Gatekeeper.denied`) and logged. A connecting socket checks the server's key
in turn, so a process that binds a restarting stage's port (to feed control forged
results) completes no handshake either: it lacks the run's server secret key. Keys and
the authenticator are pyzmq's own (`zmq.auth`), not ours.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("edgert.curve")


def make_keys(run_dir: str | Path) -> Path:
    d = Path(run_dir) / "curve"
    (d / "clients").mkdir(parents=True, mode=0o700)
    zmq.auth.create_certificates(str(d), "server")
    pub, _ = zmq.auth.create_certificates(str(d), "client")
    Path(pub).rename(d / "clients" / "client.key")  # the authenticator's allow-list: public keys only
    return d


class Gatekeeper:
    """The ZAP authenticator of one process's CURVE servers: admits the run's client key and
    counts every other client that completed the CURVE hello (its messages never arrive)."""

    def __init__(self, ctx: zmq.Context, keys: str | Path) -> None:
        public, _ = zmq.auth.load_certificate(str(Path(keys) / "clients" / "client.key"))
        self.allowed = public  # z85, as the callback gets it
        self.denied = 0
        self._logged_at = 0  # the `denied` count last logged: once per power of two, a flood cannot fill the log
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, client_key: bytes) -> bool:
        """pyzmq's credentials-provider hook, on the authenticator's thread."""
        if client_key == self.allowed:
            return True
        self.denied += 1
        if self.denied >= 2 * self._logged_at:
            self._logged_at = self.denied
            log.warning("refused a CURVE client without this run's key (%d refused so far): someone "
                        "is trying to connect to this pipeline's sockets", self.denied)
        return False

    def stop(self) -> None:
        self.auth.stop()


def start_authenticator(ctx: zmq.Context, keys: str | Path) -> Gatekeeper:
    return Gatekeeper(ctx, keys)


def as_server(sock: zmq.Socket, keys: str | Path) -> None:
    public, secret = zmq.auth.load_certificate(str(Path(keys) / "server.key_secret"))
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def as_client(sock: zmq.Socket, keys: str | Path) -> None:
    server_public, _ = zmq.auth.load_certificate(str(Path(keys) / "server.key_secret"))
    public, secret = zmq.auth.load_certificate(str(Path(keys) / "client.key_secret"))
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
