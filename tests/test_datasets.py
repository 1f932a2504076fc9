"""Tests of the bundled data and the validating loaders in eq_envs.datasets (real data, fast)."""

from __future__ import annotations

import gzip
import logging
import re

import numpy as np
import pandas as pd
import pytest

from eq_envs.datasets import (
    AVG_CI_FACTORS_G_PER_KWH,
    DATA_DIR,
    DC_TRAIN_FRACTION,
    DC_UNNOISED_AGENTS,
    EV_TRAIN_FRACTION,
    EV_UNNOISED_AGENTS,
    FUELS,
    PAPER_PRICE_BAND,
    PHONE_CHARGE_PER_HOUR,
    REGION_WEATHER,
    REGIONS,
    DataError,
    azure_paper_split,
    carbon_intensity,
    combined_signal,
    compare_with_avg_ci,
    dc_similar_agents,
    ev_similar_agent_rates,
    ev_similar_agents,
    grid_signals,
    load_acn_sessions,
    load_azure_hourly,
    load_caiso_bayshore,
    load_caiso_da_2020,
    load_epw,
    load_ercot_dam_2022,
    load_fuel_mix,
    load_home_windows,
    load_official_agents,
    minmax_scale,
    offsite_water_intensity,
    onsite_wue,
    onsite_wue_utc,
    phone_demands,
    phone_hours_needed,
    price_for_grid_year,
    signal_series,
    time_split,
    wet_bulb_stull,
)

# measured figures (see the grid module docstring): mean ratio ours/avg_CI, correlation
CI_FIGURES = {
    "CISO": (0.9031, 0.9964),
    "ERCO": (1.0282, 0.9950),
    "PJM": (1.0378, 0.9823),
    "BPAT": (0.8869, 0.9947),
    "NYIS": (0.9676, 0.9320),
    "MISO": (1.0884, 0.9935),
}
ALL_FUELS_MISSING = {"CISO": 3, "PJM": 23, "ERCO": 0, "BPAT": 0, "NYIS": 0, "MISO": 0}
WUE_CLIPPED = {"CISO": 2, "ERCO": 30, "PJM": 808, "BPAT": 228, "NYIS": 447, "MISO": 1598}


def _err(*parts: str) -> str:
    """Regex requiring the given literal parts in order."""
    return ".*".join(re.escape(p) for p in parts)


# --------------------------------------------------------------------------- grid
@pytest.mark.parametrize("region", sorted(REGIONS))
def test_carbon_series_and_avg_ci(region):
    fm = load_fuel_mix(region)
    assert list(fm.columns) == [*FUELS, "avg_CI"]
    assert len(fm) == 8760 and str(fm.index.tz) == "UTC"
    assert (fm.index[1:] - fm.index[:-1] == pd.Timedelta(hours=1)).all()
    c = carbon_intensity(fm)
    assert len(c) == 8760 and np.isfinite(c).all() and (c > 0).all()
    assert fm.attrs["all_fuels_missing_hours"] == ALL_FUELS_MISSING[region]

    cmp = compare_with_avg_ci(region)
    mean_ratio, corr = CI_FIGURES[region]
    assert cmp["correlation"] == pytest.approx(corr, abs=5e-4)
    assert cmp["correlation"] > 0.93
    assert cmp["mean_ratio"] == pytest.approx(mean_ratio, abs=5e-4)
    assert 0.55 < cmp["ratio_min"] and cmp["ratio_max"] < 1.25
    assert cmp["max_abs_diff"] < 0.07  # kg/kWh
    # dc-rl's avg_CI is reproduced exactly by the IPCC-style factor set
    assert cmp["lsq_max_abs_residual"] < 1e-6
    used = [f for f in FUELS if fm[f].sum() > 0]
    for f in used:
        assert cmp["lsq_factors_g_per_kwh"][f] == pytest.approx(AVG_CI_FACTORS_G_PER_KWH[f], abs=1e-3)


