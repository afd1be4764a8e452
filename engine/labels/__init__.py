"""Expert labels: the SQLite label store (labels, history, undo), its database file, CSV import
and export, and opening a data set with its cached index.

    location  where a data set's database lives (beside the images, user data, read-only)
    schema    the tables and their migrations (PRAGMA user_version)
    connection  opening it (WAL; read-only without writing; seeded copies); Database
    errors    StoreError, SQLite's errors said as what to do
    stamps    annotator and time stamps of changes
    db        transitional: names the window still imports from here
    pending   a folder's database before its first label: the user cache, then beside the images
    store     LabelStore: labels, history, undo/redo (knows nothing of CSV files)
    reviews   confirmations ("the label shown is right", an unsure cell's note), disagreements kept
    signed    what a signature fixed: a signed case's cell changed is an amendment, with a reason
    csv_io    label CSVs in and out of the store
    project   open_dataset: scan with the cached index, sync the store; with_expert_labels
"""
