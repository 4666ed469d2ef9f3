"""Which hardware is which (SPEC §6): USB and PCI ids to kind, model and handshake."""

from __future__ import annotations

from dataclasses import dataclass

from hardware.reports import SourceKind


@dataclass(frozen=True)
class Model:
    kind: SourceKind
    name: str
    handshake: str = "none"  # serial start-up: none | dtr | onerng
    product_match: str | None = None  # for generic ids (FTDI): the product string must contain this
    expected_rate_bps: float | None = None


USB_MODELS: dict[tuple[str, str], Model] = {
    ("0aba", "0102"): Model(SourceKind.QUANTUM_LOCAL, "ID Quantique Quantis USB",
                            expected_rate_bps=500_000),
    ("04d8", "f5fe"): Model(SourceKind.TRNG, "TrueRNG", "dtr", expected_rate_bps=50_000),
    ("16d0", "0aa0"): Model(SourceKind.TRNG, "TrueRNGpro", "dtr", expected_rate_bps=400_000),
    ("04d8", "ebb5"): Model(SourceKind.TRNG, "TrueRNGpro V2", "dtr", expected_rate_bps=400_000),
    ("1d50", "6086"): Model(SourceKind.TRNG, "OneRNG", "onerng", expected_rate_bps=40_000),
    ("0403", "6015"): Model(SourceKind.TRNG, "Infinite Noise TRNG", product_match="infinite noise",
                            expected_rate_bps=40_000),
    ("1d50", "60c6"): Model(SourceKind.TRNG, "Altus Metrum ChaosKey", expected_rate_bps=100_000),
}  # fmt: skip

QUANTIS_PCI_VENDOR = "1e89"
QUANTIS_PCI_DEVICES = frozenset({"0002", "0003"})
QUANTIS_PCIE = Model(
    SourceKind.QUANTUM_LOCAL, "ID Quantique Quantis PCIe", expected_rate_bps=500_000
)


def _hex_id(value: str | bytes | None) -> str:
    if value is None:
        return ""
    text = value.decode() if isinstance(value, bytes) else value
    text = text.strip().lower()
    return text[2:] if text.startswith("0x") else text


def classify_usb(vendor: str | bytes | None, product_id: str | bytes | None,
                 product: str | None = None) -> Model | None:  # fmt: skip
    model = USB_MODELS.get((_hex_id(vendor), _hex_id(product_id)))
    if model is None:
        return None
    if model.product_match and model.product_match not in (product or "").lower():
        return None  # a generic FTDI id on something else
    return model


def is_quantis_pci(vendor: str | bytes | None, device: str | bytes | None) -> bool:
    return _hex_id(vendor) == QUANTIS_PCI_VENDOR and _hex_id(device) in QUANTIS_PCI_DEVICES