def test_all_fuel_missing_hours_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="eq_envs.data"):
        fm = load_fuel_mix("CISO")
    rep = fm.attrs["report"]
    assert any("3 hours with every fuel missing" in m for m in rep)
    assert any("3 hours with every fuel missing" in r.getMessage() for r in caplog.records)
    assert len(fm.attrs["filled_hours"]) == 3
    assert not fm.isna().any().any()
    pjm = load_fuel_mix("PJM")
    assert any("23 hours with every fuel missing" in m for m in pjm.attrs["report"])
    miso = load_fuel_mix("MISO")
    assert miso.attrs["filled_cells"]["NG"] == 3 and miso.attrs["filled_cells"]["OIL"] == 0
    assert any("some fuels missing" in m for m in miso.attrs["report"])


def test_offsite_water_and_user_path_identical(tmp_path):
    fm = load_fuel_mix("CISO")
    w = offsite_water_intensity(fm)
    assert (w > 0).all() and np.isfinite(w).all() and w.max() < 3.785 * 600 / 1000 + 1e-12
    # the same file given as a plain .csv user path is read identically
    p = tmp_path / "my_ciso.csv"
    p.write_bytes(gzip.decompress((DATA_DIR / "grid" / "eia_fuelmix_2022_CISO.csv.gz").read_bytes()))
    mine = load_fuel_mix(path=p)
    pd.testing.assert_frame_equal(mine, fm)


# --------------------------------------------------------------------------- weather
def test_stull_reference_value():
    # Stull (2011): T = 20 °C, RH = 50 % -> Tw = 13.7 °C
    assert float(wet_bulb_stull(20.0, 50.0)) == pytest.approx(13.7, abs=0.05)
    wue = onsite_wue(np.array([-10.0, 25.0]))
    assert wue[0] == 0.05 and wue[1] > 1.0


@pytest.mark.parametrize("region", sorted(REGION_WEATHER))
def test_onsite_wue_utc(region):
    s = onsite_wue_utc(region, 2022)
    assert len(s) == 8760 and np.isfinite(s).all() and (s >= 0.05).all()
    assert s.attrs["clipped_hours_typical_year"] == WUE_CLIPPED[region]
    assert any(f"{WUE_CLIPPED[region]} of 8760 hours clipped" in m for m in s.attrs["report"])


def test_epw_alignment_and_leap_year():
    w = load_epw("CISO")
    assert len(w) == 8760 and w.attrs["utc_offset_h"] == -8.0
    tw = wet_bulb_stull(w["dry_bulb_c"].to_numpy(), w["rel_humidity_pct"].to_numpy())
    local = onsite_wue(tw)
    s = onsite_wue_utc("CISO", 2022)
    # 2022-01-01 00:00 UTC = Dec 31 16:00 PST -> EPW row 8752 (Dec 31, hour ending 17)
    assert s.iloc[0] == local[8752]
    assert s.iloc[8] == local[0]
    leap = onsite_wue_utc("CISO", 2020)
    assert len(leap) == 8784 and any("Feb-29" in m for m in leap.attrs["report"])


# --------------------------------------------------------------------------- prices
def test_bayshore_gaps_and_alignment():
    b = load_caiso_bayshore()
    assert b.attrs["missing_hours"] == 115
    assert b.attrs["negative_hours"] > 0 and (b < 0).sum() == b.attrs["negative_hours"]
    assert any("115 missing hours" in m for m in b.attrs["report"])
    assert (b.index[1:] - b.index[:-1] == pd.Timedelta(hours=1)).all()
    p = price_for_grid_year()  # CISO default: Bayshore HASP 2018 -> 2022
    assert len(p) == 8760 and np.isfinite(p).all()
    assert p.attrs["source_year"] == 2018 and p.attrs["unit"] == "$/kWh"
    t22, t18 = pd.Timestamp("2022-07-04 20:00", tz="UTC"), pd.Timestamp("2018-07-04 20:00", tz="UTC")
    assert p[t22] == pytest.approx(b[t18] / 1000)
    assert any("30 of them use interpolated" in m for m in p.attrs["report"])
    leap = price_for_grid_year(target_year=2020)
    assert len(leap) == 8784
    with pytest.raises(DataError, match=_err("source year 2019 covers", "accepted: 2016, 2017, 2018")):
        price_for_grid_year(source_year=2019)


