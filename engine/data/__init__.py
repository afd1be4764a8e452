"""Cell images and what they are: decoding, scanning a folder (labels, patients, bad files),
splits that keep patients apart, and the torch datasets and loaders built on them.

    imaging     files -> RGB uint8 pixels (OpenCV), the one decoder everything uses
    patients    patient / slide ids from C-NMC names, a regex, or the slide folder
    labelfiles  the C-NMC labels CSV and generic `path,label[,patient]` CSVs
    cells       the records: Cell, Problem, FileCheck, ScanResult; UNSURE, parse_label
    walk        the image files of a folder tree (links, loops, unsupported formats)
    scan        a folder tree into a ScanResult
    splits      patient / image / folds / predefined splits, with their leakage stated
    dataset     CellDataset, the shared decoded-image cache, loaders (needs torch)
"""
