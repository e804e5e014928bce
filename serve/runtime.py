"""Load and unload adapters on a running vLLM server (``qtune adapters``).

vLLM exposes ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` only when it was
started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (``qtune serve
--allow-runtime-lora``). An adapter is checked against the served base model here
first, because vLLM accepts some mismatched adapters and fails only at the first
request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from qtune.serve.adapters import BaseShapes, check_name, stage_snapshot, validate_adapter

from qtune.config import settings
from qtune.errors import QtuneError


class RuntimeAdapters:
    """A small client for a running server's adapter endpoints."""

    def __init__(self, api_base: str, api_key: str | None = None, timeout: float = 120.0):
        self.api_base = api_base.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        url = f"{self.api_base}{path}"
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise QtuneError(
                f"no server answers at {self.api_base} ({error}). Start one with `qtune serve` "
                "or pass --api-base."
            ) from error
        if response.status_code == 401:
            raise QtuneError("the server wants an API key: pass --api-key or set QTUNE_API_KEY")
        return response

    def models(self) -> list[dict]:
        response = self._request("GET", "/models")
        if response.status_code != 200:
            raise QtuneError(f"GET /models failed ({response.status_code}): {response.text}")
        try:
            cards = response.json()["data"]
            if not all(isinstance(card, dict) and isinstance(card.get("id"), str)
                       for card in cards):
                raise TypeError("an entry without an id")
        except (ValueError, KeyError, TypeError) as error:
            raise QtuneError(f"{self.api_base}/models did not answer with an OpenAI model list "
                             f"({error}); is --api-base the server's /v1 address?") from error
        return cards

    def _base_card(self) -> dict:
        bases = [card for card in self.models() if not card.get("parent")]
        if not bases:
            raise QtuneError(f"{self.api_base}/models lists no base model: is this a vLLM server?")
        return bases[0]

    def load(self, name: str, path: Path, ignore_base_name: bool = False) -> None:
        """Check the adapter like `qtune serve` does (name, files, rank, base model), then
        ask the server to load it."""
        base = self._base_card()
        check_name(name, base["id"])
        folder = Path(path).expanduser().resolve()
        base_dir = Path(base.get("root") or "")
        if base_dir.is_dir():  # the server runs here: check against its base model
            names = None if ignore_base_name else {base["id"], str(base_dir)}
            adapter = validate_adapter(name, folder, BaseShapes.from_model_dir(base_dir), names)
            # Served from a snapshot named by its version, as `qtune serve` does.
            folder = stage_snapshot(adapter, settings().home / "served")
        response = self._request(
            "POST", "/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)}
        )
        self._raise_for(response, f"load adapter {name!r}")

    def unload(self, name: str) -> None:
        response = self._request("POST", "/unload_lora_adapter", json={"lora_name": name})
        self._raise_for(response, f"unload adapter {name!r}")

    @staticmethod
    def _raise_for(response: httpx.Response, action: str) -> None:
        if response.status_code == 200:
            return
        if response.status_code in (404, 405) and "lora" not in response.text.lower():
            raise QtuneError(
                f"cannot {action}: the server does not allow loading adapters at run time. "
                "Restart it with `qtune serve --allow-runtime-lora`."
            )
        try:
            detail = response.json()
            detail = detail.get("error", {}).get("message") or detail.get("message") or detail
        except ValueError:
            detail = response.text
        raise QtuneError(f"cannot {action} ({response.status_code}): {detail}")
