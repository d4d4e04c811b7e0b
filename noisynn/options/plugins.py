"""--plugin: a Python file imported once (it may register noise classes); its failures as one line."""

from __future__ import annotations

import sys
from typing import Sequence

from ..errors import NoisyNNError
from ..paths import readable_file
from .flags import _PLUGINS


def load_plugins(paths: Sequence[str]) -> list[dict]:
    """Import each plugin file so its noise classes are registered before names are looked up.

    Returns ``[{"path", "sha256"}]`` (recorded in run.json). The same file with the same content is
    imported once, however often it is given (twice on the command line, or again by the UI). A plugin
    gets ``torch`` in its namespace, as the original toolkit's module had it for its custom-noise recipe.
    Whatever the plugin does wrong at import (raises, ``sys.exit``) becomes one NoisyNNError line.
    """
    import hashlib
    import types

    loaded = []
    for path in paths:
        p = readable_file(path, "plugin file")  # a folder, a device, a missing file: each said as it is
        if p.suffix != ".py":
            raise NoisyNNError(f"plugin {path} is not a Python file (give a .py file)")
        try:
            data = p.read_bytes()
        except OSError as err:
            raise NoisyNNError(f"plugin {path} cannot be read: {err.strerror or err}") from None
        if not data.strip():
            raise NoisyNNError(f"plugin file {path} is empty (it would register nothing)")
        sha = hashlib.sha256(data).hexdigest()
        key = (str(p.resolve()), sha)
        loaded.append({"path": str(path), "sha256": sha})
        if key in _PLUGINS:
            continue
        name = f"noisynn_plugin_{''.join(c if c.isalnum() else '_' for c in p.stem)}_{sha[:12]}"
        module = types.ModuleType(name)
        module.__file__ = str(p.resolve())
        import torch

        module.torch = torch
        sys.modules[name] = module  # before exec: classes defined there name this module
        try:
            exec(compile(data, str(p), "exec"), module.__dict__)
        except SystemExit as err:  # a plugin must not end the run (with exit status 0)
            del sys.modules[name]
            raise NoisyNNError(f"plugin {path} called sys.exit({err.code!r}) while being imported") from None
        except Exception as err:  # a plugin can raise anything; report it in one line
            del sys.modules[name]
            raise NoisyNNError(f"plugin {path} failed to import: {type(err).__name__}: {err}") from None
        _PLUGINS[key] = module
    return loaded
