"""The method catalogue lists only public parameters: a ``_``-prefixed keyword argument of a method is
private to it, so ``matex methods`` never shows it and a config that sets it is refused."""

from __future__ import annotations

from matex.attribution import registry
from matex.catalog import method_problems
from matex.docgen.methods_catalog import generate_catalog


def _method(ctx, *, alpha: float = 0.5, _scratch: int = 3):  # pragma: no cover - never run
    raise AssertionError


def test_private_parameters_are_left_out_of_the_catalogue(monkeypatch):
    registry.available_methods()  # load the real methods first, so the fake one is the only change
    defaults, annotations = registry._signature_params("fake_private", _method)
    spec = registry.MethodSpec("fake_private", _method, defaults, annotations, "test")
    monkeypatch.setitem(registry._REGISTRY, "fake_private", spec)
    catalog = generate_catalog()
    assert set(catalog["fake_private"]["params"]) == {"alpha"}  # _scratch is the method's own
    assert not any(k.startswith("_") for entry in catalog.values() for k in entry["params"])
    cfg = {"attribution": {"methods": ["fake_private"], "params": {"fake_private": {"_scratch": 1, "alpha": 0.2}}}}
    assert method_problems(cfg, catalog) == [
        "config key attribution.params.fake_private._scratch: unknown parameter of 'fake_private'; known: ['alpha']"
    ]
