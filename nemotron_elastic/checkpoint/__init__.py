# SPDX-License-Identifier: Apache-2.0
"""Every on-disk model format, read and written.

- `native.py`: the project's own folder (config.yaml + model.safetensors);
- `hf.py`, `hf_config.py`, `keymap.py`: Hugging Face NemotronH / Llama folders (configs and tensor names),
  and `remote_code/`, the modeling code shipped with sub-models no stock class can express;
- `gguf.py`: GGUF files, through transformers;
- `load.py`: `load_model` for any of them;
- `elastic.py`: the elastic checkpoint (weights + router + the SubnetSpec of every budget).
"""

from .load import build_model, load_model, read_checkpoint
from .native import native_state_dict, read_native, save_native

__all__ = ["build_model", "load_model", "native_state_dict", "read_checkpoint", "read_native", "save_native"]
