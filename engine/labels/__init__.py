"""Expert labels: the SQLite label store (labels, history, undo), its database file, CSV import
and export, and opening a data set with its cached index.

    db        where the database lives, schema, connection, errors (SQLite only)
    pending   a folder's database before its first label: the user cache, then beside the images
    store     LabelStore: labels, history, undo/redo (knows nothing of CSV files)
    csv_io    label CSVs in and out of the store
    project   open_dataset: scan with the cached index, sync the store; with_expert_labels
"""
