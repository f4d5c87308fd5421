"""Installed DPDK poll-mode drivers, read from the metadata DPDK embeds in them.

Every driver .so carries one NUL-terminated ``PMD_INFO_STRING= {json}`` string
per driver in .rodata (the data ``dpdk-pmdinfo.py`` reads).  Reading it lets us
reject a port device string before EAL init instead of failing deep in probe.
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

log = logging.getLogger(__name__)
_PREFIX = b"PMD_INFO_STRING="
# DBDF or BDF, as the PCI bus parses it; an optional "pci:" bus prefix is allowed.
_PCI_RE = re.compile(r"^(pci:)?([0-9a-fA-F]{1,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


@dataclass(frozen=True)
class Driver:
    name: str
    path: str            # real path of the .so holding it
    kmod: str | None     # e.g. "* igb_uio | vfio-pci"; None for virtual drivers
    pci_ids: int         # number of PCI ids it claims; 0 means a vdev/other-bus driver
    params: str          # devargs it accepts, as the driver documents them

    @property
    def virtual(self) -> bool:
        return self.pci_ids == 0


def _pkg_config_libdir() -> str | None:
    # libdpdk.pc has no pmddir variable (only prefix/libdir/includedir), so use libdir.
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "libdpdk"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def driver_dirs() -> list[str]:
    """Directories holding PMD .so files; NVGW_PMD_DIR (colon separated) overrides."""
    env = os.environ.get("NVGW_PMD_DIR")
    if env:
        return [d for d in env.split(":") if d]
    libdir = _pkg_config_libdir()
    dirs = sorted(glob.glob(os.path.join(libdir, "dpdk", "pmds-*"))) if libdir else []
    dirs += sorted(glob.glob("/usr/lib/*/dpdk/pmds-*"))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]  # dedupe, keep order


def _pmd_infos(path: str):
    """Yield the JSON dicts of every PMD_INFO_STRING in the file's .rodata."""
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".rodata")
        data = sec.data() if sec else b""
    pos = data.find(_PREFIX)
    while pos >= 0:
        end = data.find(b"\0", pos)
        try:
            yield json.loads(data[pos + len(_PREFIX):end].decode("ascii"))
        except ValueError as e:  # malformed string: skip it, not the whole file
            log.debug("%s: bad PMD_INFO_STRING: %s", path, e)
        pos = data.find(_PREFIX, end)


@functools.lru_cache(maxsize=8)
def _scan(dirs: tuple[str, ...]) -> dict[str, Driver]:
    # .so and .so.N symlinks all lead to one real file: read each real file once.
    files = dict.fromkeys(os.path.realpath(p) for d in dirs
                          for p in sorted(glob.glob(os.path.join(d, "*.so*"))))
    found: dict[str, Driver] = {}
    for path in files:
        if not os.path.isfile(path):
            continue
        try:
            for info in _pmd_infos(path):
                drv = _driver(info, path)
                if drv is None:     # JSON, but not a driver's: skip it, not the file
                    log.debug("%s: PMD_INFO_STRING is no driver: %.80r", path, info)
                    continue
                found.setdefault(drv.name, drv)
        except (OSError, ELFError) as e:
            log.debug("%s: skipped: %s", path, e)
    return dict(sorted(found.items()))


def _driver(info, path: str) -> Driver | None:
    """The Driver a PMD_INFO_STRING's JSON describes, or None when it is not an
    object with a name and fields of the types DPDK writes."""
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
        return None
    kmod, pci_ids, params = info.get("kmod"), info.get("pci_ids") or [], info.get("params", "")
    if not isinstance(kmod, (str, type(None))) or not isinstance(pci_ids, list) or \
            not isinstance(params, str):
        return None
    return Driver(info["name"], path, kmod, len(pci_ids), params)


def installed_drivers(dirs=None) -> dict[str, Driver]:
    """Map driver name -> Driver for every PMD found in `dirs` (default: driver_dirs())."""
    return dict(_scan(tuple(driver_dirs() if dirs is None else dirs)))


def pci_address(devargs: str) -> str | None:
    """The PCI address a device string names, as ethdev names the port
    (DDDD:BB:DD.F, lower case: "pci:03:00.1" -> "0000:03:00.1"), or None."""
    name = devargs.split(",", 1)[0].strip()
    if not _PCI_RE.match(name):
        return None
    name = name.removeprefix("pci:").lower()
    domain, bdf = name.split(":", 1) if name.count(":") == 2 else ("0", name)
    return f"{int(domain, 16):04x}:{bdf}"


def driver_of(devargs: str, drivers: dict[str, Driver] | None = None) -> str | None:
    """Name of the installed virtual driver a vdev device string selects, or None.

    The vdev bus binds a device to a driver whose name (or alias) is a prefix of the
    device name (``net_pcap0,rx_pcap=x`` -> ``net_pcap``); we take the longest match.
    PCI addresses return None: PCI devices bind by vendor/device id, not by name.
    Aliases (e.g. ``eth_pcap``) are not in the metadata, so they are not matched.
    """
    name = devargs.split(",", 1)[0].strip()
    if _PCI_RE.match(name):
        return None
    name = name.removeprefix("vdev:")
    drivers = installed_drivers() if drivers is None else drivers
    hits = [n for n, d in drivers.items() if d.virtual and name.startswith(n)]
    return max(hits, key=len, default=None)


def check_devices(devargs_list, drivers: dict[str, Driver] | None = None) -> None:
    """Raise ValueError for the first non-PCI device string no installed driver serves."""
    drivers = installed_drivers() if drivers is None else drivers
    for devargs in devargs_list:
        name = devargs.split(",", 1)[0].strip()
        if _PCI_RE.match(name) or driver_of(devargs, drivers):
            continue
        # Ports are ethdevs: list only net_* drivers, not crypto/event/bus ones.
        virtual = ", ".join(n for n, d in drivers.items() if d.virtual and n.startswith("net_"))
        raise ValueError(f"port device {name!r} names no installed DPDK driver "
                         f"(installed virtual drivers: {virtual or 'none'})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    drivers = installed_drivers()
    if args.json:
        print(json.dumps([asdict(d) for d in drivers.values()], indent=2))
        return 0
    width = max((len(n) for n in drivers), default=4)
    print(f"{'NAME':<{width}}  KMOD")
    for d in drivers.values():
        print(f"{d.name:<{width}}  {d.kmod or '-'}")
    print(f"{len(drivers)} drivers in {', '.join(driver_dirs()) or 'no directory'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
