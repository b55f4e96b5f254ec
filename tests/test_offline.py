import socket

import pytest


def test_network_is_blocked():
    with pytest.raises(OSError, match="offline"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_hub_is_offline(monkeypatch):
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "hf_home" in os.environ["HF_HOME"]
