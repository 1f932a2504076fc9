"""Populations from a file or a dict: your own signal, your own data, your own agent classes.

A *population spec* is a plain dict (JSON-serialisable, so a training config can
hold it and a run directory can record it); a *population file* is the same
structure as TOML (read with the standard library's ``tomllib``) or JSON.
Reference with every key: ``docs/populations.md``.  In short::

    name = "home-batteries"
    horizon = 12                 # predicted steps per decision
    layout = "shared"            # the default (the paper's), or "chunked" (see eq_envs.population)
    preset = "paper"             # "paper": signal min-max scaled to [0, 10]; "physical": raw units
    train_fraction = 0.7         # train part of the signal (and of file-based agent contexts); the rest is test

    [signal]                     # one of: a bundled region, your grid files, or a plain CSV
    region = "CISO"              # bundled EIA-930 fuel mix, EPW weather and price of a region
    name = "price"               # carbon | water | price | combined (gamma, eta for combined)
    # fuel_mix = "eia.csv"  epw = "site.epw"  price = "lmp.csv"  price_source = "caiso_bayshore_hasp"
    # csv = "my_signal.csv"  column = "value"  timestamp = "time"  sep = ","  decimal = "."

    [[groups]]                   # a built-in kind: datacenter | ev | phone
    kind = "ev"
    sessions = "norway-residential"   # or "similar"/"different" (the paper's), or file + columns
    agents = "per_vehicle"
    weight = 1.0

    [[groups]]                   # your own class, by import path or by file path
    class = "battery.py:HomeBattery"
    args = { workers = 1 }
    files = { households = "households.csv" }
    weight = 1.0

Relative paths are relative to the population file (for a dict: to the
working directory) and are stored absolute by :func:`normalize_spec`.  A user
class is called as ``cls(**args, **files)`` (files as absolute path strings),
plus ``horizon=`` and ``split=`` when its ``__init__`` takes them; it must be an
:class:`agents.base.AgentGroup`.

Reproducibility: :func:`data_files` lists every user file a spec reads (signal
files, agent data files, the ``.py`` file of a class given by path, the module
file of one given by import path) and :func:`record_population` writes their
sha256 with the spec (and a verbatim copy of the population file) into a run
directory; :func:`check_recorded` refuses a resume when any of them changed.
Bundled data is versioned with the package and recorded by name only.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from agents.base import AgentGroup
from agents.data_center import DataCenterAgent
from agents.ev_charging import EVChargingAgent
from agents.phone_charging import PhoneChargingAgent
from eq_envs.datasets import ev as ev_data
from eq_envs.datasets import signals
from eq_envs.datasets.errors import DataError
from eq_envs.datasets.grid import REGIONS
from eq_envs.datasets.prices import PRICE_SOURCES
from eq_envs.datasets.validation import numeric_column, read_csv_text, require_columns, resolve_path
from eq_envs.population import DEFAULT_LAYOUT, LAYOUTS, LOOKBACK, Population
from eq_envs.splits import VAL_FRACTION, check_split_settings, signal_positions

PRESETS = ("paper", "physical")
SPEC_KEYS = ("name", "horizon", "layout", "preset", "train_fraction", "signal", "groups", "source")
GRID_SIGNAL_KEYS = ("region", "name", "gamma", "eta", "fuel_mix", "epw", "price", "price_source", "price_source_year")
CSV_SIGNAL_KEYS = ("csv", "column", "timestamp", "sep", "decimal")
SIGNAL_PATH_KEYS = ("fuel_mix", "epw", "price", "csv")
CLASS_GROUP_KEYS = ("class", "args", "files", "weight")
#: Recorded in a run directory next to config.json.
RECORD_FILE = "population.json"


# ------------------------------------------------------------------ built-in kinds
def _datacenter(g: dict, spec: dict, split: str) -> AgentGroup:
    """Data centers (Eq. 12): ``workloads = "similar" | "different"`` (the paper's) or ``file`` + ``column``."""
    from eq_envs.presets import dc_lambdas, dc_workloads

    if "file" in g:
        series = _column(g["file"], g.get("column", "demand"), g)
        if spec["preset"] == "paper":
            series = signals.minmax_scale(series)[0]
        tr, te = signals.time_split(len(series), spec["train_fraction"])
        part = series[tr if split == "train" else te]
        agents = int(g.get("agents", 10))
        if len(part) < agents:
            raise DataError(f"{len(part)} {split} rows for {agents} agents", file=g["file"], field="agents")
        w = [a.copy() for a in np.array_split(part, agents)]
    else:
        w = dc_workloads(g.get("workloads", "similar"), split)
    lam = g.get("lam", 2.0)
    lam = dc_lambdas(lam, len(w)) if lam in ("same", "different") else lam
    return DataCenterAgent(w, lam=lam, horizon=spec["horizon"], reduce=g.get("reduce", "mean"),
                           min_prediction=g.get("min_prediction", 1e-3))


def _ev(g: dict, spec: dict, split: str) -> AgentGroup:
    """EVs (Eq. 13): ``sessions`` = "similar"/"different" (the paper's 70), a bundled table, or ``file`` + ``columns``."""
    from eq_envs.presets import ev_needs_rates

    src = g.get("sessions", "similar")
    if "file" not in g and src in ("similar", "different"):
        needs, rates = ev_needs_rates(src, split)
        names = None
    else:
        table = ev_data.session_table(src) if "file" not in g else \
            {"file": g["file"], "columns": g.get("columns", {}), **{k: g[k] for k in ("sep", "decimal", "time_format")
                                                                      if k in g}}
        f, cols = table.pop("file"), table.pop("columns")
        s = ev_data.load_sessions(f, cols, min_hours=g.get("min_hours", ev_data.ACN_MIN_HOURS),
                                  max_hours=g.get("max_hours", ev_data.ACN_MAX_HOURS), **table)
        names, needs, rates = ev_data.agents_from_sessions(
            s, g.get("agents", "per_vehicle" if "vehicle" in cols else ev_data.EV_N_AGENTS), split,
            spec["train_fraction"], g.get("min_sessions", 2))
    return EVChargingAgent(needs, rates, horizon=spec["horizon"], names=names)


def _phone(g: dict, spec: dict, split: str) -> AgentGroup:
    """Phones (App. A.4): the paper's 18 demands, or ``file`` + ``column`` (one demand per row)."""
    demands = _column(g["file"], g.get("column", "demand"), g) if "file" in g else ev_data.phone_demands()
    return PhoneChargingAgent(demands, k_mode=g.get("k_mode", "demand"), horizon=spec["horizon"],
                              seed=g.get("seed", 0))


#: kind -> (builder, accepted keys besides kind/weight).  Adding a kind: one function and one entry here.
BUILTIN_KINDS: dict[str, tuple[Callable[[dict, dict, str], AgentGroup], tuple[str, ...]]] = {
    "datacenter": (_datacenter, ("workloads", "file", "column", "agents", "lam", "reduce", "min_prediction")),
    "ev": (_ev, ("sessions", "file", "columns", "sep", "decimal", "time_format", "agents", "min_hours",
                 "max_hours", "min_sessions")),
    "phone": (_phone, ("file", "column", "k_mode", "seed")),
}


def _column(path: str, column: str, g: dict) -> np.ndarray:
    p = resolve_path(path, None, what="data file")
    df = read_csv_text(p)
    require_columns(df, (column,), p)
    return numeric_column(df, column, p, allow_negative=False)[0]


# ------------------------------------------------------------------ normalising a spec
def _err(msg: str, field: str, accepted: Any, source: str | None) -> DataError:
    return DataError(msg, file=source, field=field, accepted=accepted)


def _path(value: Any, field: str, base: Path, source: str | None) -> str:
    if not isinstance(value, str) or not value:
        raise _err(f"{value!r} is not a path", field, "a file path (relative to the population file)", source)
    return str((base / value).expanduser().resolve()) if not Path(value).is_absolute() else value


def normalize_spec(spec: Any, base_dir: str | Path | None = None, source: str | None = None) -> dict[str, Any]:
    """Check a spec's structure and return it with defaults filled in and paths absolute.

    Idempotent (a normalised spec normalises to itself), reads no data. Raises
    :class:`~eq_envs.datasets.errors.DataError` naming the field and what is accepted.
    """
    if not isinstance(spec, dict):
        raise _err(f"a population spec must be a table/dict, got {type(spec).__name__}", "population",
                   "a dict (or a TOML/JSON file) with name, horizon, signal and groups", source)
    source = source or spec.get("source")
    base = Path(base_dir) if base_dir is not None else (Path(source).parent if source else Path.cwd())
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise _err(f"unknown key(s) {', '.join(unknown)}", "population", ", ".join(SPEC_KEYS), source)
    out: dict[str, Any] = {}
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise _err(f"name={name!r}", "name", "a non-empty name without '/'", source)
    out["name"] = name
    h = spec.get("horizon")
    if not isinstance(h, int) or isinstance(h, bool) or h < 1:
        raise _err(f"horizon={h!r}", "horizon", "an integer >= 1 (predicted steps per decision)", source)
    out["horizon"] = h
    for key, accepted, default in (("layout", LAYOUTS, DEFAULT_LAYOUT), ("preset", PRESETS, "paper")):
        v = spec.get(key, default)
        if v not in accepted:
            raise _err(f"{key}={v!r}", key, accepted, source)
        out[key] = v
    f = spec.get("train_fraction", signals.EV_TRAIN_FRACTION)
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1:
        raise _err(f"train_fraction={f!r}", "train_fraction", "a number in (0, 1)", source)
    out["train_fraction"] = float(f)
    out["signal"] = _normalize_signal(spec.get("signal"), base, source)
    groups = spec.get("groups")
    if not isinstance(groups, list) or not groups:
        raise _err("no agent groups", "groups", "a non-empty list of [[groups]] tables", source)
    out["groups"] = [_normalize_group(g, i, base, source) for i, g in enumerate(groups)]
    if source:
        out["source"] = str(Path(source).resolve())
    try:  # a spec lives in config.json: plain JSON values only (TOML dates, for one, are not)
        json.dumps(out)
    except (TypeError, ValueError) as exc:
        raise _err(f"a value cannot be stored as JSON ({exc})", "population",
                   "numbers, strings, booleans, lists and tables", source) from None
    return out


def _normalize_signal(sig: Any, base: Path, source: str | None) -> dict[str, Any]:
    if not isinstance(sig, dict):
        raise _err("missing [signal] table", "signal", "region = ..., or fuel_mix = ..., or csv = ...", source)
    if "csv" in sig:
        bad = sorted(set(sig) - set(CSV_SIGNAL_KEYS))
        if bad:
            raise _err(f"key(s) {', '.join(bad)} do not apply to a csv signal", "signal", CSV_SIGNAL_KEYS, source)
        if not isinstance(sig.get("column"), str):
            raise _err("a csv signal needs column = <name of the value column>", "signal.column", "a column name",
                       source)
        out = {"csv": _path(sig["csv"], "signal.csv", base, source), "column": sig["column"],
               "timestamp": sig.get("timestamp"), "sep": sig.get("sep", ","), "decimal": sig.get("decimal", ".")}
        return out
    bad = sorted(set(sig) - set(GRID_SIGNAL_KEYS))
    if bad:
        raise _err(f"unknown signal key(s) {', '.join(bad)}", "signal",
                   ", ".join(GRID_SIGNAL_KEYS) + " (grid) or " + ", ".join(CSV_SIGNAL_KEYS) + " (csv)", source)
    region = sig.get("region", "CISO")
    if "fuel_mix" not in sig and region not in REGIONS:
        raise _err(f"region={region!r} has no bundled data", "signal.region",
                   f"{', '.join(REGIONS)}, or your own fuel_mix = <EIA-930 CSV>", source)
    out = {"region": region, "name": sig.get("name", "carbon"), "gamma": float(sig.get("gamma", 1.0)),
           "eta": float(sig.get("eta", 1.0))}
    if out["name"] not in signals.SIGNAL_NAMES:
        raise _err(f"name={out['name']!r}", "signal.name", signals.SIGNAL_NAMES, source)
    for k in ("fuel_mix", "epw", "price"):
        if k in sig:
            out[k] = _path(sig[k], f"signal.{k}", base, source)
    if "price_source" in sig:
        if sig["price_source"] not in PRICE_SOURCES:
            raise _err(f"price_source={sig['price_source']!r}", "signal.price_source", sorted(PRICE_SOURCES), source)
        out["price_source"] = sig["price_source"]
    if "price_source_year" in sig:
        out["price_source_year"] = int(sig["price_source_year"])
    return out


def _normalize_group(g: Any, i: int, base: Path, source: str | None) -> dict[str, Any]:
    where = f"groups[{i}]"
    if not isinstance(g, dict):
        raise _err(f"{g!r} is not a table", where, "a [[groups]] table with kind = ... or class = ...", source)
    w = g.get("weight", 1.0)
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not (math.isfinite(w) and w > 0):
        raise _err(f"weight={w!r}", f"{where}.weight", "a number > 0", source)
    if ("class" in g) == ("kind" in g):
        raise _err("give exactly one of kind and class", where,
                   f"kind = one of {', '.join(BUILTIN_KINDS)}, or class = \"module:Class\" / \"file.py:Class\"", source)
    if "class" in g:
        bad = sorted(set(g) - set(CLASS_GROUP_KEYS))
        if bad:
            raise _err(f"unknown key(s) {', '.join(bad)}", where, ", ".join(CLASS_GROUP_KEYS), source)
        ref = g["class"]
        if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
            raise _err(f"class={ref!r}", f"{where}.class", '"package.module:Class" or "path/to/file.py:Class"', source)
        mod, cls = ref.split(":")
        if mod.endswith(".py"):
            ref = f"{_path(mod, f'{where}.class', base, source)}:{cls}"
        args, files = g.get("args", {}), g.get("files", {})
        for key, val in (("args", args), ("files", files)):
            if not isinstance(val, dict):
                raise _err(f"{key}={val!r}", f"{where}.{key}", "a table of keyword arguments", source)
        clash = sorted(set(args) & set(files))
        if clash:
            raise _err(f"{', '.join(clash)} given in both args and files", where, "each keyword once", source)
        return {"class": ref, "args": dict(args),
                "files": {k: _path(v, f"{where}.files.{k}", base, source) for k, v in files.items()},
                "weight": float(w)}
    kind = g["kind"]
    if kind not in BUILTIN_KINDS:
        raise _err(f"kind={kind!r}", f"{where}.kind",
                   f"{', '.join(BUILTIN_KINDS)} (or class = \"module:Class\" for your own)", source)
    accepted = BUILTIN_KINDS[kind][1]
    bad = sorted(set(g) - {"kind", "weight", *accepted})
    if bad:
        raise _err(f"unknown key(s) {', '.join(bad)} for kind {kind!r}", where, ", ".join(accepted), source)
    out = {k: v for k, v in g.items() if k not in ("kind", "weight")}
    if "file" in out:
        out["file"] = _path(out["file"], f"{where}.file", base, source)
    if kind == "ev" and "file" not in out and out.get("sessions", "similar") not in \
            ("similar", "different", *ev_data.SESSION_TABLES):
        raise _err(f"sessions={out['sessions']!r}", f"{where}.sessions",
                   f"similar, different, {', '.join(ev_data.SESSION_TABLES)}, or file = <your table>", source)
    if kind == "ev" and "file" in out and not isinstance(out.get("columns"), dict):
        raise _err("a session file needs columns = {start = ..., end = ..., energy = ..., vehicle = ...}",
                   f"{where}.columns", f"a table mapping {', '.join(ev_data.SESSION_ROLES)} to column names", source)
    return {"kind": kind, **out, "weight": float(w)}


def load_population_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) population file into a normalised spec."""
    p = Path(path)
    if not p.is_file():
        raise DataError("population file not found", file=p, accepted="an existing .toml or .json file")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            raw = tomllib.loads(text)
        elif p.suffix == ".json":
            raw = json.loads(text)
        else:
            raise DataError("unsupported population file type", file=p, accepted=".toml or .json")
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"invalid TOML ({exc})", file=p) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=p) from None
    return normalize_spec(raw, base_dir=p.resolve().parent, source=str(p.resolve()))


# ------------------------------------------------------------------ building
def _signal(spec: dict) -> tuple[np.ndarray, str, str]:
    sig, preset = spec["signal"], spec["preset"]
    if "csv" in sig:
        s = signals.load_signal_csv(sig["csv"], sig["column"], timestamp=sig["timestamp"], sep=sig["sep"],
                                    decimal=sig["decimal"]).to_numpy(np.float64)
        if preset == "paper":
            s = signals.minmax_scale(s)[0]
        return s, sig["column"], "scaled to [0, 10]" if preset == "paper" else "as in the file"
    paths = {f"{k}_path": sig[k] for k in ("fuel_mix", "epw", "price") if k in sig}
    paths.update({k: sig[k] for k in ("price_source", "price_source_year") if k in sig})
    s = signals.signal_series(sig["name"], region=sig["region"], preset=preset, gamma=sig["gamma"], eta=sig["eta"],
                              **paths)
    name = sig["name"] if sig["name"] != "combined" else f"combined (gamma={sig['gamma']}, eta={sig['eta']})"
    return s, name, "scaled to [0, 10] per component" if preset == "paper" else "physical"


def load_class(ref: str) -> type:
    """The class named by ``"package.module:Class"`` or ``"/abs/path/file.py:Class"``."""
    mod_name, cls_name = ref.rsplit(":", 1)
    if mod_name.endswith(".py"):
        p = Path(mod_name)
        if not p.is_file():
            raise DataError("agent class file not found", file=p, accepted="an existing .py file")
        # one module per file content: an edited file is imported afresh, forked workers find it in sys.modules
        key = "eqpm_user_" + hashlib.sha256(p.read_bytes()).hexdigest()[:16] + "_" + p.stem.replace("-", "_")
        module = sys.modules.get(key)
        if module is None:
            spec = importlib.util.spec_from_file_location(key, p)
            if spec is None or spec.loader is None:
                raise DataError("cannot be imported as a Python module", file=p, accepted="a .py file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[key]
                raise DataError(f"importing it failed: {type(exc).__name__}: {exc}", file=p) from exc
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise DataError(f"cannot import module {mod_name!r} ({exc})", field="class",
                            accepted="an importable module (on PYTHONPATH) or a file path ending in .py") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, AgentGroup)):
        raise DataError(f"{ref}: {cls_name!r} is not an AgentGroup subclass", field="class",
                        accepted="a subclass of agents.base.AgentGroup")
    return cls


def _class_group(g: dict, spec: dict, split: str) -> AgentGroup:
    cls = load_class(g["class"])
    kwargs = {**g["args"], **g["files"]}
    params = inspect.signature(cls).parameters
    if "horizon" in params and "horizon" not in kwargs:
        kwargs["horizon"] = spec["horizon"]
    if "split" in params and "split" not in kwargs:
        kwargs["split"] = split
    try:
        group = cls(**kwargs)
    except (DataError, TypeError, ValueError, KeyError, OSError) as exc:
        raise DataError(f"{cls.__name__}(**{sorted(kwargs)}) failed: {type(exc).__name__}: {exc}",
                        file=spec.get("source"), field="class") from exc
    try:
        group.check_attributes()
    except TypeError as exc:
        raise DataError(str(exc), file=spec.get("source"), field="class") from None
    return group


def build_population_from_spec(spec: dict[str, Any], split: str = "train", *, protocol: str = "time",
                               val_fraction: float = VAL_FRACTION, split_seed: int = 0) -> Population:
    """Build the :class:`~eq_envs.population.Population` a spec describes, for ``split``.

    The signal's hours are split as a preset's (:mod:`eq_envs.splits`: ``"train"``,
    ``"val"``, ``"test"``; ``protocol`` time, random or blocked).  Agent contexts come from
    the groups' own train / test parts (``train_fraction``, time order): the
    validation split uses the train part's contexts, and a random or blocked
    protocol partitions the hours only (a group built from files or by a user class has
    no generic way to hold out part of its contexts).
    """
    spec = normalize_spec(spec)
    try:
        check_split_settings(split, protocol, val_fraction)
    except ValueError as exc:
        raise DataError(str(exc), field="split", accepted="train, val or test with a valid protocol and fraction") \
            from None
    signal, signal_name, units = _signal(spec)
    rows = signal_positions(len(signal), spec["train_fraction"], LOOKBACK, spec["horizon"], split, protocol,
                            val_fraction, split_seed)
    if len(rows) == 0:
        raise DataError(f"split {split!r} has no hour with a full input window and horizon", file=spec.get("source"),
                        field="train_fraction", accepted="a signal long enough for every split")
    part = "test" if split == "test" else "train"
    groups = [_class_group(g, spec, part) if "class" in g else BUILTIN_KINDS[g["kind"]][0](g, spec, part)
              for g in spec["groups"]]
    notes = [f"population spec {spec['name']}" + (f" from {spec['source']}" if spec.get("source") else "")]
    if split == "val":
        notes.append("validation hours held out of the signal; agent contexts of the train part")
    try:
        return Population(spec["name"], signal, split, (int(rows[0]) - LOOKBACK, int(rows[-1]) + spec["horizon"]),
                          groups, horizon=spec["horizon"], weights=[g["weight"] for g in spec["groups"]],
                          layout=spec["layout"], positions=rows, protocol=protocol, signal_name=signal_name,
                          units=units, notes=notes)
    except (TypeError, ValueError) as exc:
        raise DataError(str(exc), file=spec.get("source"), field="population") from None


def make_population(population: str | dict[str, Any], split: str = "train", *, preset: str = "paper",
                    region: str = "CISO", layout: str = DEFAULT_LAYOUT, protocol: str = "time",
                    val_fraction: float = VAL_FRACTION, split_seed: int = 0) -> Population:
    """A preset name (:func:`eq_envs.presets.build_population`) or a spec (:func:`build_population_from_spec`)."""
    if isinstance(population, dict):
        return build_population_from_spec(population, split, protocol=protocol, val_fraction=val_fraction,
                                          split_seed=split_seed)
    from eq_envs.presets import build_population

    return build_population(population, split=split, preset=preset, region=region, layout=layout, protocol=protocol,
                            val_fraction=val_fraction, split_seed=split_seed)


def population_label(population: str | dict[str, Any]) -> str:
    """A preset's name or a spec's ``name``."""
    return population["name"] if isinstance(population, dict) else population


# ------------------------------------------------------------------ recording
def data_files(spec: dict[str, Any]) -> list[str]:
    """Every user file the spec reads (absolute paths, in spec order, no duplicates)."""
    spec = normalize_spec(spec)
    out = [spec["signal"][k] for k in SIGNAL_PATH_KEYS if k in spec["signal"]]
    for g in spec["groups"]:
        if "file" in g:
            out.append(g["file"])
        out.extend(g.get("files", {}).values())
        if "class" in g:
            mod = g["class"].rsplit(":", 1)[0]
            if mod.endswith(".py"):
                out.append(mod)
            else:
                file = getattr(sys.modules.get(mod), "__file__", None)
                if file:
                    out.append(str(Path(file).resolve()))
    return list(dict.fromkeys(out))


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_population(spec: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Write ``run_dir/population.json`` (spec + sha256 of every data file) and a copy of the population file."""
    spec = normalize_spec(spec)
    out = Path(run_dir)
    record: dict[str, Any] = {"spec": spec, "data_files": {f: sha256(f) for f in data_files(spec)}}
    src = spec.get("source")
    if src and Path(src).is_file():
        record["source_sha256"] = sha256(src)
        shutil.copyfile(src, out / ("population" + Path(src).suffix))
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return record


def check_recorded(run_dir: str | Path) -> None:
    """Raise a one-line :class:`DataError` when a data file recorded in ``run_dir`` has changed or gone."""
    p = Path(run_dir) / RECORD_FILE
    if not p.is_file():
        return
    record = json.loads(p.read_text())
    for f, digest in record.get("data_files", {}).items():
        if not Path(f).is_file():
            raise DataError(f"data file of the run in {run_dir} is gone", file=f,
                            accepted="the file recorded in population.json, or a new run directory")
        now = sha256(f)
        if now != digest:
            raise DataError(f"data file changed since the run in {run_dir} started (sha256 {digest[:12]}... "
                            f"recorded in {RECORD_FILE}, now {now[:12]}...)", file=f,
                            accepted="the recorded file unchanged, or a new run directory")