def test_other_price_files():
    e = load_ercot_dam_2022()
    assert len(e) == 8760 and e.index[0] == pd.Timestamp("2022-01-01 06:00", tz="UTC")
    assert (e.index[1:] - e.index[:-1] == pd.Timedelta(hours=1)).all()
    pe = price_for_grid_year("ercot_dam_2022")
    assert len(pe) == 8760 and any("take the same (month, day, hour) of 2023" in m for m in pe.attrs["report"])
    da = load_caiso_da_2020()
    raw = pd.read_csv(DATA_DIR / "prices" / "caiso_da_hourly_2020.csv.gz")
    assert len(da) == 8784 and da.iloc[0] == pytest.approx(raw["DA Price ($/kWh)"].iloc[0] * 1000)
    assert da.index[0] == pd.Timestamp("2020-01-01 08:00", tz="UTC")


# --------------------------------------------------------------------------- signals
def test_paper_preset_combined_signal():
    sig = grid_signals("CISO")
    assert list(sig.columns) == ["carbon", "water", "price"] and len(sig) == 8760
    assert (sig["carbon"] > 0).all() and (sig["water"] > 0).all()
    rep = sig.attrs["report"]
    assert any("every fuel missing" in m for m in rep) and any("115 missing hours" in m for m in rep)
    for name in ("carbon", "water", "price"):
        v = signal_series(name, "CISO", preset="paper")
        assert v.dtype == np.float64 and v.shape == (8760,)
        assert v.min() == 0.0 and v.max() == 10.0
    e = signal_series("combined", "CISO", preset="paper")
    assert e.shape == (8760,) and 0.0 <= e.min() and e.max() <= 30.0
    phys = combined_signal(sig, gamma=2.0, eta=3.0, preset="physical")
    np.testing.assert_allclose(phys, sig["carbon"] + 2 * sig["water"] + 3 * sig["price"])
    banded = grid_signals("CISO", price_band=PAPER_PRICE_BAND)
    assert any("296 hours raised, 144 hours lowered" in m for m in banded.attrs["report"])
    assert banded["price"].between(*PAPER_PRICE_BAND).all()
    paper = combined_signal(sig, preset="paper")
    assert paper.min() >= 0 and paper.max() <= 30
    assert set(paper.attrs["scale_ranges"]) == {"carbon", "water", "price"}


def test_minmax_and_time_split():
    s, (lo, hi) = minmax_scale(np.array([2.0, 4.0, 6.0]))
    np.testing.assert_allclose(s, [0, 5, 10])
    assert (lo, hi) == (2.0, 6.0)
    with pytest.raises(DataError, match="constant"):
        minmax_scale(np.ones(3))
    tr, te = time_split(8759, EV_TRAIN_FRACTION)
    assert (tr.stop, te.start, te.stop) == (6131, 6131, 8759)
    tr, te = time_split(100, DC_TRAIN_FRACTION)
    assert tr == slice(0, 67) and te == slice(67, 100)


# --------------------------------------------------------------------------- workloads / official
def test_azure_hourly_and_dc_agents():
    h = load_azure_hourly()
    assert len(h) == 8641 and len(h.attrs["partial_hours"]) == 2
    assert len(load_azure_hourly(partial="drop")) == 8639
    split = azure_paper_split()
    assert sum(map(len, split["train"])) == 5862 and sum(map(len, split["test"])) == 2885
    for sp in ("train", "test"):
        mine, off = dc_similar_agents(sp), load_official_agents("dc", sp)
        assert len(mine) == len(off) == 50
        assert [len(a) for a in mine] == [len(a) for a in off]
        exact = [i for i in range(50) if np.abs(mine[i] - off[i]).max() < 1e-12]
        assert tuple(exact) == DC_UNNOISED_AGENTS
        assert max(np.abs(mine[i] - off[i]).max() for i in exact) < 1e-13


