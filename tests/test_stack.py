"""The local stack against the real servers: Neo4j over Bolt, S3Proxy over signed S3, Browser over HTTP.

One module-scoped stack in a temporary state dir on free, non-default ports, so a user's own stack
is never touched. The Maven build goes to a shared cache dir (NEURFLOW_STACK_BUILD_DIR) so that only
the first run on a machine pays for it. Tests run in file order: up, use, status, up again,
restart, down.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import stat
import struct
import urllib.request
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

from graphmodel.stack import StackError, down, restart_neo4j, s3_client, status, up
from graphmodel.stack.config import StackConfig
from tests.services import free_ports, stack_env

SERVICES = ("neo4j", "s3", "guide")
# Quotes, a backslash, a space and a comment sign: the admin tool's argument file must keep them.
AWKWARD_PASSWORD = "-a \"quoted\\ pass' #word"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with stack_env(tmp_path_factory.mktemp("stack-state")) as cfg:
        cfg = dataclasses.replace(cfg, neo4j_password=AWKWARD_PASSWORD)
        try:
            yield cfg, up(cfg, timeout=240)
        finally:
            down(cfg)


def _driver(cfg: StackConfig, password: str):
    return GraphDatabase.driver(cfg.neo4j_uri, auth=(cfg.neo4j_user, password))


def test_up_starts_every_service_healthy(stack):
    cfg, report = stack
    assert set(report) == set(SERVICES)
    for service in SERVICES:
        assert report[service]["healthy"] and report[service]["started"], report[service]
    assert report["neo4j"]["address"] == cfg.neo4j_uri
    assert cfg.neo4j_uri != "bolt://127.0.0.1:7687"


def test_neo4j_answers_with_the_configured_password(stack):
    cfg, _ = stack
    with _driver(cfg, cfg.neo4j_password) as driver:
        records, _, _ = driver.execute_query("RETURN 1 AS one")
        assert records[0]["one"] == 1
        driver.execute_query("MERGE (:StackProbe {name: $name})", name="kept-across-restart")
        records, _, _ = driver.execute_query("CALL dbms.components() YIELD versions, edition")
        assert records[0]["edition"] == "community"
        assert records[0]["versions"][0].startswith("5.26")


@pytest.mark.parametrize("password", ["wrong-password", "neo4j"])
def test_neo4j_rejects_a_wrong_or_default_password(stack, password):
    cfg, _ = stack
    with _driver(cfg, password) as driver, pytest.raises(AuthError):
        driver.execute_query("RETURN 1")


def _ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def test_bolt_port_speaks_bolt_over_websocket_for_browser(stack):
    """Neo4j Browser talks Bolt inside WebSocket frames to the Bolt port."""
    cfg, _ = stack
    host, port = cfg.neo4j_address
    with socket.create_connection((host, port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {cfg.browser_url.rstrip('/')}\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        head, _, rest = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # Bolt handshake: magic, then four proposals; 0x00 0x07 0x07 0x05 means 5.7 down to 5.0.
        proposal = struct.pack(">I", 0x6060B017) + bytes([0, 7, 7, 5]) + bytes(12)
        sock.sendall(_ws_frame(proposal))
        while len(rest) < 6:
            rest += sock.recv(4096)
        assert rest[0] == 0x82 and rest[1] == 4, rest
        assert rest[2 + 3] == 5, f"server chose Bolt {rest[2 + 3]}.{rest[2 + 2]}"


def test_s3_round_trip_with_signed_requests(stack):
    cfg, _ = stack
    client = s3_client(cfg)
    assert cfg.s3_bucket in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    bucket = "roundtrip-" + uuid.uuid4().hex[:8]
    client.create_bucket(Bucket=bucket)
    body = os.urandom(2048)
    client.put_object(Bucket=bucket, Key="patches/ab/cd.png", Body=body, ContentType="image/png")
    assert client.get_object(Bucket=bucket, Key="patches/ab/cd.png")["Body"].read() == body
    head = client.head_object(Bucket=bucket, Key="patches/ab/cd.png")
    assert head["ContentLength"] == len(body)
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket=bucket, Key="patches/none.png")
    assert missing.value.response["Error"]["Code"] in {"404", "NoSuchKey"}


def test_s3_rejects_a_wrong_secret(stack):
    cfg, _ = stack
    wrong = dataclasses.replace(cfg, s3_secret_key="not-" + cfg.s3_secret_key)
    with pytest.raises(ClientError) as denied:
        s3_client(wrong).list_buckets()
    assert denied.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_neo4j_serves_browser_with_its_own_discovery(stack):
    cfg, report = stack
    assert report["neo4j"]["browser"] == cfg.browser_url
    assert (
        cfg.browser_url
        == f"http://127.0.0.1:{cfg.browser_port}/browser/?dbms=bolt://neo4j@127.0.0.1:{cfg.neo4j_address[1]}"
    )
    with urllib.request.urlopen(cfg.browser_url, timeout=5) as response:
        assert response.status == 200
        assert "<title>Neo4j Browser</title>" in response.read().decode()
    root = f"http://127.0.0.1:{cfg.browser_port}/"
    request = urllib.request.Request(root, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        discovery = json.load(response)
    assert discovery["bolt_direct"] == cfg.neo4j_uri and discovery["neo4j_edition"] == "community"
    cmdline = Path(f"/proc/{report['neo4j']['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"org.neo4j.server.CommunityEntryPoint" in cmdline  # Neo4j's own server, not a launcher
    conf = (cfg.state_dir / "neo4j" / "conf" / "neo4j.conf").read_text()
    assert f"server.bolt.listen_address={cfg.neo4j_address[0]}:{cfg.neo4j_address[1]}" in conf
    assert f"browser.post_connect_cmd=play {cfg.guide_url}" in conf


def test_browser_reads_the_client_config_that_plays_the_guide(stack):
    cfg, _ = stack
    with _driver(cfg, cfg.neo4j_password) as driver:
        records, _, _ = driver.execute_query("CALL dbms.clientConfig() YIELD name, value RETURN name, value")
    config = {record["name"]: record["value"] for record in records}
    assert "127.0.0.1" in config["browser.remote_content_hostname_whitelist"].split(",")
    assert config["browser.post_connect_cmd"] == f"play {cfg.guide_url}"
    with urllib.request.urlopen(cfg.guide_url, timeout=5) as response:
        assert "<slide" in response.read().decode()


def test_status_reports_every_service_healthy(stack):
    cfg, report = stack
    now = status(cfg)
    for service in SERVICES:
        assert now[service]["running"] and now[service]["healthy"], now[service]
        assert now[service]["pid"] == report[service]["pid"]


def test_up_again_is_a_no_op(stack):
    cfg, report = stack
    again = up(cfg)
    for service in SERVICES:
        assert again[service]["pid"] == report[service]["pid"]
        assert not again[service]["started"]


def test_secrets_stay_out_of_command_lines_reprs_and_open_files(stack):
    cfg, report = stack
    secrets = (cfg.neo4j_password, cfg.s3_secret_key)
    for service in SERVICES:
        cmdline = Path(f"/proc/{report[service]['pid']}/cmdline").read_bytes().decode()
        assert not any(secret in cmdline for secret in secrets), service
    assert not any(secret in repr(cfg) for secret in secrets)
    for path in (cfg.state_dir / "credentials.json", cfg.state_dir / "s3proxy" / "s3proxy.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not list((cfg.state_dir / "run").glob("*.args"))  # neo4j-admin's argument file is gone
    assert AWKWARD_PASSWORD not in (cfg.state_dir / "neo4j" / "conf" / "neo4j.conf").read_text()


def test_a_port_held_by_another_process_is_reported(stack, tmp_path):
    cfg, _ = stack
    (port,) = free_ports(1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        other = dataclasses.replace(cfg, state_dir=tmp_path, s3_endpoint=f"http://127.0.0.1:{port}")
        with pytest.raises(StackError, match=f"127.0.0.1:{port} is already in use") as refused:
            up(other, neo4j=False, guide=False)
    assert f"pid {os.getpid()}" in str(refused.value)  # who holds it, found through psutil


def test_a_pid_file_names_a_process_only_while_that_very_process_runs(tmp_path):
    import psutil

    from graphmodel.stack import processes

    pid_file = tmp_path / "x.pid"
    me = psutil.Process(os.getpid())
    marker = Path(me.cmdline()[0]).name
    started = processes._started(os.getpid())
    assert started is not None and started == processes._started(os.getpid())
    if Path("/proc/uptime").exists():  # Linux: seconds since boot, whatever the wall clock says
        assert 0 < started <= float(Path("/proc/uptime").read_text().split()[0])
    pid_file.write_text(json.dumps({"pid": os.getpid(), "started": started}))
    assert processes.running_pid(pid_file, marker) == os.getpid()
    pid_file.write_text(json.dumps({"pid": os.getpid(), "started": started - 5}))  # a recycled pid
    assert processes.running_pid(pid_file, marker) is None and not pid_file.exists()
    pid_file.write_text(json.dumps({"pid": os.getpid(), "created": 123.0}))  # an older version's file
    assert processes.running_pid(pid_file, marker) == os.getpid()
    assert processes.running_pid(pid_file, "not-this-command") is None


def test_restart_neo4j_after_a_kill_keeps_the_data(stack):
    cfg, report = stack
    entry = restart_neo4j(cfg, hard=True)
    assert entry["healthy"] and entry["pid"] != report["neo4j"]["pid"]
    with _driver(cfg, cfg.neo4j_password) as driver:
        records, _, _ = driver.execute_query("MATCH (p:StackProbe) RETURN p.name AS name")
    assert [record["name"] for record in records] == ["kept-across-restart"]


def test_down_stops_everything_and_frees_the_ports(stack):
    cfg, _ = stack
    down(cfg)
    now = status(cfg)
    for service in SERVICES:
        assert not now[service]["running"] and now[service]["pid"] is None, now[service]
    for _, port in (cfg.neo4j_address, cfg.s3_address, cfg.browser_address, cfg.guide_address):
        assert not _port_open(port)


def test_the_guide_alone_needs_no_java_build(stack, tmp_path):
    """As beside a Neo4j in Docker: `up` of the guide only starts a Python server; Maven and the
    Java build are never touched (the build dir stays empty)."""
    cfg, _ = stack
    (port,) = free_ports(1)
    bare = dataclasses.replace(cfg, state_dir=tmp_path, build_dir=tmp_path / "no-build", guide_port=port)
    try:
        report = up(bare, neo4j=False, s3=False, guide=True, timeout=30)
        assert list(report) == ["guide"] and report["guide"]["healthy"]
        assert not (tmp_path / "no-build").exists()
        with urllib.request.urlopen(bare.guide_url, timeout=5) as response:
            page = response.read().decode()
        assert "<slide" in page
    finally:
        down(bare)
