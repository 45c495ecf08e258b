#!/usr/bin/env python3
"""The swarm's streams and buckets as JSON configs with three replicas.

Cascade's processes create what is missing with one replica (and accept
existing streams whose retention, subjects and storage match). Production
wants R3, so deploy/nats/streams-r3 creates them first from these files.
They are not written by hand: this script starts a private nats-server and
`coordinator serve`, lets it create the layout exactly as the code does, and
reads every stream's config back with three replicas.

  deploy/nats/streams.py            rewrite deploy/nats/streams/*.json
  deploy/nats/streams.py --check    fail (with a diff) when they are stale

Needs nats-server (scripts/ensure-nats.sh) and the coordinator binary.
"""

import argparse
import difflib
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "deploy", "nats", "streams")
# The fields of a stream config that Cascade's layout sets or relies on;
# the rest (which differ between server versions) keep the server's
# defaults, so the files do not depend on the nats-server that made them.
KEEP = {
    "name", "subjects", "retention", "storage", "num_replicas", "discard", "max_age",
    "max_bytes", "max_msgs", "max_msg_size", "max_msgs_per_subject", "max_consumers",
    "duplicate_window", "allow_direct", "mirror_direct", "allow_rollup_hdrs", "deny_delete",
    "deny_purge",
}


class Nats:
    """Just enough of the NATS protocol for JetStream API requests."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                          b"SUB _INBOX.streams 1\r\nPING\r\n")
        while self.line() != b"PONG":
            pass

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def request(self, subject, payload=b""):
        self.sock.sendall(b"PUB %s _INBOX.streams %d\r\n%s\r\n"
                          % (subject.encode(), len(payload), payload))
        while True:
            line = self.line()
            if line.startswith(b"MSG "):
                size = int(line.split()[-1])
                while len(self.buf) < size + 2:
                    self.buf += self.sock.recv(65536)
                body, self.buf = self.buf[:size], self.buf[size + 2:]
                return json.loads(body)
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")


def dump(coordinator, nats_server):
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen(
            [nats_server, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", os.path.join(d, "s"),
             "--ports_file_dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        serve = None
        try:
            ports = os.path.join(d, f"nats-server_{server.pid}.ports")
            deadline = time.time() + 20
            while not os.path.exists(ports):
                if time.time() > deadline:
                    sys.exit("nats-server did not start")
                time.sleep(0.05)
            url = json.load(open(ports))["nats"][0]
            env = dict(os.environ, NATS_URL=url)
            for k in ("NATS_USER", "NATS_PASSWORD", "NATS_CREDS", "NATS_TOKEN",
                      "CASCADE_ACK_WAIT", "CASCADE_MAX_DELIVER", "CASCADE_WORKER_TTL",
                      "CASCADE_HTTP"):
                env.pop(k, None)
            log = open(os.path.join(d, "serve.log"), "w+")
            serve = subprocess.Popen([coordinator, "serve", "--name", "streams"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.time() + 60
            while "serving" not in open(log.name).read():
                if serve.poll() is not None or time.time() > deadline:
                    sys.exit("coordinator serve did not start:\n" + open(log.name).read())
                time.sleep(0.05)
            nc = Nats(int(url.rsplit(":", 1)[1]))
            names = nc.request("$JS.API.STREAM.NAMES")["streams"]
            out = {}
            for name in sorted(names):
                cfg = nc.request(f"$JS.API.STREAM.INFO.{name}")["config"]
                cfg = {k: v for k, v in cfg.items() if k in KEEP}
                cfg["num_replicas"] = 3
                out[name] = cfg
            return out
        finally:
            for p in (serve, server):
                if p is not None:
                    p.kill()
                    p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--coordinator", default=os.path.join(ROOT, "target", "debug", "coordinator"))
    ap.add_argument("--nats-server", default="nats-server")
    a = ap.parse_args()
    configs = dump(a.coordinator, a.nats_server)
    want = {f"{name}.json": json.dumps(cfg, indent=2, sort_keys=True) + "\n"
            for name, cfg in configs.items()}
    have = {}
    for path in glob.glob(os.path.join(OUT, "*.json")):
        with open(path) as f:
            have[os.path.basename(path)] = f.read()
    if a.check:
        stale = False
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                stale = True
                sys.stdout.writelines(difflib.unified_diff(
                    have.get(name, "").splitlines(True), want.get(name, "").splitlines(True),
                    f"deploy/nats/streams/{name}", f"{name} (as the code creates it)"))
        if stale:
            print("deploy/nats/streams/ is stale: run deploy/nats/streams.py", file=sys.stderr)
            return 1
        return 0
    os.makedirs(OUT, exist_ok=True)
    for name in set(have) - set(want):
        os.unlink(os.path.join(OUT, name))
    for name, text in want.items():
        with open(os.path.join(OUT, name), "w") as f:
            f.write(text)
    print(f"wrote {len(want)} stream configs to deploy/nats/streams/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
