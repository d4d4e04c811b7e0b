"""The offline tasks' cache (noisynn.tasks.build) is checked against its manifest at every use (issue 25)."""

from __future__ import annotations

import hashlib

from noisynn.tasks.build import build, manifest


def _as_built(folder) -> bool:
    recorded = manifest(folder)["sha256"]
    return all(hashlib.sha256((folder / n).read_bytes()).hexdigest() == d for n, d in recorded.items())


def test_a_tampered_or_removed_cache_file_is_built_again(tmp_path):
    folder = build(tmp_path)
    assert _as_built(folder)
    data = folder / "noisynn_cloze.jsonl"
    data.write_bytes(data.read_bytes().replace(b"a", b"e", 1))
    assert build(tmp_path) == folder and _as_built(folder)
    (folder / "noisynn_next_sentence.yaml").unlink()
    assert build(tmp_path) == folder and _as_built(folder)
    (folder / "manifest.json").write_text("{not json")
    assert build(tmp_path) == folder and _as_built(folder)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # nothing left beside it


def test_damaged_files_names_what_differs_from_the_manifest(tmp_path):
    from noisynn.tasks.build import damaged_files

    folder = build(tmp_path)
    assert damaged_files(folder) == []
    (folder / "noisynn_cloze.yaml").write_text("task: other\n")
    (folder / "noisynn_next_sentence.jsonl").unlink()
    assert damaged_files(folder) == ["noisynn_cloze.yaml", "noisynn_next_sentence.jsonl"]
    (folder / "manifest.json").write_text("{not json")
    assert damaged_files(folder) == ["manifest.json"]
