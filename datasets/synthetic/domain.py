"""SyntheticDomain: a Domain defined by a TOML file of generator parameters, with an npz cache.

`load(image_size, cache_dir)` generates every image on the domain's native pixel grid
(anatomy.py -> acquisition.py), resamples images by area averaging and masks by area
fraction >= 0.5 to image_size x image_size, and caches the result as a shard store per
(fingerprint, image_size) under `cache_dir/shards/synthetic/` (datasets/shards.py), built by a
process pool and read lazily. The fingerprint
hashes the canonical parameters, GENERATOR_VERSION and the source text of the generator
modules, so editing either regenerates.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from datasets import resize
from datasets.domain import Domain, DomainData
from datasets.domain import progress_task as _task
from datasets.resize import resample
from datasets.shard_build import Sample, ShardWriter, build_store, open_or_build, rows_of
from datasets.shards import store_folder
from datasets.synthetic import acquisition, anatomy, params
from datasets.synthetic.params import GENERATOR_VERSION, DomainParams, load_domain_toml

CACHE_FORMAT = 2  # 2: sharded .npy store (datasets/shards.py); 1 was one npz
SHARD_BYTES = 64 << 20


@cache
def _source_hash() -> str:
    """sha256 of the generator modules' source text (a code change means new data)."""
    h = hashlib.sha256()
    for module in (params, anatomy, acquisition, resize):
        h.update(Path(module.__file__ or "").read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


class SyntheticDomain(Domain):
    """A synthetic domain generated from `DomainParams` (usually read from a TOML file)."""

    synthetic = True

    def __init__(self, domain_params: DomainParams, name: str | None = None) -> None:
        if name and name != domain_params.name:
            domain_params = dataclasses.replace(domain_params, name=name)
        self.params = domain_params
        self.name = domain_params.name
        self.generation_count = 0  # how many times images were generated (not read from cache)
        self.workers: int | None = None  # build processes (None: every available core)

    @classmethod
    def from_toml(cls, path: str | Path, name: str | None = None) -> SyntheticDomain:
        """Read a domain TOML file (errors are one-line UserErrors naming file and key)."""
        return cls(load_domain_toml(path), name=name)

    def fingerprint(self) -> str:
        """Short sha256 of canonical params + generator version + generator source text."""
        h = hashlib.sha256()
        h.update(self.params.canonical_json().encode())
        h.update(f"|generator={GENERATOR_VERSION}|cache={CACHE_FORMAT}|".encode())
        h.update(_source_hash().encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Counts, grid and provenance, for `bench data show`."""
        p = self.params
        d, q = p.dataset, p.acquisition
        return {
            "name": self.name,
            "kind": "synthetic",
            "synthetic": True,
            "source": p.source or "(in memory)",
            "description": p.description,
            "patients": p.n_all_patients,
            "official_test_patients": int(d.test_patients),
            "views": list(d.views),
            "slices_per_view": int(d.slices_per_view),
            "images": p.n_images,
            "native_spacing_mm": float(d.pixel_spacing_mm),
            "native_size_px": acquisition.native_size(p),
            "tile_mm": float(d.tile_mm),
            "receptor": q.receptor,
            "geometry": q.geometry,
            "lut": q.lut,
            "photometric": q.photometric,
            "bit_depth": int(q.bit_depth),
            "anatomy_seed": int(d.anatomy_seed),
            "fingerprint": self.fingerprint(),
        }

    def cache_path(self, image_size: int, cache_dir: Path) -> Path:
        """The shard-store folder that holds this domain at `image_size`."""
        return store_folder(Path(cache_dir), "synthetic", self.name, self.fingerprint(),
                            image_size)

    def load(self, image_size: int, cache_dir: Path | None, progress: Any = None) -> DomainData:
        """Every image at image_size x image_size, read lazily from the shard store (built
        first, in `self.workers` processes, when missing or unsound). Without a cache folder
        the domain is generated in memory."""
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if cache_dir is None:
            return self.generate(image_size, progress)
        folder = self.cache_path(image_size, Path(cache_dir))
        _manifest, arrays, records = open_or_build(
            folder, image_size, lambda: self._build(folder, image_size, progress), progress)
        rows = rows_of(records)
        if len(rows["image_ids"]) != self.params.n_images:
            raise ValueError(f"cache {folder} holds {len(rows['image_ids'])} images, expected "
                             f"{self.params.n_images}")
        return DomainData(domain=self.name, images=arrays["images"], masks=arrays["masks"],
                          spacing_mm=np.asarray(rows["spacing_mm"], np.float64).reshape(-1, 2),
                          patient_ids=rows["patient_ids"], image_ids=rows["image_ids"],
                          meta=rows["meta"], official_split=self.official_split(
                              rows["patient_ids"]))

    def generate(self, image_size: int, progress: Any = None) -> DomainData:
        """Simulate every case and resample it to image_size (no cache involved)."""
        self.generation_count += 1
        p = self.params
        n_patients = p.n_all_patients
        per_patient = len(p.dataset.views) * int(p.dataset.slices_per_view)
        images = np.empty((p.n_images, image_size, image_size), np.float32)
        masks = np.empty((p.n_images, image_size, image_size), np.uint8)
        patient_ids: list[str] = []
        image_ids: list[str] = []
        metas: list[dict[str, Any]] = []
        with _task(progress, f"generating synthetic {self.name} ({p.n_images} images)",
                   p.n_images) as task:
            results = (patient_images(p, self.name, patient, image_size)
                       for patient in range(n_patients))
            for patient, shots in enumerate(results):
                assert len(shots) == per_patient
                for j, (image, mask, pid, iid, meta) in enumerate(shots):
                    images[patient * per_patient + j] = image
                    masks[patient * per_patient + j] = mask
                    patient_ids.append(pid)
                    image_ids.append(iid)
                    metas.append(meta)
                if task is not None:
                    task.advance(len(shots))
        return DomainData(domain=self.name, images=images, masks=masks,
                          spacing_mm=np.full((p.n_images, 2), float(p.dataset.tile_mm)
                                             / image_size, np.float64),
                          patient_ids=patient_ids, image_ids=image_ids, meta=metas,
                          official_split=self.official_split(patient_ids))

    def official_split(self, patient_ids: list[str]) -> list[str] | None:
        """"test" for the images of the `test_patients` (simulated after the n_patients),
        "train" for the rest; None when the domain has no official test patients."""
        d = self.params.dataset
        if int(d.test_patients) == 0:
            return None
        first_test = int(d.n_patients)
        return ["test" if int(pid.rsplit("-P", 1)[1]) >= first_test else "train"
                for pid in patient_ids]

    def patients_per_shard(self, image_size: int) -> int:
        """Patients per shard: about 64 MiB of samples, and at least 8 shards when the domain
        has 8 patients (so a pool has work to share). Independent of the worker count, so a
        build resumed with other workers reuses its shards."""
        p = self.params
        per_patient = len(p.dataset.views) * int(p.dataset.slices_per_view)
        by_size = max(1, SHARD_BYTES // (image_size * image_size * 5 * per_patient))
        return max(1, min(by_size, -(-p.n_all_patients // 8)))

    def _build(self, folder: Path, image_size: int, progress: Any) -> None:
        """Generate every patient into the shard store (resuming finished shards)."""
        self.generation_count += 1
        p = self.params
        group = self.patients_per_shard(image_size)
        n_patients = p.n_all_patients
        tile = float(p.dataset.tile_mm) / image_size

        def produce(unit: int, writer: ShardWriter) -> None:
            """Generate shard `unit`'s patients into `writer` (runs in a pool worker)."""
            for patient in range(unit * group, min((unit + 1) * group, n_patients)):
                for image, mask, pid, iid, meta in patient_images(p, self.name, patient,
                                                                  image_size):
                    writer.add(Sample(image, mask, (tile, tile), pid, iid, meta))

        header = {"fingerprint": self.fingerprint(), "name": self.name, "kind": "synthetic"}
        n_units = -(-n_patients // group)
        per_patient = p.n_images // n_patients
        weights = [per_patient * (min((u + 1) * group, n_patients) - u * group)
                   for u in range(n_units)]
        build_store(folder, image_size, n_units, produce, header, workers=self.workers,
                    progress=progress,
                    label=f"generating synthetic {self.name} ({p.n_images} images)",
                    weights=weights)


PatientImage = tuple[np.ndarray, np.ndarray, str, str, dict[str, Any]]


def patient_images(p: DomainParams, name: str, patient: int, image_size: int
                   ) -> list[PatientImage]:
    """Every image of one patient at image_size: (image, mask, patient id, image id, meta)."""
    pid = f"{name}-P{patient:04d}"
    out: list[PatientImage] = []
    for view in anatomy.resolve_views(p, patient):
        case = anatomy.simulate_case(p, patient, view)
        for shot in acquisition.acquire(case, p):
            image, mask = resample(shot.image, shot.mask, image_size)
            meta = {
                "view": view,
                "laterality": case.laterality,
                "view_position": case.position,
                "has_cluster": bool(mask.any()),
                "n_clusters": case.n_clusters,
                "density": round(case.glandular_fraction, 3),
                "thickness_mm": round(case.thickness_mm, 1),
                "tile": case.geometry.kind,
                "photometric_stored": p.acquisition.photometric,
                "synthetic": True,
                **shot.meta,
            }
            iid = f"{pid}-{view}"
            if "volume_id" in meta:
                meta["volume_id"] = f"{name}-{meta['volume_id']}"
                iid += f"-S{meta['slice']:03d}"
            out.append((image, mask, pid, iid, meta))
    return out
