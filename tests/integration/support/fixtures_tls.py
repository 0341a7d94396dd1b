"""The certificates of the mutual TLS tests (support/tls.py), per test module that asks for them."""
from __future__ import annotations

import pytest

from support.tls import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))