def test_acn_filter_and_ev_agents():
    s = load_acn_sessions()
    d = s.attrs["dropped"]
    assert d["missing or unparsable done_charge"] == 2055
    assert d["done_charge before start_time (data error)"] == 24
    assert d["duration < 3 h"] == 19426 and d["duration > 12 h"] == 259
    assert len(s) == 9660 and any("9660 of 31424 sessions kept" in m for m in s.attrs["report"])
    assert s["duration_h"].between(3, 12).all() and s["start"].is_monotonic_increasing
    np.testing.assert_allclose(s["rate_kw"], s["energy_kwh"] / s["duration_h"])
    for sp in ("train", "test"):
        mine, off = ev_similar_agents(sp), load_official_agents("ev", sp)
        rates = ev_similar_agent_rates(sp)
        assert len(mine) == len(off) == len(rates) == 70
        assert [len(a) for a in mine] == [len(a) for a in off] == [len(r) for r in rates]
        exact = [i for i in range(70) if np.abs(mine[i] - off[i]).max() < 1e-12]
        assert tuple(exact) == EV_UNNOISED_AGENTS


def test_home_windows_and_phones():
    for kind, n in (("bev", 15257), ("phev", 24489)):
        w = load_home_windows(kind)
        assert len(w) == n and {"arrival_h", "window_h", "energy_kwh", "avg_power_kw"} <= set(w.columns)
        assert w["arrival_h"].between(0, 24).all() and (w["window_h"] > 0).all()
    d = phone_demands()
    assert d.shape == (18,) and d[0] == 5.18 and d[-1] == 11.16
    k = phone_hours_needed(d)
    np.testing.assert_array_equal(k, np.round(d / PHONE_CHARGE_PER_HOUR))
    assert k.min() >= 1 and k.max() <= 10


# --------------------------------------------------------------------------- bad inputs
GRID_HEADER = "timestamp,WND,SUN,WAT,OIL,NG,COL,NUC,OTH,avg_CI\n"


def _grid_rows(ng=("100", "110", "120")):
    ts = ["2022-01-01 00:00:00+00:00", "2022-01-01 01:00:00+00:00", "2022-01-01 02:00:00+00:00"]
    return [f"{t},10,0,5,0,{g},0,50,1,300" for t, g in zip(ts, ng)]


def _write(path, header, rows):
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_bad_grid_missing_column(tmp_path):
    p = tmp_path / "broken.csv"
    p.write_text("timestamp,WND,SUN\n2022-01-01 00:00:00+00:00,1,2\n")
    expected = _err("broken.csv", "missing column(s) WAT, OIL, NG", "accepted: files with columns timestamp")
    with pytest.raises(DataError, match=expected):
        load_fuel_mix(path=p)


def test_bad_grid_negative_and_unparsable(tmp_path):
    p = _write(tmp_path / "broken.csv", GRID_HEADER, _grid_rows(("100", "-3", "120")))
    with pytest.raises(DataError, match=_err("broken.csv, row 2, field 'NG': negative generation", "accepted: values >= 0")):
        load_fuel_mix(path=p)
    fm = load_fuel_mix(path=p, negative="zero")
    assert fm["NG"].iloc[1] == 0 and any("1 negative NG values set to 0" in m for m in fm.attrs["report"])
    p2 = _write(tmp_path / "text.csv", GRID_HEADER, _grid_rows(("100", "abc", "120")))
    with pytest.raises(DataError, match=_err("text.csv, row 2, field 'NG': cannot parse 'abc'")):
        load_fuel_mix(path=p2)
    p3 = _write(tmp_path / "inf.csv", GRID_HEADER, _grid_rows(("100", "120", "inf")))
    with pytest.raises(DataError, match=_err("inf.csv, row 3, field 'NG': non-finite")):
        load_fuel_mix(path=p3)


