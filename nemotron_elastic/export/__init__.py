# SPDX-License-Identifier: Apache-2.0
"""Hugging Face interchange: key maps per family (`keymap.py`), configs (`hf_config.py`), HF folders (`hf.py`), GGUF (`gguf.py`)."""
