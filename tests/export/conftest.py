# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the import / export tests (helpers live in export_testlib.py)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
