"""A RabbitMQ node owned by one test, which the test may kill and restart.

The machine's own broker (5672) is shared by every test and must never be disturbed, so fault
tests get a node of their own: its own node name, AMQP and distribution ports, data, logs,
config and Erlang cookie, all under `base_dir`. Nothing is read from /etc/rabbitmq.

We run the scripts in Debian's /usr/lib/rabbitmq/bin, not the /usr/sbin wrappers: run as root,
those switch to the `rabbitmq` user (who cannot enter a root-owned pytest tmp dir), use the
machine node's cookie, and send the server's output to the machine node's startup log.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from shared.errors import BrokerUnavailable
from shared.messaging import admin
from tests.support.network import free_ports
from tests.support.processes import kill_process_group, stop_process_group

RABBITMQ_BIN_DIR = Path("/usr/lib/rabbitmq/bin")  # where Debian's package keeps the real scripts
CTL_TIMEOUT_S = 60
# Mnesia keeps queue metadata in dets tables it syncs lazily (every few minutes); a node
# SIGKILLed before that can come back without a queue declared just before. Sync them first.
FLUSH_EXPRESSION = "[dets:sync(T) || T <- dets:all()]."


class RabbitNode:
    """One RabbitMQ node under `base_dir`; its AMQP port stays the same across restarts."""

    def __init__(
        self, base_dir: Path, *, cookie: str | None = None, tls_dir: Path | None = None, management: bool = False
    ) -> None:
        """`cookie`: the Erlang cookie, shared by the nodes of one cluster; a fresh one by default.

        `tls_dir`: a folder with cert.pem and key.pem (deploy/compose/new-cert.sh writes them);
        the node then also listens for AMQP over TLS, at `amqps_url`.
        `management`: the management plugin's HTTP API too, at `management_url`.
        """
        self.base_dir = base_dir
        self._cookie = cookie or uuid.uuid4().hex.upper()
        self.node_name = f"slc-test-{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_port, self.dist_port, amqps_port, management_port = free_ports(4)
        self._management_port = management_port if management else None
        self.management_url = f"http://127.0.0.1:{management_port}" if management else None
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"
        self._tls_dir = tls_dir
        self.amqps_port = amqps_port if tls_dir else None
        self.amqps_url = f"amqps://guest:guest@127.0.0.1:{self.amqps_port}/%2F" if tls_dir else None
        self.log_path = base_dir / "log" / "server-output.log"
        self._process: subprocess.Popen | None = None
        self._write_files()

    def _write_files(self) -> None:
        (self.base_dir / "log").mkdir(parents=True, exist_ok=True)
        (self.base_dir / "mnesia").mkdir(exist_ok=True)
        plugins = "rabbitmq_management" if self._management_port else ""
        (self.base_dir / "enabled_plugins").write_text(f"[{plugins}].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out\n")
        # guest may log in from loopback only, which is RabbitMQ's default; said here so it is seen.
        config = f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\nloopback_users.guest = true\n"
        if self._management_port:
            config += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self._management_port}\n"
        if self._tls_dir is not None:
            # The server presents cert.pem (the chain) and asks no certificate of its clients.
            config += (
                f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}\n"
                f"ssl_options.certfile = {self._tls_dir / 'cert.pem'}\n"
                f"ssl_options.keyfile = {self._tls_dir / 'key.pem'}\n"
                "ssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
        (self.base_dir / "rabbitmq.conf").write_text(config)
        cookie = self.base_dir / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)  # Erlang refuses a cookie file others can read

    def _env(self) -> dict[str, str]:
        """The environment of the server and of rabbitmqctl: only our node, our files."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base_dir),  # both sides read the cookie from $HOME/.erlang.cookie
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base_dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.base_dir / "node.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 90) -> None:
        """Start the node and return once an AMQP connection succeeds."""
        if self.running:
            return
        self._kill_group()  # reaps a node that died on its own, with anything left of it
        with open(self.log_path, "a") as log:
            # Its own session and process group, so kill() reaches every process of the node.
            self._process = subprocess.Popen(
                [str(RABBITMQ_BIN_DIR / "rabbitmq-server")],
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_for_amqp(timeout_s)

    def _wait_for_amqp(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"RabbitMQ node {self.node_name} exited during start-up:\n{self._log_tail()}")
            try:
                admin.ping(self.amqp_url, timeout_s=0)
                return
            except BrokerUnavailable:
                time.sleep(0.5)
        raise TimeoutError(f"RabbitMQ node {self.node_name} gave no AMQP within {timeout_s}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ctl(self, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
        """Run rabbitmqctl against this node only (always with -n) and return its output."""
        result = subprocess.run(
            [str(RABBITMQ_BIN_DIR / "rabbitmqctl"), "-n", self.node_name, *args],
            env=self._env(),
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def flush(self) -> None:
        """Write the node's metadata tables to disk, so a SIGKILL right after loses no declaration."""
        self.ctl("eval", FLUSH_EXPRESSION)

    def kill(self) -> None:
        """Flush metadata, then SIGKILL every process of the node, like a machine losing power."""
        if not self.running:
            self._kill_group()
            return
        try:
            self.flush()
        finally:
            self._kill_group()

    def _kill_group(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            kill_process_group(process)

    def stop(self, timeout_s: float = 60) -> None:
        """Stop the node cleanly (SIGTERM runs RabbitMQ's orderly shutdown); SIGKILL if it overstays."""
        if self._process is not None:
            process, self._process = self._process, None
            stop_process_group(process, timeout_s)

    def restart(self, timeout_s: float = 90) -> None:
        """Clean stop, then start on the same ports and data."""
        self.stop()
        self.start(timeout_s)
