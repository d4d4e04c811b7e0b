import time

import pytest
import torch

from noisynn.errors import NoisyNNError
from noisynn.models.loading import load_model
from noisynn.models.devices import resolve_device, resolve_dtype


def test_local_folder_loads_with_left_padding(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    assert lm.info["source"] == "folder" and lm.info["n_params"] > 0
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert not lm.model.training


def test_bfloat16_on_cpu(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16 and lm.info["dtype"] == "bfloat16"


def test_device_and_dtype_errors():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(NoisyNNError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(NoisyNNError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(NoisyNNError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))


def test_offline_hub_id_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(NoisyNNError) as err:
        load_model("gpt2-medium-not-cached-xyz")
    assert time.perf_counter() - start < 30
    msg = str(err.value)
    assert "smollm2-135m" in msg and "--model PATH" in msg and "\n" not in msg


def test_missing_paths():
    with pytest.raises(NoisyNNError, match="does not exist"):
        load_model("./missing-folder")
    with pytest.raises(NoisyNNError, match="does not exist"):
        load_model("missing.gguf")


@pytest.mark.integration
def test_embedded_model_facts(embedded):
    info = embedded.info
    assert info["source"] == "embedded" and info["architecture"] == "LlamaForCausalLM"
    assert info["n_params"] == 134_515_008 and info["tied_embeddings"]
    start = time.perf_counter()
    again = load_model("smollm2-135m", device="cpu")  # from the safetensors cache
    assert time.perf_counter() - start < 15
    assert all(torch.equal(a, b) for a, b in zip(embedded.model.state_dict().values(), again.model.state_dict().values()))


@pytest.mark.integration
def test_gguf_file_path_loads_same_weights(embedded):
    from noisynn.models.embedded import embedded_gguf_path

    lm = load_model(str(embedded_gguf_path("smollm2-135m")), device="cpu")
    assert lm.info["source"] == "gguf" and lm.info["fingerprint"] == embedded.info["fingerprint"]
    a = lm.model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(a, embedded.model.model.layers[0].self_attn.q_proj.weight)
