"""The container's health check (Dockerfile, compose.yaml): ask the server running next to it
for one of its probes and exit 0 when the answer is 200, 1 otherwise (with the reason).

    python deploy/healthcheck.py /healthz    # the process answers: the image's HEALTHCHECK
    python deploy/healthcheck.py /readyz     # ready for traffic: compose.yaml's replicas

It reads the server's own settings (the MODELPORT_* environment and MODELPORT_CONFIG), so it
asks the port the server listens on, and over HTTPS when the server serves TLS itself; the
certificate is not checked there, since it names the public host, not this address.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from modelport.core.catalog import ConfigError
from modelport.settings import load_settings

TIMEOUT_S = 4.0
WILDCARDS = ("", "0.0.0.0", "::")


def probe_url(path: str) -> tuple[str, ssl.SSLContext | None]:
    settings = load_settings()
    host = "127.0.0.1" if settings.host in WILDCARDS else settings.host
    if ":" in host:
        host = f"[{host}]"
    if settings.tls_cert is None:
        return f"http://{host}:{settings.port}{path}", None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return f"https://{host}:{settings.port}{path}", context


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    try:
        url, context = probe_url(path)
    except ConfigError as error:
        print(f"configuration error: {error}")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        print(f"{url}: HTTP {error.code} {error.read(2000).decode(errors='replace')}")
        return 1
    except (OSError, ValueError) as error:
        print(f"{url}: {error}")
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
