"""`bench predict`: a trained run's masks on the original pixel grid of every input image.

Each frame gets the preprocessing of training (decoding with VOI and polarity, the mirror of a
right breast, the breast crop, the tiles, the resampling: `datasets.real.preprocess.plan`),
the run's model predicts the tiles in its evaluation batches, and `unmap` puts the
probabilities back on the file's grid, so mask pixel (r, c) is file pixel (r, c). The crop is
planned without the reference mask: a prediction never depends on its reference.
Per image: `<id>_mask.png` (0/255), `<id>_overlay.png` (windowed image, predicted contour red,
reference contour green) and, for DICOM inputs, `<id>_seg.dcm` (see benchmark/dicom_seg.py);
a volume's slices go to `<id>/S###_mask.png` etc. with one multi-frame SEG. Per folder:
`predictions.csv`. An image whose row file exists (`.rows/<id>.json`) is skipped: rerunning
an interrupted command finishes it. A damaged input is one line and the rest is predicted.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from benchmark.errors import UserError
from benchmark.io import atomic_write, atomic_write_text
from benchmark.lesions import components
from benchmark.metrics import case_metrics
from benchmark.trained import Trained, predict_rows
from datasets.domain import DomainData
from datasets.real.cases import Case, Frame
from datasets.real.preprocess import Layout, PreprocessConfig, apply_layout, plan, unmap
from datasets.real.problems import CaseError, why

SPLITS = ("test", "val", "train", "all")
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}


@dataclass
class Item:
    """One input image or volume: its id, how to decode its frames, and where it came from."""

    image_id: str
    frames: Callable[[], Iterable[Frame]]
    laterality: str = ""
    source: Path | None = None  # the DICOM file, for the SEG
    where: str = ""  # the file named in messages
    volume: bool = False
    has_reference: bool = False
    patient_id: str = ""
    view: str = ""  # laterality and view, e.g. "L CC" (the whole-image gallery's rows)
    rows: list[int] = field(default_factory=list)  # a cached domain's rows behind it


@dataclass
class Outcome:
    """What a `bench predict` call did: rows, counts, problems and its speed."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    predicted: int = 0  # frames predicted in this call
    skipped: int = 0  # items whose outputs existed
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Frames predicted per second of this call (0 when none)."""
        return self.predicted / self.seconds if self.seconds > 0 and self.predicted else 0.0


def safe_name(image_id: str) -> str:
    """An image id as a relative output path: path separators kept as folders, anything
    else outside [A-Za-z0-9._-] replaced, no empty or dot-only parts."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in re.split(r"[\\/]+", image_id)]
    parts = [p if p.strip(".") else "_" for p in parts if p]
    return "/".join(parts) or "_"


# --- inputs ---------------------------------------------------------------------------------
def items_from_path(path: Path) -> tuple[list[Item], list[str], bool]:
    """Items of a file, a folder (every image file under it) or a folder manifest CSV (read
    as `bench data add --format folder` reads it); returns (items, problems, has_reference)."""
    from datasets.real.folder import FolderAdapter

    path = Path(path)
    if not path.exists():
        raise UserError(f"input '{path}' does not exist")
    if path.suffix.lower() == ".csv" or (path.is_dir() and (path / "manifest.csv").is_file()):
        manifest = path if path.is_file() else path / "manifest.csv"
        adapter = FolderAdapter(manifest.parent, {"manifest": manifest.name})
        cases, problems = adapter.scan()
        items = [case_item(c, manifest.parent) for c in cases]
        return items, [str(p) for p in problems], True
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith("."))
    if not files:
        raise UserError(f"input folder '{path}' holds no DICOM, PNG or TIFF file")
    root = path.parent if path.is_file() else path
    adapter = FolderAdapter(root, {})
    return [file_item(f, root, adapter) for f in files], [], False


def file_item(path: Path, root: Path, adapter: Any) -> Item:
    """An item for one image file with no reference (laterality from a DICOM header)."""
    from datasets.real.image_files import count_frames, is_dicom

    rel = path.relative_to(root).as_posix()
    dicom = is_dicom(path)
    laterality = _dicom_laterality(path) if dicom else ""
    try:
        volume = count_frames(path) > 1  # header only
    except Exception:  # a damaged file is reported when its pixels are read
        volume = False
    return Item(str(Path(rel).with_suffix("").as_posix()),
                lambda: adapter._read(path, None, None, None), laterality,
                path if dicom else None, rel, volume=volume)


