"""The etcd cluster (support/etcd.py), per test module that asks for it."""
from __future__ import annotations

from typing import Iterator

import pytest

from support.etcd import EtcdCluster


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield c
    finally:
        c.stop()
