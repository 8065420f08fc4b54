"""The base class every config model derives from.

Model Optimizer's configs are pydantic models that also behave as mutable mappings, and user code
relies on that (``cfg["quant_cfg"].append(...)``, ``cfg.get("algorithm")``, ``dict(cfg)``). We keep
the same protocol so such code runs unchanged against qconfig objects.

Validators are built on first use (``defer_build``), not at import: a ``qconfig lint`` run needs
a handful of the models, and building all of them (every calibration algorithm's) at import
would cost it more than the lint itself (docs/performance.md). A model is always built after the
models its fields contain, so that each validator is generated once and reused by every model
that contains it.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, MutableMapping
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigBase"]


class ConfigBase(BaseModel, MutableMapping):  # type: ignore[misc]
    """pydantic model + ``MutableMapping`` over its *fields* (not only the ones that were set)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, populate_by_name=True, defer_build=True
    )

    @classmethod
    def model_rebuild(
        cls,
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        """pydantic's ``model_rebuild``, after building the config models the fields contain.

        pydantic calls this on first use of a deferred model. Built children are reused by the
        parent's schema; unbuilt ones would be generated inline, and again for every other
        model (or the child itself) that needs them.
        """
        if not cls.__pydantic_complete__ and cls not in _BUILDING:
            _BUILDING.add(cls)
            try:
                for model in _contained_models(cls):
                    if not model.__pydantic_complete__ and model not in _BUILDING:
                        model.model_rebuild(raise_errors=raise_errors)
            finally:
                _BUILDING.discard(cls)
        return super().model_rebuild(
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth + 1,
            _types_namespace=_types_namespace,
        )

    # -- mapping protocol -------------------------------------------------------------------
    @classmethod
    def _field_for_key(cls, key: str) -> str:
        fields = cls.model_fields
        if key in fields:
            return key
        for name, info in fields.items():
            if info.alias == key:
                return name
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, self._field_for_key(key))

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, self._field_for_key(key), value)

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{type(self).__name__} fields cannot be deleted ({key!r}).")

    def __contains__(self, key: object) -> bool:
        try:
            self._field_for_key(key)  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False
        return True

    def _keys(self) -> list[str]:
        return [info.alias or name for name, info in type(self).model_fields.items()]

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._keys())

    def __len__(self) -> int:
        return len(type(self).model_fields)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self):  # type: ignore[override]
        return self._keys()

    def values(self):  # type: ignore[override]
        return [self[k] for k in self._keys()]

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in self._keys()]

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        pairs = other.items() if hasattr(other, "items") else other
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    # -- dumps default to aliases, as Model Optimizer's do ----------------------------------
    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("by_alias", True)
        kwargs.setdefault("warnings", False)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("by_alias", True)
        kwargs.setdefault("warnings", False)
        return super().model_dump_json(**kwargs)

    __hash__ = None  # type: ignore[assignment]
    __eq__ = BaseModel.__eq__


_BUILDING: set[type] = set()  # models whose children are being built (guards against cycles)


def _contained_models(cls: type[BaseModel]) -> list[type[ConfigBase]]:
    """The ``ConfigBase`` models named in ``cls``'s field annotations (through unions,
    ``Annotated``, lists and dicts), in field order."""
    found: list[type[ConfigBase]] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, ConfigBase):
            if tp is not cls and tp not in found:
                found.append(tp)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    for info in cls.__pydantic_fields__.values():
        visit(info.annotation)
    return found
