"""nginx as the near-zero-overhead reference proxy (Debian's nginx, proxy_buffering off).

One worker process, like infermeter's one event loop, so CPU per event compares like with
like. Runs from a temporary prefix on loopback; nothing of the system's nginx is touched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from harness import http_client
from harness.sidecar import free_port, wait_for

CONFIG = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream inference {{ server {upstream}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://inference;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


def binary() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH)."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def available() -> bool:
    return binary() is not None


@contextmanager
def nginx_proxy(upstream: str) -> Iterator[tuple[str, int]]:
    """(proxy URL, nginx worker PID) in front of `upstream` (http://host:port)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        prefix.chmod(0o755)
        conf = prefix / "nginx.conf"
        conf.write_text(CONFIG.format(prefix=prefix, port=port, upstream=upstream.split("//")[1]))
        nginx = binary()
        if nginx is None:
            raise FileNotFoundError("nginx is not installed")
        proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _up(url), what="nginx")
            worker = _worker_pid(proc.pid)
            yield url, worker
        finally:
            proc.terminate()
            proc.wait(10)


def _up(url: str) -> bool:
    try:
        return http_client.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _worker_pid(master: int) -> int:
    import psutil

    children = psutil.Process(master).children()
    return children[0].pid if children else master
