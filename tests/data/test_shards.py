# SPDX-License-Identifier: Apache-2.0
"""Token shards (data/shards.py): the dtype follows the vocabulary, ids round-trip, bad ids and truncation refused."""

import numpy as np
import pytest

from nemotron_elastic.data.shards import Shard, token_dtype, write_shard


def test_dtype_choice_by_vocab_size(tmp_path):
    assert token_dtype(4096) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(49152) == np.uint16
    with pytest.raises(ValueError, match="vocab_size"):
        token_dtype(0)
    # a 70,000-token vocabulary: ids above 65,535 must survive, so the shard is uint32
    write_shard(tmp_path / "big", [[69999, 65536, 5], [7]], vocab_size=70_000, eos_token_id=0)
    shard = Shard(tmp_path / "big")
    assert shard.tokens.dtype == np.uint32 and shard.tokens.tolist() == [69999, 65536, 5, 0, 7, 0]
    assert shard.document(1).tolist() == [7, 0] and len(shard) == 2


def test_out_of_vocabulary_ids_and_truncated_shards_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_shard(tmp_path / "bad", [[300]], vocab_size=300, eos_token_id=0)
    assert not list(tmp_path.iterdir())  # nothing half-written
    write_shard(tmp_path / "ok", [[1, 2, 3]], vocab_size=300, eos_token_id=0)
    data = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "ok.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="truncated or altered"):
        Shard(tmp_path / "ok")
