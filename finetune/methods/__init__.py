"""The registry of adapter methods, as PEFT's ``register_peft_method``: each method is one
module with its config and one registered :class:`AdapterMethod`. Methods from other
packages register through the ``qtune.adapter_methods`` entry-point group (as vLLM's
plugins do); the entry point names an AdapterMethod instance, class, or a function that
calls :func:`register_method`.

Nothing here imports torch: the trainer, outputs, card, study and CLI ask the registry and
never branch on a method's name.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from qtune.finetune.methods.base import AdapterConfig, AdapterMethod, SavedAdapter

from qtune.errors import QtuneError
from qtune.vocab import PREFERENCE_OBJECTIVES

__all__ = ["AdapterConfig", "AdapterMethod", "SavedAdapter", "get_method", "method_names",
           "register_method", "split_adapter_name"]

ENTRY_POINT_GROUP = "qtune.adapter_methods"
#: The methods qtune ships, in the order `--help` lists them.
BUILTIN_MODULES = ("qwth", "lora", "vera", "lora_xs", "qtha")

log = logging.getLogger(__name__)
_REGISTRY: dict[str, AdapterMethod] = {}
_loaded = False


def register_method(method: AdapterMethod | type[AdapterMethod]) -> AdapterMethod:
    """Add a method (an instance, or a class instantiated here); a name taken is an error."""
    instance = method() if isinstance(method, type) else method
    if not isinstance(instance, AdapterMethod):
        raise QtuneError(f"{method!r} is not an AdapterMethod")
    if not issubclass(instance.config_class, AdapterConfig):
        raise QtuneError(f"method {instance.name!r}: its config must subclass AdapterConfig")
    taken = _REGISTRY.get(instance.name)
    if taken is not None and type(taken) is not type(instance):
        raise QtuneError(f"adapter method {instance.name!r} is registered already "
                         f"({type(taken).__module__})")
    _REGISTRY[instance.name] = instance
    return instance


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        register_method(importlib.import_module(f"{__name__}.{module}").METHOD)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if isinstance(loaded, AdapterMethod) or (
                    isinstance(loaded, type) and issubclass(loaded, AdapterMethod)):
                register_method(loaded)
            else:
                loaded()
        except Exception as error:  # a broken plugin must not take the built-in methods down
            log.warning("adapter method plugin %s could not be loaded: %s", entry.value, error)


def method_names() -> tuple[str, ...]:
    _load_all()
    return tuple(_REGISTRY)


def get_method(name: str) -> AdapterMethod:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise QtuneError(f"unknown method {name!r}: choose one of "
                         f"{', '.join(_REGISTRY)}") from None


def owners_of(setting: str) -> list[str]:
    """The methods whose config has ``setting`` (for errors that say where it belongs)."""
    _load_all()
    return [name for name, method in _REGISTRY.items()
            if setting in {f.name for f in method.config_class.__dataclass_fields__.values()}]


def strip_objective(name: str) -> tuple[str, str | None]:
    """(the name without a ``-dpo``/``-kto`` ending, that objective or None)."""
    for objective in PREFERENCE_OBJECTIVES:
        if name.endswith(f"-{objective}") and len(name) > len(objective) + 1:
            return name[: -len(objective) - 1], objective
    return name, None


def split_adapter_name(name: str) -> tuple[str, str]:
    """(assistant, method) of a served name ``<assistant>-<method>``: the longest registered
    method that ends it (``math-lora-xs`` is LoRA-XS), else the part after the last '-'.
    A preference-tuned version (``counselling-qwth-dpo``) is its method's adapter."""
    name = strip_objective(name)[0]
    for method in sorted(method_names(), key=len, reverse=True):
        if name.endswith("-" + method) and len(name) > len(method) + 1:
            return name[: -len(method) - 1], method
    assistant, _, method = name.rpartition("-")
    return assistant, method