def _dicom_laterality(path: Path) -> str:
    """ImageLaterality, else the shared FrameLaterality of a DBT volume, else ''."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["ImageLaterality", "Laterality",
                                            "SharedFunctionalGroupsSequence"])
    except Exception:  # a damaged header is reported when its pixels are read
        return ""
    for key in ("ImageLaterality", "Laterality"):
        if ds.get(key):
            return str(ds.get(key))
    shared = ds.get("SharedFunctionalGroupsSequence")
    anatomy = shared[0].get("FrameAnatomySequence") if shared else None
    return str(anatomy[0].get("FrameLaterality", "")) if anatomy else ""


def case_item(case: Case, root: Path) -> Item:
    """An item for an adapter's case (its reference masks come with its frames)."""
    from datasets.real.image_files import is_dicom

    first = Path(root) / case.files[0] if case.files else None
    source = first if first is not None and first.is_file() and is_dicom(first) else None
    return Item(case.image_id, case.read, str(case.meta.get("laterality", "")), source,
                case.files[0] if case.files else case.image_id, case.volume,
                has_reference=True, patient_id=case.patient_id, view=_view(case.meta))


def items_from_domain(spec: str, split: str, trained: Trained, cache_dir: Path,
                      reporter: Any) -> tuple[list[Item], PreprocessConfig, list[str]]:
    """Items of a domain's split (patient-level, the run's profile split): a real domain's
    cases re-read from their files, a synthetic domain's rows as they are (their original
    grid is the generated one)."""
    from benchmark.registry import resolve_domain
    from benchmark.runner import DataCache

    if split not in SPLITS:
        raise UserError(f"--split '{split}': expected one of {', '.join(SPLITS)}")
    domain = resolve_domain(spec)
    data, splits = DataCache(trained.profile, cache_dir, reporter).get(spec, domain)
    rows = np.arange(len(data)) if split == "all" else np.asarray(splits[split])
    if domain.synthetic:
        return _row_items(data, rows), PreprocessConfig(tiles=1, crop=False,
                                                        flip_right=False), []
    patients = {data.patient_ids[int(i)] for i in rows}
    cases, _ = domain.adapter.scan()  # its problems were logged when the domain loaded
    items = [case_item(c, domain.adapter.root) for c in cases if c.patient_id in patients]
    return items, domain.preprocess, []


def _view(meta: dict[str, Any]) -> str:
    """'L CC'-style view label from a row's or case's laterality and view."""
    lat, view = str(meta.get("laterality", ""))[:1], str(meta.get("view", ""))
    return view if view.startswith(lat) else f"{lat} {view}".strip()


def _row_items(data: DomainData, rows: np.ndarray) -> list[Item]:
    """Items for rows of a cached domain (synthetic: no file behind them): one per image,
    and one per volume whose frames are its rows in slice order (so a method with slice
    context sees the neighbours it was evaluated with)."""
    volumes: dict[str, list[int]] = {}
    singles: list[int] = []
    for i in (int(r) for r in rows):
        vid = str(data.meta[i].get("volume_id") or "")
        (volumes.setdefault(vid, []) if vid else singles).append(i)
    items = [_rows_item(data, [i], str(data.image_ids[i]), False) for i in singles]
    for vid, members in volumes.items():
        members.sort(key=lambda j: float(data.meta[j].get("slice", 0)))
        items.append(_rows_item(data, members, vid, True))
    order = {int(r): n for n, r in enumerate(rows)}
    return sorted(items, key=lambda it: order[it.rows[0]])


def _rows_item(data: DomainData, members: list[int], image_id: str, volume: bool) -> Item:
    """An item reading `members` of `data` as its frames (a volume's slices, or one image)."""
    def frames() -> Iterator[Frame]:
        for i in members:
            spacing = tuple(float(v) for v in data.spacing_mm[i])
            sl = data.meta[i].get("slice") if volume else None
            yield Frame(np.asarray(data.images[i], np.float32), np.asarray(data.masks[i]),
                        spacing, "domain", "synthetic", "synthetic",  # type: ignore[arg-type]
                        None if sl is None else int(sl))

    meta = data.meta[members[0]]
    return Item(image_id, frames, str(meta.get("laterality", "")), None, image_id, volume,
                has_reference=True, patient_id=str(data.patient_ids[members[0]]),
                view=_view(meta), rows=members)


