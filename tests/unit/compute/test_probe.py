import json
import os
import shutil
import subprocess
import time

import pytest

from services.compute.virt.libvirt import probe

EMULATOR = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(EMULATOR is None, reason="qemu-system-x86_64 is not installed")


@pytest.mark.skipif(not (shutil.which("as") and shutil.which("ld")), reason="binutils (as, ld) not installed")
def test_boot_sector_is_the_assembled_source(tmp_path):
    (tmp_path / "probe.S").write_text(probe.PROBE_ASM)
    subprocess.run(["as", "--64", "-o", "probe.o", "probe.S"], cwd=tmp_path, check=True)
    subprocess.run(
        ["ld", "-m", "elf_x86_64", "-Ttext", "0x7c00", "--oformat", "binary", "-o", "probe.bin", "probe.o"],
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "probe.bin").read_bytes() == probe.BOOT_SECTOR
    assert len(probe.BOOT_SECTOR) == 512 and probe.BOOT_SECTOR.endswith(b"\x55\xaa")


@needs_qemu
async def test_probe_guest_runs_to_completion_under_tcg():
    ok, seconds, what = await probe.run_probe_guest(EMULATOR, "tcg", timeout=10)
    assert ok, what
    assert seconds < 10


@needs_qemu
async def test_probe_guest_that_overruns_is_killed():
    started = time.monotonic()
    ok, _, what = await probe.run_probe_guest(EMULATOR, "tcg", timeout=0.01)
    assert not ok
    assert "did not finish within" in what
    assert time.monotonic() - started < 5


async def test_missing_emulator_is_a_reason_not_a_crash():
    ok, _, what = await probe.run_probe_guest("/nonexistent/qemu", "tcg", timeout=1)
    assert not ok and "could not start" in what


async def test_no_kvm_domain_type_means_qemu_without_running_anything(tmp_path):
    result = await probe.choose_virt_type(
        emulator=EMULATOR, kvm_offered=False, cache_file=tmp_path / "vt.json", timeout=2
    )
    assert result.virt_type == "qemu"
    assert "no kvm domain type" in result.reason


async def test_decision_is_cached_and_reused(tmp_path, monkeypatch):
    cache = tmp_path / "compute" / "virt_type.json"
    runs = []

    async def fake_probe(emulator, kvm_offered, timeout):
        runs.append(emulator)
        return probe.ProbeResult("kvm", "a KVM probe guest finished in 0.20s", 0.2)

    monkeypatch.setattr(probe, "_probe", fake_probe)
    first = await probe.choose_virt_type(emulator=EMULATOR, kvm_offered=True, cache_file=cache, timeout=2)
    second = await probe.choose_virt_type(emulator=EMULATOR, kvm_offered=True, cache_file=cache, timeout=2)
    assert (first.virt_type, first.cached) == ("kvm", False)
    assert (second.virt_type, second.cached) == ("kvm", True)
    assert "finished in 0.20s" in second.reason
    assert len(runs) == 1
    assert json.loads(cache.read_text())["fingerprint"]["probe"]


async def test_cache_is_ignored_when_the_emulator_changes(tmp_path, monkeypatch):
    cache = tmp_path / "virt_type.json"
    emulator = tmp_path / "qemu-system-x86_64"
    emulator.write_text("v1")
    runs = []

    async def fake_probe(emulator, kvm_offered, timeout):
        runs.append(1)
        return probe.ProbeResult("qemu", "reason", 0.1)

    monkeypatch.setattr(probe, "_probe", fake_probe)
    await probe.choose_virt_type(emulator=str(emulator), kvm_offered=True, cache_file=cache, timeout=2)
    emulator.write_text("v2, a different binary")
    os.utime(emulator, ns=(1, 1))
    await probe.choose_virt_type(emulator=str(emulator), kvm_offered=True, cache_file=cache, timeout=2)
    assert len(runs) == 2


async def test_unwritable_cache_still_gives_a_decision(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = await probe.choose_virt_type(
        emulator=None, kvm_offered=False, cache_file=blocker / "sub" / "vt.json", timeout=2
    )
    assert result.virt_type == "qemu"
