import subprocess
import sys
from pathlib import Path

from common import config

ROOT = Path(__file__).resolve().parents[3]


def test_every_option_has_help_text():
    for group, opts in config.list_opts():
        for opt in opts:
            assert opt.help, f"[{group}] {opt.name} has no help text"


def test_defaults_parse_without_a_config_file():
    conf = config.parse_args([], prog="stratus-test", default_config_files=[])
    assert conf.messaging.failover_strategy == "roundrobin"
    assert conf.compute.virt_type == "auto"
    assert conf.scheduler.max_attempts >= 1


def test_config_file_values_are_read(tmp_path):
    f = tmp_path / "s.conf"
    f.write_text("[DEFAULT]\nhost = h1\n[scheduler]\nhost_subset_size = 7\n")
    conf = config.parse_args(["--config-file", str(f)], prog="stratus-test")
    assert conf.host == "h1"
    assert conf.scheduler.host_subset_size == 7


def test_sample_config_is_current(tmp_path):
    """etc/stratus/stratus.conf.sample must be what oslo-config-generator writes now (tox -e genconfig)."""
    out = tmp_path / "sample.conf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            "etc/stratus/stratus-config-generator.conf",
            "--output-file",
            str(out),
        ],  # fmt: skip
        check=True,
        cwd=ROOT,
    )
    committed = (ROOT / "etc/stratus/stratus.conf.sample").read_text()
    assert out.read_text() == committed, "stale sample config: run `tox -e genconfig`"
