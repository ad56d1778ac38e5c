# SPDX-License-Identifier: Apache-2.0
"""Self-contained Hugging Face modeling code for sub-models that stock transformers cannot load.

transformers 5.24 accepts `per_layer_config` in `NemotronHConfig` / `LlamaConfig`, but their modeling code
reads the global `intermediate_size` / `num_attention_heads` / `mamba_num_heads` and raises
`AmbiguousGlobalPerLayerAttributeError` for a model whose layers differ. A heterogeneous export therefore
carries its own modeling code (model_type "nemotron_elastic_hybrid", loaded through `auto_map` with
`trust_remote_code=True`).

Template files (copied verbatim into the export; they import only torch and transformers, never this package):

    configuration_elastic_hybrid.py   ElasticHybridConfig: pattern and per-layer widths
    ssd_elastic_hybrid.py             RMS norms and the chunked SSD scan (pure PyTorch)
    mixers_elastic_hybrid.py          Mamba2, grouped-query attention (optional RoPE), MLP
    modeling_elastic_hybrid.py        blocks, decoding cache, ElasticHybridModel / ElasticHybridForCausalLM

DeciLM / Llama-Nemotron exports (`../decilm.py`) copy `configuration_decilm.py` and `modeling_decilm.py` (Llama
decoder layers whose attention or MLP may be dropped) with the mixers and SSD files above.

`writer.py` (not copied) converts native configs and tensors to that format and back.
"""

from .writer import (
    AUTO_MAP,
    MODEL_TYPE,
    TEMPLATE_FILES,
    native_config_from_remote,
    remote_config,
    remote_to_native_state_dict,
    write_remote_code,
)

__all__ = [
    "AUTO_MAP",
    "MODEL_TYPE",
    "TEMPLATE_FILES",
    "native_config_from_remote",
    "remote_config",
    "remote_to_native_state_dict",
    "write_remote_code",
]
