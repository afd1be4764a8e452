"""Cases and their sign-off: a reviewed case becomes a signed, verifiable result.

    cases     which cells form a case (a patient; without patient ids the folder or a sub-folder)
    review    what 'reviewed' means per cell; open disagreements with the active model
    wilson    the 95% Wilson interval of the blast fraction (plain math)
    digest    sha256 over a case's cells and labels
    records   signatures and amendments as the label database keeps them; the two-person setting
    signoff   readiness (what is missing), sign (report placed in signed/, signature recorded)
    verify    intact / amended / tampered, recomputed from the database and the files
    summary   the Cases panel's rows and `cases list`'s table

Above learn, labels and workspace (it reads the active model's stored answers), below report and
the CLI (they draw the signed report). Amendments are written by the label store itself
(engine.labels.signed), in the transaction of the change.
"""
