"""Charting: turn the hidden physiology into irregular, noisy MIMIC-IV event rows (docs/simulator.md §4).

Rows are collected as column blocks (numpy arrays) per table in an :class:`EventLog`; :meth:`EventLog.table`
concatenates them into a pyarrow Table with the exact MIMIC-IV schema. Times are ``datetime64[s]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ogsrl import features as F
from ogsrl.synth import tables as T
from ogsrl.synth.physiology import Patients

Arr = npt.NDArray[np.float64]
HOUR = np.timedelta64(3600, "s")


@dataclass(frozen=True, slots=True)
class Mess:
    """Documented rates of realistic mess in the written tables."""

    vital_missing: float = 0.1
    """probability an hourly vital sign (HR, BP, RR, SpO2) is not charted"""
    urine_missing: float = 0.08
    """probability an hourly urine output is not charted (the volume is charted with the next one)"""
    fahrenheit: float = 0.08
    """share of temperatures charted in °F (itemid 223761)"""
    fio2_fraction: float = 0.05
    """share of chartevents FiO2 (223835) charted as a fraction 0.21–1.0 instead of percent"""
    pound_weight: float = 0.05
    """share of admission weights charted in lb (226531)"""
    error_rate: float = 0.003
    """share of vital-sign rows replaced by an implausible charting error (outside features' ranges)"""

    def __post_init__(self) -> None:
        for name in ("vital_missing", "urine_missing", "fahrenheit", "fio2_fraction", "pound_weight", "error_rate"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")


_UOM = {220045: "bpm", 220050: "mmHg", 220052: "mmHg", 220179: "mmHg", 220181: "mmHg", 220210: "insp/min",
        223761: "°F", 223762: "°C", 220277: "%", 223835: None, 220739: None, 223900: None, 223901: None,
        226512: "kg", 226531: "lbs", 50821: "mm Hg", 50816: "%", 50813: "mmol/L", 50885: "mg/dL", 50912: "mg/dL",
        51265: "K/uL"}


class EventLog:
    """Column blocks per event table; all blocks of one table carry the same column keys."""

    def __init__(self) -> None:
        self.blocks: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in T.EVENT_TABLES}
        self.hours: dict[str, list[float]] = {t: [] for t in T.EVENT_TABLES}

    def add(self, table: str, hour: float = np.inf, **cols: np.ndarray) -> None:
        """Append a block of rows; ``hour`` (onset-relative hour of the rows, +inf = always relevant) lets
        :meth:`table` skip old blocks."""
        n = {len(v) for v in cols.values()}
        if len(n) != 1:
            raise ValueError(f"{table}: ragged block {[(k, len(v)) for k, v in cols.items()]}")
        if n.pop():
            self.blocks[table].append(cols)
            self.hours[table].append(hour)

    def table(self, name: str, extra: list[dict[str, np.ndarray]] | None = None, since_hour: float = -np.inf,
              columns: tuple[str, ...] | None = None) -> pa.Table:
        """Concatenate the blocks of ``name`` (plus ``extra`` blocks) into a MIMIC-IV-schema table.

        Args:
            since_hour: drop blocks charted before this onset-relative hour (they cannot enter the state).
            columns: build only these columns (the others are NULL); None = all.
        """
        blocks = [b for b, h in zip(self.blocks[name], self.hours[name]) if h >= since_hour] + (extra or [])
        if not blocks:
            return T.build(name, {}, 0)
        keys = [k for k in blocks[0] if columns is None or k in columns]
        cols = {k: np.concatenate([b[k] for b in blocks]) for k in keys}
        n = len(cols[keys[0]])
        out: dict[str, object] = {}
        for k, v in cols.items():
            typ = T.SCHEMAS[name].field(k).type
            if v.dtype.kind == "f" and not pa.types.is_floating(typ):
                out[k] = pa.array(v, type=pa.float64(), from_pandas=True).cast(typ)
            else:
                out[k] = pa.array(v, type=typ, from_pandas=True)
        full = columns is None
        if full and name in ("chartevents", "labevents"):
            as_text = pc.cast(out["valuenum"], pa.string())
            out["value"] = pc.coalesce(out["value"], as_text) if "value" in out else as_text
        if full and name in ("chartevents", "labevents") and "valueuom" not in out:
            items = cols["itemid"]
            uniq, inv = np.unique(items, return_inverse=True)
            uoms = np.array([_UOM.get(int(i)) for i in uniq], dtype=object)
            out["valueuom"] = pa.array(uoms[inv], type=pa.string())
        return T.build(name, out, n)


def _round(x: Arr, nd: int) -> Arr:
    return np.round(x, nd)


def chart_hour(log: EventLog, p: Patients, o: dict[str, Arr], hour: int, ids: dict[str, np.ndarray],
               onset: np.ndarray, since_in: np.ndarray, active: np.ndarray, art_line: np.ndarray,
               urine_item: np.ndarray, urine_pending: Arr, mess: Mess, rng: np.random.Generator,
               lab_seq: list[int]) -> None:
    """Write the rows charted during hour ``[onset + hour, onset + hour + 1)`` for ``active`` patients.

    Args:
        ids: per-patient ``subject_id``, ``hadm_id``, ``stay_id`` arrays.
        onset: per-patient onset ``datetime64[s]``.
        since_in: whole hours since ICU admission at the start of this hour.
        urine_pending: urine produced but not yet charted (mL), updated in place.
        lab_seq: ``[next labevent_id, next specimen_id]``, updated in place.
    """
    n = len(active)
    base = onset + hour * HOUR
    rows_t, rows_i, rows_v, rows_p = [], [], [], []

    def chart(mask: np.ndarray, itemid: np.ndarray | int, value: Arr) -> None:
        idx = np.flatnonzero(mask & active)
        if not len(idx):
            return
        minute = rng.integers(0, 60, len(idx)).astype("timedelta64[m]").astype("timedelta64[s]")
        rows_t.append(base[idx] + minute)
        rows_i.append(np.broadcast_to(itemid, (n,))[idx].astype(np.int64))
        rows_v.append(np.asarray(value, dtype=np.float64)[idx])
        rows_p.append(idx)

    miss = mess.vital_missing
    err = rng.random(n) < mess.error_rate
    hr = _round(o["hr"] + rng.normal(0, 3, n), 0)
    chart(rng.random(n) > miss, 220045, np.where(err, hr * 10.0, hr))
    bp = rng.random(n) > miss
    mapv = _round(o["map"] + rng.normal(0, 3, n), 0)
    chart(bp, np.where(art_line, 220052, 220181), np.where(rng.random(n) < mess.error_rate, 0.0, mapv))
    chart(bp, np.where(art_line, 220050, 220179), _round(o["sbp"] + rng.normal(0, 4, n), 0))
    chart(rng.random(n) > miss, 220210, _round(np.clip(o["rr"] + rng.normal(0, 2, n), 4, 60), 0))
    spo2 = np.clip(_round(o["spo2"] + rng.normal(0, 1, n), 0), 50, 100)
    chart(rng.random(n) > miss, 220277, np.where(rng.random(n) < mess.error_rate, 0.0, spo2))
    four = (since_in % 4) == 0
    temp = o["temp_c"] + rng.normal(0, 0.2, n)
    fahr = rng.random(n) < mess.fahrenheit
    temp_v = np.where(fahr, _round(temp * 1.8 + 32.0, 1), _round(temp, 1))
    chart(four & (rng.random(n) < 0.85), np.where(fahr, 223761, 223762),
          np.where(rng.random(n) < mess.error_rate, temp_v + 60.0, temp_v))
    frac = rng.random(n) < mess.fio2_fraction
    fio2_v = np.where(frac, _round(p.fio2, 2), _round(p.fio2 * 100.0, 0))
    chart(four & (rng.random(n) < np.where((p.fio2 > 0.21) | (p.vent > 0), 0.9, 0.3)), 223835, fio2_v)
    # GCS split into eye / verbal / motor components that sum to the total
    g = o["gcs"]
    eye = np.clip(np.round(g * 4.0 / 15.0), 1, 4)
    verbal = np.clip(np.round(g * 5.0 / 15.0), 1, 5)
    motor = np.clip(g - eye - verbal, 1, 6)
    verbal = np.clip(g - eye - motor, 1, 5)
    gmask = four & (rng.random(n) < 0.85)
    chart(gmask, 220739, eye)
    chart(gmask, 223900, verbal)
    chart(gmask, 223901, motor)
    first = since_in == 0

    def flush(hour_tag: float) -> None:
        idx = np.concatenate(rows_p)
        t = np.concatenate(rows_t)
        log.add("chartevents", hour_tag, subject_id=ids["subject_id"][idx], hadm_id=ids["hadm_id"][idx],
                stay_id=ids["stay_id"][idx], charttime=t,
                storetime=t + rng.integers(60, 1800, len(idx)).astype("timedelta64[s]"),
                itemid=np.concatenate(rows_i), valuenum=np.concatenate(rows_v))
        rows_t.clear(), rows_i.clear(), rows_v.clear(), rows_p.clear()

    if rows_t:
        flush(hour)
    lb = rng.random(n) < mess.pound_weight
    chart(first, np.where(lb, 226531, 226512), np.where(lb, _round(p.weight / F.LB_TO_KG, 0), p.weight))
    if rows_t:
        flush(np.inf)  # weights are held for 72 h: always handed to the observer

    # ---- labs: blood gas (more often when ventilated), chemistry and blood count -----------------------------
    lab_t, lab_i, lab_v, lab_p, lab_s, lab_x = [], [], [], [], [], []

    def lab(mask: np.ndarray, items_values: list[tuple[int, Arr]], specimen: str | None = None) -> None:
        """One specimen per patient in ``mask``: a row per (itemid, value), plus the blood-gas specimen-type row
        (52033, text ``specimen``) when given; the specimen row draws no random numbers."""
        idx = np.flatnonzero(mask & active)
        if not len(idx):
            return
        t = base[idx] + rng.integers(0, 60, len(idx)).astype("timedelta64[m]").astype("timedelta64[s]")
        spec = lab_seq[1] + np.arange(len(idx))
        lab_seq[1] += len(idx)
        rows = [(item, np.asarray(value, dtype=np.float64)[idx], None) for item, value in items_values]
        if specimen is not None:
            rows.append((52033, np.full(len(idx), np.nan), specimen))
        for item, value, text in rows:
            lab_t.append(t)
            lab_i.append(np.full(len(idx), item))
            lab_v.append(value)
            lab_x.append(np.full(len(idx), text, dtype=object))
            lab_p.append(idx)
            lab_s.append(spec)

    gas = rng.random(n) < np.where(p.vent > 0, 0.25, 0.06)
    lab(gas, [(50821, _round(o["pao2"] * rng.lognormal(0, 0.05, n), 0)),
              (50816, _round(p.fio2 * 100.0, 0)),
              (50813, _round(np.maximum(p.lactate * rng.lognormal(0, 0.05, n), 0.3), 1))], specimen="ART.")
    lab(first | (rng.random(n) < 1 / 12), [(50885, _round(np.maximum(p.bili * rng.lognormal(0, 0.05, n), 0.1), 1)),
                                           (50912, _round(np.maximum(p.creat * rng.lognormal(0, 0.04, n), 0.1), 1))])
    lab(first | (rng.random(n) < 1 / 12), [(51265, _round(np.maximum(p.plt * rng.lognormal(0, 0.05, n), 5), 0))])
    if lab_t:
        idx = np.concatenate(lab_p)
        t = np.concatenate(lab_t)
        k = len(idx)
        log.add("labevents", hour, labevent_id=lab_seq[0] + np.arange(k), subject_id=ids["subject_id"][idx],
                hadm_id=ids["hadm_id"][idx], specimen_id=np.concatenate(lab_s), itemid=np.concatenate(lab_i),
                charttime=t, storetime=t + rng.integers(1200, 5400, k).astype("timedelta64[s]"),
                value=np.concatenate(lab_x), valuenum=np.concatenate(lab_v),
                priority=np.full(k, "STAT", dtype=object))
        lab_seq[0] += k

    # ---- urine output (hourly Foley/void; a missed charting is added to the next one) ------------------------
    urine_pending += np.where(active, o["urine"], 0.0)
    u = active & (rng.random(n) > mess.urine_missing) & (urine_pending >= 0.5)
    idx = np.flatnonzero(u)
    if len(idx):
        t = base[idx] + rng.integers(45, 60, len(idx)).astype("timedelta64[m]").astype("timedelta64[s]")
        log.add("outputevents", np.inf, subject_id=ids["subject_id"][idx], hadm_id=ids["hadm_id"][idx],
                stay_id=ids["stay_id"][idx], charttime=t, storetime=t + np.timedelta64(600, "s"),
                itemid=urine_item[idx], value=_round(urine_pending[idx], 0), valueuom=np.full(len(idx), "mL",
                                                                                                 dtype=object))
        urine_pending[idx] = 0.0
