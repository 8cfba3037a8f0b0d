"""nginx as customers put it in front of their endpoint: a reverse proxy with a body limit,
started on 127.0.0.1 for tests and the bench."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.ports import free_port


class NginxError(RuntimeError):
    """nginx is missing or did not start."""


class Nginx:
    """nginx on 127.0.0.1 proxying to ``upstream`` with a body limit; its access log gives
    the status of every request it answered."""

    def __init__(self, folder: Path, upstream_port: int, body_limit_kb: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise NginxError("nginx is not installed: `.ci/system-packages` installs it")
        self.port = free_port()
        self.log = folder / "access.log"
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir()
        (folder / "nginx.conf").write_text(
            f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 128; }}
http {{
    log_format statuses '$status $request_length';
    access_log {self.log} statuses;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    client_max_body_size {body_limit_kb}k;
    # Bodies in memory: nginx's workers (not root) could not write temp files in here.
    client_body_buffer_size 1m;
    proxy_buffering off;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise NginxError(f"nginx did not start: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise NginxError("nginx did not listen within 30 s") from None
                time.sleep(0.05)

    def statuses(self) -> Counter[int]:
        return Counter(int(line.split()[0]) for line in self.log.read_text().splitlines())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
