"""Hardware presets: every figure with its provenance, the ANCHORS.md values exact, overrides
and their errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from rdu_compiler.simulator.hardware import (
    HardwarePreset,
    PresetError,
    Provenance,
    get_preset,
    list_presets,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
MIB, GIB, TIB = 1 << 20, 1 << 30, 1 << 40

# ANCHORS.md, SN40L: per socket
SOURCED = {
    "pcus": 1040,
    "pmus": 1040,
    "sram_bytes": 520 * MIB,
    "peak_bf16_flops": 638e12,
    "hbm_bytes": 64 * GIB,
    "hbm_bandwidth": 1.8e12,
    "ddr_bytes": 3 * TIB // 2,
    "ddr_bandwidth": 200e9,
    "max_sockets": 16,
}
PARAMETERS = {
    "agcus",
    "pcu_lanes",
    "pcu_stages",
    "clock_hz",
    "hbm_efficiency",
    "ddr_efficiency",
    "p2p_bandwidth",
    "p2p_links",
    "p2p_topology",
    "p2p_latency_s",
    "launch_software_s",
    "launch_hardware_s",
    "program_load_s",
    "argument_load_s",
    "sync_software_s",
    "sync_hardware_s",
    "stage_latency_s",
}


@pytest.fixture
def sn40l() -> HardwarePreset:
    return get_preset("sn40l")


def test_presets_listed():
    assert list_presets() == ["sn40l"]
    with pytest.raises(PresetError, match="unknown hardware preset 'tpu'; known: sn40l"):
        get_preset("tpu")


def test_every_figure_has_provenance(sn40l):
    assert set(sn40l.provenance) == set(HardwarePreset.figures())
    assert set(HardwarePreset.figures()) == set(SOURCED) | PARAMETERS
    for figure in HardwarePreset.figures():
        prov = sn40l.provenance[figure]
        assert prov.note.strip(), figure
        if prov.origin == "source":
            assert prov.note.startswith("ANCHORS.md, SN40L (Prabhakar et al."), figure
        else:
            assert prov.origin == "parameter" and "calibrate or sweep" in prov.note, figure


def test_anchors_values_exact(sn40l):
    for figure, value in SOURCED.items():
        assert getattr(sn40l, figure) == value, figure
        assert type(getattr(sn40l, figure)) is type(value), figure
        assert sn40l.provenance[figure].origin == "source", figure
    assert sn40l.pmu_bytes == 512 * 1024  # 520 MiB / 1040 PMUs
    assert set(sn40l.parameters()) == PARAMETERS


def test_parameter_defaults_consistent_with_sources(sn40l):
    assert sn40l.clock_hz < 2e9  # ANCHORS: clock under 2 GHz
    geometry_peak = sn40l.pcus * sn40l.pcu_lanes * sn40l.pcu_stages * 2 * sn40l.clock_hz
    assert abs(geometry_peak / sn40l.peak_bf16_flops - 1) < 0.005
    assert 0 < sn40l.ddr_efficiency <= sn40l.hbm_efficiency <= 1
    assert sn40l.launch_hardware_s < sn40l.launch_software_s
    assert sn40l.sync_hardware_s < sn40l.sync_software_s


def test_replace_marks_override(sn40l):
    faster = sn40l.replace(hbm_bandwidth=3.6e12, launch_software_s=0)
    assert faster.hbm_bandwidth == 3.6e12 and faster.launch_software_s == 0
    prov = faster.provenance["hbm_bandwidth"]
    assert prov.origin == "override" and "instead of the preset's 1800000000000.0" in prov.note
    assert faster.provenance["pcus"] == sn40l.provenance["pcus"]
    assert sn40l.hbm_bandwidth == 1.8e12 and sn40l.provenance["hbm_bandwidth"].origin == "source"
    assert "hbm_bandwidth" not in faster.parameters()
    assert faster.replace(sram_bytes=1040 * 1024).pmu_bytes == 1024  # derived, stays consistent


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"hbm_bandwith": 1e12},
            "unknown hardware parameter 'hbm_bandwith' (did you mean "
            "'hbm_bandwidth'?); known: pcus, pmus",
        ),
        ({"name": "x"}, "hardware parameter 'name' cannot be overridden"),
        ({"provenance": {}}, "hardware parameter 'provenance' cannot be overridden"),
        ({"pcus": 1.5}, "hardware parameter pcus: Expected `int`, got `float`"),
        ({"pcus": 0}, "hardware parameter pcus: Expected `int` >= 1, got 0"),
        (
            {"hbm_efficiency": 1.2},
            "hardware parameter hbm_efficiency: Expected `float` <= 1.0, got 1.2",
        ),
        (
            {"launch_software_s": -1e-6},
            "hardware parameter launch_software_s: Expected `float` >= 0.0",
        ),
        (
            {"hbm_bandwidth": "fast"},
            "hardware parameter hbm_bandwidth: Expected `float`, got `str`",
        ),
        ({"sram_bytes": 10}, "sram_bytes 10 < pmus 1040 leaves a PMU without a byte"),
    ],
)
def test_replace_errors(sn40l, changes, message):
    with pytest.raises(PresetError) as info:
        sn40l.replace(**changes)
    assert message in str(info.value)


def test_parse_overrides():
    assert parse_overrides("hbm_bandwidth=2.4e12, pcus=520 ,,launch_software_s=0") == {
        "hbm_bandwidth": 2.4e12,
        "pcus": 520,
        "launch_software_s": 0.0,
    }
    assert parse_overrides(["hbm_bytes=64e9", "clock_hz=1800000000"]) == {
        "hbm_bytes": 64_000_000_000,
        "clock_hz": 1.8e9,
    }
    assert type(parse_overrides("pcus=1.04e3")["pcus"]) is int


@pytest.mark.parametrize(
    "text, message",
    [
        ("hbm_bandwidth", "hardware override 'hbm_bandwidth' is not key=value"),
        ("=3", "hardware override '=3' is not key=value"),
        ("clock=1e9", "unknown hardware parameter 'clock'"),
        ("pcus=1,pcus=2", "hardware parameter 'pcus' given twice"),
        ("pcus=many", "hardware parameter pcus: 'many' is not a number"),
        ("pcus=520.5", "hardware parameter pcus needs an integer, got '520.5'"),
        ("hbm_bandwidth=inf", "hardware parameter hbm_bandwidth: 'inf' is not a finite number"),
        ("hbm_bandwidth=nan", "hardware parameter hbm_bandwidth: 'nan' is not a finite number"),
    ],
)
def test_parse_overrides_errors(text, message):
    with pytest.raises(PresetError) as info:
        parse_overrides(text)
    assert message in str(info.value)


def test_with_overrides(sn40l):
    swept = sn40l.with_overrides("p2p_latency_s=5e-6,hbm_efficiency=0.8")
    assert (swept.p2p_latency_s, swept.hbm_efficiency) == (5e-6, 0.8)
    assert swept.provenance["p2p_latency_s"].origin == "override"
    with pytest.raises(PresetError, match=r"Expected `float` > 0.0"):
        sn40l.with_overrides("hbm_efficiency=0")


def test_messages_name_the_hardware_as_overridden(sn40l):
    """Fit messages say `but {preset.label} has ...`: the figures that differ from the preset
    of that name are part of the name, so an override is never reported as the preset."""
    assert sn40l.label == "sn40l"
    assert sn40l.replace(pcus=40).label == "sn40l with pcus=40"
    assert sn40l.with_overrides("pcus=1040").label == "sn40l"  # the preset's own value
    assert sn40l.replace(pcus=40, hbm_bandwidth=2.4e12).label == (
        "sn40l with pcus=40,hbm_bandwidth=2400000000000.0"
    )
    own = msgspec.structs.replace(sn40l.replace(pcus=40), name="my-chip")  # a hardware file
    assert own.label == "my-chip"  # no preset to differ from: its name says it all


def test_preset_is_immutable(sn40l):
    with pytest.raises(AttributeError):
        sn40l.pcus = 1  # type: ignore[misc]
    with pytest.raises(PresetError, match="provenance missing for"):
        HardwarePreset(
            **{f: getattr(sn40l, f) for f in HardwarePreset.figures()},
            name="x",
            provenance={"pcus": Provenance(origin="source", note="x")},
        )


def test_documented():
    text = (ROOT / "docs" / "program_format.md").read_text()
    for figure in HardwarePreset.figures():
        assert f"`{figure}`" in text, figure
