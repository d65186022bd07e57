"""Does KVM really run guests on this host? Run one and see (``[compute] virt_type = auto``).

``/dev/kvm`` existing proves little: on some hosts (nested virtualisation, see shared/notes/LIBVIRT.md) a KVM
guest passes the BIOS and then hangs, or crawls, once it enters protected mode. So the probe boots a
512-byte BIOS boot sector that does what a kernel does first (protected mode, long mode, 4 KiB paging, 24 MiB
of writes) and then asks QEMU to exit through the isa-debug-exit port. KVM is chosen only when that guest
finishes within the time limit; anything else falls back to qemu (TCG) with the reason logged.

The decision is cached in a JSON file keyed by what it depends on (kernel release, emulator binary, probe
code), so restarts do not pay for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["BOOT_SECTOR", "PROBE_ASM", "ProbeResult", "choose_virt_type", "run_probe_guest"]

LOG = logging.getLogger(__name__)

# The boot sector's source (GNU as). BOOT_SECTOR below is its assembly with
#   as --64 -o probe.o probe.S && ld -m elf_x86_64 -Ttext 0x7c00 --oformat binary -o probe.bin probe.o
# and a unit test re-assembles it to keep the two in step.
PROBE_ASM = r"""
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    lgdtl gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $pm32
.code32
pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    # PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, 16 page tables at 0x10000 (32 MiB in 4 KiB pages)
    mov $0x1000, %edi
    xor %eax, %eax
    mov $3072, %ecx
    rep stosl
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    mov $0x3000, %edi
    mov $0x10003, %eax
    mov $16, %ecx
1:  mov %eax, (%edi)
    add $0x1000, %eax
    add $8, %edi
    loop 1b
    mov $0x10000, %edi
    mov $0x3, %eax
    mov $8192, %ecx
2:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x1000, %eax
    add $8, %edi
    loop 2b
    mov $0x1000, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    ljmp $0x18, $lm64
.code64
lm64:
    mov $0x800000, %rdi
    mov $0x300000, %rcx
    mov $0x5a5a5a5a5a5a5a5a, %rax
    rep stosq
    mov $0x10, %al
    mov $0xf4, %dx
    out %al, %dx
3:  hlt
    jmp 3b
.align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
gdtr:
    .word gdtr - gdt - 1
    .long gdt
.org 510
.word 0xaa55
"""

_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007c660f0116007d0f20c06683c8010f22c0ea217c080066b810008ed88ec08ed0bf0010000031c0b9000c"
    "0000f3abc7050010000003200000c7050020000003300000bf00300000b803000100b9100000008907050010000083c708e2f4bf00"
    "000100b803000000b9002000008907c7470400000000050010000083c708e2edb8001000000f22d80f20e083c8200f22e0b9800000"
    "c00f320d000100000f300f20c00d000000800f22c0eabb7c0000180048c7c70000800048c7c10000300048b85a5a5a5a5a5a5a5af3"
    "48abb01066baf400eef4ebfd0000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00e07c"
)
BOOT_SECTOR = _CODE.ljust(510, b"\0") + b"\x55\xaa"

# isa-debug-exit turns the byte written to its port into the exit status (value << 1) | 1.
_EXIT_VALUE = 0x10
_EXIT_STATUS = (_EXIT_VALUE << 1) | 1


@dataclass(frozen=True)
class ProbeResult:
    virt_type: str  # "kvm" or "qemu"
    reason: str
    seconds: float  # time the decision took now (0 when it came from the cache)
    cached: bool = False


async def run_probe_guest(emulator: str, accel: str, timeout: float) -> tuple[bool, float, str]:
    """Boot the probe guest with ``-accel accel``: (finished in time, seconds, what happened)."""
    with tempfile.TemporaryDirectory(prefix="stratus-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(BOOT_SECTOR)
        argv = [
            emulator, "-accel", accel, "-machine", "pc", "-m", "64", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide,snapshot=on",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as e:
            return False, 0.0, f"could not start {emulator}: {e}"
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, time.monotonic() - started, f"did not finish within {timeout:.1f}s and was killed"
        elapsed = time.monotonic() - started
    if proc.returncode == _EXIT_STATUS:
        return True, elapsed, f"finished in {elapsed:.2f}s"
    last_line = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    return False, elapsed, f"exited with status {proc.returncode} after {elapsed:.2f}s ({last_line[0]})"


def _fingerprint(emulator: str | None) -> dict[str, object]:
    stat = os.stat(emulator) if emulator and os.path.exists(emulator) else None
    return {
        "kernel": platform.release(),
        "emulator": emulator,
        "emulator_mtime_ns": stat.st_mtime_ns if stat else None,
        "probe": hashlib.sha256(BOOT_SECTOR).hexdigest()[:16],
    }


def _read_cache(cache_file: Path, fingerprint: dict[str, object]) -> ProbeResult | None:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint or data.get("virt_type") not in ("kvm", "qemu"):
        return None
    reason = f"cached decision of {data.get('probed_at')} ({cache_file}): {data.get('reason')}"
    return ProbeResult(data["virt_type"], reason, 0.0, cached=True)


def _write_cache(cache_file: Path, fingerprint: dict[str, object], result: ProbeResult) -> None:
    record = {**asdict(result), "fingerprint": fingerprint, "probed_at": datetime.now(UTC).isoformat()}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(cache_file)
    except OSError as e:
        LOG.warning("could not cache the virt_type decision in %s: %s", cache_file, e)


async def _probe(emulator: str | None, kvm_offered: bool, timeout: float) -> ProbeResult:
    started = time.monotonic()

    def result(virt_type: str, reason: str) -> ProbeResult:
        return ProbeResult(virt_type, reason, time.monotonic() - started)

    if platform.machine() != "x86_64":
        return result("qemu", f"the probe guest is x86 code and this host is {platform.machine()}: set virt_type")
    if not kvm_offered:
        return result("qemu", "libvirt offers no kvm domain type on this host")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return result("qemu", "/dev/kvm is missing or not accessible")
    if emulator is None:
        return result("qemu", "no x86_64 emulator found to run the probe guest with")
    ok, _, what = await run_probe_guest(emulator, "kvm", timeout)
    if ok:
        return result("kvm", f"a KVM probe guest {what}")
    tcg_ok, _, tcg_what = await run_probe_guest(emulator, "tcg", max(timeout, 5.0))
    tcg_note = f"under TCG it {tcg_what}" if tcg_ok else f"under TCG it failed too ({tcg_what}): check the probe"
    return result("qemu", f"a KVM probe guest {what}; {tcg_note}")


async def choose_virt_type(*, emulator: str | None, kvm_offered: bool, cache_file: Path, timeout: float) -> ProbeResult:
    """``kvm`` or ``qemu`` for this host, from the cache when nothing it depends on changed. Never raises.

    ``emulator`` is the x86_64 QEMU binary libvirt would use; ``kvm_offered`` whether libvirt's
    capabilities list a kvm domain type.
    """
    fingerprint = _fingerprint(emulator)
    cached = _read_cache(cache_file, fingerprint)
    if cached is not None:
        return cached
    result = await _probe(emulator, kvm_offered, timeout)
    _write_cache(cache_file, fingerprint, result)
    return result
