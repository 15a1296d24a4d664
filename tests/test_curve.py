"""CURVE on: an actor whose key is on the allow-list registers; an unknown key is refused."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import zmq

from bus.client import BrokerClient
from bus.curve import load_keypair, make_client
from bus.envelope import encode
from bus.schema import envelope_for
from bus.schema.system import Ping
from bus.topology import load_topology
from tests.support import BrokerPorts, Processes, duplex, free_port, metric, wait_until


def curve_topology(ports: BrokerPorts, tmp: Path, keys: Path, actor_key: str) -> Path:
    folder = tmp / f"topo-{actor_key}"
    folder.mkdir()
    return ports.topology(
        folder,
        extra=(
            "curve:\n"
            "  enabled: true\n"
            f"  keys_dir: {keys}\n"
            "  broker_key: broker\n"
            f"  actor_key: {actor_key}\n"
            f"  allow_dir: {tmp / 'keys' / 'allowed'}\n"
        ),
    )


def status_ids(topology: Path, ports: BrokerPorts) -> set[str] | None:
    result = duplex(
        "status",
        "--json",
        "--topology",
        str(topology),
        "--broker",
        ports.endpoint,
        "--timeout",
        "1",
    )
    if result.returncode != 0:
        return None
    return {a["actor_id"] for a in json.loads(result.stdout)["actors"]}


def test_allowed_key_registers_and_unknown_key_is_refused(procs: Processes, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert duplex("keys", "broker", "--dir", str(keys)).returncode == 0
    made = duplex("keys", "actor", "--dir", str(keys), "--allow", str(keys / "allowed"))
    assert made.returncode == 0, made.stderr
    assert (keys / "allowed" / "actor.key").is_file()
    assert oct((keys / "actor.key_secret").stat().st_mode)[-3:] == "600"
    again = duplex("keys", "actor", "--dir", str(keys))
    assert again.returncode != 0 and "exists" in again.stderr  # never overwrites a key

    # An intruder has its own key pair and the broker's public key, but is not on the list.
    intruder_keys = tmp_path / "intruder-keys"
    assert duplex("keys", "intruder", "--dir", str(intruder_keys)).returncode == 0
    shutil.copy(keys / "broker.key", intruder_keys / "broker.key")

    ports = BrokerPorts.pick()
    good = curve_topology(ports, tmp_path, keys, "actor")
    bad = curve_topology(ports, tmp_path, intruder_keys, "intruder")
    metrics_port = free_port()
    broker = procs.duplex(
        "broker", "--topology", str(good), "--metrics-port", str(metrics_port), name="broker"
    )
    procs.duplex("run", "loopback", "--topology", str(good), "--id", "trusted", name="trusted")
    intruder = procs.duplex(
        "run", "loopback", "--topology", str(bad), "--id", "intruder", name="intruder"
    )

    wait_until(lambda: status_ids(good, ports) == {"trusted"}, 15, "the trusted actor listed")
    wait_until(lambda: "curve client refused" in procs.log_of(broker), 10, "the refusal logged")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    assert metric(url, "duplex_broker_curve_refused_total") >= 1
    time.sleep(1.0)  # the intruder keeps trying; it must still be absent
    assert status_ids(good, ports) == {"trusted"}
    assert intruder.poll() is None  # refused, not crashed: it keeps retrying
    # Without CURVE a client cannot even ask.
    plain = ports.topology(tmp_path)
    assert status_ids(plain, ports) is None

    # Actor inboxes check the same allow-list: an allowed key gets a pong, the intruder's none.
    with BrokerClient(ports.endpoint, curve_config=load_topology(good).broker.curve) as client:
        (trusted,) = client.discover("loopback").actors
    inbox = trusted.endpoints["inbox"]
    assert trusted.public_key  # peers learn the inbox's server key from the registration

    def ping_inbox(key_dir: Path, name: str) -> bool:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            make_client(
                sock, load_keypair(key_dir / f"{name}.key_secret"), trusted.public_key.encode()
            )
            sock.connect(inbox)
            sock.send_multipart(encode(envelope_for(Ping())))
            return bool(sock.poll(1500, zmq.POLLIN))
        finally:
            ctx.destroy(linger=0)

    assert ping_inbox(keys, "actor")
    assert not ping_inbox(intruder_keys, "intruder")
