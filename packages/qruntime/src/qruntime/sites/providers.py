"""The ordered list of site providers, and the one walk that asks them all.

Order is priority: when two providers return a site for the same module, the one earlier in the
list wins and the later claim is dropped — a module is converted once, with one mixin. The
module-type registry comes first, so an explicit ``qruntime.register`` of a class overrides what a
later provider would do with it (as Model Optimizer's plugins skip classes that are already
registered); a provider that must win over the registry is inserted with ``before=``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from qruntime.quantizer import is_quantizer
from qruntime.sites.base import Site, SiteProvider
from qruntime.sites.conv1d import Conv1DProvider
from qruntime.sites.fused_experts import FusedExpertsProvider
from qruntime.sites.hf_attention import HFAttentionProvider
from qruntime.sites.moe import SparseMoeProvider
from qruntime.sites.registry import ModuleTypeProvider

__all__ = [
    "SiteScan",
    "find_sites",
    "providers",
    "register_provider",
    "scan",
    "unregister_provider",
]

_PROVIDERS: list[SiteProvider] = []


def register_provider(provider: SiteProvider, *, before: str | None = None) -> None:
    """Add ``provider`` at the end of the list, or just before the provider named ``before``.

    Provider names are unique (``ValueError`` otherwise); ``before`` must name a registered
    provider (``KeyError``).
    """
    if not isinstance(provider, SiteProvider):
        raise TypeError(f"{provider!r} lacks name/sites/registry_keys of a SiteProvider")
    names = [p.name for p in _PROVIDERS]
    if provider.name in names:
        raise ValueError(f"a site provider named {provider.name!r} is already registered")
    if before is None:
        _PROVIDERS.append(provider)
        return
    if before not in names:
        raise KeyError(f"no site provider named {before!r}")
    _PROVIDERS.insert(names.index(before), provider)


def unregister_provider(provider: SiteProvider | str) -> SiteProvider:
    """Remove a provider (given or by name) and return it; ``KeyError`` if it is not listed.
    Modules it converted keep their quantizers."""
    name = provider if isinstance(provider, str) else provider.name
    for index, registered in enumerate(_PROVIDERS):
        if registered.name == name:
            return _PROVIDERS.pop(index)
    raise KeyError(f"no site provider named {name!r}")


def providers() -> tuple[SiteProvider, ...]:
    """The registered providers, in priority order."""
    return tuple(_PROVIDERS)


@dataclass(frozen=True)
class SiteScan:
    """One walk's result: every site in ``named_modules`` order and the sorted registry keys."""

    sites: list[Site]
    registry_keys: list[str]


def _walk(model: nn.Module, with_keys: bool) -> SiteScan:
    modules = [(name, m) for name, m in model.named_modules() if not is_quantizer(m)]
    position = {id(m): (index, name) for index, (name, m) in enumerate(modules)}
    claimed: dict[int, tuple[int, Site]] = {}
    keys: set[str] = set()
    for provider in tuple(_PROVIDERS):
        for site in provider.sites(model, modules):
            where = position.get(id(site.module))
            if where is None or where[1] != site.name:
                raise ValueError(
                    f"site provider {provider.name!r} returned a site {site.name!r} that is not "
                    "a (non-quantizer) module of the model under that name"
                )
            claimed.setdefault(id(site.module), (where[0], site))
        if with_keys:
            keys.update(provider.registry_keys(model, modules))
    sites = [site for _, site in sorted(claimed.values(), key=lambda item: item[0])]
    return SiteScan(sites=sites, registry_keys=sorted(keys))


def scan(model: nn.Module) -> SiteScan:
    """Ask every provider, in order, for its sites and keys (what ``inventory`` reports)."""
    return _walk(model, with_keys=True)


def find_sites(model: nn.Module) -> list[Site]:
    """Every module that is (or would be) converted, in ``named_modules`` order, first provider
    winning (what ``apply.patch_model`` converts)."""
    return _walk(model, with_keys=False).sites


register_provider(ModuleTypeProvider())
register_provider(Conv1DProvider())
register_provider(FusedExpertsProvider())
register_provider(SparseMoeProvider())
register_provider(HFAttentionProvider())
