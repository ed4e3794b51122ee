"""Cost per account per year, from what a run measured and a profile of the bank to project to.

Measured: CPU seconds, memory (PSS) and disk of every process of the cluster, the accounts it
held and the transactions it served. Projected: a bank of `profile_accounts` accounts doing
`transactions_per_account_year` each, with capacity for the peak and for the loss of a DC,
priced per vCPU-hour, GB-hour of memory and GB-month of disk (in yuan; every figure can be
overridden, and every figure used is written into the report's assumptions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

HOURS_PER_YEAR = 8760.0
SECONDS_PER_YEAR = HOURS_PER_YEAR * 3600
REFERENCE_CNY = 2.0  # the published figure of a distributed core bank: about 2 yuan per account-year


@dataclass(frozen=True)
class Measured:
    cpu_seconds: float  # over the measuring window, all cluster processes
    window_s: float
    transactions: int  # money movements acknowledged in the window
    memory_bytes: int  # PSS of all cluster processes
    disk_bytes: int  # data directories of all replicas
    accounts: int  # accounts the cluster held


@dataclass(frozen=True)
class Assumptions:
    profile_accounts: int = 100_000_000
    transactions_per_account_year: float = 1_000.0
    peak_to_average: float = 3.0  # capacity for the busiest hour, not the average one
    dc_loss_headroom: float = 1.5  # 3 DCs: the survivors carry the whole load
    cny_per_vcpu_hour: float = 0.12
    cny_per_gb_hour: float = 0.02
    cny_per_gb_month: float = 0.35


def per_account_year(measured: Measured, assumptions: Assumptions) -> dict[str, Any]:
    a = assumptions
    headroom = a.peak_to_average * a.dc_loss_headroom
    cpu_s_per_txn = measured.cpu_seconds / max(measured.transactions, 1)
    yearly_txns = a.profile_accounts * a.transactions_per_account_year
    vcpus = yearly_txns / SECONDS_PER_YEAR * cpu_s_per_txn * headroom
    cpu_cny = vcpus * HOURS_PER_YEAR * a.cny_per_vcpu_hour
    # Memory and disk grow with the accounts held; a small run overstates the per-account part,
    # which is the cautious direction.
    per_account_gb = 1 / 2**30 / max(measured.accounts, 1)
    memory_gb = measured.memory_bytes * per_account_gb * a.profile_accounts * a.dc_loss_headroom
    disk_gb = measured.disk_bytes * per_account_gb * a.profile_accounts
    memory_cny = memory_gb * HOURS_PER_YEAR * a.cny_per_gb_hour
    disk_cny = disk_gb * 12 * a.cny_per_gb_month
    total = (cpu_cny + memory_cny + disk_cny) / a.profile_accounts
    return {
        "per_account_year_cny": round(total, 6),
        "reference_cny": REFERENCE_CNY,
        "breakdown": {
            "cpu_cny": round(cpu_cny / a.profile_accounts, 6),
            "memory_cny": round(memory_cny / a.profile_accounts, 6),
            "disk_cny": round(disk_cny / a.profile_accounts, 6),
        },
        "derived": {
            "cpu_ms_per_transaction": round(cpu_s_per_txn * 1000, 3),
            "vcpus_provisioned": round(vcpus, 1),
            "memory_gb_provisioned": round(memory_gb, 1),
            "disk_gb": round(disk_gb, 1),
        },
        "measured": asdict(measured),
        "assumptions": asdict(a),
    }
