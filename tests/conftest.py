"""Fixtures: tiny randomly-initialised models built from a config (no downloads), a byte-level
tokenizer built in code, and the embedded SmolLM2-135M for integration tests (loaded once).
The functions behind them are in tests/helpers.py (also importable as ``from conftest import ...``)."""

from __future__ import annotations

import sys

import pytest

pytest.register_assert_rewrite("tests.helpers")
from tests.helpers import ROOT, byte_tokenizer, exits_2_with_one_line, tiny_gpt2, tiny_llama  # noqa: E402,F401

sys.modules.setdefault("conftest", sys.modules[__name__])  # `from conftest import tiny_llama` (test_original_api.py)


@pytest.fixture
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def gpt2():
    return tiny_gpt2()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny LLaMA saved as a local model folder, for CLI tests (--model PATH)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(layers=2).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(("The quick brown fox jumps over the lazy dog. " * 40).strip(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M (dequantized and cached on first use)."""
    from noisynn.models.loading import load_model

    return load_model("smollm2-135m", device="cpu")
