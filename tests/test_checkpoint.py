import json

import pytest
import torch

from learngene.checkpoint import has_checkpoint, load_latest, save_checkpoint
from learngene.errors import CheckpointError


def test_roundtrip_and_retention(tmp_path):
    for e in range(4):
        save_checkpoint(tmp_path, {"w": torch.full((3,), float(e)), "epoch": e}, task=0, epoch=e)
    assert has_checkpoint(tmp_path)
    state = load_latest(tmp_path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.full((3,), 3.0))
    assert len(list(tmp_path.glob("ckpt-*.pt"))) == 2


def test_tampered_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, {"w": torch.zeros(100)}, task=1, epoch=0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256|checksum"):
        load_latest(tmp_path)


def test_pointer_to_missing_file(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(1)}, task=0, epoch=1)
    pointer = json.loads((tmp_path / "latest.json").read_text())
    (tmp_path / pointer["file"]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_latest(tmp_path)
