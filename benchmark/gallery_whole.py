"""`bench show cases --whole`: one patient's views in the original geometry, like Fig. 6.

Each view is predicted by every method through `bench predict`'s own mapping
(`benchmark.predict.predict_frame`: the training preprocessing planned without the
reference, the tiles predicted, the probabilities mapped back to the file's grid), so the
figure shows exactly what `bench predict` writes. A cell's DSC is computed on that original
grid (the per-case rows of a run are per tile, so none applies).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmark.errors import UserError, closest
from benchmark.gallery import GalleryLayout, GalleryRequest, _draw, _stem, gallery_entries
from benchmark.progress import Reporter
from benchmark.store import ResultsStore

MAX_VIEWS = 4


def pick_patient(items: list[Any], patient: str | None) -> str:
    """`patient` itself (one-line error with a did-you-mean when no test image has it), or
    the test patient with the most distinct views, ties by the smallest id."""
    ids = sorted({i.patient_id for i in items})
    if not ids:
        raise UserError("the target's test split holds no image")
    if patient is not None:
        if patient not in ids:
            raise UserError(f"--patient '{patient}' has no test image{closest(patient, ids)}")
        return patient
    views = {p: len({i.view for i in items if i.patient_id == p}) for p in ids}
    return min(ids, key=lambda p: (-views[p], p))


def view_frames(items: list[Any]) -> list[tuple[str, Any, Any]]:
    """Per view of the patient (up to MAX_VIEWS, sorted), the frame with the largest
    reference area (a volume's best slice), ties by order: (row label, item, frame)."""
    from benchmark.predict import item_frames

    best: dict[str, tuple[int, str, Any, Any]] = {}
    for item in items:
        for frame in item_frames(item):
            area = int(np.count_nonzero(frame.mask))
            label = item.image_id + (f"-S{int(frame.slice):03d}" if item.volume and
                                     frame.slice is not None else "")
            if item.view not in best or area > best[item.view][0]:
                best[item.view] = (area, label, item, frame)
    return [(label, item, frame) for _, (_, label, item, frame) in
            sorted(best.items())[:MAX_VIEWS]]


def whole_gallery(req: GalleryRequest, patient: str | None, reporter: Reporter
                  ) -> GalleryLayout:
    """Draw the patient's views: image, reference, each method's prediction on the original
    grid with its DSC there (default PNG: <results>/figures/whole-S-T-sN-<patient>.png)."""
    from benchmark.metrics import case_metrics
    from benchmark.predict import items_from_domain, predict_frame
    from benchmark.trained import load_trained

    store = ResultsStore(req.results_dir)
    entries = gallery_entries(req, store)
    first = load_trained(store, entries[0].run_id, req.device)
    items, cfg, _ = items_from_domain(req.target, "test", first, req.cache_dir, reporter)
    who = pick_patient(items, patient)
    views = view_frames([i for i in items if i.patient_id == who])
    rows = [label for label, _, _ in views]
    images = {label: frame.image for label, _, frame in views}
    refs = {label: frame.mask.astype(bool) for label, _, frame in views}
    preds: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    labels: dict[tuple[str, str], float] = {}
    with reporter.task(f"whole-image gallery {req.target}", total=len(entries)) as task:
        for entry in entries:
            trained = first if entry is entries[0] else load_trained(store, entry.run_id,
                                                                     req.device)
            for label, item, frame in views:
                prob, _ = predict_frame(trained, frame, cfg, item.laterality)
                pred = prob >= trained.threshold
                preds[(label, entry.key)] = (frame.image, pred)
                labels[(label, entry.key)] = 100 * float(case_metrics(
                    pred, refs[label], frame.spacing_mm or (0.1, 0.1))["DSC"])
            task.advance(1)
    columns = ["image", "reference", *(e.label for e in entries)]
    title = (f"patient {who}, {len(rows)} view(s) in the original geometry (bench predict's "
             f"mapping; DSC on the original grid) — {req.source} → {req.target}, seed "
             f"{req.seed}, profile {req.profile}")
    out = req.out or (req.results_dir / "figures" / f"whole-{_stem(req.source)}-"
                      f"{_stem(req.target)}-s{req.seed}-{_stem(who)}.png")
    _draw(out, title, rows, ["view"] * len(rows), columns, images, refs, preds, labels,
          [e.key for e in entries])
    return GalleryLayout(rows, columns, labels, out, title, ["view"] * len(rows), [])
