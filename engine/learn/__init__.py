"""Learning from cells: the network, where its weights come from, training as a generator of
events, the run folder, inference and metrics (needs torch and timm).

    events     typed events of training and prediction; Continue / Halt decisions
    device     device choice, mixed precision, out-of-memory recognition
    weights    ImageNet weights: a file, timm's cache, the bundled Lite0 file
    model      CellClassifier (backbone + the paper's head), ModelSpec, model.pt format
    checkpoints every read (weights_only, one line) and write (atomic) of a checkpoint file
    config     TrainConfig (a run's config.json)
    recipes    the paper and allblast recipes; their optimizer, LR schedule and EMA
    distributed torchrun's process group and DistributedDataParallel
    loops      train_one_epoch, validate, the LR plateau schedule
    run_folder RunDir: the run folder's files, each written so a crash loses nothing
    rng        the random state a resumed run continues
    model_card a run's provenance (model_card.json)
    run_list   runs as rows of a list (RunSummary), their status told live
    runs       transitional: names the window still imports from here
    session    TrainingSession: one run's state, epoch loop and test pass
    start / evaluation  a session's parts: what a run starts from (rank 0's); its end (calibration,
               test pass, model card)
    fit        fit(): the run as a generator; every failure becomes one TrainingFailed
    inference  batched prediction with TTA; Predictions and their CSV
    backends   the network through torch, OpenVINO or ONNX Runtime; ONNX export; the compiled-model cache
    warmup     each batch shape once before the first epoch (GPU kernel selection), model restored
    metrics    scikit-learn metrics, per-patient rows, scoring predictions against labels
"""