def test_grid_nan_cell_is_interpolated_and_recorded(tmp_path):
    p = _write(tmp_path / "gap.csv", GRID_HEADER, _grid_rows(("100", "", "120")))
    fm = load_fuel_mix(path=p)
    assert fm["NG"].iloc[1] == pytest.approx(110.0)
    assert any("some fuels missing" in m and "'NG': 1" in m for m in fm.attrs["report"])


def test_bad_grid_timestamps(tmp_path):
    rows = _grid_rows()
    p = _write(tmp_path / "order.csv", GRID_HEADER, [rows[0], rows[2], rows[1]])
    with pytest.raises(DataError, match=_err("order.csv, row 3, field 'timestamp'", "out of order")):
        load_fuel_mix(path=p)
    p = _write(tmp_path / "dup.csv", GRID_HEADER, [rows[0], rows[1], rows[1]])
    with pytest.raises(DataError, match=_err("dup.csv, row 3, field 'timestamp': duplicated timestamp")):
        load_fuel_mix(path=p)


def test_unknown_region_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=_err("field 'region': unknown region 'XYZ'", "accepted: BPAT, CISO, ERCO")):
        load_fuel_mix("XYZ")
    with pytest.raises(DataError, match=_err("unknown region 'XYZ'", "accepted: BPAT, CISO")):
        load_epw("XYZ")
    with pytest.raises(DataError, match=_err("nope.csv: given fuel-mix file not found", "accepted: an existing")):
        load_fuel_mix(path=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=_err("data.txt: unsupported file type", "accepted: .csv or .csv.gz")):
        load_fuel_mix(path=tmp_path / "data.txt")
    with pytest.raises(DataError, match=_err("unknown price source", "accepted:")):
        price_for_grid_year("nowhere")


def test_bad_workload_nan_and_negative(tmp_path):
    hdr = "Time,Demand\n"
    p = _write(tmp_path / "azure.csv", hdr, ["2019-01-01 00:00,5", "2019-01-01 00:30,NaN", "2019-01-01 01:00,4"])
    with pytest.raises(DataError, match=_err("azure.csv, row 2, field 'Demand': missing value")):
        load_azure_hourly(p)
    p = _write(tmp_path / "azure.csv", hdr, ["2019-01-01 00:00,5", "2019-01-01 00:30,-1", "2019-01-01 01:00,4"])
    with pytest.raises(DataError, match=_err("azure.csv, row 2, field 'Demand': negative value")):
        load_azure_hourly(p)
    p = _write(tmp_path / "azure.csv", hdr, ["2019-01-01 00:30,5", "2019-01-01 00:00,5"])
    with pytest.raises(DataError, match=_err("azure.csv, row 2, field 'Time'", "out of order")):
        load_azure_hourly(p)
    ok = load_azure_hourly(_write(tmp_path / "ok.csv", hdr, ["2019-01-01 00:30,5", "2019-01-01 01:00,4",
                                                              "2019-01-01 01:30,6"]))
    np.testing.assert_allclose(ok.to_numpy(), [5, 10])
    assert len(ok.attrs["partial_hours"]) == 1


def test_bad_official_agents(tmp_path):
    hdr = "agent,index,demand\n"
    p = _write(tmp_path / "agents.csv", hdr, ["0,0,1.0", "0,1,2.0", "2,0,3.0"])
    with pytest.raises(DataError, match=_err("agents.csv, field 'agent': agent ids are not contiguous", "agent 1")):
        load_official_agents("dc", path=p)
    p = _write(tmp_path / "agents.csv", hdr, ["0,0,1.0", "0,1,-2.0"])
    with pytest.raises(DataError, match=_err("agents.csv, row 2, field 'demand': negative value")):
        load_official_agents("dc", path=p)
    p = _write(tmp_path / "agents.csv", hdr, ["0,0,1.0", "0,0,2.0"])
    with pytest.raises(DataError, match=_err("agents.csv, row 2, field 'index'", "duplicated index 0")):
        load_official_agents("ev", path=p)
    p = _write(tmp_path / "agents.csv", hdr, ["0,1,5.0", "0,0,4.0", "1,0,3.0"])
    np.testing.assert_array_equal(load_official_agents("ev", path=p, num_agents=2)[0], [4.0, 5.0])


