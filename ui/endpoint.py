"""The UI's view of an OpenAI-compatible endpoint: which models it serves, and streaming.

Served names follow ``<assistant>-<method>`` for adapters (``math-qwth``,
``counselling-lora``); the base model serves every assistant. Nothing is hard-coded:
the list comes from ``GET /v1/models`` on every refresh, so adapters loaded or removed
while the UI runs show up, and an endpoint that was down is picked up again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from qtune.finetune.methods import get_method, method_names, split_adapter_name, strip_objective
from qtune.safety.responses import CRISIS_RESOURCES

from qtune.adapter_format import version_from_root
from qtune.errors import QtuneError
from qtune.vocab import METHODS

#: How the UI names each method (other suffixes still work, labelled by their suffix).
METHOD_LABELS = {"qwth": "quantum-tuned (QWTH)", "lora": "LoRA baseline", "base": "base"}
#: Order of the model lists: quantum-tuned first, then the baseline, then the base.
METHOD_ORDER = {"qwth": 0, "lora": 1, "base": 3}


#: The first piece of an answer whose conversation the served endpoint's crisis screen
#: flagged (qtune.serve.screen); the UI shows the resources beside the chat instead.
SERVER_RESOURCES = CRISIS_RESOURCES + "\n"


class EndpointError(QtuneError):
    """The endpoint could not be reached or refused a request."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    method: str  # "qwth", "lora", "base" or another adapter suffix
    assistant: str | None  # None: the base model, good for every assistant
    #: weights version as the server reports it ("base" for the base model)
    version: str = "base"
    #: the folder the server reads the model from (its /v1/models "root")
    root: str | None = None
    #: "dpo" or "kto" for a preference-tuned version (``<assistant>-<method>-dpo``)
    objective: str | None = None

    @property
    def label(self) -> str:
        if self.method in METHOD_LABELS:
            label = METHOD_LABELS[self.method]
        elif self.method in method_names():  # another registered method: its own label
            label = f"{get_method(self.method).label} adapter"
        else:
            label = "adapter" if self.method == "adapter" else f"{self.method} adapter"
        return f"{label} + {self.objective.upper()}" if self.objective else label

    @property
    def choice(self) -> tuple[str, str]:
        """(shown text, value) for a dropdown."""
        return (f"{self.label} · {self.name}", self.name)

    def serves(self, assistant: str) -> bool:
        return self.assistant is None or self.assistant == assistant


def parse_model(name: str, parent: str | None = None, root: str | None = None) -> ServedModel:
    """Read ``<assistant>-<method>``; a model without a parent that does not parse is a base.

    vLLM reports LoRA adapters with ``parent`` set to the base model's name and ``root``
    set to the folder it serves, whose name carries the weights version.
    """
    assistant, method = split_adapter_name(name)
    if parent is None and method not in METHODS:
        return ServedModel(name, "base", None, root=root)
    version, objective = version_from_root(root), strip_objective(name)[1]
    if not assistant:
        return ServedModel(name, method or "adapter", name, version, root, objective)
    return ServedModel(name, method, assistant, version, root, objective)


def sort_models(models: list[ServedModel]) -> list[ServedModel]:
    """Quantum-tuned, LoRA, other adapters, base; preference-tuned versions after the
    adapters they grew from (Compare's default pair stays quantum-tuned against LoRA)."""
    return sorted(models, key=lambda m: (m.method == "base", m.objective is not None,
                                         METHOD_ORDER.get(m.method, 2), m.name))


def default_pair(models: list[ServedModel], assistant: str) -> tuple[str, str] | None:
    """Quantum-tuned vs LoRA baseline for ``assistant`` when both are served; otherwise the
    best two it has (adapters before the base); None when fewer than two models serve it."""
    usable = sort_models([m for m in models if m.serves(assistant)])
    if len(usable) < 2:
        return None
    return usable[0].name, usable[1].name


class Endpoint:
    """A thin wrapper over the openai client for the UI."""

    def __init__(self, api_base: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        from openai import OpenAI

        self.api_base = api_base
        # The openai client insists on a key; vLLM without --api-key ignores it.
        self.client = OpenAI(base_url=api_base, api_key=api_key or "none", timeout=timeout,
                             max_retries=0)

    def models(self) -> list[ServedModel]:
        import openai

        try:
            listing = self.client.models.list()
        except openai.AuthenticationError as error:
            raise EndpointError(
                f"the endpoint {self.api_base} refused the API key: set --api-key or "
                "QTUNE_API_KEY to the key the server was started with"
            ) from error
        except openai.OpenAIError as error:
            raise EndpointError(
                f"the endpoint {self.api_base} is not reachable ({type(error).__name__}). Start "
                "it with `qtune serve` (or `qtune up`), then press Refresh."
            ) from error
        return sort_models([parse_model(m.id, getattr(m, "parent", None),
                                        getattr(m, "root", None)) for m in listing.data])

    def stream_chat(
        self, model: str, messages: list[dict], temperature: float, max_tokens: int,
        **sampling: object,
    ) -> Iterator[str]:
        """Yield the answer's text pieces as they arrive (``sampling``: more request
        fields, such as ``seed``)."""
        import openai

        try:
            stream = self.client.chat.completions.create(
                model=model, messages=messages, temperature=temperature,
                max_tokens=max_tokens, stream=True, **sampling,
            )
            # Leaving this block for any reason (the answer is done, Stop, Retry, a closed
            # tab: the caller closes this generator) closes the HTTP stream, and vLLM stops
            # generating for a client that has gone. Without it, it ran to max_tokens.
            with stream:
                for index, chunk in enumerate(stream):
                    if not chunk.choices or not chunk.choices[0].delta.content:
                        continue
                    piece = chunk.choices[0].delta.content
                    if index <= 1 and piece == SERVER_RESOURCES:
                        continue  # the endpoint's own crisis screen: the UI shows its panel
                    yield piece
        except openai.APIStatusError as error:
            raise EndpointError(
                f"{model} answered HTTP {error.status_code}: {_error_text(error)}"
            ) from error
        except openai.OpenAIError as error:
            raise EndpointError(
                f"lost the endpoint {self.api_base} while {model} was answering "
                f"({type(error).__name__}); check that the server is running and retry"
            ) from error


def _error_text(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return str(error)
