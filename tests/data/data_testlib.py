# SPDX-License-Identifier: Apache-2.0
"""Helpers for the data-layer tests: small training texts."""

SMALL_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 10,
    "Wikipedia is a free online encyclopedia, written and maintained by volunteers. " * 15,
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ; , . ! ? ( ) [ ] { } " * 10,
]
