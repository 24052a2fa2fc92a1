"""The default catalog (defaults.toml) and the credit packages of the pricing page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources

from meter import errors
from meter.catalog.document import parse_document
from meter.catalog.model import Package, Rule

DEFAULT_PACKAGES: tuple[Package, ...] = (
    Package("Starter", credits=100, price_cents=1_000),
    Package("Basic", credits=250, price_cents=2_500),
    Package("Popular", credits=550, price_cents=5_000),
    Package("Pro", credits=1_100, price_cents=10_000),
    Package("Max", credits=2_350, price_cents=20_000),
)


def default_catalog_document() -> str:
    """The text of defaults.toml, shipped inside the package."""
    return resources.files("meter.catalog").joinpath("defaults.toml").read_text("utf-8")


def load_default_catalog_rules() -> dict[str, Rule]:
    """The default catalog's rules by operation key (a fresh dict each call).

    Raises:
        MeterError: INVALID_CATALOG if defaults.toml is broken (a packaging bug).
    """
    return parse_document(default_catalog_document(), "toml")


def smallest_package_covering(packages: Iterable[Package], credits: int) -> Package | None:
    """The package with the fewest credits that still has at least `credits`.

    Returns None when `credits` <= 0 (nothing to cover) or no package is large enough.
    """
    if credits <= 0:
        return None
    covering = [package for package in packages if package.credits >= credits]
    return min(covering, key=lambda package: package.credits, default=None)


def find_package(packages: Sequence[Package], name: str) -> Package:
    """The package called `name` (case-insensitive, as typed in `meter grant --package`).

    Raises:
        MeterError: NOT_FOUND / PACKAGE_NOT_FOUND, listing the known names.
    """
    wanted = name.strip().casefold()
    for package in packages:
        if package.name.casefold() == wanted:
            return package
    raise errors.package_not_found(name, [package.name for package in packages])
