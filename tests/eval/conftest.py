# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the eval tests: one micro elastic checkpoint per session (helpers in eval_testlib.py).

Micro models are all tiny kernels, where OpenMP thread hand-offs cost more than the work on a busy 2-core
machine; every test here runs with one torch thread, restored afterwards (as tests/serve does).
"""

import pytest
import torch
from eval_testlib import make_elastic


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Nothing in these tests may reach a hub: with these set, datasets / huggingface_hub refuse to.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def elastic_dir(tmp_path_factory):
    return make_elastic(tmp_path_factory.mktemp("eval"))
