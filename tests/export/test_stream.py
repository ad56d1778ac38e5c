# SPDX-License-Identifier: Apache-2.0
"""The streamed safetensors writer (checkpoint/stream.py): what it writes is what safetensors reads back,
for every dtype and shape the models hold, and a wrong or missing tensor is an error."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nemotron_elastic.checkpoint.stream import DTYPES, SafetensorsStream, write_gathered
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.model import HybridLM


def test_streamed_file_reads_back_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(5, 3, generator=g),
        "b.half": torch.randn(7, generator=g).to(torch.bfloat16),
        "c.scalar": torch.tensor(3.5, dtype=torch.float64),
        "d.ids": torch.arange(6, dtype=torch.int64).view(2, 3),
        "e.empty": torch.empty(0, 4),
        "f.mask": torch.tensor([True, False, True]),
        "g.f16": torch.randn(3, 1, generator=g).half(),
    }
    stream = SafetensorsStream(tmp_path / "x.safetensors", [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()],
                               {"format": "pt"})
    for k, v in tensors.items():
        stream.write(k, v)
    stream.close()
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert set(DTYPES) >= {t.dtype for t in tensors.values()}


def test_a_model_streams_like_save_file(tmp_path):
    model = HybridLM(get_preset("micro-hybrid"))
    model.init_weights()
    write_gathered(model, tmp_path / "m.safetensors")
    back = load_file(str(tmp_path / "m.safetensors"))
    state = model.state_dict()
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_wrong_order_shape_or_a_missing_tensor_is_an_error(tmp_path):
    layout = [("a", (2,), torch.float32), ("b", (3,), torch.float32)]
    stream = SafetensorsStream(tmp_path / "y.safetensors", layout)
    with pytest.raises(ValueError, match="got b .* expected a"):
        stream.write("b", torch.zeros(3))
    stream = SafetensorsStream(tmp_path / "z.safetensors", layout)
    with pytest.raises(ValueError, match=r"got a \(3,\)"):
        stream.write("a", torch.zeros(3))
    stream = SafetensorsStream(tmp_path / "w.safetensors", layout)
    stream.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="1 tensors never written"):
        stream.close()
