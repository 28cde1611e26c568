"""DICOM SEG output of `bench predict`, through highdicom (binary, one segment).

The SEG references its source image's SOP Instance (and every frame of a DBT volume), so OHIF,
3D Slicer or a PACS attach it to the image. Privacy: highdicom copies the patient and study
modules from the source it is given, so it is given a reduced copy: the UIDs and geometry,
PatientID and StudyID (with the Study and Series Instance UIDs, what a viewer or PACS needs to
file the SEG with its image) and empty values for every other patient or study attribute the
IOD requires (PatientName, birth date, sex, study date and time, referring physician,
accession number). Nothing else reaches the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from benchmark.io import atomic_write

#: Copied from the source: identification, geometry and pixel description only.
KEEP = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
        "Rows", "Columns", "NumberOfFrames", "PixelSpacing", "ImagerPixelSpacing",
        "FrameOfReferenceUID", "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence", "ImageOrientationPatient", "ImagePositionPatient",
        "ImageLaterality", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
        "HighBit", "PixelRepresentation", "SamplesPerPixel", "PatientID",
        "StudyID")
#: Required by the SEG IOD (type 2): present, empty unless kept above.
BLANK = ("PatientID", "PatientName", "StudyID", "PatientBirthDate", "PatientSex", "StudyDate",
         "StudyTime", "ReferringPhysicianName", "AccessionNumber")


def reduced_source(path: Path) -> Dataset:
    """The source header reduced to KEEP (no pixel data), with BLANK attributes empty when
    the source lacks them."""
    full = pydicom.dcmread(path, stop_before_pixels=True)
    src = Dataset()
    src.file_meta = full.file_meta
    for key in KEEP:
        if key in full:
            setattr(src, key, full[key].value)
    for key in BLANK:
        if key not in src:
            setattr(src, key, "")
    if "NumberOfFrames" not in src and "SliceThickness" not in full:
        # a projection mammogram: highdicom would write a pixel-measures item without a
        # slice thickness that no reader accepts (highdicom itself included), so the SEG
        # carries none; viewers take the spacing from the image it references
        for key in ("PixelSpacing", "ImagerPixelSpacing"):
            if key in src:
                delattr(src, key)
    return src


def write_seg(source: Path, masks: np.ndarray, out: Path, algorithm: str, version: str) -> Path:
    """Write the binary masks ((rows, cols) or (frames, rows, cols)) of `source` as a DICOM
    SEG at `out` (atomically); a source highdicom cannot reference raises ValueError."""
    import highdicom as hd

    src = reduced_source(source)
    pixels = np.asarray(masks, dtype=bool)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="microcalcification",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically abnormal structure"),
        segmented_property_type=hd.sr.CodedConcept("129748009", "SCT", "Calcification"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm[:64], version=version[:64],
            family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing")))
    seg = hd.seg.Segmentation(
        source_images=[src], pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="calcbench",
        manufacturer_model_name=algorithm[:64], software_versions=version[:64],
        device_serial_number="none", omit_empty_frames=False,
        series_description=f"calcbench {algorithm}"[:64])

    atomic_write(out, lambda fh: seg.save_as(fh, enforce_file_format=True))
    return out
