"""Checkpoint file names of a run directory, as the store reads them."""

from __future__ import annotations

from greenshift.store.checkpoints import continuation_checkpoints


def test_continuation_checkpoints_carry_their_configuration_key(tmp_path):
    assert continuation_checkpoints(tmp_path) == []  # no checkpoint folder yet
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("continue-0123abcd-s0.pt", "continue-ffff0000-s12.pt", "model-0123abcd-s0-e9.pt", "x.pt"):
        (folder / name).write_bytes(b"")
    assert continuation_checkpoints(tmp_path) == [
        ("0123abcd", folder / "continue-0123abcd-s0.pt"),
        ("ffff0000", folder / "continue-ffff0000-s12.pt"),
    ]


def test_the_store_reads_the_names_the_search_writes(tmp_path):
    from greenshift.search.trial import continuation_checkpoint

    path = continuation_checkpoint(tmp_path, "9f86d081884c7d65", 3)
    path.parent.mkdir()
    path.write_bytes(b"")
    assert continuation_checkpoints(tmp_path) == [("9f86d081884c7d65", path)]
