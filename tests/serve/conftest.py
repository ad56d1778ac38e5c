# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the serving tests: one micro elastic checkpoint, one engine, one server per module.

Decoding a micro model is all tiny kernels, where OpenMP thread hand-offs cost more than the work (one
thread: ~5 ms per token; two on a busy 2-core machine: up to 150 ms). The server's default gives each of
its K workers cores/K threads; here every test runs with one torch thread, restored afterwards.
"""

import pytest
import torch
from serve_testlib import make_elastic_checkpoint

from nemotron_elastic.serve.engine import ManyInOneEngine
from nemotron_elastic.serve.server import ElasticServer


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def elastic_dir(tmp_path_factory):
    return make_elastic_checkpoint(tmp_path_factory.mktemp("serve") / "micro")


@pytest.fixture(scope="session")
def engine(elastic_dir):
    return ManyInOneEngine(elastic_dir)


@pytest.fixture(scope="module")
def server(engine):
    srv = ElasticServer(engine, port=0, max_concurrency=2, max_queue=16, quiet=True).start()
    yield srv
    srv.shutdown(grace=1.0)
