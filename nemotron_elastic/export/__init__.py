# SPDX-License-Identifier: Apache-2.0
"""Hugging Face interchange: key maps and configs per family (`keymap.py`), HF folders (`hf.py`), GGUF (`gguf.py`)."""
