"""The structure docs/architecture.md promises: no import cycle, small files, and each
shared fact (the adapter weight file's name, vLLM's rank list, the vocabulary) defined once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ("qtune", "data", "finetune", "eval", "serve", "ui", "feedback", "study")
MAX_LINES = 450


def package_sources() -> list[Path]:
    return sorted(p for part in PARTS for p in (REPO / part).rglob("*.py"))


def test_no_import_cycle():
    """scripts/import_graph.py reads every qtune module's imports (lazy ones too)."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no import cycle among" in result.stdout
    dot = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py"), "--dot"],
                         capture_output=True, text=True, timeout=120).stdout
    assert '"qtune.ui.compare" -> "qtune.feedback.store";' in dot
    assert '"qtune.eval.report.writer" -> "qtune.eval.evaluate";' in dot


def test_each_core_module_imports_on_its_own():
    """A fresh interpreter imports each of qtune's core modules first: an import made at
    import time through a package's __init__ (which the graph above does not follow) can
    close a cycle that only one entry point meets."""
    for path in sorted((REPO / "qtune").glob("*.py")):
        module = "qtune" if path.stem == "__init__" else f"qtune.{path.stem}"
        result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd="/",
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"import {module}: {result.stderr[-600:]}"


def test_no_source_file_over_the_limit():
    long = {str(p.relative_to(REPO)): n for p in package_sources()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def definitions(pattern: str) -> list[str]:
    regex = re.compile(pattern, re.MULTILINE)
    return [str(p.relative_to(REPO)) for p in package_sources() if regex.search(p.read_text())]


def test_shared_facts_are_defined_once():
    assert definitions(r'"adapter_model\.safetensors"') == ["qtune/adapter_format.py"]
    assert definitions(r"^VLLM_LORA_RANKS\b") == ["qtune/adapter_format.py"]
    for name in ("TASKS", "ASSISTANTS", "METHODS", "SHIPPED_ADAPTERS", "IGNORE_INDEX"):
        assert definitions(rf"^{name}\b.*=") == ["qtune/vocab.py"], name
