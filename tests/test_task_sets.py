"""Task fingerprints (noisynn.task_sets._fingerprint): data files by content in every form lm-eval takes, and
``!function`` helpers by name and source, the same in every process (issue 25)."""

from __future__ import annotations

import importlib.util
import json
import textwrap

from tests.helpers import run_python
from noisynn.task_sets import _fingerprint

HELPER = textwrap.dedent('''
    def process_docs(dataset):
        return dataset.map(lambda d: {"text": d["text"].strip()})
''')


def _config(data_files) -> dict:
    return {"task": "t", "dataset_path": "json", "dataset_kwargs": {"data_files": data_files}}


def test_a_plain_path_data_file_is_fingerprinted_by_its_content(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n')
    for form in (str(path), [str(path)], {"test": str(path)}, {"test": [str(path)]}):
        before, files = _fingerprint(_config(form))
        assert files
        path.write_text('{"text": "b"}\n')
        assert _fingerprint(_config(form))[0] != before, form
        path.write_text('{"text": "a"}\n')
        assert _fingerprint(_config(form))[0] == before, form


def test_the_same_data_elsewhere_has_the_same_fingerprint(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text('{"text": "a"}\n')
    two.write_text('{"text": "a"}\n')
    assert _fingerprint(_config(str(one)))[0] == _fingerprint(_config(str(two)))[0]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_config(fn) -> dict:
    return {"task": "t", "process_docs": fn, "filter_list": [{"name": "f", "filter": [{"function": fn}]}],
            "metadata": {"repr": repr(fn)}}


def test_a_function_is_fingerprinted_by_name_and_source_not_address(tmp_path):
    path = tmp_path / "utils.py"
    path.write_text(HELPER)
    one, two = _load(path, "utils").process_docs, _load(path, "utils").process_docs
    assert one is not two and repr(one) != repr(two)  # two loads: two addresses
    before = _fingerprint(_function_config(one))[0]
    assert _fingerprint(_function_config(two))[0] == before
    path.write_text(HELPER.replace("strip()", "strip().lower()"))  # other source (and size: linecache sees it)
    assert _fingerprint(_function_config(_load(path, "utils").process_docs))[0] != before


def test_a_function_has_the_same_fingerprint_in_two_processes(tmp_path):
    (tmp_path / "utils.py").write_text(HELPER)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import utils\n"
            "from noisynn.task_sets import _fingerprint\n"
            "extra = [object() for _ in range(int(sys.argv[2]))]  # other allocations, other addresses\n"
            "fn = utils.process_docs\n"
            "config = {'task': 't', 'process_docs': fn, 'filter_list': [{'filter': [{'function': fn}]}],\n"
            "          'metadata': {'repr': repr(fn)}}\n"
            "print(json.dumps(_fingerprint(config)[0]))\n")
    digests = []
    for n in ("1", "5000"):
        proc = run_python(["-c", code, str(tmp_path), n])
        assert proc.returncode == 0, proc.stderr
        digests.append(json.loads(proc.stdout))
    assert digests[0] == digests[1]
