# SPDX-License-Identifier: Apache-2.0
"""Activation checkpointing (`HybridLM.forward(checkpoint_every=k)`): the same loss and the same gradients
as keeping every activation, for the parent and for a sub-model whose masks carry router gradients (float64),
and fewer tensors saved for backward."""

import pytest
import torch

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.masks import Axis, ElasticMasks

CFG = ModelConfig(
    pattern="M-*M-*", vocab_size=53, hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=4,
    intermediate_size=20, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3, ssm_state_size=3, chunk_size=4,
)
LLAMA = ModelConfig(
    family="llama", pattern="*-*-", vocab_size=53, hidden_size=24, num_attention_heads=6, num_key_value_heads=3,
    head_dim=4, rope_theta=500.0, intermediate_size=20, mlp_gated=True, mlp_activation="silu",
)


def _model(cfg: ModelConfig) -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    return model.double()


def _masks(model: HybridLM, scale: torch.Tensor) -> ElasticMasks:
    """A sub-model (sliced hidden, MLP, heads) whose hidden axis is scaled by `scale`, as the router's
    probability scales it during training."""
    spec = SubnetSpec.from_dict({"hidden": 18, "mlp": 10, "mamba_heads": 3}, model.config)
    masks = ElasticMasks.from_spec(spec)
    return ElasticMasks(Axis(masks.hidden.size, scale=scale), masks.mamba_head_dim, masks.layers)


def _loss_and_grads(model: HybridLM, ids: torch.Tensor, every: int, sub: bool):
    model.zero_grad(set_to_none=True)
    scale = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    subnet = _masks(model, scale) if sub else None
    logits = model(ids[:, :-1], subnet=subnet, checkpoint_every=every)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if sub:
        grads["router_scale"] = scale.grad.clone()
    return loss.detach(), grads


@pytest.mark.parametrize("cfg", [CFG, LLAMA], ids=["hybrid", "llama"])
@pytest.mark.parametrize("sub", [False, True], ids=["parent", "sub-model"])
@pytest.mark.parametrize("every", [1, 2])
def test_same_loss_and_gradients(cfg, sub, every):
    model = _model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    loss0, grads0 = _loss_and_grads(model, ids, 0, sub)
    loss1, grads1 = _loss_and_grads(model, ids, every, sub)
    assert torch.allclose(loss0, loss1, rtol=0, atol=1e-10)
    assert grads0.keys() == grads1.keys() and len(grads0) > 10
    for name in grads0:
        assert torch.allclose(grads0[name], grads1[name], rtol=0, atol=1e-10), name


def _saved_bytes(model: HybridLM, ids: torch.Tensor, every: int) -> int:
    """Bytes of the distinct storages saved for backward (parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, checkpoint_every=every).sum().backward()
    return sum(seen.values())


def test_checkpointing_saves_less_for_backward():
    model = _model(CFG)
    ids = torch.randint(0, CFG.vocab_size, (2, 32), generator=torch.Generator().manual_seed(2))
    full, every_other, each = (_saved_bytes(model, ids, k) for k in (0, 2, 1))
    assert each < every_other < full


def test_no_effect_without_grad_or_with_a_cache():
    model = _model(CFG)
    ids = torch.randint(0, CFG.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids, checkpoint_every=1))
