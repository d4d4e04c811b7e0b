"""Loading copies the mapped weights into process memory without ever holding them twice."""

import torch
from safetensors.torch import load_file, save_file

from noisynn.models.mapped import _file_mappings, _release_file_pages, materialize
from noisynn.models.loading import load_model


def _in_file(t, mapped):
    return any(a <= t.data_ptr() < b for a, b in mapped)


def test_loaded_weights_live_in_process_memory_with_the_file_values(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    mapped = _file_mappings()
    on_disk = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, p in lm.model.named_parameters():
        assert not _in_file(p, mapped), name
        if name in on_disk:
            assert torch.equal(p.detach(), on_disk[name]), name


def test_release_drops_file_pages_but_never_touches_anonymous_memory(tmp_path):
    anon = torch.arange(4 * 4096, dtype=torch.float32)
    _release_file_pages(anon, _file_mappings())
    assert torch.equal(anon, torch.arange(4 * 4096, dtype=torch.float32))
    save_file({"w": torch.arange(8 * 4096, dtype=torch.float32)}, str(tmp_path / "w.safetensors"))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        w = f.get_tensor("w")
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(w, requires_grad=False)
    materialize(model)
    assert torch.equal(model.w, torch.arange(8 * 4096, dtype=torch.float32))
