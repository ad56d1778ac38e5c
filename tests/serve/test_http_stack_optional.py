# SPDX-License-Identifier: Apache-2.0
"""The package serves on the standard library: FastAPI / uvicorn (the `bench` extra, used only by
benchmarks/http_stack.py's comparison) must never become a dependency of `nemotron_elastic`."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
ASGI = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools")

BLOCKED_IMPORT = f"""
import sys

class Refuse:  # a meta path finder that makes the ASGI stack look uninstalled
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {ASGI!r}:
            raise ImportError("not installed: " + name)

sys.meta_path.insert(0, Refuse())
import nemotron_elastic.cli
import nemotron_elastic.commands.serve
import nemotron_elastic.serve.server
import nemotron_elastic.serve.engine
assert not {{m.partition(".")[0] for m in sys.modules}} & set({ASGI!r})
print("ok")
"""


def test_the_server_imports_without_the_asgi_stack():
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_no_package_source_names_the_asgi_stack():
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(ASGI)})\b", re.MULTILINE)
    leaks = [str(p) for p in (ROOT / "nemotron_elastic").rglob("*.py") if pattern.search(p.read_text())]
    assert not leaks, leaks


def test_the_asgi_stack_is_an_optional_extra_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name in core for name in ASGI)
    assert any(dep.startswith("fastapi") for dep in project["optional-dependencies"]["bench"])
