"""Application-wide settings in one typed place.

Every default that more than one part of qtune needs (where models are cached, where
the datasets and shipped adapters live, the feedback database, the server address)
is defined here and can be overridden with a ``QTUNE_*`` environment variable.
Task-specific configuration (training, the QWTH adapter) lives beside the code that
uses it, as PEFT does for its tuners, but reads its paths from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qtune.errors import QtuneError

#: Root of the source checkout (adapters/ and configs/ ship inside it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The embedded default base model.
DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
#: The Hugging Face id the embedded model was converted from (recorded in adapters).
DEFAULT_BASE_MODEL_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def read_secret(value_env: str, file_env: str) -> str | None:
    """A secret from ``$value_env``, or from the file ``$file_env`` names (first line), so it
    never has to appear on a command line (where `ps` shows it)."""
    if os.environ.get(value_env):
        return os.environ[value_env]
    path = os.environ.get(file_env)
    if not path:
        return None
    return read_secret_file(Path(path).expanduser(), file_env)


def read_secret_file(path: Path, what: str) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise QtuneError(f"cannot read the secret in {path} ({what}): {error}") from error
    if not lines or not lines[0].strip():
        raise QtuneError(f"{path} ({what}) is empty: write the secret on its first line")
    return lines[0].strip()


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _env_count(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise QtuneError(f"{name}={value!r} is not a whole number (0 turns the limit off)")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Locations and addresses shared by every subcommand."""

    home: Path = field(
        default_factory=lambda: _env_path("QTUNE_HOME", Path.home() / ".cache" / "qtune")
    )
    data_dir: Path | None = field(
        default_factory=lambda: (
            Path(os.environ["QTUNE_DATA_DIR"]).expanduser()
            if os.environ.get("QTUNE_DATA_DIR")
            else None
        )
    )
    adapters_dir: Path = field(
        default_factory=lambda: _env_path("QTUNE_ADAPTERS_DIR", PROJECT_ROOT / "adapters")
    )
    api_host: str = field(default_factory=lambda: os.environ.get("QTUNE_HOST", "127.0.0.1"))
    api_port: int = field(default_factory=lambda: int(os.environ.get("QTUNE_PORT", "8000")))
    ui_port: int = field(default_factory=lambda: int(os.environ.get("QTUNE_UI_PORT", "7860")))
    #: The endpoint's key: QTUNE_API_KEY, the file QTUNE_API_KEY_FILE names, or vLLM's own
    #: VLLM_API_KEY (the one place it is read).
    api_key: str | None = field(
        default_factory=lambda: read_secret("QTUNE_API_KEY", "QTUNE_API_KEY_FILE")
        or os.environ.get("VLLM_API_KEY") or None
    )
    #: The web UI's login, USER:PASSWORD: QTUNE_UI_AUTH or the file QTUNE_UI_AUTH_FILE names.
    ui_auth: str | None = field(
        default_factory=lambda: read_secret("QTUNE_UI_AUTH", "QTUNE_UI_AUTH_FILE")
    )

    #: Per-client limits of the web UI, per minute (0 turns one off): questions sent (each
    #: starts generation) and votes or ratings cast.
    ui_messages_per_minute: int = field(
        default_factory=lambda: _env_count("QTUNE_UI_MESSAGES_PER_MINUTE", 20))
    ui_votes_per_minute: int = field(
        default_factory=lambda: _env_count("QTUNE_UI_VOTES_PER_MINUTE", 10))

    @property
    def models_dir(self) -> Path:
        # Apart from the home so that a container can bake the models into its image and
        # keep the home (feedback, runs, logs) on a volume.
        return _env_path("QTUNE_MODELS_DIR", self.home / "models")

    @property
    def db_path(self) -> Path:
        return _env_path("QTUNE_DB", self.home / "feedback.db")

    @property
    def runs_dir(self) -> Path:
        return _env_path("QTUNE_RUNS_DIR", self.home / "runs")

    @property
    def api_base(self) -> str:
        return os.environ.get("QTUNE_API_BASE") or f"http://{self.api_host}:{self.api_port}/v1"


def settings() -> Settings:
    """Read the settings afresh (environment variables may change between calls in tests)."""
    return Settings()
