"""Tests never reach a network or a hub: sockets are limited to loopback, the Hub is offline,
and HF_HOME lives in a temporary folder."""

from __future__ import annotations

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise OSError(f"tests are offline: connection to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise OSError(f"tests are offline: connection to {address!r} blocked")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost") and not _is_loopback((host,)):
        raise OSError(f"tests are offline: name lookup of {host!r} blocked")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """Tiny pipelines are built and saved once per test session, then loaded with from_pretrained."""
    return tmp_path_factory.mktemp("tiny_pipelines")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory, tiny_cache):
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("ORIPID_TINY_CACHE", str(tiny_cache))
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    # huggingface_hub reads these once, at import, which may precede this fixture: a researcher's
    # real cache must not leak into a test (cached tokenizers or revisions would change results).
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield
