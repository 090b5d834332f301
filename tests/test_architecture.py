"""The layout's one-way arrows, checked in fresh interpreters (pytest's own process has PIL loaded already)."""

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pulse_sr', 'PIL', 'tqdm', 'click'))))
"""


def _loaded_after_import(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_search_core_is_pure():
    import pulse_sr
    assert pulse_sr.upsample.__module__ == "pulse_sr.search.loop"
    loaded = _loaded_after_import("pulse_sr.search.loop")
    # torch itself imports tqdm; what the core may not add is anything beyond torch's own.
    extra = {m for m in loaded if m.split(".")[0] in ("PIL", "tqdm", "click")} - _loaded_after_import("torch")
    assert not extra, extra
    rooms = {m.split(".")[1] for m in loaded if m.startswith("pulse_sr.")}
    assert not rooms & {"cli", "pipelines", "hub", "formats", "runtime", "images", "model", "align", "networks"}, rooms


@pytest.mark.parametrize("module, forbidden", [
    ("pulse_sr.networks.stylegan1", {"formats", "hub", "pipelines", "cli", "model", "search"}),
    ("pulse_sr.formats.tf_pickle", {"hub", "pipelines", "cli", "search"}),
    ("pulse_sr.hub.registry", {"networks", "pipelines", "cli", "search", "ops"}),
    ("pulse_sr.pipelines.upsample", {"cli", "web"}),
    ("pulse_sr.web.app", {"cli"}),
])
def test_arrows_point_one_way(module, forbidden):
    loaded = _loaded_after_import(module)
    rooms = {m.split(".")[1] for m in loaded if m.startswith("pulse_sr.")}
    assert not rooms & forbidden, rooms & forbidden


def test_registry_needs_no_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, pulse_sr.hub.registry; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