def test_acn_bad_rows_are_dropped_and_counted(tmp_path):
    hdr = "session_id,start_time,done_charge,end_time,total_power\n"
    rows = [
        "a,2019/01/01 08:00,2019/01/01 12:00,2019/01/01 13:00,10.0",  # kept, 4 h
        "b,2019/01/01 09:00,2019/01/01 08:00,2019/01/01 13:00,10.0",  # done before start
        "c,2019/01/01 07:00,,2019/01/01 13:00,10.0",  # missing done
        "d,2019/01/01 06:00,2019/01/01 12:00,2019/01/01 13:00,0",  # non-positive energy
        "e,2019/01/01 05:00,2019/01/01 06:00,2019/01/01 13:00,3.0",  # too short
    ]
    s = load_acn_sessions(_write(tmp_path / "acn.csv", hdr, rows))
    assert list(s["session_id"]) == ["a"] and s["rate_kw"].iloc[0] == pytest.approx(2.5)
    d = s.attrs["dropped"]
    assert d["done_charge before start_time (data error)"] == 1 and d["missing or unparsable done_charge"] == 1
    assert d["non-positive total_power"] == 1 and d["duration < 3 h"] == 1
    p = _write(tmp_path / "acn2.csv", "session_id,start_time,total_power\n", ["a,2019/01/01 08:00,1"])
    with pytest.raises(DataError, match=_err("acn2.csv", "missing column(s) done_charge, end_time")):
        load_acn_sessions(p)


def test_epw_missing_codes_and_broken_file(tmp_path):
    lines = gzip.decompress((DATA_DIR / "weather" / REGION_WEATHER["CISO"]).read_bytes()).decode("latin-1").splitlines()
    f = lines[8 + 100].split(",")
    f[6] = "99.9"
    lines[8 + 100] = ",".join(f)
    p = tmp_path / "site.epw"
    p.write_text("\n".join(lines) + "\n", encoding="latin-1")
    w = load_epw(path=p)
    assert np.isfinite(w["dry_bulb_c"]).all() and w["dry_bulb_c"].iloc[100] < 99
    assert any("1 dry_bulb_c values are the EPW missing code" in m for m in w.attrs["report"])
    short = tmp_path / "short.epw"
    short.write_text("\n".join(lines[:20]) + "\n", encoding="latin-1")
    with pytest.raises(DataError, match=_err("short.epw: 12 data rows", "accepted: 8760")):
        load_epw(path=short)
    f = lines[8 + 5].split(",")
    f[8] = "wet"
    lines[8 + 5] = ",".join(f)
    bad = tmp_path / "bad.epw"
    bad.write_text("\n".join(lines) + "\n", encoding="latin-1")
    with pytest.raises(DataError, match=_err("bad.epw, row 6, field 'rel_humidity_pct'", "line 14")):
        load_epw(path=bad)


def test_bad_price_file(tmp_path):
    hdr = "start_datetime,hasp_price_per_mwh\n"
    p = _write(tmp_path / "px.csv", hdr, ["2018-01-01 01:00:00+00:00,5", "2018-01-01 00:00:00+00:00,6"])
    with pytest.raises(DataError, match=_err("px.csv, row 2, field 'start_datetime'", "out of order")):
        load_caiso_bayshore(p)
    p = _write(tmp_path / "px.csv", hdr, ["2018-01-01 00:00:00+00:00,5", "2018-01-01 02:00:00+00:00,7"])
    s = load_caiso_bayshore(p)
    assert s.attrs["missing_hours"] == 1 and s.iloc[1] == pytest.approx(6.0)