def source_preprocess(trained: Trained) -> PreprocessConfig:
    """The preprocessing the run's source data had (a real binding's options), else the
    defaults: files given to `bench predict` are prepared as the training images were."""
    from datasets.real.domain import preprocess_config

    described = trained.record.info.get("source_describe") or {}
    if described.get("kind") == "real":
        return preprocess_config(described.get("preprocess") or {})
    return PreprocessConfig()


# --- prediction -----------------------------------------------------------------------------
def predict(trained: Trained, items: list[Item], cfg: PreprocessConfig, out_dir: Path,
            reporter: Any, dicom_seg: bool = True) -> Outcome:
    """Predict every item not done yet, write its outputs and row file, then predictions.csv
    (all rows, done before or now)."""
    _claim(out_dir, trained)
    outcome = Outcome(out_dir)
    todo = []
    for item in items:
        if _done_rows(out_dir, item) is not None:
            outcome.skipped += 1
        else:
            todo.append(item)
    if outcome.skipped:
        reporter.log(f"{outcome.skipped} image(s) already predicted in '{out_dir}' (skipped)")
    t0 = time.perf_counter()
    with reporter.task("predict", total=len(todo)) as task:
        for item in todo:
            try:
                n = _predict_item(trained, item, cfg, out_dir, dicom_seg, outcome, reporter)
                outcome.predicted += n
            except CaseError as exc:
                line = f"skipped {exc.problem}"
                outcome.problems.append(line)
                reporter.log(f"[yellow]{line}[/yellow]")
            elapsed = max(time.perf_counter() - t0, 1e-9)
            task.advance(1, images_s=f"{outcome.predicted / elapsed:.2f}")
    outcome.seconds = time.perf_counter() - t0
    outcome.rows = _all_rows(out_dir, items)
    frame = pd.DataFrame(outcome.rows)
    atomic_write_text(out_dir / "predictions.csv", frame.to_csv(index=False))
    return outcome


def _row_file(out_dir: Path, item: Item) -> Path:
    """Where an item's rows are kept once all its outputs are written (its 'done' mark)."""
    return out_dir / ".rows" / f"{safe_name(item.image_id)}.json"


