"""What ``cmbcube verify`` found: the damage, unit by unit, and the report of one run of it (local
stores: :mod:`cmbcube.cube.verify`; Icechunk and s3:// stores: :mod:`cmbcube.cube.icechunk_versions`)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Damage:
    level: str              # sim / pred / analysis / metadata
    unit: tuple             # (split, sim), (run, split, sim) or ()
    product: str
    key: str                # chunk key inside the product ("" for metadata)
    problem: str


@dataclasses.dataclass
class VerifyReport:
    store: str
    units: int = 0
    files: int = 0
    bytes_read: int = 0
    damage: list = dataclasses.field(default_factory=list)
    cleared: bool = False
    unchecked_checksums: list = dataclasses.field(default_factory=list)   # arrays stored without crc32c
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damage

    def units_at(self, level: str) -> list[tuple]:
        return sorted({d.unit for d in self.damage if d.level == level})
