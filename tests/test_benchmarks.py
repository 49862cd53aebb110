"""The benchmark suite end to end on a tiny MSD-Net: parity of every contender, JSON, Markdown
and plot. Timings are produced (one round) but never asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python -m pytest` has it; plain `pytest` may not
    sys.path.insert(0, str(ROOT))

from benchmarks import jax_side, torch_side  # noqa: E402
from benchmarks.suite import main  # noqa: E402

KEYS = {jax_side.JAXCAM_ALL, jax_side.JAXCAM_LAST, jax_side.JAX_FORWARD, torch_side.PGC_ALL,
        torch_side.PGC_LAST, torch_side.HOOKS_ALL, torch_side.CAPTUM_ALL,
        torch_side.TORCHCAM_ALL, torch_side.TORCH_FORWARD, torch_side.TORCH_BEST}


def test_quick_suite_every_contender_agrees_with_jaxcam(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    code = main(["--configs", "tiny", "--batch-sizes", "2", "--quick", "--out", str(tmp_path),
                 "--md", str(md)])
    assert code == 0
    (run,) = tmp_path.glob("run_*_cpu.json")
    results = json.loads(run.read_text())
    entry = results["configs"]["tiny"]
    assert set(entry["parity"]) == KEYS
    disagreeing = {k: p["summary"] for k, p in entry["parity"].items() if not p["ok"]}
    assert not disagreeing
    (cell,) = entry["cells"]
    assert cell["batch"] == 2 and set(cell["contenders"]) == KEYS
    for row in cell["contenders"].values():
        assert row["rounds"] >= 1 and row["median_s"] > 0 and row["first_call_s"] > 0
    assert (tmp_path / "throughput_tiny.png").stat().st_size > 0
    text = md.read_text()
    assert "| jaxcam explain_exits (ExitExplainer) |" in text
    assert "agrees" in text and "disagrees:" not in text


def test_frameworks_benchmark_quick_run_and_skips_an_absent_framework(tmp_path: Path,
                                                                        monkeypatch) -> None:
    from benchmarks import frameworks

    # A framework whose distribution is absent is skipped, said so, and the run still succeeds.
    monkeypatch.setitem(frameworks.FRAMEWORKS, "haiku",
                        (frameworks.FRAMEWORKS["haiku"][0], ("no-such-distribution",)))
    md = tmp_path / "RESULTS.md"
    code = frameworks.main(["--batch", "2", "--size", "32", "--rounds", "1", "--frameworks",
                            "nnx,linen,haiku", "--out", str(tmp_path), "--md", str(md)])
    assert code == 0
    (run,) = tmp_path.glob("frameworks_*.json")
    results = json.loads(run.read_text())
    assert [row["framework"] for row in results["rows"]] == ["nnx", "linen"]
    for row in results["rows"]:
        assert row["maps_shape"] == [2, 32, 32]
        assert row["forward_ms"] > 0 and row["gradcam_ms"] > 0
        assert row["ratio"] == row["gradcam_ms"] / row["forward_ms"]
    assert results["skipped"] == {"haiku": "not installed: no-such-distribution"}
    text = md.read_text()
    assert "| nnx | ResNet-18 (NNX) | `layer3/1` |" in text
    assert "| haiku | skipped: not installed: no-such-distribution |" in text


def test_frameworks_benchmark_imports_without_the_optional_frameworks() -> None:
    import subprocess

    code = (
        "import sys, importlib.abc\n"
        "BLOCKED = {'torch', 'torchvision', 'torchax', 'equinox', 'haiku', 'keras'}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from benchmarks import frameworks\n"
        "print(sorted(set(sys.modules) & BLOCKED))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_methods_benchmark_quick_run_reports_a_failing_method(tmp_path: Path,
                                                              monkeypatch) -> None:
    from benchmarks import methods

    # A method that cannot be set up is listed with why, and the run says it failed.
    cases = methods._cases

    def with_broken_fem(args):
        def broken(pair):
            raise RuntimeError("no FEM today")
        return {**cases(args), "fem": broken}

    monkeypatch.setattr(methods, "_cases", with_broken_fem)
    md = tmp_path / "RESULTS.md"
    code = methods.main(["--batch", "2", "--size", "64", "--rounds", "1", "--methods",
                         "gradcam,randomcam,fem", "--out", str(tmp_path), "--md", str(md)])
    assert code == 1
    (run,) = tmp_path.glob("methods_*.json")
    results = json.loads(run.read_text())
    assert [row["method"] for row in results["rows"]] == ["GradCAM (baseline)", "RandomCAM"]
    for row in results["rows"]:
        assert row["jaxcam_ms"] > 0 and row["pgc_ms"] > 0 and row["rounds"] == 1
        assert row["ratio"] == row["pgc_ms"] / row["jaxcam_ms"]
        assert row["max_diff"] < 1e-4  # the same weights: the same maps
    assert results["failed"] == {"fem": "RuntimeError: no FEM today"}
    text = md.read_text()
    assert "## New methods vs pytorch-grad-cam" in text
    assert "| GradCAM (baseline) |" in text
    assert "| fem | | | | | | | | not run: RuntimeError: no FEM today |" in text
