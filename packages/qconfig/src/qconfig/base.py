"""The base class every config model derives from (config-semantics §1).

Model Optimizer's configs are pydantic models that also behave as mutable mappings, and user code
relies on that (``cfg["quant_cfg"].append(...)``, ``cfg.get("algorithm")``, ``dict(cfg)``). We keep
the same protocol so such code runs unchanged against qconfig objects.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigBase"]


class ConfigBase(BaseModel, MutableMapping):  # type: ignore[misc]
    """pydantic model + ``MutableMapping`` over its *fields* (not only the ones that were set)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

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
