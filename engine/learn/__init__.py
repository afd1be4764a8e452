"""Learning from cells: the network, where its weights come from, training as a generator of
events, the run folder, inference and metrics (needs torch and timm).

    events     typed events of training and prediction; Continue / Halt decisions
    device     device choice, mixed precision, out-of-memory recognition
    weights    ImageNet weights: a file, timm's cache, the bundled Lite0 file
    model      CellClassifier (backbone + the paper's head), ModelSpec, model.pt format
    config     TrainConfig (a run's config.json)
    loops      train_one_epoch, validate, the LR plateau schedule
    runs       RunDir (the run folder), resume state, the model card
    session    TrainingSession: one run's state, epoch loop and test pass
    fit        fit(): the run as a generator; every failure becomes one TrainingFailed
    inference  batched prediction with TTA; Predictions and their CSV
    metrics    scikit-learn metrics, per-patient rows, scoring predictions against labels
"""
