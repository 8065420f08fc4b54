"""Placeholder of the hf-conv1d site provider (being written: issue 15)."""

from __future__ import annotations

from torch import nn

from qruntime.sites.base import NamedModules, Site

__all__ = ["Conv1DProvider"]


class Conv1DProvider:
    name = "hf-conv1d"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        return []

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        return []