def _claim(out_dir: Path, trained: Trained) -> None:
    """Create the output folder and record which run and threshold fill it (`.run.json`);
    a folder holding another run's predictions is a one-line error, so a rerun never mixes
    two models' masks in one folder."""
    mine = {"run_id": trained.record.run_id, "threshold": trained.threshold}
    marker = out_dir / ".run.json"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if marker.is_file():
            try:
                theirs = json.loads(marker.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                theirs = None
            if isinstance(theirs, dict) and theirs != mine:
                raise UserError(f"output folder '{out_dir}' holds the predictions of run "
                                f"'{theirs.get('run_id')}' (threshold {theirs.get('threshold')}); "
                                "give another --out for this run")
        atomic_write_text(marker, json.dumps(mine))
    except OSError as exc:
        raise UserError(f"output folder '{out_dir}' is not writable: "
                        f"{exc.strerror or exc}") from None


def _done_rows(out_dir: Path, item: Item) -> list[dict[str, Any]] | None:
    """An item's rows if it was finished (a damaged row file counts as not finished)."""
    path = _row_file(out_dir, item)
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rows if isinstance(rows, list) else None


def _all_rows(out_dir: Path, items: list[Item]) -> list[dict[str, Any]]:
    """The rows of every finished item, in input order."""
    rows: list[dict[str, Any]] = []
    for item in items:
        rows.extend(_done_rows(out_dir, item) or [])
    return rows


def item_frames(item: Item) -> Iterator[Frame]:
    """The item's frames, any decoding failure (also mid-volume) a CaseError naming it."""
    try:
        for frame in item.frames():
            if not np.isfinite(frame.image).all():
                raise CaseError(item.where, "image contains NaN or infinite values")
            yield frame
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(item.where, f"unreadable ({why(exc)})") from None


def _predict_item(trained: Trained, item: Item, cfg: PreprocessConfig, out_dir: Path,
                  dicom_seg: bool, outcome: Outcome, reporter: Any) -> int:
    """Predict, frame by frame, one image or volume; write its PNGs, SEG and row file."""
    rows: list[dict[str, Any]] = []
    volume_masks: list[np.ndarray] = []  # packed bits per slice, for one multi-frame SEG
    shape: tuple[int, int] | None = None
    n = 0
    for frame, prob, layout in frame_probabilities(trained, item_frames(item), cfg,
                                                   item.laterality):
        spacing = frame.spacing_mm or (0.1, 0.1)
        pred = prob >= trained.threshold
        stem = safe_name(item.image_id)
        if frame.slice is not None and item.volume:
            stem = f"{stem}/S{int(frame.slice):03d}"
        ref = frame.mask.astype(bool) if item.has_reference else None
        _write_png(out_dir / f"{stem}_mask.png", pred.astype(np.uint8) * 255)
        _write_png(out_dir / f"{stem}_overlay.png", overlay(frame.image, pred, ref))
        rows.append(_row(item, frame, pred, prob, ref, spacing, trained.threshold, layout))
        volume_masks.append(np.packbits(pred, axis=None))
        shape = pred.shape
        n += 1
    if dicom_seg and item.source is not None and shape is not None:
        masks = np.stack([np.unpackbits(p, count=shape[0] * shape[1]).reshape(shape)
                          for p in volume_masks])
        _write_seg(trained, item, masks if len(masks) > 1 else masks[0], out_dir, outcome,
                   reporter)
    atomic_write_text(_row_file(out_dir, item), json.dumps(rows))
    return n


def frame_probabilities(trained: Trained, frames: Iterable[Frame], cfg: PreprocessConfig,
                        laterality: str) -> Iterator[tuple[Frame, np.ndarray, Layout]]:
    """(frame, probabilities on its grid, layout) for each frame, in order. A method that
    reads adjacent slices (CA-net) gets each slice's real neighbours: the same tile position
    in the slices around it, the nearest repeated at the volume's edge, as in training; only
    that many slices' tiles are held at a time."""
    depth = int(getattr(trained.method, "context_slices", 0) or 0)
    if depth <= 1:
        for frame in frames:
            prob, layout = predict_frame(trained, frame, cfg, laterality)
            yield frame, prob, layout
        return
    half = depth // 2
    window: list[tuple[int, Frame, Layout, list[Any]]] = []  # (slice index, frame, ...)
    todo = 0  # the next slice to predict
    for k, frame in enumerate(frames):
        zeros = np.zeros(frame.image.shape, np.uint8)
        layout = plan(frame.image, zeros, trained.profile.image_size, cfg, laterality)
        window.append((k, frame, layout, apply_layout(frame.image, zeros,
                                                      frame.spacing_mm or (0.1, 0.1), layout)))
        while todo + half <= k:
            yield _with_context(trained, window, todo)
            todo += 1
            window = [w for w in window if w[0] >= todo - half]
    while window and todo <= window[-1][0]:
        yield _with_context(trained, window, todo)
        todo += 1


def _with_context(trained: Trained, window: list[tuple[int, Frame, Layout, list[Any]]],
                  target: int) -> tuple[Frame, np.ndarray, Layout]:
    """Slice `target` of `window` predicted with the window's other slices as its context
    (each tile position a volume of its own, ordered by slice, as the cache builds them)."""
    tiles = [(k, t) for k, _, _, ts in window for t in ts]
    _, frame, layout, _ = next(w for w in window if w[0] == target)
    if not layout.blocks:
        return frame, np.zeros(layout.shape, np.float32), layout
    size = layout.size
    data = DomainData(domain="predict", images=np.stack([t.image for _, t in tiles]),
                      masks=np.zeros((len(tiles), size, size), np.uint8),
                      spacing_mm=np.asarray([t.spacing_mm for _, t in tiles], np.float64),
                      patient_ids=["predict"] * len(tiles),
                      image_ids=[f"{t.block}-S{k}" for k, t in tiles],
                      meta=[{"volume_id": t.block, "slice": k} for k, t in tiles])
    rows = [j for j, (k, _) in enumerate(tiles) if k == target]
    probs: dict[str, np.ndarray] = {}
    for chunk, p in predict_rows(trained, data, rows):
        for j, r in enumerate(chunk):
            probs[tiles[int(r)][1].block] = p[j]
    return frame, unmap(layout, probs), layout


def predict_frame(trained: Trained, frame: Frame, cfg: PreprocessConfig, laterality: str
                  ) -> tuple[np.ndarray, Layout]:
    """One frame's probabilities on its own grid, and the layout that mapped them: the
    training preprocessing planned without the reference, the tiles predicted, unmapped."""
    zeros = np.zeros(frame.image.shape, np.uint8)
    layout = plan(frame.image, zeros, trained.profile.image_size, cfg, laterality)
    tiles = apply_layout(frame.image, zeros, frame.spacing_mm or (0.1, 0.1), layout)
    return _probabilities(trained, layout, tiles), layout


def _probabilities(trained: Trained, layout: Layout, tiles: list[Any]) -> np.ndarray:
    """The frame's probabilities on its original grid (0 where every tile was background)."""
    if not tiles:
        return np.zeros(layout.shape, np.float32)
    data = DomainData(domain="predict", images=np.stack([t.image for t in tiles]),
                      masks=np.zeros((len(tiles), layout.size, layout.size), np.uint8),
                      spacing_mm=np.asarray([t.spacing_mm for t in tiles], np.float64),
                      patient_ids=["predict"] * len(tiles),
                      image_ids=[t.block for t in tiles])
    probs: dict[str, np.ndarray] = {}
    for chunk, p in predict_rows(trained, data, np.arange(len(tiles))):
        for j, k in enumerate(chunk):
            probs[tiles[int(k)].block] = p[j]
    return unmap(layout, probs)


def _row(item: Item, frame: Frame, pred: np.ndarray, prob: np.ndarray,
         ref: np.ndarray | None, spacing: tuple[float, float], threshold: float,
         layout: Layout) -> dict[str, Any]:
    """One predictions.csv row: ids, size, area, clusters, max probability, threshold, and
    DSC / TPR (%) against the reference where there is one."""
    _, n_clusters = components(pred)
    row: dict[str, Any] = {
        "image_id": item.image_id + (f"-S{int(frame.slice):03d}" if frame.slice is not None
                                     else ""),
        "slice": "" if frame.slice is None else int(frame.slice),
        "rows": int(pred.shape[0]), "cols": int(pred.shape[1]),
        "spacing_row_mm": float(spacing[0]), "spacing_col_mm": float(spacing[1]),
        "flipped": layout.flipped, "tiles_predicted": len(layout.blocks),
        "predicted_area_mm2": float(pred.sum() * spacing[0] * spacing[1]),
        "predicted_clusters": int(n_clusters),
        "max_probability": float(prob.max()) if prob.size else 0.0,
        "threshold": float(threshold),
        "DSC": "", "TPR": "",
    }
    if ref is not None:
        metrics = case_metrics(pred, ref, spacing)
        row["DSC"] = 100.0 * float(metrics["DSC"])
        tpr = metrics["TPR"]
        row["TPR"] = "" if tpr is None or not np.isfinite(tpr) else 100.0 * float(tpr)
    return row


def _write_seg(trained: Trained, item: Item, masks: np.ndarray, out_dir: Path,
               outcome: Outcome, reporter: Any) -> None:
    """The item's DICOM SEG; a source highdicom cannot reference is one line, PNGs kept."""
    from benchmark.dicom_seg import write_seg

    info = trained.record.info
    algorithm = f"{info.get('method_display', info['method'])} {trained.record.run_id}"
    version = str(info.get("code_version", ""))
    assert item.source is not None
    try:
        write_seg(item.source, masks, out_dir / f"{safe_name(item.image_id)}_seg.dcm",
                  algorithm, version)
    except (ValueError, AttributeError, TypeError) as exc:
        line = f"no DICOM SEG for {item.where}: {why(exc)} (the PNG masks are written)"
        outcome.problems.append(line)
        reporter.log(f"[yellow]{line}[/yellow]")


# --- pictures -------------------------------------------------------------------------------
def contour(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's outline, `width` pixels thick (outside the object, so small specks stay
    visible)."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    grown = ndimage.binary_dilation(mask, iterations=max(1, width))
    return grown & ~mask


def overlay(image: np.ndarray, pred: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
    """RGB uint8: the windowed image (the 1st-99th percentile of its breast-bright pixels
    stretched), the reference outline green and the predicted outline red (yellow where
    both lie)."""
    lo, hi = np.percentile(image, [1.0, 99.5]) if image.size else (0.0, 1.0)
    grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    width = max(1, round(max(image.shape) / 600))
    edge = contour(pred, width)
    ref_edge = contour(ref, width) if ref is not None else np.zeros(pred.shape, bool)
    rgb[ref_edge] = (0, 220, 0)
    rgb[edge] = (255, 40, 40)
    rgb[edge & ref_edge] = (255, 230, 0)
    return rgb


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit grey or RGB PNG atomically (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(fh: io.BytesIO) -> None:
        Image.fromarray(array).save(fh, format="PNG", compress_level=1)

    atomic_write(path, write)
