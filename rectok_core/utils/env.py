"""The process environment: offline detection (no network probes when told offline) and devices."""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


_PROBE_CACHE: dict[tuple[str, int], bool] = {}


_TRUE = {"1", "true", "yes", "on"}


HF_HOST = "huggingface.co"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE



#: Environment variables that each mean "no network": rectok's own and the Hugging Face ones.
OFFLINE_ENV_VARS = ("RECTOK_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> bool:
    """Whether the environment asks for no network at all (any of :data:`OFFLINE_ENV_VARS`)."""
    return any(_env_true(v) for v in OFFLINE_ENV_VARS)


def _mark_hf_offline() -> None:
    """Make huggingface_hub (and timm through it) skip the network instead of retrying."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and _env_true("HF_HUB_OFFLINE"):
        constants.HF_HUB_OFFLINE = True  # read once at import; patch the live value too


def _probe(host: str, port: int, timeout: float) -> bool:
    result = [False]

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = True
        except OSError:
            result[0] = False

    thread = threading.Thread(target=connect, name=f"rectok-probe-{host}", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # getaddrinfo ignores the socket timeout; never wait longer than this
    return result[0] and not thread.is_alive()


def network_available(host: str = HF_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection (at most ~``timeout`` s; the answer is cached).

    ``RECTOK_OFFLINE=1`` answers False for every host without probing, ``HF_HUB_OFFLINE=1`` for huggingface.co.
    A failed probe of huggingface.co (or either variable) sets ``HF_HUB_OFFLINE=1`` so later hub calls fail fast
    instead of retrying.
    """
    if _env_true("RECTOK_OFFLINE") or (host == HF_HOST and _env_true("HF_HUB_OFFLINE")):
        _mark_hf_offline()
        return False
    key = (host, port)
    if key not in _PROBE_CACHE:
        _PROBE_CACHE[key] = _probe(host, port, timeout)
        if not _PROBE_CACHE[key]:
            logger.info("%s:%d is unreachable: working offline", host, port)
    if not _PROBE_CACHE[key] and host == HF_HOST:
        _mark_hf_offline()
    return _PROBE_CACHE[key]



#: The most data-loading worker processes used by default (per process).
MAX_DEFAULT_WORKERS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's limit), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """The default number of data-loading workers: ``min(4, CPUs available)`` -- never more than PyTorch's
    DataLoader itself suggests for the machine."""
    return min(MAX_DEFAULT_WORKERS, available_cpus())


#: How option help states that default (e.g. "default: auto = min(4, CPUs available), 2 here").
WORKERS_DEFAULT = f"default: auto = min({MAX_DEFAULT_WORKERS}, CPUs available), {default_workers()} here"


def cache_dir() -> Path:
    """rectok's cache root: ``$RECTOK_CACHE``, else ``$XDG_CACHE_HOME/rectok``, else ``~/.cache/rectok``."""
    if os.environ.get("RECTOK_CACHE"):
        return Path(os.environ["RECTOK_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "rectok"
    return Path.home() / ".cache" / "rectok"
