"""A webhook receiver for the tests, run as its own process: `python -m tests.webhook_receiver
PORT SECRET_FILE LOG`. It verifies each request's signature with the standardwebhooks library
(the secret read from SECRET_FILE at each request: the test writes it once the webhook is
made), appends what it received to LOG (a JSON line each: the `webhook-id`, whether it
verified, the body), then answers.

`RECEIVER_FAIL_FIRST` (event types, comma-separated): the first request of each message of
those types is answered 500. `RECEIVER_HOLD_FIRST` (the same): the first request of each such
message is logged at once, then answered only after `RECEIVER_HOLD_SECONDS`, so that a test can
kill the sender in the middle. Whatever the message, `POST /redirect` is answered with a
redirect to `/landing`, and `POST /slow` only after `SLOW_SECONDS`. Given a certificate and its
key (`self_signed`), it speaks https."""

import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook, WebhookVerificationError

SLOW_SECONDS = 3


def _types(variable: str) -> set[str]:
    return {t for t in os.environ.get(variable, "").split(",") if t}


class Receiver(BaseHTTPRequestHandler):
    secret_file: Path
    log_file: Path
    seen: set[str] = set()
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            payload = Webhook(self.secret_file.read_text().strip()).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            payload, verified = json.loads(body), False
        message_id = headers.get("webhook-id", "")
        with self.lock:
            first = message_id not in self.seen
            self.seen.add(message_id)
            line = {
                "id": message_id,
                "verified": verified,
                "host": headers.get("host"),
                "path": self.path,
            }
            with self.log_file.open("a") as log:
                log.write(json.dumps({**line, "payload": payload}) + "\n")
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("location", "/landing")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        if first and payload["type"] in _types("RECEIVER_HOLD_FIRST"):
            time.sleep(float(os.environ["RECEIVER_HOLD_SECONDS"]))
        failing = first and payload["type"] in _types("RECEIVER_FAIL_FIRST")
        self.send_response(500 if failing or not verified else 204)
        self.end_headers()

    def log_message(self, *args) -> None:  # the log file says what came
        pass


@dataclass
class Running:
    """A receiver process of a test: where it listens, its secret file and what it received."""

    port: int
    secret_file: Path
    log_file: Path
    scheme: str = "http"

    def url(self, path: str = "/hooks", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def received(self) -> list[dict]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def wait_for(self, done: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not done(received := self.received()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get what was awaited: {received}")
            time.sleep(0.2)
        return received


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name`, its own authority (for SSL_CERT_FILE), and its key."""
    # cryptography comes with moto, of the dev extra.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextmanager
def receiver(
    directory: Path, env: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[Running]:
    """A receiver process listening on 127.0.0.1 (https with `tls`), killed afterwards."""
    from tests.servers import free_port

    port = free_port()
    running = Running(
        port, directory / "secret", directory / "received.jsonl", "https" if tls else "http"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.webhook_receiver", str(port), str(running.secret_file),
         str(running.log_file), *(str(path) for path in tls or ())],
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the webhook receiver did not start") from None
                time.sleep(0.1)
        yield running
    finally:
        process.kill()
        process.wait()


def main() -> None:
    port, secret_file, log_file = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    Receiver.secret_file, Receiver.log_file = secret_file, log_file
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    if len(sys.argv) > 4:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[4], sys.argv[5])
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
