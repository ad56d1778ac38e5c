# SPDX-License-Identifier: Apache-2.0
"""DecodeLoop (serve/decode_loop.py): the model is loaded on the thread that decodes with it (the process'
one thread running PyTorch's parallel regions), a loading error reaches the caller unchanged, and the loop
then refuses work in one line."""

import threading

import pytest
import torch

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.batcher import ContinuousBatcher, SequenceRequest
from nemotron_elastic.serve.decode_loop import DecodeLoop


def _tiny() -> HybridLM:
    model = HybridLM(ModelConfig(pattern="M-*", vocab_size=37, hidden_size=16, num_attention_heads=2,
                                 num_key_value_heads=1, head_dim=8, intermediate_size=24, mamba_num_heads=2,
                                 mamba_head_dim=8, mamba_n_groups=1, ssm_state_size=4, chunk_size=4))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def test_the_decoding_thread_loads_the_model_and_decodes():
    threads = {}

    def load():
        threads["load"] = threading.current_thread()
        return _tiny()

    def make(model):
        threads["batcher"] = threading.current_thread()
        return ContinuousBatcher(model)

    loop = DecodeLoop(load, make)
    model = loop.model()
    assert threads["load"] is threads["batcher"] is loop._thread is not threading.current_thread()
    ticket = loop.submit(SequenceRequest([1, 2, 3], 4, None, 0.0))
    events = [ticket.events.get(timeout=30) for _ in range(4)]
    assert [e.finish for e in events] == [None, None, None, "length"]
    want = ContinuousBatcher(model)
    rid = want.submit(SequenceRequest([1, 2, 3], 4, None, 0.0))
    assert [e.token for e in events] == [e.token for e in want.run()[rid]]
    loop.close()


def test_a_loading_error_reaches_the_caller_and_the_loop_refuses_work():
    def load():
        raise ValueError("runs/missing: no checkpoint here")

    loop = DecodeLoop(load, ContinuousBatcher)
    with pytest.raises(ValueError, match="no checkpoint here"):
        loop.model()
    with pytest.raises(RuntimeError, match="closed"):
        loop.submit(SequenceRequest([1], 1, None, 0.0))
    loop.close()  # nothing left to stop: returns at once
