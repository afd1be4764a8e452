"""Single-cell crops cut from the BCCD smear fields (read in place from ../shared/data/bccd-dev):
an unlabeled folder, as a lab gets it from its own slides. Written to a temporary folder only."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2


def write_crops(bccd_dir: Path, out: Path, *, kinds: tuple[str, ...] = ("WBC",), limit: int | None = None,
                pad: int = 10) -> list[Path]:
    """One PNG per box of the given kinds (Pascal VOC names: WBC, RBC, Platelets), flat in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for xml in sorted((bccd_dir / "Annotations").glob("*.xml")):
        tree = ET.parse(xml)
        image = cv2.imread(str(bccd_dir / "JPEGImages" / tree.findtext("filename")))
        if image is None:
            continue
        h, w = image.shape[:2]
        for i, obj in enumerate(tree.iter("object")):
            if obj.findtext("name") not in kinds:
                continue
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            crop = image[max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)]
            if crop.size == 0:
                continue
            path = out / f"{xml.stem}_{obj.findtext('name').lower()}{i:02d}.png"
            cv2.imwrite(str(path), crop)
            written.append(path)
            if limit is not None and len(written) >= limit:
                return written
    return written
